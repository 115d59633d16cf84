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

import json
import logging
import shutil

from pipeline import paths, resume
from pipeline.config import Config
from pipeline.data import belong
from pipeline.data.store import read_attrs, verify_inputs, write_atomic
from pipeline.settings import resolve
from pipeline.profiles import variant_config

log = logging.getLogger(__name__)


def run_config(cfg: Config, dataset: str, variant: str, own: Config | None = None
               ) -> tuple[Config, tuple[str, ...], str | None]:
    """What one (dataset, variant) trains (pipeline/settings.py `resolve`, for the dataset's
    task; `own`: the variant's config where the caller has it), and the reason it cannot: the
    variant's, or its model's where the text rule left it no raw text to tokenise."""
    vcfg, notes, reason = resolve(cfg, dataset, variant,
                                  read_attrs(paths.aligned_store(dataset))["task"], own)
    if notes:
        from pipeline.models.baselines import NEEDS
        if "bert" in NEEDS.get(vcfg.model, ()):
            reason = reason or (f"{vcfg.model} fine-tunes BERT's layers and {dataset}'s source has "
                                "no raw text to tokenise")
    return vcfg, notes, reason


def train_variant(cfg: Config, dataset: str, variant: str) -> list[dict]:
    own = variant_config(cfg, variant, dataset)  # once: the checks and the resolution share it
    if own.train.device == "cuda":
        from pipeline import train  # the loop (torch): otherwise only when a seed is trained here
        train.resolve_device("cuda")  # fail before any work if the GPU is not there
    paths.run_dir(dataset, variant).mkdir(parents=True, exist_ok=True)
    check_inputs(cfg, dataset, variant, own)
    vcfg, notes, reason = run_config(cfg, dataset, variant, own)
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
    results = {s: _finished_seed(vcfg, dataset, variant, s) for s in vcfg.seeds}
    todo = [s for s in vcfg.seeds if results[s] is None]
    if todo and cfg.train.ahead:  # under dvc repro: the pool trains them (pipeline/ahead.py)
        from pipeline import ahead
        results.update(ahead.from_pool(vcfg, dataset, variant, todo))
        todo = [s for s in vcfg.seeds if results[s] is None]
    if todo:
        from pipeline import train
        train.resolve_device(vcfg.train.device)
        workers = cfg.train.workers or default_workers(vcfg, dataset, variant, len(todo))
        for s in todo:  # a direct run (DVC deletes them first): no file of an earlier run stays
            _clear_seed(dataset, variant, s)
        if min(workers, len(todo)) <= 1:
            for s in todo:
                results[s] = train.train_seed(vcfg, dataset, variant, s,
                                              paths.seed_dir(dataset, variant, s), notes=notes)
        else:
            results.update(_train_seeds_in_processes(vcfg, dataset, variant, todo, notes,
                                                           min(workers, len(todo))))
    resume.clean(dataset, variant,  # every seed is in the outputs now
                 resume.fingerprint(resume.run_record(vcfg, dataset, variant)))
    return [results[s] for s in vcfg.seeds]


def check_inputs(cfg: Config, dataset: str, variant: str, own: Config | None = None) -> None:
    """The two files training reads are intact (checksums), this dataset's, made from each other
    and under the settings of params.yaml and of this variant (pipeline/data/belong.py)."""
    store, text = paths.aligned_store(dataset), paths.text_features(dataset)
    verify_inputs(store, text)
    attrs, text_attrs = read_attrs(store), read_attrs(text)
    belong.check_aligned(cfg, dataset, store, attrs)
    belong.check_embedded(cfg, dataset, store, text, attrs, text_attrs)
    own = own or variant_config(cfg, variant, dataset)
    belong.check_text_settings(own, dataset, variant, text, text_attrs)


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


def default_workers(cfg: Config, dataset: str | None = None, variant: str | None = None,
                    seeds: int | None = None) -> int:
    """train.workers: null. On CPU, the usable cores (each seed process runs num_threads torch
    threads). On a GPU, as many seed processes as the card's memory holds, measured by a short
    probe of the run's model at its batch size, at most the usable cores
    (pipeline/gpu_fit.py, `seeds_at_once`); the log says how many and why."""
    from pipeline import gpu_fit
    n, reason = gpu_fit.seeds_at_once(cfg, dataset, variant, seeds)
    log.info("%sseed processes: %s", f"{dataset}/{variant}: " if dataset else "", reason)
    return n


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


def _train_seeds_in_processes(cfg: Config, dataset: str, variant: str, seeds: list[int],
                              notes: tuple[str, ...], workers: int) -> dict[int, dict]:
    """Each seed in its own process, at most `workers` at a time; nothing carries over between
    seeds (as in the serial loop, after seed_everything). On a Linux CPU run the processes are
    forked: torch is imported already and the parent has run no torch op (no thread pool to
    inherit), so a worker starts in milliseconds instead of the seconds a fresh interpreter's
    imports take; elsewhere (CUDA, macOS, Windows) they are spawned. Each keeps its own checkpoint
    and finished-seed copy, so a killed stage resumes per seed."""
    import multiprocessing
    import sys
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    import sklearn.metrics  # noqa: F401  (the metrics' import, once, before the workers fork)
    log.info("%s/%s: seeds %s in %d processes (train.workers)", dataset, variant,
             ", ".join(map(str, seeds)), workers)
    level = logging.getLogger().getEffectiveLevel()
    from pipeline import train
    fork = sys.platform == "linux" and train.resolve_device(cfg.train.device).type == "cpu"
    context = multiprocessing.get_context("fork" if fork else "spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {pool.submit(_seed_process, cfg, dataset, variant, s, notes, level): s for s in seeds}
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for f in pending:
            f.cancel()  # a failed seed stops the stage; running seeds finish and keep their records
        return {futures[f]: f.result() for f in futures if f in done or f.done()}


def _seed_process(cfg: Config, dataset: str, variant: str, seed: int, notes: tuple[str, ...],
                  level: int) -> dict:
    """One seed in a worker process; its log lines carry the seed, epochs log one line each."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format=f"%(asctime)s %(levelname)s [{dataset}/{variant} "
                            f"seed {seed}] %(name)s: %(message)s")
    else:
        for h in root.handlers:
            h.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [{dataset}/{variant} "
                                             f"seed {seed}] %(name)s: %(message)s"))
    from pipeline import train
    return train.train_seed(cfg, dataset, variant, seed, paths.seed_dir(dataset, variant, seed),
                      notes=notes, progress=False)
