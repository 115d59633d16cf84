"""The HDF5 store: one file per dataset, written atomically, read lazily.

Layout (DESIGN.md, "HDF5 store"):
  /{train,valid,test}/{audio,vision}        float32 (N, L, d)
  /{split}/{audio,vision}_len                int64 (N,)   true lengths (after a requested cut)
  /{split}/text, /{split}/text_len           precomputed text features, when the source has them
  /{split}/label                             float32 (N,) in [-3, 3], or int64 (N, 4) for IEMOCAP
  /{split}/id, /{split}/raw_text             utf-8 strings (raw_text only where known)
  Each modality has its own number of steps L_m (unaligned files: e.g. 50 / 375 / 500).
  file attrs: dataset, source, synthetic, task, features (names, e.g. "MMSA aligned_50.pkl audio
  5-d"), dims, lengths (L_m), alignment (word | token | none), cut (utterances cut per split and
  modality), ingest (check counts), seq_len (word-level sources), input sha256s, params and
  max_empty_fraction (the settings it was made under), and content_sha256: a digest of every
  array, which `verify_store` recomputes before training.

Text features computed by the `embed` stage live in a second file of the same layout (text,
text_len, text_bert) so that a DVC output is never rewritten by a later stage. Its attributes
record the aligned store it was made from (store_content_sha256) and how (text_settings: encoder,
seq_len, tokenizer, max_tokens, raw_text), which training compares (pipeline/data/belong.py).
"""
from __future__ import annotations

import errno
import glob
import hashlib
import json
import logging
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from pipeline.data.schema import LABEL_RANGE, SPLITS, PaddedSplit
from pipeline.errors import DataError, DiskFullError

log = logging.getLogger(__name__)
STR = h5py.string_dtype("utf-8")


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds,
    so an interrupted or failed write never leaves a file that looks complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        _raise_if_disk_full(e, path)
        raise
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as e:
        _raise_if_disk_full(e, path)
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _raise_if_disk_full(e: OSError, path: Path) -> None:
    # h5py reports a failed write as OSError without errno, the errno inside its message
    if e.errno == errno.ENOSPC or "No space left on device" in str(e) or "errno = 28" in str(e):
        raise DiskFullError(f"{path}: disk full (no space left on device) while writing it; the "
                            f"previous version, if any, is untouched. Free space on the file system "
                            f"of {path.parent} and rerun") from None


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write a whole file so that it appears complete or not at all."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


# atomic_path's temporary names: "." + target name + "." + 8 random characters (tempfile's
# alphabet) + ".tmp"
_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def remove_temp_files(*targets: Path) -> list[Path]:
    """Remove what killed writers left behind: atomic_path's temporary files of each target file
    (siblings `.<name>.<random>.tmp`) and, for a target folder, those anywhere inside it. Called
    at a stage's start for its own outputs only, so no live writer of another stage is touched."""
    removed = []
    for target in map(Path, targets):
        if target.is_dir():
            found = [p for p in target.rglob(".*.tmp") if _TEMP.match(p.name)]
        elif target.parent.is_dir():
            found = [p for p in target.parent.glob(f".{glob.escape(target.name)}.*.tmp")
                     if _TEMP.match(p.name)]
        else:
            found = []
        for p in found:
            if p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
                log.info("removed %s, left by an interrupted write", p)
    return removed


def _check_split(name: str, s: PaddedSplit, task: str) -> None:
    n = len(s.ids)
    if n == 0:
        raise DataError(f"{name}: split is empty")
    arrays = {"audio": s.audio, "vision": s.vision, "audio_len": s.audio_len,
              "vision_len": s.vision_len, "label": s.labels}
    if s.text is not None:
        arrays.update(text=s.text, text_len=s.text_len)
    for key, a in arrays.items():
        if a is None or len(a) != n:
            raise DataError(f"{name}/{key}: {None if a is None else len(a)} rows, but {n} ids")
    for key in ("audio", "vision", "text"):
        a = arrays.get(key)
        if a is None:
            continue
        if a.ndim != 3:
            raise DataError(f"{name}/{key}: shape {a.shape}, expected (N, L, d)")
        if not np.isfinite(a).all():
            raise DataError(f"{name}/{key}: contains NaN or inf (sources must replace or refuse them)")
    if s.raw_text is not None and len(s.raw_text) != n:
        raise DataError(f"{name}/raw_text: {len(s.raw_text)} rows, but {n} ids")
    if task == "regression":
        if s.labels.ndim != 1 or not np.isfinite(s.labels).all():
            raise DataError(f"{name}/label: expected finite (N,) sentiment scores")
        lo, hi = LABEL_RANGE
        if s.labels.min() < lo or s.labels.max() > hi:
            raise DataError(f"{name}/label: values in [{s.labels.min()}, {s.labels.max()}] "
                            f"outside [{lo}, {hi}]")
    else:
        if s.labels.ndim != 2 or not np.isin(s.labels, (0, 1)).all():
            raise DataError(f"{name}/label: expected (N, 4) 0/1 emotion labels, got {s.labels.shape}")


def write_store(path: Path, splits: dict[str, PaddedSplit], attrs: dict) -> Path:
    """Validate and write a dataset store atomically."""
    task = attrs.get("task", "regression")
    for split in SPLITS:
        if split not in splits:
            raise DataError(f"{path}: split {split!r} missing")
        _check_split(f"{path}:{split}", splits[split], task)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key, value in attrs.items():
            f.attrs[key] = value if isinstance(value, (str, bool, int, float)) else json.dumps(value)
        for split in SPLITS:
            s, g = splits[split], f.create_group(split)
            # Contiguous (not chunked): a batch of rows is then one HDF5 read at computed offsets
            # (see StoreDataset). Chunks would only add a lookup per row (one-row chunks) or read
            # whole chunks for one row each (larger chunks under shuffled batches).
            for key in ("audio", "vision", "text"):
                a = getattr(s, key)
                if a is not None:
                    g.create_dataset(key, data=a.astype(np.float32, copy=False))
                    g.create_dataset(f"{key}_len", data=getattr(s, f"{key}_len").astype(np.int64))
            g.create_dataset("label", data=s.labels.astype(np.float32 if task == "regression" else np.int64))
            g.create_dataset("id", data=np.array(s.ids, dtype=object), dtype=STR)
            if s.raw_text is not None:
                g.create_dataset("raw_text", data=np.array(s.raw_text, dtype=object), dtype=STR)
            for key, a in s.extra.items():
                g.create_dataset(key, data=a)
        f.attrs["content_sha256"] = content_digest(f)
    log.info("wrote %s (%s)", path, ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return Path(path)


def content_digest(f: h5py.File) -> str:
    """sha256 over every dataset of an open HDF5 file: its name, dtype, shape and values, in name
    order, read a block of rows at a time. Attributes are not included (they hold this digest)."""
    h = hashlib.sha256()
    names = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    for name in sorted(names):
        ds = f[name]
        h.update(f"{name}|{ds.dtype.str}|{ds.shape}|".encode())
        if ds.dtype.kind == "O":  # strings
            h.update(b"\0".join(x if isinstance(x, bytes) else str(x).encode() for x in ds[()]))
            continue
        if ds.ndim == 0:
            h.update(np.asarray(ds[()]).tobytes())
            continue
        step = max(1, (64 << 20) // max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:]))))
        for i in range(0, ds.shape[0], step):
            h.update(np.ascontiguousarray(ds[i:i + step]).tobytes())
    return h.hexdigest()


def verify_store(path: Path) -> None:
    """Recompute a store's content digest and compare it with the one written with it: a store
    damaged after writing (a corrupted DVC cache, a partial copy) stops training here."""
    with open_store(path) as f:
        recorded = f.attrs.get("content_sha256")
        if not recorded:
            raise DataError(f"{path}: has no recorded checksum (content_sha256; written by an older "
                            "version): rebuild it with `dvc repro`")
        got = content_digest(f)
    if got != recorded:
        raise DataError(f"{path}: content checksum {got[:16]}... does not match the recorded "
                        f"{str(recorded)[:16]}...: the file was damaged after it was written (a corrupted "
                        "DVC cache?). Rebuild it: `dvc repro --force align` / `embed`, or `dvc checkout`")


def verify_inputs(store: Path, text_file: Path) -> None:
    """Both files training reads are intact."""
    verify_store(store)
    verify_store(text_file)


def open_store(path: Path) -> h5py.File:
    """Open a store read-only; a missing or corrupt file is a DataError naming it."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found (run the stage that makes it: `dvc repro`)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {e}") from None
    for split in SPLITS:
        if split not in f:
            f.close()
            raise DataError(f"{path}: split {split!r} missing")
    return f


def read_attrs(path: Path) -> dict:
    with open_store(path) as f:
        out = {}
        for k, v in f.attrs.items():
            if isinstance(v, str) and v[:1] in "[{":
                try:
                    v = json.loads(v)
                except json.JSONDecodeError:
                    pass
            out[k] = v.item() if isinstance(v, np.generic) else v
        return out


def read_strings(path: Path, split: str, key: str) -> list[str]:
    with open_store(path) as f:
        if key not in f[split]:
            return []
        return [x.decode() if isinstance(x, bytes) else x for x in f[split][key][:]]


class StoreDataset:
    """A lazy map-style torch dataset over one split of a store (and its text-feature file).
    torch is imported on first read: a stage that only checks or restores (a train stage whose
    seeds the look-ahead pool trained, pipeline/ahead.py) never pays its import.

    Items are read from disk on access, a batch at a time: index it with a list of indices
    (use `batches()` or a DataLoader with `batch_size=None` over a BatchSampler), so one sorted
    HDF5 read per array serves the whole batch. Memory does not grow with the split: only the
    batch and the per-row scalars (lengths, labels) are held. Files are opened on first use in
    each process, which keeps it safe with DataLoader workers.
    """

    def __init__(self, store: Path, split: str, text_file: Path | None = None,
                 modalities=("text", "audio", "vision"), extra: tuple[str, ...] = ()):
        self.store, self.split, self.text_file = Path(store), split, text_file
        self.modalities = tuple(modalities)
        self.extra = tuple(extra)  # per-row arrays of the text file, e.g. "text_bert" token ids
        with open_store(self.store) as f:
            g = f[split]
            self.n = len(g["id"])
            self.task = f.attrs.get("task", "regression")
            self.dims = {m: g[m].shape[-1] for m in ("audio", "vision") if m in g}
            have_text = "text" in g
        if text_file is not None:
            with open_store(Path(text_file)) as t:
                if len(t[split]["text"]) != self.n:
                    raise DataError(f"{text_file}:{split}/text has {len(t[split]['text'])} rows, "
                                    f"store {self.store} has {self.n}: re-run the embed stage")
                self.dims["text"] = t[split]["text"].shape[-1]
        elif have_text:
            with open_store(self.store) as f:
                self.dims["text"] = f[split]["text"].shape[-1]
        if "text" in self.modalities and "text" not in self.dims:
            raise DataError(f"{self.store}: no text features; run the embed stage first")
        self._files = None

    def __len__(self) -> int:
        return self.n

    def _open(self):
        if self._files is None:
            f = h5py.File(self.store, "r")
            t = h5py.File(self.text_file, "r") if self.text_file is not None else f
            self._files = (f[self.split], t[self.split])
            self._arrays = {}  # h5py Dataset objects: looking one up costs more than a small read
        return self._files

    def _array(self, group, key: str) -> h5py.Dataset:
        name = f"{group.file.filename}:{key}"
        if name not in self._arrays:
            self._arrays[name] = group[key]
        return self._arrays[name]

    def __getitem__(self, index):
        single = np.isscalar(index)
        idx = np.atleast_1d(np.asarray(index, dtype=np.int64))
        if len(idx) and (idx.min() < 0 or idx.max() >= self.n):
            raise IndexError(f"{self.store}:{self.split}: index out of range 0..{self.n - 1}")
        import torch
        g, t = self._open()
        # HDF5 reads rows in increasing order: read the distinct rows, sorted, then put them in
        # the order asked for (rows[where] == idx)
        rows, where = np.unique(idx, return_inverse=True)
        batch = {}
        for m in self.modalities:
            src = t if m == "text" else g
            batch[m] = torch.from_numpy(_read_rows(self._array(src, m), rows, where))
            batch[f"{m}_len"] = torch.from_numpy(self._small(src, f"{m}_len")[idx])
        for key in self.extra:
            batch[key] = torch.from_numpy(_read_rows(self._array(t, key), rows, where))
        batch["label"] = torch.from_numpy(self._small(g, "label")[idx])
        batch["index"] = torch.from_numpy(idx)
        if single:
            batch = {k: v[0] for k, v in batch.items()}
        return batch

    def _small(self, group, key):
        """Per-utterance scalars (lengths, labels) are a few bytes a row: keep them in memory."""
        cache = self.__dict__.setdefault("_cache", {})
        name = f"{group.file.filename}:{key}"
        if name not in cache:
            cache[name] = group[key][:]
        return cache[name]

    def batches(self, batch_size: int, shuffle: bool = False, generator=None):
        """Yield batches of dicts of tensors; the order depends only on the generator's seed
        (a torch.Generator)."""
        import torch
        order = torch.randperm(self.n, generator=generator) if shuffle else torch.arange(self.n)
        for i in range(0, self.n, batch_size):
            yield self[order[i:i + batch_size].numpy()]

    def labels(self) -> np.ndarray:
        with open_store(self.store) as f:
            return f[self.split]["label"][:]

    def close(self):
        if self._files is not None:
            for grp in {id(x.file): x.file for x in self._files}.values():
                grp.close()
            self._files = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_files"] = None  # h5py handles do not cross process boundaries
        state.pop("_arrays", None)
        state.pop("_cache", None)
        return state


def _read_rows(ds: h5py.Dataset, rows: np.ndarray, where: np.ndarray) -> np.ndarray:
    """ds[rows[where]] for rows sorted and distinct, as a new array.

    A contiguous dataset (what write_store writes) is read with one HDF5 request for all the rows;
    a chunked one (stores written with one row per chunk) with one read per row, since HDF5's
    selections across many chunks cost far more than that."""
    if not len(rows):
        return np.zeros((0,) + ds.shape[1:], dtype=ds.dtype)
    if ds.chunks is None:
        out = ds[rows]
    else:
        out = np.stack([ds[i] for i in rows.tolist()])
    if len(rows) < len(where):  # repeated indices
        return out[where]
    _permute_rows(out, where)
    return out


def _permute_rows(a: np.ndarray, perm: np.ndarray) -> None:
    """a[:] = a[perm] in place, for a permutation of the rows, with one spare row: following its
    cycles costs a row copy per moved row and, unlike a[perm], no second batch-sized array (a
    fresh allocation of several MB costs more in page faults than the copy itself)."""
    done = np.zeros(len(perm), dtype=bool)
    for start in np.flatnonzero(perm != np.arange(len(perm))).tolist():
        if done[start]:
            continue
        spare, r = a[start].copy(), start
        while perm[r] != start:  # row r takes row perm[r], whose place is then free
            done[r] = True
            a[r] = a[perm[r]]
            r = perm[r]
        done[r] = True
        a[r] = spare
