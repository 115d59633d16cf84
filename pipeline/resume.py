"""What an interrupted training stage may reuse, and when.

Two things survive a killed `train` stage, both under data/checkpoints/ (outside DVC's outputs,
which DVC deletes before it reruns a stage):

- `last.pt`, the checkpoint of the seed in progress, written after every epoch;
- `done/`, a copy of a finished seed's output folder, so that a rerun after a kill in seed 2
  restores seeds 0 and 1 instead of training them again.

Both are reused only by a run with the same code, parameters and inputs: the folder's name holds
a hash of the three, and `key.json` inside records them, so that a folder made under anything
else is discarded with a log line that names what changed. The code is the train stage's code
deps in dvc.yaml (CODE_DEPS; a test keeps the two lists equal), hashed by content; the parameters
are the variant's effective config without the keys that only choose which runs exist; the
inputs are the sha256 of the aligned store and the text features. When the stage has finished
every seed, its folders are removed: DVC's cache then holds the outputs.

A checkpoint that cannot be read (truncated, corrupt, or not one of this model) is named in a
warning, renamed to `last.pt.corrupt-<time>` and the seed restarts from its first epoch.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

import pipeline
from pipeline import paths
from pipeline.config import Config, as_dict, fingerprint
from pipeline.data.download import sha256_file
from pipeline.data.store import _raise_if_disk_full, atomic_path, remove_temp_files, write_atomic

log = logging.getLogger(__name__)

# The train stage's code deps in dvc.yaml (tests/test_reliability_resume.py checks they agree).
CODE_DEPS = ("pipeline/train.py", "pipeline/train_stage.py", "pipeline/resume.py",
             "pipeline/effective.py", "pipeline/variants.py",
             "pipeline/config.py", "pipeline/profiles.py", "pipeline/method_settings.py",
             "pipeline/precision.py", "pipeline/models", "pipeline/balancers",
             "pipeline/metrics.py",
             "pipeline/data/store.py", "pipeline/data/schema.py", "pipeline/data/belong.py",
             "pipeline/features/text.py")
# Keys that choose which runs exist, not what a run computes; the data sections act through the
# input files, which are hashed themselves.
NOT_A_RUN_PARAMETER = ("seeds", "variants", "datasets", "data", "synthetic")
KEY_FILE, DONE = "key.json", "done"
CURVES = "_curves"  # inside done/: the seed's dvclive curves (data/curves/...)
_input_hashes: dict[tuple, str] = {}


_pinned_code: dict[str, str] | None = None


def pin_code(hashes: dict[str, str] | None) -> None:
    """A long-lived process (the look-ahead pool, its seed processes) keys its runs by the code it
    imported, not by the files on disk, which may have changed since (None: the files again)."""
    global _pinned_code
    _pinned_code = None if hashes is None else dict(hashes)


def code_hashes(disk: bool = False) -> dict[str, str]:
    """sha256 of every file of CODE_DEPS (folders recursively, without bytecode), by path; the
    pinned hashes of this process's code where pin_code set them (unless `disk`)."""
    if _pinned_code is not None and not disk:
        return dict(_pinned_code)
    root = Path(pipeline.__file__).resolve().parent.parent
    out = {}
    for dep in CODE_DEPS:
        p = root / dep
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc":
                out[f.relative_to(root).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _file_hash(path: Path) -> str:
    st = path.stat()  # hashed once per process and file version
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _input_hashes:
        _input_hashes[key] = sha256_file(path)
    return _input_hashes[key]


def run_record(cfg: Config, dataset: str, variant: str) -> dict:
    """What a checkpoint or finished seed must match to be reused: code, parameters, inputs."""
    params = {k: v for k, v in as_dict(cfg).items() if k not in NOT_A_RUN_PARAMETER}
    inputs = {str(p): _file_hash(p) for p in (paths.aligned_store(dataset), paths.text_features(dataset))}
    return {"dataset": dataset, "variant": variant, "code": code_hashes(), "params": params,
            "inputs": inputs}


def folder_of(record: dict, seed: int) -> Path:
    """The seed's folder for this record, touching nothing (another process may be writing it)."""
    return paths.checkpoint_dir(record["dataset"], record["variant"], seed, fingerprint(record))


def seed_folder(record: dict, seed: int) -> Path:
    """data/checkpoints/<dataset>-<variant>-seed<k>-<hash of the record>/, after discarding the
    folders of the same seed made under other code, parameters or inputs."""
    ds, variant = record["dataset"], record["variant"]
    d = folder_of(record, seed)
    pattern = re.compile(rf"^{re.escape(ds)}-{re.escape(variant)}-seed{seed}-[0-9a-f]+$")
    for other in sorted(d.parent.glob(f"{ds}-{variant}-seed{seed}-*")):
        if other != d and other.is_dir() and pattern.match(other.name):
            log.warning("%s seed %d: discarding %s (not resumed): %s", f"{ds}/{variant}", seed,
                        other, _what_changed(other / KEY_FILE, record))
            shutil.rmtree(other, ignore_errors=True)
    d.mkdir(parents=True, exist_ok=True)
    remove_temp_files(d)
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
    return "; ".join(parts) or "made under another record format"


def _diff(old, new, prefix="") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else k)
        return out
    return [] if old == new else [f"{prefix} {old!r} -> {new!r}"]


# ------------------------------------------------------------------ checkpoints

def save_checkpoint(path: Path, model, optim, state: dict) -> None:
    import torch  # here: a stage that only restores finished seeds never imports torch
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: a full disk is an OSError
        torch.save({"model": model.state_dict(), "optim": optim.state_dict(),
                    "torch_rng": torch.get_rng_state(), "state": state}, f)


def load_checkpoint(path: Path, model, optim, device) -> dict | None:
    """Restore model, optimizer and RNG from `path`; returns the trainer state, or None when there
    is no checkpoint or it cannot be used (then it is set aside and the seed starts afresh)."""
    if not path.exists():
        return None
    import torch
    try:
        saved = torch.load(path, map_location=device, weights_only=False)
        _check(saved, model, optim)
    except Exception as e:  # truncated, corrupt, or another model's: never a reason to stop
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(path, aside)
        log.warning("%s: unreadable checkpoint (%s: %s); set aside as %s, the seed restarts from "
                    "its first epoch", path, type(e).__name__, (str(e).splitlines() or [""])[0][:200], aside)
        return None
    optim.load_state_dict(saved["optim"])
    torch.set_rng_state(saved["torch_rng"])
    model.load_state_dict(saved["model"])
    return saved["state"]


def _check(saved, model, optim) -> None:
    """Everything load_checkpoint applies, checked first, so a bad file changes nothing."""
    import torch
    if not isinstance(saved, dict) or not {"model", "optim", "torch_rng", "state"} <= set(saved):
        raise ValueError("not a checkpoint of this trainer (keys missing)")
    mine = model.state_dict()
    theirs = saved["model"]
    if set(theirs) != set(mine) or any(tuple(theirs[k].shape) != tuple(v.shape) for k, v in mine.items()):
        raise ValueError("its weights do not fit this model")
    groups = saved["optim"].get("param_groups", [])
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in optim.param_groups]:
        raise ValueError("its optimizer state does not fit this model")
    rng = saved["torch_rng"]
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8 or rng.shape != torch.get_rng_state().shape:
        raise ValueError("its RNG state is malformed")
    state = saved["state"]
    if not isinstance(state, dict) or not {"epoch", "history", "best_model"} <= set(state):
        raise ValueError("its trainer state is incomplete")


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


def clean(dataset: str, variant: str) -> None:
    """Every seed of the stage is finished: its outputs are what DVC records now."""
    pattern = re.compile(rf"^{re.escape(dataset)}-{re.escape(variant)}-seed\d+-[0-9a-f]+$")
    for d in (paths.DATA / "checkpoints").glob(f"{dataset}-{variant}-seed*"):
        if d.is_dir() and pattern.match(d.name):
            shutil.rmtree(d, ignore_errors=True)
