"""Training ahead of DVC: both cores busy through the whole `dvc repro`.

DVC runs one stage at a time. A train stage's own seeds keep `train.workers` processes busy only
while they last (five seeds on two cores: the fifth alone), and between two stages DVC's
bookkeeping and the next process's start-up (~3 s) leave the cores idle; over the default run's
69 small train stages that was a third of the wall time. So under `dvc repro` (DVC puts
DVC_STAGE in a stage's environment; `train.ahead: true`) the first train stage starts one *pool*
process for the workspace, which keeps `train.workers` seed processes busy:

1. first the seeds of every train stage that has started (each stage announces itself), then
2. ahead of DVC, in DVC's order, the seeds of the next LOOKAHEAD stages *that the running DVC
   command will run* whose outputs are missing or were made under other code, parameters or
   inputs (each seed's metrics.json records its `run_key`).

Which train stages the DVC command runs (`planned_stages`): `dvc repro` and `dvc exp run` (any
`-S`) without targets run every train stage of params.yaml's matrix; with targets, DVC's own
planner (the stages it collects for the targets, with `-s`, `--downstream`, `-p`, `-R`, `--glob`)
on the command line read back from the DVC process. The pool stays off, and each stage trains
its seeds itself, when that command is anything else or does not parse, when it runs fewer than
two train stages, with `--dry`, `-i`, `--queue`, `--run-all` or `--temp`, and on a GPU
(`train.device: cuda`, or `auto` with one visible): seeds of other stages would share the card.

A seed is trained exactly as the stage would train it (`train_stage.run_config`,
`train.train_seed`, in a process of its own from its own seed) and kept where an interrupted stage keeps its finished
seeds (pipeline/resume.py: data/checkpoints/<run>-<hash of code, libraries, parameters, inputs>/done).
The stage restores it from there, byte for byte what it would have trained itself
(tests/e2e/test_ahead_dvc.py), and prints the seed's log lines as they come.

Why it cannot change a result:
- the pool computes every seed's config from params.yaml as it is when the seed starts, keys its
  runs by the code it imported (resume.pin_code; a seed process whose files on disk differ
  refuses), and stops when the code on disk is no longer that code; a stage announces the key (hash) of
  its run, and a pool computing another key declines that stage (its seeds not yet started);
- a stage trains a seed itself when the pool has stopped, declined, or failed on it (the error
  then shows in the stage's own log, as without the pool);
- a process training a seed holds its folder's lock (resume.hold): no clean-up removes a folder
  a seed is written in, and no two processes train one folder at once;
- the pool stops, killing its seed processes, when the DVC process that started it has ended.
  It then removes the folders of stages that no stage of that command claimed (announced under
  the same key): what it trained ahead for nothing (e.g. a stage DVC restored from its
  run-cache). A claimed stage's folders stay, as a killed stage's own: a rerun resumes them.
The pool process itself is pipeline/ahead_pool.py. Files: data/checkpoints/pool/ (lock,
pool.json, scope.json: the stages it may train, or why it is off, started, pool.log,
usage.json: the pool's CPU time, which `/usr/bin/time dvc repro` does not see); each seed's log
is train.log in its checkpoint folder.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline import paths, resume
from pipeline.data.store import write_atomic

log = logging.getLogger(__name__)

POOL = paths.DATA / "checkpoints" / "pool"
LOOKAHEAD = 30  # stages past the newest started one (more than a dataset's 23 variants)
FAILED, SEED_LOG = "failed", "train.log"
POLL = 0.1  # seconds


# ------------------------------------------------------------------ processes

def _proc(pid: int):
    import psutil
    try:
        p = psutil.Process(pid)
        return p if p.status() != psutil.STATUS_ZOMBIE else None
    except psutil.Error:
        return None


def _same(ident: dict | None) -> bool:
    """The process `ident` ({pid, started}) still runs (not another one under a reused pid)."""
    p = _proc(ident["pid"]) if ident else None
    return p is not None and abs(p.create_time() - ident["started"]) < 0.01


def _ident(pid: int) -> dict | None:
    p = _proc(pid)
    return {"pid": pid, "started": p.create_time()} if p else None


def _dvc_args(cmd: list[str]) -> list[str] | None:
    """The arguments after `dvc` in a command line (`dvc ...`, `python .../dvc ...`,
    `python -m dvc ...`), or None when it is no DVC command."""
    if cmd[1:3] == ["-m", "dvc"]:
        return cmd[3:]
    for i, a in enumerate(cmd[:3]):
        if os.path.basename(a) == "dvc":
            return cmd[i + 1:]
    return None


def dvc_process() -> dict | None:
    """The DVC process running this stage ({pid, started}), or None when not run by DVC."""
    if os.name != "posix" or "DVC_STAGE" not in os.environ:
        return None
    import psutil
    try:
        for p in psutil.Process().parents():
            if _dvc_args(p.cmdline()) is not None:
                return _ident(p.pid)
    except psutil.Error:
        pass
    return None


# ------------------------------------------------------------------ what DVC will run

def planned_stages(args: list[str], matrix: list[tuple[str, str]]) -> tuple[list | None, str]:
    """The train stages [(dataset, variant)] that `dvc <args>`, run in this folder, runs, in its
    order, or None with the reason the pool cannot know them (it then stays off)."""
    import contextlib
    import io
    try:
        from dvc.cli.parser import get_main_parser
        from dvc.commands.experiments.run import CmdExperimentsRun
        from dvc.commands.repro import CmdRepro
        with contextlib.redirect_stderr(io.StringIO()):
            ns = get_main_parser().parse_args(args)
    except (Exception, SystemExit) as e:  # argparse exits; DVC's own parser raises
        return None, f"`dvc {' '.join(args)}` does not parse here ({type(e).__name__})"
    if ns.func not in (CmdRepro, CmdExperimentsRun):
        return None, f"`dvc {' '.join(args)}` is neither `dvc repro` nor `dvc exp run`"
    if ns.dry or ns.interactive:
        return None, "--dry or --interactive: DVC may run none of the stages"
    if ns.func is CmdExperimentsRun and (ns.queue or ns.run_all or ns.tmp_dir):
        return None, "a queued or temporary experiment runs in another folder"
    if not ns.targets or ns.all_pipelines:  # every stage of dvc.yaml
        return list(matrix), "every train stage"
    try:
        from dvc.repo import Repo
        from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro
        with Repo(os.getcwd()) as repo:  # reads dvc.yaml and params.yaml; locks nothing
            stages = collect_stages(repo, ns.targets, recursive=ns.recursive,
                                    glob=getattr(ns, "glob", False))  # (not in exp run)
            if ns.single_item and not ns.pipeline:
                steps = stages
            else:
                steps = plan_repro(get_active_graph(repo.index.graph), stages,
                                   pipeline=ns.pipeline, downstream=ns.downstream and not ns.pipeline)
            names = [s.addressing for s in steps]
    except Exception as e:  # noqa: BLE001  DVC's error is the stage's to report
        return None, f"DVC's plan for {' '.join(ns.targets)} is unknown here ({type(e).__name__}: {e})"
    index = {f"train@{d}-{v}": (d, v) for d, v in matrix}
    unknown = [n for n in names if n.startswith("train@") and n not in index]
    if unknown:
        return None, f"{', '.join(unknown)} are not in params.yaml's matrix"
    return [index[n] for n in names if n in index], f"the train stages of {' '.join(ns.targets)}"


def _why_off(dvc: dict, vcfg, dataset: str, variant: str) -> tuple[str | None, list | None]:
    """(None, the stages the pool may train) when it may run for this DVC process, else (why not,
    None)."""
    if _on_gpu(vcfg.train.device):
        return "training on a GPU: other stages' seeds would share the card", None
    p = _proc(dvc["pid"])
    try:
        args, cwd = _dvc_args(p.cmdline()) if p else None, p.cwd() if p else None
    except Exception as e:  # noqa: BLE001  psutil.Error
        return f"the DVC command cannot be read ({type(e).__name__})", None
    if args is None:
        return "the DVC process has ended", None
    if os.path.realpath(cwd) != os.path.realpath(os.getcwd()):
        return f"DVC runs in {cwd}, this stage in {os.getcwd()}", None
    stages, why = planned_stages(args, [(d, v) for d in vcfg.datasets for v in vcfg.variants])
    if stages is None:
        return why, None
    if (dataset, variant) not in stages:
        return f"{dataset}/{variant} is not among {why} (DVC's plan not understood)", None
    if len(stages) < 2:
        return f"{why}: one train stage, nothing to train ahead", None
    return None, stages


def _on_gpu(device: str) -> bool:
    """Whether train.device trains on a GPU here; torch is imported only where a GPU's device
    file exists (a stage that restores seeds needs no torch)."""
    if device != "auto":
        return device != "cpu"
    import glob
    if not any(glob.glob(g) for g in ("/dev/nvidia[0-9]*", "/dev/kfd", "/dev/dxg")):
        return False
    import torch
    return torch.cuda.is_available()


# ------------------------------------------------------------------ the stage's side

def from_pool(vcfg, dataset: str, variant: str, seeds: list[int]) -> dict[int, dict]:
    """Under `dvc repro`: the seeds the pool trained for this stage (waiting for those it trains
    now), restored into the stage's outputs. Seeds left out of the result the stage trains itself;
    outside DVC the result is empty."""
    dvc = dvc_process()
    if dvc is None:
        return {}
    record = resume.run_record(vcfg, dataset, variant)
    key = resume.fingerprint(record)
    POOL.mkdir(parents=True, exist_ok=True)
    pool = _pool_for(dvc, vcfg, dataset, variant)
    if pool is None:
        return {}
    with open(POOL / "started", "a") as f:  # one short line: an atomic append
        f.write(f"{dataset} {variant} {key}\n")
    folders = {s: resume.folder_of(record, s) for s in seeds}
    shown = {s: 0 for s in seeds}
    results: dict[int, dict] = {}
    waiting = set(seeds)
    log.info("%s/%s: seeds %s from the look-ahead pool (pid %d; train.ahead)", dataset, variant,
             ", ".join(map(str, seeds)), pool["pid"])
    while waiting:
        for s in sorted(waiting):
            f = folders[s]
            shown[s] = _show_log(f / SEED_LOG, shown[s])
            if (f / resume.DONE / "metrics.json").exists():
                shown[s] = _show_log(f / SEED_LOG, shown[s])
                out = paths.seed_dir(dataset, variant, s)
                resume.restore_finished(f, out, curves=paths.curves_dir(dataset, variant, s))
                results[s] = json.loads((out / "metrics.json").read_text())
                waiting.discard(s)
            elif (f / FAILED).exists():
                why = (f / FAILED).read_text().strip().splitlines() or ["?"]
                log.warning("%s/%s seed %d: the look-ahead pool did not train it (%s); the stage "
                            "trains it itself", dataset, variant, s, why[-1][:300])
                waiting.discard(s)
        if waiting and not _same(pool):
            log.warning("%s/%s: the look-ahead pool has stopped (its log: %s); the stage trains "
                        "seeds %s itself", dataset, variant, POOL / "pool.log",
                        ", ".join(map(str, sorted(waiting))))
            break
        if waiting:
            time.sleep(POLL)
    return results


def show_seed_log(folder: Path) -> bool:
    """Print the log of a seed the pool trained (False when it has none)."""
    return _show_log(folder / SEED_LOG, 0) > 0


def _show_log(path: Path, offset: int) -> int:
    """Print a seed's new log lines (the pool writes them) into the stage's log; the new offset."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset
    end = data.rfind(b"\n") + 1  # whole lines only
    if end:
        sys.stderr.write(data[:end].decode(errors="replace"))
        sys.stderr.flush()
    return offset + end


def _pool_for(dvc: dict, vcfg, dataset: str, variant: str) -> dict | None:
    """The pool serving this DVC process: the running one, or one started now; None when it stays
    off for this DVC command (scope.json says why, so later stages need not ask again)."""
    info = _read_pool()
    if info and _same(info):
        if info.get("dvc") == dvc:
            return info
        os.kill(info["pid"], signal.SIGTERM)  # left by an earlier DVC run; it would stop anyway
        deadline = time.time() + 10
        while _same(info) and time.time() < deadline:
            time.sleep(POLL)
    scope = _read(POOL / "scope.json")
    if not scope or scope.get("dvc") != dvc:
        why, stages = _why_off(dvc, vcfg, dataset, variant)
        scope = {"dvc": dvc, "off": why, "stages": stages}
        write_atomic(POOL / "scope.json", json.dumps(scope) + "\n")
    if scope["off"]:
        log.info("%s/%s: the look-ahead pool stays off (%s); the stage trains its seeds itself",
                 dataset, variant, scope["off"])
        return None
    for name in ("pool.json", "usage.json"):
        (POOL / name).unlink(missing_ok=True)
    (POOL / "started").write_text("")  # a new pool reads only this DVC run's stages
    with open(POOL / "pool.log", "wb") as out:
        p = subprocess.Popen([sys.executable, "-m", "pipeline", "pool", "--dvc-pid", str(dvc["pid"])],
                             stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)  # outlives this stage; DVC does not wait on it
    deadline = time.time() + 60
    while time.time() < deadline and p.poll() is None:
        info = _read_pool()
        if info and info["pid"] == p.pid:
            return info
        time.sleep(POLL)
    log.warning("the look-ahead pool did not start (its log: %s); this stage trains its own seeds",
                POOL / "pool.log")
    return None


def _read_pool() -> dict | None:
    return _read(POOL / "pool.json")


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _up_to_date(ds: str, variant: str, seed: int, run_key: str) -> bool:
    try:
        m = json.loads((paths.seed_dir(ds, variant, seed) / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    return m.get("run_key") == run_key
