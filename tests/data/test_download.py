"""Download code against a real HTTP server on 127.0.0.1 (the CMU server is unreachable here)."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.data import download
from pipeline.data.download import cmu_files, cmu_folds, download_cmu, download_file
from pipeline.errors import DataError, DownloadError
from tests.helpers import closed_port

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, not all one byte, so misplaced ranges show


def put(root: Path, rel: str, data: bytes) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


# Small chunks: a read cut short by a dropped connection loses its whole chunk, so with the 1 MiB
# default nothing of a 1 MiB file would reach the .part before the drop.
FAST = dict(timeout=5, retries=0, progress=False, chunk=1 << 16)


def test_full_download(serve, tmp_path):
    url, h = serve()
    put(serve.root, "a/f.bin", PAYLOAD)
    dest = tmp_path / "out" / "f.bin"
    assert download_file(f"{url}/a/f.bin", dest, **FAST) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_suffix(".bin.part").exists()
    assert h.requests == [("/a/f.bin", None)]


def test_present_file_is_kept(serve, tmp_path):
    url, h = serve()
    put(serve.root, "f.bin", PAYLOAD)
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"already here")
    download_file(f"{url}/f.bin", dest, **FAST)
    assert dest.read_bytes() == b"already here"
    assert h.requests == []


def test_resume_from_part(serve, tmp_path):
    url, h = serve()
    put(serve.root, "f.bin", PAYLOAD)
    dest = tmp_path / "f.bin"
    half = len(PAYLOAD) // 2 + 7
    dest.with_suffix(".bin.part").write_bytes(PAYLOAD[:half])
    download_file(f"{url}/f.bin", dest, **FAST)
    assert h.requests == [("/f.bin", f"bytes={half}-")]
    assert dest.read_bytes() == PAYLOAD


def test_restart_when_range_not_supported(serve, tmp_path):
    url, h = serve(support_range=False)
    put(serve.root, "f.bin", PAYLOAD)
    dest = tmp_path / "f.bin"
    dest.with_suffix(".bin.part").write_bytes(b"x" * 1000)  # wrong bytes: must not be kept
    download_file(f"{url}/f.bin", dest, **FAST)
    assert h.requests == [("/f.bin", "bytes=1000-")]  # asked, got 200, started over
    assert dest.read_bytes() == PAYLOAD


def test_restart_when_part_larger_than_file(serve, tmp_path):
    url, h = serve()
    put(serve.root, "f.bin", PAYLOAD)
    dest = tmp_path / "f.bin"
    dest.with_suffix(".bin.part").write_bytes(b"y" * (len(PAYLOAD) + 10))
    download_file(f"{url}/f.bin", dest, **FAST)
    assert [r for _, r in h.requests] == [f"bytes={len(PAYLOAD) + 10}-", None]
    assert dest.read_bytes() == PAYLOAD


def test_interrupted_download_leaves_only_part(serve, tmp_path):
    url, _ = serve(drop_after=len(PAYLOAD) // 3)
    put(serve.root, "f.bin", PAYLOAD)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match=re.escape(f"{url}/f.bin")):
        download_file(f"{url}/f.bin", dest, **FAST)
    assert not dest.exists()
    part = dest.with_suffix(".bin.part")
    assert 0 < part.stat().st_size < len(PAYLOAD)
    assert PAYLOAD.startswith(part.read_bytes())


def test_retry_resumes_after_drop(serve, tmp_path):
    url, h = serve(drop_after=len(PAYLOAD) // 3, drops_left=1)
    put(serve.root, "f.bin", PAYLOAD)
    dest = tmp_path / "f.bin"
    download_file(f"{url}/f.bin", dest, timeout=5, retries=2, backoff=0, progress=False, chunk=1 << 16)
    assert dest.read_bytes() == PAYLOAD
    assert h.requests[0] == ("/f.bin", None)
    assert len(h.requests) == 2 and re.fullmatch(r"bytes=[1-9]\d*-", h.requests[1][1])


def test_sha256_match_and_mismatch(serve, tmp_path):
    url, _ = serve()
    put(serve.root, "f.bin", PAYLOAD)
    good = hashlib.sha256(PAYLOAD).hexdigest()
    dest = tmp_path / "ok.bin"
    download_file(f"{url}/f.bin", dest, expected_sha256=good, **FAST)
    assert dest.read_bytes() == PAYLOAD

    bad_dest = tmp_path / "bad.bin"
    with pytest.raises(DownloadError, match="sha256"):
        download_file(f"{url}/f.bin", bad_dest, expected_sha256="0" * 64, **FAST)
    assert not bad_dest.exists()
    assert not bad_dest.with_suffix(".bin.part").exists()


def test_unreachable_server(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/CMU-MOSI/x.csd"
    with pytest.raises(DownloadError) as e:
        download_file(url, tmp_path / "x.csd", timeout=2, retries=1, backoff=0, progress=False, dataset="mosi")
    msg = str(e.value)
    assert url in msg and "mmsa" in msg and "dvc pull" in msg and "data.mosi.source" in msg
    assert not (tmp_path / "x.csd").exists()


def test_404_names_url(serve, tmp_path):
    url, h = serve()
    with pytest.raises(DownloadError, match=re.escape(f"{url}/missing.csd") + ".*404"):
        download_file(f"{url}/missing.csd", tmp_path / "m.csd", timeout=5, retries=3, backoff=0, progress=False)
    assert len(h.requests) == 1  # a 404 is not retried


# --- mmsdk paths and computational sequences ---------------------------------------------------

def test_cmu_files_and_folds():
    mosi, mosei = cmu_files("mosi"), cmu_files("mosei")
    assert set(mosi) == set(mosei) == {"words", "COVAREP", "FACET", "labels"}
    assert mosi["COVAREP"] == "CMU-MOSI/acoustic/CMU_MOSI_COVAREP.csd"
    assert mosi["FACET"] == "CMU-MOSI/visual/CMU_MOSI_VisualFacet_4.1.csd"
    assert mosi["labels"] == "CMU-MOSI/labels/CMU_MOSI_Opinion_Labels.csd"
    assert mosei["FACET"] == "CMU-MOSEI/visual/CMU_MOSEI_VisualFacet42.csd"
    assert mosei["labels"] == "CMU-MOSEI/labels/CMU_MOSEI_LabelsSentiment.csd"
    assert all(not p.startswith(("/", "http")) for p in [*mosi.values(), *mosei.values()])
    for ds, sizes in {"mosi": (52, 10, 31), "mosei": (2250, 300, 678)}.items():
        folds = cmu_folds(ds)
        assert tuple(len(folds[s]) for s in ("train", "valid", "test")) == sizes
        assert not set(folds["train"]) & set(folds["test"])


def write_csd(path: Path, name: str, dim: int) -> None:
    """A small, real computational sequence written by mmsdk itself."""
    from mmsdk import mmdatasdk
    from mmsdk.mmdatasdk.configurations.metadataconfigs import featuresetMetadataTemplate

    rng = np.random.default_rng(0)
    data = {}
    for vid in ("vidA", "vidB"):
        n = 4
        starts = np.arange(n, dtype=np.float64)
        data[vid] = {"intervals": np.stack([starts, starts + 1], axis=1),
                     "features": rng.standard_normal((n, dim)).astype(np.float32)}
    seq = mmdatasdk.computational_sequence(name)
    seq.setData(data, name)
    # deploy() asks with input() for any metadata key left unset
    seq.setMetadata({key: name if key == "root name" else "test" for key in featuresetMetadataTemplate}, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    seq.deploy(str(path))


@pytest.mark.parametrize("dataset", ["mosi", "mosei"])
def test_download_cmu(serve, tmp_path, dataset):
    url, _ = serve()
    rels = cmu_files(dataset)
    for key, rel in rels.items():
        write_csd(serve.root / rel, key, dim=3)
    out = download_cmu(dataset, url + "/", tmp_path / "raw", progress=False, retries=0)
    assert set(out) == set(rels)
    for key, path in out.items():
        assert path == tmp_path / "raw" / rels[key]
        assert path.read_bytes() == (serve.root / rels[key]).read_bytes()
        download.check_csd(path)


def test_download_cmu_truncated_csd(serve, tmp_path):
    url, _ = serve()
    rels = cmu_files("mosi")
    for key, rel in rels.items():
        write_csd(serve.root / rel, key, dim=3)
    cov = serve.root / rels["COVAREP"]
    cov.write_bytes(cov.read_bytes()[: cov.stat().st_size // 2])  # served complete, but truncated
    local = tmp_path / "raw" / rels["COVAREP"]
    with pytest.raises(DataError, match=re.escape(str(local)) + ".*truncated or corrupt"):
        download_cmu("mosi", url, tmp_path / "raw", progress=False, retries=0)
    assert not local.exists()
