"""The profiles: what each fixes, how it meets params.yaml, and what it changes in a run.

- `cpu` (params.yaml as written, `CPU_PROFILE`): synthetic data, frozen MiniLM vectors.
- `paper` (`PAPER_PROFILE`): the paper's settings as a whole (supplementary, "Implementation
  Details"); each method's own train keys and constructor arguments come from
  pipeline/method_settings.py (applied per variant and dataset by `pipeline.variants.variant_config`).
- `cpu-real` (`CPU_REAL_PROFILE`): real data on a CPU, the bundled MiniLM fine-tuned end to end
  by the methods that fine-tune text (its docstring gives every choice).
- `resolve_profile`: explicit beats implicit. Under a profile other than `cpu` a key the profile
  fixes must hold the CPU profile's value (params.yaml as shipped, `CPU_PROFILE`) or the profile's
  own; anything else was set by the user and stops the run naming it. The profile's own section
  (`paper:`, `cpu_real:`, see `SIZE_SECTIONS`) holds the only size overrides (`SIZE_OVERRIDES`),
  refused under any other profile.
- `text_rule`: a source without raw text (MulT's pickles) keeps its frozen text features under
  fine-tuning, decided when the run starts.
- `effective_settings`: what actually ran, for each run's metrics.json.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.config import Config, as_dict, build_config, merge as _merge
from pipeline.errors import ConfigError

_MISSING = object()
PER_METHOD = "per method"


def _paper_profile() -> dict:
    from pipeline.method_settings import SETTINGS
    pase = SETTINGS["pase"]["common"]["train"]
    return {
        # [CLS], as MMSA's BERT-based models (Self-MM, MAG-BERT) read BERT
        "text": {"encoder": "bert-base-uncased", "finetune": True, "pooling": "cls"},
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

# The same keys as params.yaml holds them for the CPU profile (tests/settings/test_profiles.py checks that
# they match the file). Under `profile: paper` a fixed key must still hold this value (the
# profile then replaces it) or the profile's own value; anything else is a value the user set,
# and the run stops naming it: size changes go through the `paper:` section instead.
CPU_PROFILE = {
    "text": {"encoder": "minilm", "finetune": False, "pooling": "cls"},
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
    "sgm": {"switch": "epoch", "patience": 2, "start_epoch": 4},
}

# The text learning rate of the methods that fine-tune MiniLM under `profile: cpu-real`.
CPU_REAL_TEXT_LR = 3e-5


def _cpu_real_profile() -> dict:
    """`profile: cpu-real`: real data on a 2-core CPU, paper-level text numbers without a GPU.

    From the measured recipe (issue 18; real CMU-MOSI text only: bundled MiniLM fine-tuned end to
    end, AdamW, encoder lr 3e-5, head lr 1e-3, batch 32, L1 loss, mean-pooled tokens, 4 epochs,
    selection on validation MAE: non0 Acc-2 84.3 / 84.0 / 85.4 over three seeds):
    - text: the bundled MiniLM (offline), mean-pooled over its tokens (`text.pooling: mean`; the
      sentence-transformers model is trained with mean pooling, its [CLS] state is not), fine-tuned
      at `train.lr_parts.text` = 3e-5 (the pretrained encoder alone: the projection over it and
      every other new layer train at 1e-3, `train.param_groups`) by the methods whose row of
      pipeline/method_settings.py says `finetune_bert` (PaSE and its variants, CP+SL, Self-MM,
      MAG-BERT); a source without raw text has no encoder to fine-tune, so there the whole text
      encoder trains at 1e-3 (`text_rule`); the others (late fusion,
      EF-LSTM, TFN, LMF, MulT) keep the frozen, cached MiniLM word vectors, and their text encoder
      trains at `train.lr` like every other part.
    - every other part (audio, vision, fusion, heads): lr 1e-3, the recipe's head rate; batch 32;
      L1 loss (the trainer's regression loss); selection on validation MAE (the trainer's rule);
      4 epochs, the recipe's. The per-method rows' learning rates, widths and epochs are the
      paper profile's (GPU, 200 epochs), not used here: every method trains at these settings, so
      a comparison holds all but the method equal.
    Where it differs from the recipe, and why:
    - the audio and vision encoders (PaSE, the baselines) are the CPU default's: conv, width 64,
      dropout 0.1 (the recipe is text only; an LSTM is ~20x slower on a CPU); frozen-text
      baselines' text encoders too.
    - SGM's phase 2 starts at epoch 3 of 4 (`sgm.start_epoch: 3`), half the run as the CPU
      default's 4 of 8, so that it acts on two epochs.
    - the optimizer is the trainer's Adam with weight decay 0, where the recipe used AdamW: with no
      weight decay the two are the same update; AdamW's default decoupled decay (0.01) would shrink
      a weight by a factor (1 - lr * 0.01) per step: over 4 x 41 MOSI steps, by 5e-5 at 3e-5 (the
      encoder) and by 0.16 % at 1e-3 (the rest).
    - MAG-BERT (not in the default matrix) keeps its own output, BERT's pooled [CLS] state with
      its adaptation gate inside, as in its original code: `text.pooling` applies to the text
      encoders of PaSE, CP+SL and Self-MM.
    - five seeds (`seeds` as shipped), where the recipe measured three.
    - synthetic data: the profile is for real data (refused by the preflight unless
      `cpu_real.allow_synthetic`); the synthetic scale is the paper's split sizes (1.0), so an
      opted-in trial (the budget benchmark, benchmarks/bench_cpu_real.py) has the real sizes.
    """
    return {
        "text": {"encoder": "minilm", "finetune": True, "pooling": "mean"},
        "train": {"lr": 1e-3, "batch_size": 32, "hidden": 64, "encoder": "conv", "dropout": 0.1,
                  "epochs": 4, "amp": True, "weight_decay": 0.0, "grad_clip": None,
                  "grad_clip_mode": "norm", "early_stop": None,
                  "lr_parts": {"text": CPU_REAL_TEXT_LR, "audio": None, "vision": None,
                               "shared": None},
                  "weight_decay_parts": {p: None for p in ("text", "audio", "vision", "shared")}},
        "pcl": {"gamma": 0.98},
        "cal": {"reg": 0.01, "alpha": 0.1, "beta": 0.05},
        "loss": {"mu": 0.1},
        "synthetic": {"scale": 1.0},
        "data": {d: {"synthetic_scale": None} for d in ("mosi", "mosei", "iemocap")},
        "sgm": {"switch": "epoch", "patience": 2, "start_epoch": 3},
    }


CPU_REAL_PROFILE = _cpu_real_profile()

# The profiles other than cpu: their fixed values and the params.yaml section of their size
# overrides (`<section>.epochs`, ...).
PROFILES = {"paper": PAPER_PROFILE, "cpu-real": CPU_REAL_PROFILE}
SIZE_SECTIONS = {"paper": "paper", "cpu-real": "cpu_real"}
# the keys cpu-real sets per method (its row's finetune_bert; pipeline/variants.py)
_PER_METHOD_CPU_REAL = ("text.finetune", "train.lr_parts.text")

# <section>.<key> -> the dotted key it sets under the section's profile
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


def profile_fixed_keys(profile: str = "paper") -> dict:
    """{dotted key: the profile's value, or PER_METHOD where the method's row sets it}."""
    if profile == "cpu-real":
        fixed = _flat(CPU_REAL_PROFILE)
        fixed.update({k: PER_METHOD for k in _PER_METHOD_CPU_REAL})
        return fixed
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
    another profile replaces the keys it fixes, after checking that the file does not set any
    of them to a value of its own (explicit beats implicit: such a run stops, naming the key)."""
    name = raw.get("profile", "cpu")
    for other, section in SIZE_SECTIONS.items():
        size = raw.get(section) or {}
        set_ = {k: v for k, v in size.items() if v not in (None, False)} if isinstance(size, dict) else {}
        if other != name and set_:
            raise ConfigError(f"{section}.{next(iter(set_))}: set to {next(iter(set_.values()))!r} "
                              f"but profile is {name!r}; the {section} section sizes the {other} "
                              f"profile only (set it back to null, or use profile: {other})")
    if name not in PROFILES:
        return raw  # cpu, or a value config.py refuses naming the allowed ones
    section = SIZE_SECTIONS[name]
    size = raw.get(section) or {}
    cpu, conflicts = _flat(CPU_PROFILE), []
    for key, paper_value in profile_fixed_keys(name).items():
        have = _get(raw, key, missing=_MISSING)
        if have is _MISSING or _same(have, cpu.get(key, _MISSING)) or (
                paper_value is not PER_METHOD and _same(have, paper_value)):
            continue
        size_key = next((f"{section}.{s}" for s, k in SIZE_OVERRIDES.items() if k == key), None)
        conflicts.append(
            f"{key}: params.yaml sets {have!r}, but profile {name!r} fixes it "
            + (f"to {paper_value!r}" if paper_value is not PER_METHOD else "per method "
               "(pipeline/method_settings.py)")
            + (f"; to change it under the profile set {size_key} instead" if size_key else "")
            + "; to run your value, use profile: cpu; to run the profile's, set it back to "
            f"{cpu.get(key)!r}")
    if conflicts:
        raise ConfigError(f"profile {name!r} conflicts with values set in params.yaml:\n  "
                          + "\n  ".join(conflicts))
    out = _merge(raw, PROFILES[name])
    for size_name, key in SIZE_OVERRIDES.items():
        if isinstance(size, dict) and size.get(size_name) is not None:
            top, leaf = key.split(".")
            out = _merge(out, {top: {leaf: size[size_name]}})
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
    # No backbone to fine-tune: the text encoder is new layers, which train at the rate of every
    # other new layer, not at the fine-tuning rate the profile or the method's row gave BERT.
    parts = {k: getattr(cfg.train, k).text for k in ("lr_parts", "weight_decay_parts")}
    if any(v is not None for v in parts.values()):
        note += "; its text encoder trains at the rate of the other new layers (" + ", ".join(
            f"train.{k}.text {v} not used" for k, v in parts.items() if v is not None) + ")"
    update = {"text": {"finetune": False},
              "train": {k: {"text": None} for k in ("lr_parts", "weight_decay_parts")}}
    return build_config(_merge(dataclasses.asdict(cfg), update)), note


def size_overrides(cfg: Config) -> dict:
    """The active profile's size overrides that are set ({"<section>.<key>": value}), e.g. a
    rehearsal's `paper.epochs`; {} under `profile: cpu` or at the profile's own size."""
    section = SIZE_SECTIONS.get(cfg.profile)
    if section is None:
        return {}
    size = getattr(cfg, section)
    return {f"{section}.{k}": v for k, v in dataclasses.asdict(size).items()
            if v not in (None, False)}


def allows_synthetic(cfg: Config) -> bool:
    """Whether the active (real-data) profile was opted in to synthetic data."""
    section = SIZE_SECTIONS.get(cfg.profile)
    return section is None or getattr(cfg, section).allow_synthetic


def cpu_real_rule(raw: dict, finetune_bert: bool) -> dict:
    """cpu-real's per-method part (`variant_config`): the methods whose row fine-tunes BERT
    fine-tune MiniLM at CPU_REAL_TEXT_LR; the others keep frozen vectors, whose text encoder then
    trains at train.lr like every other part."""
    raw["text"]["finetune"] = finetune_bert
    raw["train"]["lr_parts"] = {**raw["train"]["lr_parts"],
                                "text": CPU_REAL_TEXT_LR if finetune_bert else None}
    return raw


def effective_settings(cfg: Config, dataset: str) -> dict:
    """What actually ran (params.yaml through the profile, the variant and the method's row)."""
    out = {k: dataclasses.asdict(getattr(cfg, k)) for k in ("text", "train")}
    out.update(profile=cfg.profile, model=cfg.model, model_args=cfg.model_args,
               balancer=cfg.balancer, modalities=list(cfg.modalities))
    if cfg.profile == "cpu-real":
        out["method_source"] = "CPU_REAL_PROFILE (pipeline/profiles.py); text " + (
            "fine-tuned" if cfg.text.finetune else "frozen") + " per the method's finetune_bert"
    if cfg.profile == "paper":
        from pipeline.method_settings import row
        r = row(cfg.model, dataset)
        out["method_source"] = r["source"] + (f" (row: {r['dataset_row']})" if r["dataset_row"] else "")
    return out


def variant_config(cfg: Config, variant: str, dataset: str | None = None) -> Config:
    """`cfg` (already resolved) with the variant's overrides; under the paper profile, then the
    row of pipeline/method_settings.py for the variant's model on `dataset` (None: MOSEI's);
    under cpu-real, only the row's `finetune_bert` (`cpu_real_rule`)."""
    from pipeline.variants import VARIANTS
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
        raw = cpu_real_rule(raw, SETTINGS[raw["model"]]["finetune_bert"])
    return build_config(raw)
