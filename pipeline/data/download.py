"""Fetch CMU-MOSI / CMU-MOSEI computational sequences (`.csd`) over HTTP.

A computational sequence is an HDF5 file with one root group holding `data/<video id>/{features,
intervals}` and `metadata/<key>` (mmsdk's `featuresetMetadataTemplate`). Which files we need, and
where they live under the server root, is read from mmsdk's own standard-dataset dicts, so the
paths stay those mmsdk itself would download (e.g. `CMU-MOSI/acoustic/CMU_MOSI_COVAREP.csd`).

We do the HTTP ourselves rather than through mmsdk because its downloader writes straight to the
final name (a dropped connection leaves a truncated file that looks complete), cannot resume, and
has no retries. Here a download streams into `<dest>.part`, resumes it with an HTTP `Range`
request, checks the size (and optionally a sha256), and only then renames it to `<dest>`: a file
at `<dest>` is always complete.

The CMU server is often unreachable; every download error says what to use instead.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import h5py
import requests
from tqdm import tqdm

from pipeline.errors import ConfigError, DataError, DownloadError

log = logging.getLogger(__name__)

CMU_DATASETS = ("mosi", "mosei")

# Our key -> (mmsdk dict, mmsdk key). FACET: 4.1 is the version published for MOSI, 4.2 for MOSEI.
_CMU_ENTRIES = {
    "mosi": {
        "words": ("raw", "words"),
        "COVAREP": ("highlevel", "COVAREP"),
        "FACET": ("highlevel", "FACET 4.1"),
        "labels": ("labels", "Opinion Segment Labels"),
    },
    "mosei": {
        "words": ("raw", "words"),
        "COVAREP": ("highlevel", "COVAREP"),
        "FACET": ("highlevel", "FACET 4.2"),
        "labels": ("labels", "Sentiment Labels"),
    },
}

# HTTP statuses worth another try; anything else (404, 403, ...) will not change by retrying.
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


def _check_dataset(dataset: str) -> None:
    if dataset not in CMU_DATASETS:
        raise ConfigError(f"dataset {dataset!r} has no CMU download; allowed: {', '.join(CMU_DATASETS)}")


def _mmsdk_module(dataset: str, name: str):
    """Import mmsdk's standard-dataset module lazily: mmsdk is slow to import and only needed here."""
    _check_dataset(dataset)
    import importlib

    upper = {"mosi": "CMU_MOSI", "mosei": "CMU_MOSEI"}[dataset]
    return importlib.import_module(f"mmsdk.mmdatasdk.dataset.standard_datasets.{upper}.{name}")


def cmu_files(dataset: str) -> dict[str, str]:
    """Relative paths (under the server root) of the sequences we need, keyed
    "words", "COVAREP", "FACET", "labels", taken from mmsdk's URLs without scheme and host."""
    mod = _mmsdk_module(dataset, f"cmu_{dataset}")
    out = {}
    for key, (dict_name, entry) in _CMU_ENTRIES[dataset].items():
        url = getattr(mod, dict_name)[entry]
        out[key] = urlsplit(url).path.lstrip("/")
    return out


def cmu_folds(dataset: str) -> dict[str, list[str]]:
    """The standard train/valid/test folds (video ids) that ship inside mmsdk."""
    mod = _mmsdk_module(dataset, f"cmu_{dataset}_std_folds")
    return {split: list(getattr(mod, f"standard_{split}_fold")) for split in ("train", "valid", "test")}


def remedy(dataset: str | None = None) -> str:
    """What a user can do when the CMU server cannot be reached."""
    ds = dataset or "<dataset>"
    return (
        "The CMU server is often offline. Instead you can either use MMSA's pickles "
        f"(aligned_50.pkl / unaligned_50.pkl): set `data.{ds}.source: mmsa` in params.yaml; "
        "or fetch prepared features from your lab's DVC remote with `dvc pull`."
    )


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in chunks (the files are up to several GB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class _Transient(Exception):
    """A failure that another attempt may fix (dropped connection, short body, 5xx)."""


class _Permanent(Exception):
    """A failure that retrying will not fix (404, 403, ...)."""


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _fetch_into(url: str, part: Path, *, timeout: float, chunk: int, progress: bool, desc: str) -> None:
    """One attempt: append to `part` from where it stops (or start it anew) until the server's
    full size is on disk. Raises _Transient / _Permanent; `part` keeps what arrived."""
    have = part.stat().st_size if part.exists() else 0
    # identity: Content-Length must count the bytes we write, not a compressed form of them.
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with requests.get(url, headers=headers, stream=True, timeout=(timeout, timeout)) as r:
            if r.status_code == 416 and have:
                # The part is at least as long as the file. Equal: it is complete; longer: it
                # cannot be a prefix of this file, so start over.
                m = re.search(r"/(\d+)", r.headers.get("Content-Range", ""))
                if m and int(m.group(1)) == have:
                    return
                log.warning("%s: partial file is larger than the remote file; restarting from zero", part)
                part.unlink()
                return _fetch_into(url, part, timeout=timeout, chunk=chunk, progress=progress, desc=desc)
            if r.status_code >= 400:
                reason = f"HTTP {r.status_code} {r.reason or ''}".strip()
                raise (_Transient if r.status_code in _TRANSIENT_STATUS else _Permanent)(reason)

            total = None
            if r.status_code == 206:
                m = _CONTENT_RANGE.search(r.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != have:
                    # A range we did not ask for: appending it would corrupt the file.
                    part.unlink()
                    raise _Transient(f"server sent range {r.headers.get('Content-Range')!r} for bytes={have}-")
                total = None if m.group(3) == "*" else int(m.group(3))
                mode, start = "ab", have
                log.info("resuming %s at byte %d", url, have)
            else:
                if have:
                    log.info("%s: server does not resume (HTTP %d); restarting from zero", url, r.status_code)
                length = r.headers.get("Content-Length")
                total = int(length) if length is not None else None
                mode, start = "wb", 0

            with open(part, mode) as f, tqdm(total=total, initial=start, unit="B", unit_scale=True,
                                             unit_divisor=1024, desc=desc, disable=None if progress else True,
                                             leave=False) as bar:
                for block in r.iter_content(chunk_size=chunk):
                    f.write(block)
                    bar.update(len(block))
                f.flush()
                os.fsync(f.fileno())  # the rename that follows must not publish unwritten data
    except requests.exceptions.RequestException as e:
        # Connection refused/reset, timeouts, and a body cut short (ChunkedEncodingError).
        raise _Transient(f"{type(e).__name__}: {e}") from e

    size = part.stat().st_size
    if total is not None and size != total:
        if size > total:
            part.unlink()  # not a prefix of the file: nothing to resume from
        raise _Transient(f"received {size} of {total} bytes")


def download_file(url: str, dest: Path, *, timeout: float = 30, retries: int = 3, chunk: int = 1 << 20,
                  expected_sha256: str | None = None, progress: bool = True, backoff: float = 1.0,
                  dataset: str | None = None) -> Path:
    """Download `url` to `dest` atomically, resuming a leftover `<dest>.part`.

    `retries` further attempts follow a transient failure, after `backoff * 2**k` seconds.
    `dataset` only fills in the params key in error messages. A `dest` already present is kept
    (it only ever appears complete); with `expected_sha256` it is kept only if it matches.
    `chunk` is the read size: a read cut short by a dropped connection is lost (urllib3 raises
    before handing it over), so a resume restarts at most one chunk back.
    """
    dest = Path(dest)
    if dest.is_file():
        if expected_sha256 is None or sha256_file(dest) == expected_sha256.lower():
            log.info("%s already present; not downloading", dest)
            return dest
        log.warning("%s does not match the expected sha256; downloading it again", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")

    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            _fetch_into(url, part, timeout=timeout, chunk=chunk, progress=progress, desc=dest.name)
            break
        except _Permanent as e:
            raise DownloadError(f"could not download {url}: {e}. {remedy(dataset)}") from None
        except _Transient as e:
            error = e
            log.warning("download of %s failed (attempt %d of %d): %s", url, attempt + 1, retries + 1, e)
    else:
        kept = f" The partial file {part} is kept; running again resumes it." if part.exists() else ""
        raise DownloadError(f"could not download {url} after {retries + 1} attempt(s): {error}.{kept} "
                            f"{remedy(dataset)}")

    if expected_sha256 is not None:
        got = sha256_file(part)
        if got != expected_sha256.lower():
            part.unlink()  # a finished file with the wrong content cannot be resumed into the right one
            raise DownloadError(f"{url}: sha256 of the downloaded file is {got}, expected {expected_sha256}; "
                                f"{dest} was not written")
    os.replace(part, dest)
    log.info("downloaded %s -> %s", url, dest)
    return dest


def local_cmu_files(dataset: str, folder: Path) -> dict[str, Path]:
    """The sequences of `cmu_files(dataset)` in a user's folder: at the server's relative path
    under it (a mirror of the CMU server), or else by file name anywhere below it (one match)."""
    folder = Path(folder)
    out, missing = {}, []
    for key, rel in cmu_files(dataset).items():
        name = Path(rel).name
        direct = folder / rel
        found = [direct] if direct.is_file() else sorted(p for p in folder.rglob(name) if p.is_file())
        if len(found) > 1:
            raise DataError(f"{folder}: {len(found)} files named {name} ({', '.join(map(str, found))}); "
                            "keep one")
        if not found:
            missing.append(name)
        else:
            out[key] = found[0]
    if missing:
        raise DataError(f"{folder}: missing {', '.join(missing)} (data.{dataset}.path: the cmu source "
                        f"needs {', '.join(Path(r).name for r in cmu_files(dataset).values())})")
    return out


def check_csd(path: Path, delete: bool = True) -> None:
    """Raise DataError unless `path` opens as a computational sequence: an HDF5 file with one
    root group that holds `data` and `metadata`. A downloaded file is deleted first (`delete`);
    a user's own file never is."""
    path = Path(path)
    problem = None
    try:
        with h5py.File(path, "r") as h5:
            roots = list(h5.keys())
            if len(roots) != 1:
                problem = f"expected one root group, found {roots}"
            else:
                root = h5[roots[0]]
                missing = [k for k in ("data", "metadata") if not isinstance(root, h5py.Group) or k not in root]
                if missing:
                    problem = f"root group {roots[0]!r} lacks {missing}"
    except OSError as e:  # h5py reports truncation and non-HDF5 content as OSError
        problem = str(e)
    if problem:
        if not delete:
            raise DataError(f"{path}: truncated or corrupt computational sequence ({problem})")
        path.unlink(missing_ok=True)
        raise DataError(f"{path}: truncated or corrupt computational sequence ({problem}); "
                        "the file was deleted, run the download again")


def download_cmu(dataset: str, base_url: str, dest_dir: Path, progress: bool = True, *,
                 timeout: float = 30, retries: int = 3) -> dict[str, Path]:
    """Download the four sequences of `cmu_files(dataset)` from `base_url` into
    `dest_dir/<relative path>` and check each one opens as a computational sequence."""
    out = {}
    for key, rel in cmu_files(dataset).items():
        url = base_url.rstrip("/") + "/" + rel
        path = download_file(url, Path(dest_dir) / rel, timeout=timeout, retries=retries,
                             progress=progress, dataset=dataset)
        check_csd(path)
        out[key] = path
    return out
