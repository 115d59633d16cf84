"""The `mmsa` and `mult` sources through the real stages: download -> align -> embed -> train."""
import numpy as np
import pytest

from pipeline import paths, train
from pipeline.config import load_config
from pipeline.data.store import open_store, read_attrs, read_strings
from pipeline.errors import DataError
from pipeline.stages import align, download, embed
from tests.conftest import write_params
from tests.test_pickles import dump, mmsa_data, mult_data, sha


def stages(cfg, ds):
    download(cfg, ds)
    align(cfg, ds)
    embed(cfg, ds)


def test_mmsa_pickle_to_trained_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pkl = dump(tmp_path / "aligned_50.pkl", mmsa_data())
    write_params(tmp_path / "params.yaml", {"data": {"seq_len": 8, "mosi": {
        "source": "mmsa", "path": str(pkl), "sha256": sha(pkl)}}, "train": {"epochs": 1},
        "variants": ["late_fusion"]})
    cfg = load_config("params.yaml")
    stages(cfg, "mosi")
    store = paths.aligned_store("mosi")
    attrs = read_attrs(store)
    assert attrs["source"] == "mmsa" and attrs["synthetic"] is False
    assert attrs["inputs_sha256"] == {str(pkl): sha(pkl)}
    with open_store(store) as f:
        assert f["train/audio"].shape == (5, 8, 5)  # padded from MMSA's 6 steps to seq_len 8
        assert np.isfinite(f["train/audio"][:]).all()  # MMSA's -inf zeroed
        assert f["train/text"].shape[-1] == 768
    assert read_strings(store, "train", "raw_text")[1] == "utterance 1"
    # raw text exists, so the configured encoder re-encodes it
    assert read_attrs(paths.text_features("mosi"))["encoder"] == "tiny-random-bert"
    (res,) = train.train_variant(cfg, "mosi", "late_fusion")
    assert res["synthetic"] is False and np.isfinite(res["test"]["mae"])


def test_mult_iemocap_uses_its_own_text_features(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data, _ = mult_data("iemocap")
    pkl = dump(tmp_path / "iemocap_data.pkl", data)
    write_params(tmp_path / "params.yaml", {"datasets": ["iemocap"], "data": {"iemocap": {
        "source": "mult", "path": str(pkl), "allow_unverified_pickle": True}}, "train": {"epochs": 1},
        "variants": ["late_fusion"]})
    cfg = load_config("params.yaml")
    stages(cfg, "iemocap")
    t = read_attrs(paths.text_features("iemocap"))
    assert t["encoder"].startswith("source features") and t["dim"] == 300
    with open_store(paths.aligned_store("iemocap")) as f:
        assert f["train/label"].shape == (5, 4)
        assert (f["train/audio_len"][:] == cfg.data.seq_len).all()  # MulT: every step is read
    (res,) = train.train_variant(cfg, "iemocap", "late_fusion")
    assert "wa" in res["test"]


def test_pickle_needs_checksum_or_opt_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pkl = dump(tmp_path / "aligned_50.pkl", mmsa_data())
    write_params(tmp_path / "params.yaml", {"data": {"mosi": {"source": "mmsa", "path": str(pkl)}}})
    cfg = load_config("params.yaml")
    download(cfg, "mosi")
    with pytest.raises(DataError, match="sha256"):
        align(cfg, "mosi")
    assert not paths.aligned_store("mosi").exists()


def test_checksum_mismatch_stops_download(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pkl = dump(tmp_path / "aligned_50.pkl", mmsa_data())
    write_params(tmp_path / "params.yaml", {"data": {"mosi": {
        "source": "mmsa", "path": str(pkl), "sha256": "0" * 64}}})
    with pytest.raises(DataError, match="aligned_50.pkl: sha256 .* does not match data.mosi.sha256"):
        download(load_config("params.yaml"), "mosi")
    assert not (paths.raw_dir("mosi") / "source.json").exists()


@pytest.mark.parametrize("path", [None, "missing/iemocap_data.pkl"])
def test_missing_iemocap_says_how_to_get_it(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", {"data": {"iemocap": {"source": "mult", "path": path}}})
    with pytest.raises(DataError) as e:
        download(load_config("params.yaml"), "iemocap")
    msg = str(e.value)
    assert "data.iemocap.path" in msg and "sail.usc.edu" in msg and "iemocap_data.pkl" in msg
    assert not paths.raw_dir("iemocap").joinpath("source.json").exists()


def test_missing_pickle_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", {"data": {"mosei": {"source": "mmsa"}}})
    with pytest.raises(DataError, match="data.mosei.path"):
        download(load_config("params.yaml"), "mosei")
