"""The train stage around the training loop: one (dataset, variant) over every seed.

`python -m pipeline train --dataset D --variant V` runs `train_variant`: check the inputs'
checksums, work out the run's config (`run_config`), write the not-applicable records where the
variant cannot run on D, restore the seeds an interrupted run (or the look-ahead pool,
pipeline/ahead.py) finished under the same code, parameters and inputs, and train the rest with
pipeline/train.py's loop, `train.workers` at a time.

This module imports no torch (nor the models, nor scikit-learn) until a seed is trained here:
under `dvc repro` most stages only restore what the pool trained, and the import was most of a
stage process's own time (0.95 s of 1.35 s).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil

from pipeline import effective, paths, resume
from pipeline.config import Config
from pipeline.data import belong
from pipeline.data.store import read_attrs, verify_inputs, write_atomic
from pipeline.profiles import text_rule
from pipeline.variants import not_applicable, variant_config

log = logging.getLogger(__name__)


def run_config(cfg: Config, dataset: str, variant: str) -> tuple[Config, tuple[str, ...], str | None]:
    """What one (dataset, variant) trains: its config (guarded: only the keys of its data/configs
    file can be read; scheduling keys set to one value, so no output depends on them), the notes
    its runs carry, and the reason it is not applicable (None when it is)."""
    vcfg = variant_config(cfg, variant, dataset)
    reason = not_applicable(variant, read_attrs(paths.aligned_store(dataset))["task"])
    vcfg, note = text_rule(vcfg, dataset)
    vcfg = effective.guarded(vcfg, effective.read_by(vcfg))  # reading anything else stops the run
    if note:
        from pipeline.models.baselines import NEEDS
        if "bert" in NEEDS.get(vcfg.model, ()):
            reason = reason or (f"{vcfg.model} fine-tunes BERT's layers and {dataset}'s source has "
                                "no raw text to tokenise")
    # workers and ahead only schedule the seeds: no output may depend on them (model.pt, metrics)
    vcfg = dataclasses.replace(vcfg, train=dataclasses.replace(vcfg.train, workers=None, ahead=True))
    return vcfg, (note,) if note else (), reason


def train_variant(cfg: Config, dataset: str, variant: str) -> list[dict]:
    if variant_config(cfg, variant, dataset).train.device == "cuda":
        from pipeline import train  # the loop (torch): otherwise only when a seed is trained here
        train.resolve_device("cuda")  # fail before any work if the GPU is not there
    paths.run_dir(dataset, variant).mkdir(parents=True, exist_ok=True)
    check_inputs(cfg, dataset, variant)
    vcfg, notes, reason = run_config(cfg, dataset, variant)
    leave_only_seeds(dataset, variant, vcfg.seeds)
    if reason:  # every seed says so, and the tables print n/a
        results = []
        paths.curves_dir(dataset, variant, 0).parent.mkdir(parents=True, exist_ok=True)  # no curves
        for s in vcfg.seeds:
            d = paths.seed_dir(dataset, variant, s)
            _clear_seed(dataset, variant, s)  # no model.pt of an earlier, applicable run
            d.mkdir(parents=True, exist_ok=True)
            r = {"dataset": dataset, "variant": variant, "seed": s, "status": "not applicable",
                 "reason": reason}
            write_atomic(d / "metrics.json", json.dumps(r, indent=2, sort_keys=True) + "\n")
            results.append(r)
        log.warning("%s/%s: not applicable (%s)", dataset, variant, reason)
        return results
    for note in notes:
        log.warning("%s", note)
    workers = cfg.train.workers or default_workers(vcfg)
    results = {s: _finished_seed(vcfg, dataset, variant, s) for s in vcfg.seeds}
    todo = [s for s in vcfg.seeds if results[s] is None]
    if todo and cfg.train.ahead:  # under dvc repro: the pool trains them (pipeline/ahead.py)
        from pipeline import ahead
        results.update(ahead.from_pool(vcfg, dataset, variant, todo))
        todo = [s for s in vcfg.seeds if results[s] is None]
    if todo:
        from pipeline import train
        train.resolve_device(vcfg.train.device)
        for s in todo:  # a direct run (DVC deletes them first): no file of an earlier run stays
            _clear_seed(dataset, variant, s)
        if min(workers, len(todo)) <= 1:
            for s in todo:
                results[s] = train.train_seed(vcfg, dataset, variant, s,
                                              paths.seed_dir(dataset, variant, s), notes=notes)
        else:
            results.update(train._train_seeds_in_processes(vcfg, dataset, variant, todo, notes,
                                                           min(workers, len(todo))))
    resume.clean(dataset, variant)  # every seed is in the outputs now
    return [results[s] for s in vcfg.seeds]


def check_inputs(cfg: Config, dataset: str, variant: str) -> None:
    """The two files training reads are intact (checksums), this dataset's, made from each other
    and under the settings of params.yaml and of this variant (pipeline/data/belong.py)."""
    store, text = paths.aligned_store(dataset), paths.text_features(dataset)
    verify_inputs(store, text)
    attrs, text_attrs = read_attrs(store), read_attrs(text)
    belong.check_aligned(cfg, dataset, store, attrs)
    belong.check_embedded(cfg, dataset, store, text, attrs, text_attrs)
    belong.check_text_settings(variant_config(cfg, variant, dataset), dataset, variant, text,
                               text_attrs)


def leave_only_seeds(dataset: str, variant: str, seeds) -> list[str]:
    """Remove the seed folders (run outputs and curves) of seeds not asked for: a direct run of
    the stage after `seeds` shrank would otherwise leave them for predict and the report to read
    (under dvc repro, DVC deletes the outputs first)."""
    stray, wanted = [], {paths.seed_dir(dataset, variant, s).name for s in seeds}
    for parent in (paths.run_dir(dataset, variant), paths.curves_dir(dataset, variant, 0).parent):
        if not parent.is_dir():
            continue
        for d in sorted(parent.iterdir()):
            if d.name.startswith("seed") and d.name not in wanted:  # predict reads seed*/
                _remove(d)
                stray.append(str(d))
    if stray:
        log.warning("%s/%s: removed the folders of seeds not in `seeds` %s: %s", dataset, variant,
                    list(seeds), ", ".join(stray))
    return stray


def _clear_seed(dataset: str, variant: str, seed: int) -> None:
    _remove(paths.seed_dir(dataset, variant, seed))
    _remove(paths.curves_dir(dataset, variant, seed))


def _remove(path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def default_workers(cfg: Config) -> int:
    """train.workers: null. On CPU, the usable cores (each seed process runs num_threads torch
    threads, 1 by default). On a GPU, one process per usable core as well: each process needs a
    core to feed its card, and the CPU profile's models take a few hundred MiB each, so cores run
    out long before GPU memory (benchmarks/bench_gpu.py projects a paper-size run's memory; set
    train.workers where that says fewer fit)."""
    return max(1, len(os.sched_getaffinity(0)))


def _finished_seed(cfg: Config, dataset: str, variant: str, seed: int) -> dict | None:
    """The result of a seed finished under the same code, parameters and inputs by an interrupted
    run of this stage or by the look-ahead pool (DVC deleted the stage's outputs before running
    it), restored."""
    out = paths.seed_dir(dataset, variant, seed)
    # folder_of, not seed_folder: the look-ahead pool may be writing another seed's folder now
    folder = resume.folder_of(resume.run_record(cfg, dataset, variant), seed)
    if not resume.restore_finished(folder, out, curves=paths.curves_dir(dataset, variant, seed)):
        return None
    from pipeline import ahead
    by = ("the look-ahead pool (pipeline/ahead.py)" if ahead.show_seed_log(folder)  # its log, here
          else "an interrupted run of this stage")
    log.info("%s/%s seed %d: finished by %s under the same code, parameters and inputs; outputs "
             "restored, not retrained", dataset, variant, seed, by)
    return json.loads((out / "metrics.json").read_text())
