"""Reading CMU computational sequences (`.csd`, mmsdk's HDF5 format) lazily, one video at a time.

A sequence holds, per video, `/<root>/data/<video>/intervals` (n, 2) in seconds and
`.../features` (n, d). `Csd.read` checks both as it reads them (shapes, finite intervals, one
feature size across videos): a DataError names the file and the video. The words sequence's
features are its tokens, stored as bytes: `decode_tokens` gives them as str. The alignment
itself is pipeline/data/align.py's.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from pipeline.errors import DataError


def _decode(token) -> str:
    return token.decode("utf-8", errors="replace") if isinstance(token, bytes) else str(token)


def decode_tokens(feat: np.ndarray) -> list[str]:
    """The words sequence's (n, 1) features (bytes, as the .csd stores them) as str."""
    flat = np.asarray(feat).reshape(len(feat), -1)[:, 0].tolist() if len(feat) else []
    return [_decode(t) for t in flat]


def token_array(feat: np.ndarray) -> np.ndarray:
    """The words sequence's (n, 1) features as an (n,) str array."""
    return np.array(decode_tokens(feat), dtype=str)


class Csd:
    """One computational sequence opened with h5py; reads one video at a time."""

    def __init__(self, path, name: str):
        self.path, self.name = Path(path), name
        if not self.path.is_file():
            raise DataError(f"{self.path}: {name} computational sequence not found")
        try:
            self.h5 = h5py.File(self.path, "r")
        except OSError as e:
            raise DataError(f"{self.path}: {name} is not a readable HDF5 computational sequence "
                            f"(truncated download or not a .csd file?): {e}") from e
        try:
            roots = list(self.h5.keys())
            self.data = self.h5[roots[0]]["data"]  # mmsdk reads the first root group too
            self.videos = list(self.data.keys())
        except Exception as e:  # noqa: BLE001 - h5py raises many types on corrupt files
            self.h5.close()
            raise DataError(f"{self.path}: {name} has no /<root>/data group of videos "
                            f"(corrupt or not a computational sequence): {e!r}") from e
        self.dim: tuple[int, str] | None = None  # feature size, and the video it was first seen in
        self._buffers: dict[str, np.ndarray] = {}  # "intervals" / "features" -> reusable memory

    def read(self, vid: str) -> tuple[np.ndarray, np.ndarray]:
        """One video's (intervals, features), each in one contiguous read. Numeric arrays land in
        buffers reused from video to video (fresh memory for every video costs page faults about
        as much as the read itself): they are valid until the next call, so copy what must
        outlive it."""
        try:
            iv, feat = self._read(vid, "intervals"), self._read(vid, "features")
        except Exception as e:  # noqa: BLE001
            raise DataError(f"{self.path}: video {vid!r} of {self.name}: cannot read intervals/"
                            f"features (truncated or corrupt file?): {e!r}") from e
        where = f"{self.path}: video {vid!r} of {self.name}"
        if iv.ndim != 2 or iv.shape[1] != 2:
            raise DataError(f"{where}: intervals have shape {iv.shape}, expected (n, 2)")
        if feat.ndim != 2:
            raise DataError(f"{where}: features have shape {feat.shape}, expected (n, d)")
        if len(iv) != len(feat):
            raise DataError(f"{where}: {len(iv)} intervals but {len(feat)} feature rows")
        if not np.issubdtype(iv.dtype, np.number) or not np.all(np.isfinite(iv)):
            raise DataError(f"{where}: intervals are not finite numbers")
        if self.dim is None:
            self.dim = (feat.shape[1], vid)
        elif feat.shape[1] != self.dim[0]:
            raise DataError(f"{where}: features have {feat.shape[1]} columns but video "
                            f"{self.dim[1]!r} has {self.dim[0]}")
        return iv, feat

    def _read(self, vid: str, key: str) -> np.ndarray:
        # h5py's low-level API: the high-level Group / Dataset objects cost more to create than
        # most videos' reads
        ds = h5py.h5d.open(self.data.id, f"{vid}/{key}".encode())
        shape, dtype = ds.shape, ds.dtype
        size = int(np.prod(shape))
        if dtype.kind not in "iufS" or size == 0:  # variable-length strings, empty videos
            return h5py.Dataset(ds)[()]
        buf = self._buffers.get(key)
        if buf is None or buf.dtype != dtype or buf.size < size:
            buf = self._buffers[key] = np.empty(size + size // 4, dtype=dtype)  # room to grow
        out = buf[:size].reshape(shape)
        ds.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
        return out

    def close(self) -> None:
        self.h5.close()
