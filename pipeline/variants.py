"""Named experiment variants: each is params.yaml plus a few overrides (declarations only: the
profile applies them, pipeline/profiles.py `variant_config`).

`dvc exp run -S sgm.enabled=false` changes params.yaml, so it changes the headline `pase` run
(and every variant built on it), while `pase-no_sgm` always means "PaSE without SGM".
"""
from __future__ import annotations

from pipeline.balancers import SPECS

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
    # each other balancer on the PaSE backbone with SGM off (its SPEC's `variant`): Shapley
    # against gradient-ratio, Pareto, classifier-guided... modulation, everything else equal
    **{s.variant: {"model": "pase", "balancer": s.name, "sgm": {"enabled": False}}
       for s in SPECS.values() if s.variant},
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


# The variants that need a fine-tuned BERT (the paper profile's GPU): not in the default matrix.
GPU_ONLY = ("mag_bert",)
# params.yaml's `variants` as shipped: every variant that runs on the CPU default
DEFAULT_MATRIX = tuple(v for v in VARIANTS if v not in GPU_ONLY)
# One variant per method (its name is its model's): `count` and the report's "other methods"
METHODS = tuple(v for v, over in VARIANTS.items() if v == over["model"])
