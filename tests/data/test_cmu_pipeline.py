"""The `cmu` source end to end: .csd files written with mmsdk, served from 127.0.0.1, through the
real download and align stages into the store, compared array by array with mmsdk's own recipe."""
import json
import re

import numpy as np
import pytest

from pipeline import paths
from pipeline.settings import load_config
from pipeline.data.download import cmu_files
from pipeline.data.store import open_store, read_attrs, read_strings
from pipeline.errors import DataError, DownloadError
from pipeline.stages import align, download, embed
from tests.csd_fixtures import write_cmu_fixture
from tests.helpers import closed_port, mmsdk_pipeline, reference_utterances, write_params

L = 12  # short enough that some utterances are cut


@pytest.mark.parametrize("dataset", ["mosi", "mosei"])
def test_download_align_store_equals_mmsdk(serve, tmp_path, monkeypatch, dataset):  # noqa: F811
    fx = write_cmu_fixture(serve.root, dataset=dataset, seed=5, nonfinite=True)
    base_url, handler = serve()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    write_params(work / "params.yaml", {"datasets": [dataset], "data": {
        "seq_len": L, dataset: {"source": "cmu", "cmu_base_url": base_url}}})
    cfg = load_config("params.yaml")

    download(cfg, dataset)
    fetched = {path.lstrip("/") for path, _ in handler.requests}
    assert fetched == set(cmu_files(dataset).values())  # every file came over HTTP
    info = json.loads((paths.raw_dir(dataset) / "source.json").read_text())
    assert info["source"] == "cmu" and set(info["files"]) == set(cmu_files(dataset).values())
    align(cfg, dataset)

    ref = reference_utterances(mmsdk_pipeline(fx["paths"], monkeypatch), fx["folds"])
    store = paths.aligned_store(dataset)
    attrs = read_attrs(store)
    assert attrs["source"] == "cmu" and attrs["synthetic"] is False and attrs["seq_len"] == L
    with open_store(store) as f:
        for split, r in ref.items():
            ids = read_strings(store, split, "id")
            assert ids == r["ids"]
            assert read_strings(store, split, "raw_text") == [" ".join(w) for w in r["words"]]
            np.testing.assert_allclose(f[split]["label"][:], r["labels"], atol=1e-6)
            for mod, name in (("audio", "COVAREP"), ("vision", "FACET")):
                arr, lens = f[split][mod][:], f[split][f"{mod}_len"][:]
                for i, rows in enumerate(r[name]):
                    n = min(len(rows), L)
                    assert lens[i] == n
                    np.testing.assert_allclose(arr[i, :n], rows[:n], rtol=1e-5, atol=1e-5)
                    assert not arr[i, n:].any()
    assert any(len(w) > L for r in ref.values() for w in r["words"])  # the cut was exercised

    # and on through the text encoder: the store is a real input for the rest of the pipe
    write_params(work / "params.yaml", {"datasets": [dataset], "data": {
        "seq_len": L, dataset: {"source": "cmu", "cmu_base_url": base_url}}})
    embed(load_config("params.yaml"), dataset)
    with open_store(paths.text_features(dataset)) as t:
        assert t["train"]["text"].shape[:2] == (len(ref["train"]["ids"]), L)


def test_unreachable_server_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", {"data": {"mosi": {
        "source": "cmu", "cmu_base_url": f"http://127.0.0.1:{closed_port()}"}}})
    with pytest.raises(DownloadError) as e:
        download(load_config("params.yaml"), "mosi")
    msg = str(e.value)
    assert "127.0.0.1" in msg and "mmsa" in msg and "dvc pull" in msg
    assert not (paths.raw_dir("mosi") / "source.json").exists()  # nothing that looks complete


@pytest.mark.parametrize("flat", [False, True])
def test_local_csd_folder_equals_mmsdk_and_is_never_deleted(tmp_path, monkeypatch, flat):
    """`data.mosi.path` names a folder of .csd files under data/user/mosi/ (the server's layout,
    or the files side by side): same store as mmsdk's recipe; the files stay as they are."""
    work = tmp_path / "work"
    folder = work / "data" / "user" / "mosi" / "csd"
    fx = write_cmu_fixture(folder, dataset="mosi", seed=7, nonfinite=True)
    if flat:
        for name, p in list(fx["paths"].items()):
            fx["paths"][name] = p.rename(folder / p.name)
    before = {p: p.read_bytes() for p in fx["paths"].values()}
    monkeypatch.chdir(work)
    write_params(work / "params.yaml", {"data": {"seq_len": L, "mosi": {
        "source": "cmu", "path": "data/user/mosi/csd", "cmu_base_url": "http://127.0.0.1:9"}}})
    cfg = load_config("params.yaml")
    download(cfg, "mosi")
    align(cfg, "mosi")
    ref = reference_utterances(mmsdk_pipeline(fx["paths"], monkeypatch), fx["folds"])
    store = paths.aligned_store("mosi")
    assert read_attrs(store)["features"] == {"audio": "CMU COVAREP (74-d)", "vision": "CMU FACET 4.1 (47-d)"}
    with open_store(store) as f:
        for split, r in ref.items():
            assert read_strings(store, split, "id") == r["ids"]
            for mod, name in (("audio", "COVAREP"), ("vision", "FACET")):
                for i, rows in enumerate(r[name]):
                    n = min(len(rows), L)
                    assert f[split][f"{mod}_len"][i] == n
                    np.testing.assert_allclose(f[split][mod][i, :n], rows[:n], rtol=1e-5, atol=1e-5)
    assert {p: p.read_bytes() for p in fx["paths"].values()} == before  # untouched


def test_corrupt_local_csd_is_refused_and_kept(tmp_path, monkeypatch):
    folder = tmp_path / "data" / "user" / "mosi"
    fx = write_cmu_fixture(folder, dataset="mosi", seed=7)
    bad = fx["paths"]["FACET"]
    bad.write_bytes(bad.read_bytes()[:300])
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", {"data": {"mosi": {"source": "cmu", "path": "data/user/mosi"}}})
    with pytest.raises(DataError, match=re.escape(str(bad.relative_to(tmp_path))) + ": truncated or corrupt"):
        download(load_config("params.yaml"), "mosi")
    assert bad.exists() and not (paths.raw_dir("mosi") / "source.json").exists()
