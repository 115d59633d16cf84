"""The look-ahead pool process (`python -m pipeline pool`, started by a train stage under
`dvc repro`; what it does and why it cannot change a result: pipeline/ahead.py)."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from pipeline import paths, resume
from pipeline.ahead import (FAILED, LOOKAHEAD, POLL, POOL, SEED_LOG, _ident, _read, _same,
                            _up_to_date)
from pipeline.data.store import write_atomic

log = logging.getLogger(__name__)


def serve(dvc_pid: int, params: str = "params.yaml") -> int:
    """The pool process (`python -m pipeline pool`, started by a train stage)."""
    import fcntl
    POOL.mkdir(parents=True, exist_ok=True)
    lock = open(POOL / "lock", "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # one pool a workspace
    except BlockingIOError:
        log.info("another pool serves this workspace; exiting")
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop through run()'s cleanup
    dvc = _ident(dvc_pid)
    log.setLevel(logging.INFO)  # pool.log always says what the pool did
    scope = _read(POOL / "scope.json") or {}  # written by the stage that started it (ahead.py)
    if scope.get("dvc") != dvc or scope.get("off") or not scope.get("stages"):
        log.info("no stages to train for the DVC process %s (scope.json: %s); exiting", dvc_pid, scope)
        return 0
    me = _ident(os.getpid())
    write_atomic(POOL / "pool.json", json.dumps({**me, "dvc": dvc}) + "\n")
    seed_level = logging.getLogger().getEffectiveLevel()  # the stage's (PIPELINE_LOG) for seed logs
    start = time.time()
    try:
        return Pool(dvc, params, seed_level, [tuple(x) for x in scope["stages"]]).run()
    finally:
        _write_usage(time.time() - start)
        (POOL / "pool.json").unlink(missing_ok=True)


def _write_usage(wall: float) -> None:
    """usage.json: the pool's CPU time and peak memory with its seed processes'. The pool is no
    child of DVC's, so `/usr/bin/time dvc repro` does not count it: add these (docs/performance.md,
    Performance; benchmarks/bench_repro.py)."""
    import resource
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    write_atomic(POOL / "usage.json", json.dumps({
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime, 2),
        "peak_rss_mib_pool": round(me.ru_maxrss / 1024, 1),
        "peak_rss_mib_seed_process": round(kids.ru_maxrss / 1024, 1)}, indent=1) + "\n")


class Pool:
    def __init__(self, dvc: dict | None, params: str, seed_level: int = logging.INFO,
                 stages: list[tuple[str, str]] | None = None):
        """`stages`: the train stages the DVC command runs, in its order (ahead.planned_stages;
        None: params.yaml's whole matrix)."""
        import multiprocessing

        # imported once here, not in every forked seed process (the optimizer's and the metrics')
        import dvclive  # noqa: F401
        import sklearn.metrics  # noqa: F401
        import torch._dynamo  # noqa: F401

        from pipeline import train, train_stage
        from pipeline.settings import load_config
        self.train, self.load_config, self.params = train, load_config, params
        self.dvc, self.seed_level = dvc, seed_level
        self.code = resume.code_hashes(disk=True)
        resume.pin_code(self.code)  # keys name the code imported here (forked seeds inherit it)
        cfg = load_config(params)
        if train.resolve_device(cfg.train.device).type != "cpu":  # ahead._why_off keeps it off
            raise SystemExit("the look-ahead pool trains on CPU only")
        self.workers = cfg.train.workers or train_stage.default_workers(cfg)
        self.order = stages or [(d, v) for d in cfg.datasets for v in cfg.variants]  # DVC's order
        self.fork = sys.platform == "linux"
        self.mp = multiprocessing.get_context("fork" if self.fork else "spawn")
        self.flights: dict[Path, tuple] = {}  # folder -> (process, run, seed)
        self.owned: dict[Path, tuple] = {}  # folders it started a seed in -> (ds, variant, key)
        self.announced: list[tuple[str, str, str]] = []
        self.read = 0
        self.plans: dict[tuple, tuple] = {}
        self.closed: set[tuple] = set()  # started stages with every seed done or failed
        self.finished: set[Path] = set()  # seed folders seen done (see _needed)
        self.verified: dict[str, tuple] = {}  # dataset -> stamp of its checked input files
        self.cfg, self.cfg_stamp = cfg, None
        self.checked_code = time.time()

    def run(self) -> int:
        log.info("look-ahead pool: %d seed processes for the DVC process %s", self.workers,
                 self.dvc and self.dvc["pid"])
        try:
            while _same(self.dvc):
                if time.time() - self.checked_code > 5:
                    if resume.code_hashes(disk=True) != self.code:
                        log.warning("the code changed on disk; the pool stops (stages train "
                                    "their own seeds)")
                        break
                    self.checked_code = time.time()
                self._reap()
                self._read_announcements()
                if len(self.flights) < self.workers and self._dispatch():
                    continue
                time.sleep(POLL)
            else:
                log.info("the DVC process has ended; the pool stops")
        finally:
            for proc, run, seed in self.flights.values():
                proc.kill()
                proc.join()
                log.info("%s seed %d: stopped", "/".join(run), seed)
            self._remove_unclaimed()
        return 0

    def _remove_unclaimed(self) -> None:
        """The DVC command has ended: remove what the pool trained for stages that no stage of
        it claimed (announced under the same key). A claimed stage's folders are its own, as if
        it had trained them: they stay for a rerun to resume (then resume.clean removes them)."""
        claimed = set(self.announced)
        gone = [f for f, entry in self.owned.items()
                if entry not in claimed and f.exists() and resume.remove_unless_in_use(f)]
        if gone:
            log.info("removed %d seed folders trained ahead for stages this DVC command did not "
                     "run: %s", len(gone), ", ".join(f.name for f in gone))

    def _read_announcements(self) -> None:
        try:
            with open(POOL / "started") as f:
                f.seek(self.read)
                text = f.read()
        except FileNotFoundError:
            return
        end = text.rfind("\n") + 1
        self.read += len(text[:end].encode())
        for line in text[:end].splitlines():
            ds, variant, key = line.split()
            self.announced.append((ds, variant, key))
            # DVC deleted the stage's outputs before running it: look again
            self.finished -= {f for f in self.finished if f.name.startswith(f"{ds}-{variant}-seed")}

    def _cursor(self) -> int:
        """Index (in DVC's order) of the newest stage that has started."""
        known = [self.order.index((d, v)) for d, v, _ in self.announced if (d, v) in self.order]
        return max(known, default=0)

    def _reap(self) -> None:
        for folder, (proc, run, seed) in list(self.flights.items()):
            if proc.exitcode is None:
                continue
            proc.join()
            del self.flights[folder]
            if proc.exitcode != 0 and not (folder / FAILED).exists():
                write_atomic(folder / FAILED, f"its process ended with exit code {proc.exitcode}\n")
            log.info("%s seed %d: %s", "/".join(run), seed,
                     "done" if proc.exitcode == 0 else f"failed (see {folder / FAILED})")

    def _cfg(self):
        """params.yaml as it is now (None while it does not load, e.g. half-saved)."""
        stamp = _stamp(Path(self.params))
        if stamp is None:
            return None
        if stamp != self.cfg_stamp:
            self.cfg_stamp = stamp
            try:
                self.cfg = self.load_config(self.params)
            except Exception as e:  # the stage will say what is wrong with it
                log.info("params.yaml does not load now (%s)", e)
                self.cfg = None
        return self.cfg

    def _plan(self, ds: str, variant: str):
        """(vcfg, notes, key, seeds) of a run as its stage would compute it now, or
        None when the pool cannot train it (not applicable, inputs missing or unverified, config
        file stale). Recomputed when params.yaml, an input or the config file changes."""
        files = [Path(self.params), paths.aligned_store(ds), paths.text_features(ds),
                 paths.DATA / "configs" / ds / f"{variant}.json"]
        stamp = _stamp(*files)
        if stamp is None:
            return None
        if (ds, variant) not in self.plans or self.plans[(ds, variant)][0] != stamp:
            self.plans[(ds, variant)] = (stamp, self._compute_plan(ds, variant))
        return self.plans[(ds, variant)][1]

    def _compute_plan(self, ds: str, variant: str):
        from pipeline import effective, train_stage
        from pipeline.data.store import verify_inputs
        from pipeline.errors import PipelineError
        from pipeline.profiles import variant_config
        cfg = self._cfg()
        if cfg is None:
            return None
        try:
            effective.check_file(variant_config(cfg, variant, ds), ds, variant)
            inputs = (paths.aligned_store(ds), paths.text_features(ds))
            stamp = _stamp(*inputs)
            if stamp is None or self.verified.get(ds) != stamp:  # checksums once a dataset (1.4 s for MOSEI's)
                verify_inputs(*inputs)
                self.verified[ds] = stamp
            vcfg, notes, reason = train_stage.run_config(cfg, ds, variant)
        except (PipelineError, OSError, KeyError, ValueError) as e:
            log.info("%s/%s: not trained ahead (%s)", ds, variant, e)
            return None
        if reason:
            return None
        return vcfg, notes, resume.fingerprint(resume.run_record(vcfg, ds, variant)), list(cfg.seeds)

    def _candidates(self):
        """(ds, variant, announced key or None) in the order the pool takes them: the stages
        that have started, then the next LOOKAHEAD in DVC's order."""
        for entry in self.announced:
            if entry not in self.closed:
                yield entry
        cursor = self._cursor()
        for ds, variant in self.order[cursor + 1: cursor + 1 + LOOKAHEAD]:
            yield ds, variant, None

    def _dispatch(self) -> bool:
        """Start the first seed that needs training; False when there is none."""
        for entry in self._candidates():
            ds, variant, announced = entry
            plan = self._plan(ds, variant)
            if plan is None or (announced and announced != plan[2]):
                if announced:
                    cfg = self._cfg()
                    self._decline(ds, variant, announced, cfg.seeds if cfg else [],
                                  "its inputs or config are not ready for the pool (the stage "
                                  "checks them itself)" if plan is None else "the stage runs under "
                                  "other code, parameters or inputs than the pool sees")
                    self.closed.add(entry)
                continue
            vcfg, notes, key, seeds = plan
            waiting = False
            for seed in seeds:
                folder = paths.checkpoint_dir(ds, variant, seed, key)
                if not self._needed(ds, variant, seed, folder):
                    continue
                waiting = True
                if folder not in self.flights and self._start(vcfg, notes, ds, variant, seed, folder):
                    return True
            if announced and not waiting:
                self.closed.add(entry)
        return False

    def _needed(self, ds: str, variant: str, seed: int, folder: Path) -> bool:
        """Whether a seed still needs training: not done (by the pool: done/; by its stage, or
        an earlier run: its output records this run_key), not failed."""
        if folder in self.finished:
            return False
        if ((folder / resume.DONE / "metrics.json").exists() or (folder / FAILED).exists()
                or _up_to_date(ds, variant, seed, folder.name)):
            self.finished.add(folder)
            return False
        return True

    def _decline(self, ds, variant, key, seeds, why: str) -> None:
        """Tell the stage (run `key`) to train its seeds itself, but for those the pool trains now:
        they were started under that key, so they finish for the stage (it waits for them)."""
        for seed in seeds or []:
            f = paths.checkpoint_dir(ds, variant, seed, key)
            if f in self.flights:
                continue
            if not (f / FAILED).exists() and not (f / resume.DONE).exists():
                f.mkdir(parents=True, exist_ok=True)
                write_atomic(f / FAILED, why + "\n")

    def _start(self, vcfg, notes, ds, variant, seed, folder) -> bool:
        """Start a seed process; False when another process (its stage) trains that seed now.
        Forked, the seed process inherits the folder's lock taken here, so no clean-up can take
        the folder between its start and its own resume.seed_folder."""
        if self.fork and not resume.hold(folder, wait=False):
            return False
        folder.mkdir(parents=True, exist_ok=True)
        proc = self.mp.Process(target=_train_one, args=(vcfg, ds, variant, seed, notes, folder,
                                                        self.code,
                                                        self.seed_level),
                               name=f"{ds}/{variant} seed {seed}")
        try:
            proc.start()
        finally:
            resume.release(folder, unlock=False)  # the child holds it now (or nobody, if it failed)
        self.flights[folder] = (proc, (ds, variant), seed)
        self.owned[folder] = (ds, variant, folder.name.rsplit("-", 1)[1])
        log.info("%s/%s seed %d: started", ds, variant, seed)
        return True


def _stamp(*files: Path) -> tuple | None:
    """Which version of each file (mtime, size, inode): what the pool's caches are keyed by;
    None when one is missing."""
    try:
        return tuple((st.st_mtime_ns, st.st_size, st.st_ino) for st in map(os.stat, files))
    except OSError:
        return None


def _die_with_parent() -> None:
    """Linux: this seed process is killed when the pool dies, however it dies (kill -9 too)."""
    if sys.platform == "linux":
        import ctypes
        try:
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _train_one(vcfg, ds: str, variant: str, seed: int, notes, folder: Path, code: dict,
               level: int) -> None:
    """One seed in a process of its own: its log goes to train.log in its folder (the stage
    prints it), its outputs to done/ (resume.keep_finished)."""
    import shutil
    _die_with_parent()
    if resume.code_hashes(disk=True) != code:  # (a spawned process imports the files afresh)
        write_atomic(folder / FAILED, "the code on disk changed after the pool started\n")
        os._exit(1)
    resume.pin_code(code)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.FileHandler(folder / SEED_LOG, mode="a")
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [{ds}/{variant} seed {seed}] "
                                           "%(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)  # the stage's (PIPELINE_LOG)
    out, curves = folder / "out", folder / "curves"
    try:
        for d in (out, curves):
            shutil.rmtree(d, ignore_errors=True)
        from pipeline.train import train_seed
        train_seed(vcfg, ds, variant, seed, out, notes=notes, progress=False, curves=curves)
        for d in (out, curves):
            shutil.rmtree(d, ignore_errors=True)
    except BaseException:
        text = traceback.format_exc()
        logging.getLogger(__name__).error("%s", text)
        write_atomic(folder / FAILED, text)
        handler.flush()
        os._exit(1)
    handler.flush()
    os._exit(0)  # no atexit work of the parent's in a forked child
