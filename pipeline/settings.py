"""The one way from params.yaml to what a run uses.

    load_config(path)            params.yaml -> the checked Config of the whole matrix
    resolve(cfg, dataset, variant) -> one run's Config, its notes, and why it cannot run (or None)

`resolve` applies, in this order and once per run: the profile (already in `cfg`:
`profiles.resolve_profile` at load), the variant's overrides and the method's row of
pipeline/method_settings.py (`variants.variant_config`), the text rule for sources without raw
text (`profiles.text_rule`), and the read guard (`effective.guarded`: the run can read only the
keys of its data/configs file). The checks (pipeline/config_checks.py) judge configs that are
already resolved: `load_config` runs them on every variant of the matrix.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from pipeline import config_checks, effective
from pipeline.config import Config, build_config
from pipeline.errors import ConfigError
from pipeline.profiles import resolve_profile, text_rule
from pipeline.variants import not_applicable
from pipeline.profiles import variant_config

PARAMS_FILE = Path("params.yaml")


def config_from_dict(raw: dict | None, resolved: bool = False) -> Config:
    """Validate params as params.yaml holds them (or `resolved`: already through the profile, as
    `as_dict` of a Config is) and check them (pipeline/config_checks.py)."""
    raw = raw or {}
    cfg = build_config(raw if resolved else resolve_profile(raw))
    config_checks.check(cfg)
    return cfg


def load_config(path: Path | str = PARAMS_FILE) -> Config:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: parameter file not found (run from the repository root)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of parameters at the top level")
    try:
        return config_from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def resolve(cfg: Config, dataset: str, variant: str, task: str, own: Config | None = None
            ) -> tuple[Config, tuple[str, ...], str | None]:
    """One (dataset, variant) run: its config (guarded: only the keys of its data/configs file can
    be read; the scheduling keys set to one value, so no output depends on them), the notes its
    runs carry, and the reason the variant does not apply to `task` (None when it does; whether
    its model can read the data is the model's to say: train_stage.run_config)."""
    vcfg = own or variant_config(cfg, variant, dataset)  # `own`: the caller's, already made
    reason = not_applicable(variant, task)
    vcfg, note = text_rule(vcfg, dataset)
    vcfg = effective.guarded(vcfg, effective.read_by(vcfg))  # reading anything else stops the run
    # workers and ahead only schedule the seeds: no output may depend on them (model.pt, metrics)
    vcfg = dataclasses.replace(vcfg, train=dataclasses.replace(vcfg.train, workers=None, ahead=True))
    return vcfg, (note,) if note else (), reason
