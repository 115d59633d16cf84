"""Each run's effective configuration: the parameters a (dataset, variant) run actually reads.

The `configure` stage (one cheap process) writes data/configs/<dataset>/<variant>.json for every
dataset and variant of params.yaml; each `train` stage depends on its own file instead of whole
params sections, so `dvc exp run -S sgm.enabled=false` retrains only the runs whose effective
configuration changed (the PaSE variants that use SGM), `-S <balancer section>.<key>=...` only
that balancer's variant.

What a run reads (`read_by`), from pipeline/train.py and pipeline/models:
- every run: profile, seeds (they change the outputs), model, model_args, balancer, modalities,
  text and train (but `train.workers` and `train.ahead`, which only schedule the seeds); the
  phase switch of the trainer (`sgm.switch`, and `sgm.start_epoch` under
  `switch: epoch` or `sgm.patience` under `switch: plateau`), recorded in every run's history;
- PaSE models: pcl, cal, pgf, fusion, loss (pase.build) and `sgm.rho` (the Shapley values logged
  in every phase, and SGM's own);
- balancer sgm: `sgm.enabled`; another balancer: its own section (its SPEC, pipeline/balancers/).
Not read by training: data, synthetic (they act through the input files, which the stage hashes),
datasets and variants (which runs exist) and paper / cpu_real (applied by the profile into text
and train).

Nothing a run reads can bypass the dependency: training runs on `guarded(...)`, where every
section or key left out here is a `ReadGuard` that stops the run naming the key it tried to read,
and it refuses a data/configs file that differs from what params.yaml gives now.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from pipeline import paths
from pipeline.balancers import SPECS
from pipeline.config import Config, as_dict
from pipeline.errors import PipelineError
from pipeline.profiles import variant_config

EVERY_RUN = ("profile", "seeds", "model", "model_args", "balancer", "modalities", "text", "train")
PASE_SECTIONS = ("pcl", "cal", "pgf", "fusion", "loss")
# each balancer's own section (its SPEC), read by the runs that use that balancer
BALANCER_SECTION = {s.name: s.section for s in SPECS.values() if s.section}
GUARDED = (*PASE_SECTIONS, "sgm", *BALANCER_SECTION.values(), "data", "synthetic", "paper",
           "cpu_real")


class UnreadParameter(PipelineError):
    """Training read a parameter its train stage does not depend on (a bug in `read_by`)."""


class ReadGuard(dict):
    """A config section holding only the keys a run depends on; reading any other key stops the
    run (a plain dict for as_dict, JSON and the resume key)."""

    def __getattr__(self, name):
        if name.startswith("__") or name == "_section":
            raise AttributeError(name)
        if name in self:
            return self[name]
        raise UnreadParameter(
            f"training read {self.__dict__.get('_section', '?')}.{name}, which its train stage "
            "does not depend on (data/configs); pipeline/effective.py read_by must list it")


def read_by(vcfg: Config) -> dict:
    """The effective config of one run (`vcfg`: the variant's config), as written to data/configs."""
    full = as_dict(vcfg)
    out = {k: full[k] for k in EVERY_RUN}
    for key in ("workers", "ahead"):  # schedule the seeds; byte-identical outputs for any value
        out["train"].pop(key)
    pase = vcfg.model == "pase"
    if pase:
        out.update({k: full[k] for k in PASE_SECTIONS})
    sgm = {"switch": vcfg.sgm.switch}
    sgm["start_epoch" if vcfg.sgm.switch == "epoch" else "patience"] = (
        vcfg.sgm.start_epoch if vcfg.sgm.switch == "epoch" else vcfg.sgm.patience)
    if vcfg.balancer == "sgm":
        sgm["enabled"] = vcfg.sgm.enabled
    if pase or (vcfg.balancer == "sgm" and vcfg.sgm.enabled):
        sgm["rho"] = vcfg.sgm.rho
    out["sgm"] = sgm
    section = BALANCER_SECTION.get(vcfg.balancer)
    if section:
        out[section] = full[section]
    return out


def effective(cfg: Config, dataset: str, variant: str) -> dict:
    """What the configure stage writes for one run (before the text rule, which reads the
    embedded store: the train stage applies it and depends on that file)."""
    return read_by(variant_config(cfg, variant, dataset))


def dumps(eff: dict) -> str:
    return json.dumps(eff, indent=1, sort_keys=True) + "\n"


def config_file(dataset: str, variant: str) -> Path:
    return paths.DATA / "configs" / dataset / f"{variant}.json"


def configure(cfg: Config) -> list[Path]:
    """The configure stage: every dataset x variant's effective config, one file each."""
    from pipeline.data.store import write_atomic
    written = []
    for ds in cfg.datasets:
        for variant in cfg.variants:
            f = config_file(ds, variant)
            text = dumps(effective(cfg, ds, variant))
            if not f.exists() or f.read_text() != text:  # unchanged files keep their mtime
                f.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(f, text)
            written.append(f)
    return written


def check_file(vcfg: Config, dataset: str, variant: str) -> dict:
    """The run's effective config, after checking that data/configs holds the same (a stale or
    hand-edited file would make DVC's record of the run disagree with what ran)."""
    eff = read_by(vcfg)
    f = config_file(dataset, variant)
    if not f.exists():
        raise PipelineError(f"{f}: missing; the configure stage writes it (run `dvc repro`, or "
                            "`python -m pipeline configure`)")
    if json.loads(f.read_text()) != json.loads(dumps(eff)):
        raise PipelineError(f"{f}: differs from the effective config params.yaml gives for "
                            f"{dataset}/{variant}; rerun the configure stage (`dvc repro` does)")
    return eff


def guarded(vcfg: Config, eff: dict) -> Config:
    """`vcfg` with every section the run does not fully depend on replaced by a ReadGuard holding
    only the keys of `eff`."""
    swap = {}
    for name in GUARDED:
        if name in eff and eff[name] == as_dict(getattr(vcfg, name)):
            continue  # the whole section is a dependency
        g = ReadGuard(eff.get(name, {}))
        g.__dict__["_section"] = name
        swap[name] = g
    return dataclasses.replace(vcfg, **swap)
