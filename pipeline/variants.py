"""Named experiment variants: each is params.yaml plus a few overrides.

`dvc exp run -S sgm.enabled=false` changes params.yaml, so it changes the headline `pase` run
(and every variant built on it), while `pase-no_sgm` always means "PaSE without SGM".
"""
from __future__ import annotations

from pipeline.config import Config, as_dict, build_config
from pipeline.config import merge as _merge
from pipeline.errors import ConfigError

MODALITY_SETS = {"T": ["text"], "A": ["audio"], "V": ["vision"], "AV": ["audio", "vision"],
                 "TA": ["text", "audio"], "TV": ["text", "vision"]}

VARIANTS: dict[str, dict] = {
    "pase": {"model": "pase"},
    # Table 3: ablations and fusion strategies
    "pase-no_pcl": {"model": "pase", "pcl": {"enabled": False}},
    "pase-no_cal": {"model": "pase", "cal": {"enabled": False}},
    "pase-no_sgm": {"model": "pase", "sgm": {"enabled": False}},
    "pase-no_pgf": {"model": "pase", "pgf": {"enabled": False}},
    "pase-sum": {"model": "pase", "fusion": {"type": "sum"}},
    "pase-concat": {"model": "pase", "fusion": {"type": "concat"}},
    "pase-attention": {"model": "pase", "fusion": {"type": "attention"}},
    # Table 4: modality combinations (T+A+V is `pase`)
    **{f"pase-{k}": {"model": "pase", "modalities": v} for k, v in MODALITY_SETS.items()},
    # baselines, rerun in the same trainer
    "late_fusion": {"model": "late_fusion", "balancer": "none"},
    **{name: {"model": name, "balancer": "none"}
       for name in ("ef_lstm", "tfn", "lmf", "mult", "self_mm", "mag_bert")},
    "cpsl": {"model": "cpsl", "balancer": "cp"},
    # gradient balancing on the PaSE backbone with SGM off: Shapley vs gradient-ratio modulation
    "pase-ogm_ge": {"model": "pase", "balancer": "ogm_ge", "sgm": {"enabled": False}},
    "pase-mmpareto": {"model": "pase", "balancer": "mmpareto", "sgm": {"enabled": False}},
}


# Variants that cannot run on some data: (predicate on the task, reason).
NOT_APPLICABLE = {
    "self_mm": (lambda task: task != "regression",
                "Self-MM generates unimodal regression labels; IEMOCAP is classification"),
}


def not_applicable(variant: str, task: str) -> str | None:
    """The reason a variant does not apply to a task, or None."""
    rule = NOT_APPLICABLE.get(variant)
    return rule[1] if rule and rule[0](task) else None


def variant_config(cfg: Config, variant: str, dataset: str | None = None) -> Config:
    """`cfg` (already resolved) with the variant's overrides; under the paper profile, then the
    row of pipeline/method_settings.py for the variant's model on `dataset` (None: MOSEI's);
    under cpu-real, only the row's `finetune_bert` (pipeline/profiles.py, `cpu_real_rule`)."""
    if variant not in VARIANTS:
        raise ConfigError(f"variant {variant!r} is unknown; allowed: {', '.join(VARIANTS)}")
    # No variant touches a key a profile fixes.
    raw = _merge(as_dict(cfg), VARIANTS[variant])
    if cfg.profile == "paper":
        from pipeline.method_settings import row
        r = row(raw["model"], dataset)
        # the row sets the per-part values whole: a part it leaves out is None (train.lr)
        for parts in ("lr_parts", "weight_decay_parts"):
            raw["train"][parts] = {p: None for p in raw["train"][parts]}
        raw = _merge(raw, {"train": r["train"]})
        raw["model_args"] = dict(r["model_args"])
        raw["text"]["finetune"] = r["finetune_bert"]
    elif cfg.profile == "cpu-real":
        from pipeline.method_settings import SETTINGS
        from pipeline.profiles import cpu_real_rule
        raw = cpu_real_rule(raw, SETTINGS[raw["model"]]["finetune_bert"])
    return build_config(raw)
