"""Settings that pass the type and range checks but would make a switch inert or a number
meaningless. `check` refuses them at load time (ConfigError naming the key, the value and why);
`warnings` lists the few a user may want on purpose, which the log and the report's settings
then show.

Checks that depend on a variant judge the variant's effective config (pipeline/variants.py):
`pase-no_sgm` switches SGM off, so an SGM setting that never takes effect matters only for the
variants that use SGM, and only when they are in `variants`.
"""
from __future__ import annotations

import logging

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)
SEED_MAX = 2**32 - 1  # numpy's seed range (random, numpy and torch are all seeded)
_logged: set[str] = set()


def check(cfg) -> None:
    """Refuse an inert or meaningless setting; log each warning once per process. `cfg` holds
    the values that run (through the profile): each variant is judged on its own config."""
    _check_global(cfg)
    for v, vcfg in _variants(cfg):
        _check_variant(vcfg, v)
    for w in warnings(cfg):
        if w not in _logged:
            _logged.add(w)
            log.warning("params: %s", w)


def warnings(cfg) -> list[str]:
    """Settings a user may want, but should know about (shown in the report's settings)."""
    out = []
    for v, vcfg in _variants(cfg):
        if _uses_sgm(vcfg) and vcfg.sgm.switch == "epoch" and max(vcfg.sgm.start_epoch, 2) == vcfg.train.epochs:
            out.append(f"sgm.start_epoch: {vcfg.sgm.start_epoch} with train.epochs: {vcfg.train.epochs}: "
                       f"in {v!r} SGM (phase 2) acts on the last epoch only")
        inert = _inert_sgm(vcfg, v)
        if inert and _rehearsal(vcfg):
            key = _rehearsal(vcfg)
            out.append(f"{key}: {vcfg.train.epochs} (a rehearsal at reduced size): {inert}")
    if cfg.loss.mu == 0 and (cfg.pcl.enabled or cfg.cal.enabled):
        out.append("loss.mu: 0 removes the PCL and CAL loss terms (Eq. 15): the pase-no_pcl and "
                   "pase-no_cal ablations then differ from pase only where prototypes feed the fusion")
    return list(dict.fromkeys(out))


def _variants(cfg):
    from pipeline.profiles import variant_config
    return [(v, variant_config(cfg, v)) for v in cfg.variants]


def _check_global(cfg) -> None:
    if not cfg.seeds:
        raise ConfigError("seeds: at least one seed is needed")
    if not cfg.modalities:
        raise ConfigError("modalities: at least one of 'text', 'audio', 'vision' is needed")
    from pipeline.variants import VARIANTS
    for i, v in enumerate(cfg.variants):
        if v not in VARIANTS:
            raise ConfigError(f"variants[{i}]: {v!r} is unknown; allowed: {', '.join(VARIANTS)}")
    from pipeline.models import MODEL_NAMES
    if cfg.model not in MODEL_NAMES:
        raise ConfigError(f"model: {cfg.model!r} is unknown; allowed: {', '.join(MODEL_NAMES)}")
    if cfg.data.iemocap.source in ("cmu", "mmsa"):
        raise ConfigError(f"data.iemocap.source: {cfg.data.iemocap.source!r} is not available for "
                          "IEMOCAP; allowed values: 'synthetic', 'mult' (MulT's iemocap_data.pkl)")
    if not cfg.datasets:
        raise ConfigError("datasets: [] is empty; at least one of 'mosi', 'mosei', 'iemocap' is needed")
    if not cfg.variants:
        raise ConfigError("variants: [] is empty; at least one variant is needed (pipeline/variants.py)")
    for i, s in enumerate(cfg.seeds):
        if not 0 <= s <= SEED_MAX:
            raise ConfigError(f"seeds[{i}]: {s} is out of range; allowed: 0 <= seed <= {SEED_MAX} "
                              "(the range numpy accepts)")
    if cfg.train.lr == 0:
        raise ConfigError("train.lr: 0.0 means the weights never change, so every run would report "
                          "its random initialisation; allowed: train.lr > 0")
    from pipeline.balancers import SPECS
    for spec in SPECS.values():  # each balancer's own section, whichever variants use it
        if spec.check:
            spec.check(getattr(cfg, spec.section))
    if cfg.profile == "cpu" and not cfg.text.finetune and cfg.text.pooling != "cls":
        raise ConfigError(f"text.pooling: {cfg.text.pooling!r} with text.finetune: false: pooling "
                          "chooses the fine-tuned encoder's utterance vector, and frozen vectors "
                          "are not pooled by it, so the setting would change nothing; allowed: "
                          "text.finetune: true, or text.pooling: 'cls'")


def _uses_sgm(cfg) -> bool:
    return cfg.balancer == "sgm" and cfg.sgm.enabled  # as build_balancer in pipeline/train.py


def _rehearsal(cfg) -> str | None:
    """A paper or cpu-real run at reduced size (`paper.epochs` / `cpu_real.epochs` set, the key
    returned): it rehearses the plumbing, and a phase 2 that cannot start in so few epochs is a
    warning there, not an error."""
    from pipeline.profiles import SIZE_SECTIONS
    section = SIZE_SECTIONS.get(cfg.profile)
    if section and getattr(getattr(cfg, section, None), "epochs", None) is not None:
        return f"{section}.epochs"
    return None


def _inert_sgm(cfg, v: str) -> str | None:
    """Why SGM can never start in variant `v`'s run, or None."""
    epochs = cfg.train.epochs
    if not _uses_sgm(cfg):
        return None
    # phase 2 is decided after an epoch, so it can begin at epoch 2 at the earliest
    if cfg.sgm.switch == "epoch" and max(cfg.sgm.start_epoch, 2) > epochs:
        return (f"sgm.start_epoch: {cfg.sgm.start_epoch} with train.epochs: {epochs}: phase 2 (SGM) "
                f"would never start, so variant {v!r} would train exactly as without SGM "
                f"(pase-no_sgm); allowed: sgm.start_epoch <= train.epochs (and train.epochs >= 2), "
                "or sgm.enabled: false")
    if cfg.sgm.switch == "plateau" and cfg.sgm.patience + 2 > epochs:
        return (f"sgm.patience: {cfg.sgm.patience} with train.epochs: {epochs}: a plateau that long "
                f"cannot occur (phase 2 could begin at epoch {cfg.sgm.patience + 2} at the earliest), "
                f"so variant {v!r} would train exactly as without SGM; allowed: sgm.patience <= "
                "train.epochs - 2, or sgm.switch: epoch")
    return None


def _check_variant(cfg, v: str) -> None:
    epochs = cfg.train.epochs
    for section in ("lr_parts", "weight_decay_parts"):
        value = getattr(getattr(cfg.train, section), "text")
        if value is not None and not cfg.text.finetune:
            raise ConfigError(
                f"train.{section}.text: {value} with text.finetune: false (variant {v!r}): the "
                "text part is the pretrained text encoder being fine-tuned, and frozen text has "
                "none (its encoder's layers train at train.lr, or train.lr_parts.shared), so the "
                "setting would change nothing; allowed: null, or text.finetune: true")
    inert = _inert_sgm(cfg, v)
    if inert and not _rehearsal(cfg):
        raise ConfigError(inert)
    from pipeline.balancers import SPECS
    spec = SPECS.get(cfg.balancer)
    if spec and spec.check:  # the balancer this variant uses, judged at its epochs
        spec.check(getattr(cfg, spec.section), epochs, v)
