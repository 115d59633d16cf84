"""The paper profile: what it fixes, how it meets params.yaml, and what it changes in a run.

- `PAPER_PROFILE`: the paper's settings as a whole (supplementary, "Implementation Details");
  each method's own train keys and constructor arguments come from pipeline/method_settings.py
  (applied per variant and dataset by `pipeline.variants.variant_config`).
- `resolve_profile`: explicit beats implicit. Under `profile: paper` a key the profile fixes must
  hold the CPU profile's value (params.yaml as shipped, `CPU_PROFILE`) or the profile's own;
  anything else was set by the user and stops the run naming it. The `paper:` section holds the
  only size overrides (`SIZE_OVERRIDES`), refused under `profile: cpu`.
- `text_rule`: a source without raw text (MulT's pickles) keeps its frozen text features under
  fine-tuning, decided when the run starts.
- `effective_settings`: what actually ran, for each run's metrics.json.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError

if TYPE_CHECKING:  # config.py imports this module
    from pipeline.config import Config

_MISSING = object()
PER_METHOD = "per method"


def _paper_profile() -> dict:
    from pipeline.method_settings import SETTINGS
    pase = SETTINGS["pase"]["common"]["train"]
    return {
        "text": {"encoder": "bert-base-uncased", "finetune": True},
        # PaSE's row of pipeline/method_settings.py (supplementary, "Implementation Details");
        # each baseline's row replaces these train keys for its variants (variants.py)
        "train": {**pase, "epochs": 200, "amp": True},
        "pcl": {"gamma": 0.98},
        "cal": {"reg": 0.01, "alpha": 0.1, "beta": 0.05},
        "loss": {"mu": 0.1},
        "synthetic": {"scale": 1.0},
        "data": {d: {"synthetic_scale": None} for d in ("mosi", "mosei", "iemocap")},
        "sgm": {"switch": "plateau", "patience": 5},
    }


# The paper's setting as a whole (supplementary, "Implementation Details"): `profile: paper`
# fixes these keys, and the per-method train keys of pipeline/method_settings.py.
PAPER_PROFILE = _paper_profile()

# The same keys as params.yaml holds them for the CPU profile (tests/test_profiles.py checks that
# they match the file). Under `profile: paper` a fixed key must still hold this value (the
# profile then replaces it) or the profile's own value; anything else is a value the user set,
# and the run stops naming it: size changes go through the `paper:` section instead.
CPU_PROFILE = {
    "text": {"encoder": "minilm", "finetune": False},
    "train": {"lr": 0.003, "batch_size": 32, "hidden": 64, "encoder": "conv", "dropout": 0.1,
              "epochs": 8, "amp": True, "weight_decay": 0.0, "grad_clip": None,
              "grad_clip_mode": "norm", "early_stop": None,
              "lr_parts": {p: None for p in ("text", "audio", "vision", "shared")},
              "weight_decay_parts": {p: None for p in ("text", "audio", "vision", "shared")}},
    "pcl": {"gamma": 0.98},
    "cal": {"reg": 0.01, "alpha": 0.1, "beta": 0.05},
    "loss": {"mu": 0.1},
    "synthetic": {"scale": 1.0},
    "data": {"mosi": {"synthetic_scale": 0.2}, "mosei": {"synthetic_scale": 0.02},
             "iemocap": {"synthetic_scale": 0.1}},
    "sgm": {"switch": "epoch", "patience": 2},
}

# paper.<key> -> the dotted key it sets under the paper profile
SIZE_OVERRIDES = {"epochs": "train.epochs", "text_encoder": "text.encoder",
                  "synthetic_scale": "synthetic.scale"}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def _get(raw: dict, dotted: str, missing=None):
    for part in dotted.split("."):
        if not isinstance(raw, dict) or part not in raw:
            return missing
        raw = raw[part]
    return raw


def _same(a, b) -> bool:
    return a == b and type(a) in (type(b), int, float) and type(b) in (type(a), int, float)


def profile_fixed_keys() -> dict:
    """{dotted key: the paper profile's value, or PER_METHOD where the method's row sets it}."""
    from pipeline.method_settings import TRAIN_KEYS
    fixed = {f"train.{k}": PER_METHOD for k in TRAIN_KEYS}
    fixed.update({k: PER_METHOD for k in _flat({"train": {p: CPU_PROFILE["train"][p]
                                                    for p in ("lr_parts", "weight_decay_parts")}})})
    for k in ("train.lr_parts", "train.weight_decay_parts"):
        fixed.pop(k)
    fixed.update(_flat(PAPER_PROFILE))
    return fixed


def resolve_profile(raw: dict) -> dict:
    """params.yaml as written -> the values that run. `profile: cpu` is the file itself;
    `profile: paper` replaces the keys it fixes, after checking that the file does not set any
    of them to a value of its own (explicit beats implicit: such a run stops, naming the key)."""
    size = raw.get("paper") or {}
    if raw.get("profile") != "paper":
        set_ = {k: v for k, v in size.items() if v not in (None, False)} if isinstance(size, dict) else {}
        if set_:
            raise ConfigError(f"paper.{next(iter(set_))}: set to {next(iter(set_.values()))!r} but "
                              f"profile is {raw.get('profile', 'cpu')!r}; the paper section sizes "
                              "the paper profile only (set it back to null, or use profile: paper)")
        return raw
    cpu, conflicts = _flat(CPU_PROFILE), []
    for key, paper_value in profile_fixed_keys().items():
        have = _get(raw, key, missing=_MISSING)
        if have is _MISSING or _same(have, cpu.get(key, _MISSING)) or (
                paper_value is not PER_METHOD and _same(have, paper_value)):
            continue
        size_key = next((f"paper.{s}" for s, k in SIZE_OVERRIDES.items() if k == key), None)
        conflicts.append(
            f"{key}: params.yaml sets {have!r}, but profile 'paper' fixes it "
            + (f"to {paper_value!r}" if paper_value is not PER_METHOD else "per method "
               "(pipeline/method_settings.py)")
            + (f"; to change it under the profile set {size_key} instead" if size_key else "")
            + f"; to run your value, use profile: cpu; to run the profile's, set it back to "
            f"{cpu.get(key)!r}")
    if conflicts:
        raise ConfigError("profile 'paper' conflicts with values set in params.yaml:\n  "
                          + "\n  ".join(conflicts))
    out = _merge(raw, PAPER_PROFILE)
    for name, key in SIZE_OVERRIDES.items():
        if isinstance(size, dict) and size.get(name) is not None:
            section, leaf = key.split(".")
            out = _merge(out, {section: {leaf: size[name]}})
    return out


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def has_token_ids(text_file: Path) -> bool:
    """Whether the embed stage stored BERT token ids (sources with raw text) for fine-tuning."""
    import h5py
    with h5py.File(text_file, "r") as f:
        return "train" in f and "text_bert" in f["train"]


def text_rule(cfg: Config, dataset: str) -> tuple[Config, str | None]:
    """The rule for sources without raw text (MulT's pickles: GloVe vectors; IEMOCAP) under
    fine-tuning: that dataset's runs keep the source's own frozen text features, and the run's
    metrics.json and the report say so. Checked before training, not at the first batch."""
    if not cfg.text.finetune or "text" not in cfg.modalities:
        return cfg, None
    from pipeline import paths
    from pipeline.data.store import read_attrs
    text = paths.text_features(dataset)
    if has_token_ids(text):
        return cfg, None
    note = (f"{dataset}: the source has no raw text ({read_attrs(text).get('encoder', 'source features')}), "
            f"so text is the source's frozen features, not fine-tuned {cfg.text.encoder}")
    from pipeline.config import config_from_dict
    return config_from_dict(_merge(dataclasses.asdict(cfg), {"text": {"finetune": False}}),
                            resolved=True), note


def effective_settings(cfg: Config, dataset: str) -> dict:
    """What actually ran (params.yaml through the profile, the variant and the method's row)."""
    out = {k: dataclasses.asdict(getattr(cfg, k)) for k in ("text", "train")}
    out.update(profile=cfg.profile, model=cfg.model, model_args=cfg.model_args,
               balancer=cfg.balancer, modalities=list(cfg.modalities))
    if cfg.profile == "paper":
        from pipeline.method_settings import row
        r = row(cfg.model, dataset)
        out["method_source"] = r["source"] + (f" (row: {r['dataset_row']})" if r["dataset_row"] else "")
    return out
