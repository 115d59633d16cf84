"""The `mmsa` and `mult` sources through the real stages: download -> align -> embed -> train."""
import numpy as np
import pytest

from pipeline import paths, train

from pipeline import train_stage
from pipeline.settings import load_config
from pipeline.data.store import open_store, read_attrs, read_strings
from pipeline.errors import DataError
from pipeline.stages import align, download, embed
from tests.helpers import mmsa_data, mult_data, sha, user_file, write_params


def stages(cfg, ds):
    download(cfg, ds)
    align(cfg, ds)
    embed(cfg, ds)


def test_mmsa_pickle_to_trained_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pkl = user_file("mosi", "aligned_50.pkl", mmsa_data())
    write_params(tmp_path / "params.yaml", {"data": {"seq_len": 8, "mosi": {
        "source": "mmsa", "path": str(pkl), "sha256": sha(pkl)}}, "train": {"epochs": 1},
        "variants": ["late_fusion"]})
    raw = mmsa_data()
    cfg = load_config("params.yaml")
    stages(cfg, "mosi")
    store = paths.aligned_store("mosi")
    attrs = read_attrs(store)
    assert attrs["source"] == "mmsa" and attrs["synthetic"] is False
    assert attrs["inputs_sha256"] == {str(pkl): sha(pkl)}
    assert attrs["alignment"] == "token" and attrs["dims"] == {"text": 768, "audio": 5, "vision": 20}
    assert attrs["features"]["audio"] == "MMSA aligned_50.pkl audio 5-d"
    assert attrs["lengths"] == {"text": 6, "audio": 6, "vision": 6}  # the file's own: no cut, no pad
    with open_store(store) as f:
        for split in ("train", "valid", "test"):
            mask = raw[split]["text_bert"][:, 1].sum(1)
            for m in ("text", "audio", "vision"):  # token level: one length, the attention mask's
                np.testing.assert_array_equal(f[split][f"{m}_len"][:], mask)
                np.testing.assert_array_equal(f[split][m][:], np.nan_to_num(raw[split][m], neginf=0))
    assert read_strings(store, "train", "raw_text")[1] == "utterance 1"
    # the text input is the file's token-level BERT features, at the same positions as audio/vision
    t = read_attrs(paths.text_features("mosi"))
    assert t["encoder"] == "source features: MMSA aligned_50.pkl text 768-d (BERT, token-level)"
    with open_store(paths.text_features("mosi")) as f, open_store(store) as g:
        np.testing.assert_array_equal(f["test/text_len"][:], g["test/audio_len"][:])
    (res,) = train_stage.train_variant(cfg, "mosi", "late_fusion")
    assert res["synthetic"] is False and np.isfinite(res["test"]["mae"])


def test_mult_iemocap_uses_its_own_text_features(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data, _ = mult_data("iemocap")
    pkl = user_file("iemocap", "iemocap_data.pkl", data)
    write_params(tmp_path / "params.yaml", {"datasets": ["iemocap"], "data": {"iemocap": {
        "source": "mult", "path": str(pkl), "allow_unverified_pickle": True}}, "train": {"epochs": 1},
        "variants": ["late_fusion"]})
    cfg = load_config("params.yaml")
    stages(cfg, "iemocap")
    t = read_attrs(paths.text_features("iemocap"))
    assert t["encoder"].startswith("source features") and t["dim"] == 300
    with open_store(paths.aligned_store("iemocap")) as f:
        assert f["train/label"].shape == (5, 4)
        assert (f["train/audio_len"][:] == 8).all()  # MulT: every step is read, at its own length
        assert f["train/vision"].shape == (5, 7, 35) and (f["train/vision_len"][:] == 7).all()
    (res,) = train_stage.train_variant(cfg, "iemocap", "late_fusion")
    assert "wa" in res["test"]


def test_pickle_needs_checksum_or_opt_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pkl = user_file("mosi", "aligned_50.pkl", mmsa_data())
    write_params(tmp_path / "params.yaml", {"data": {"mosi": {"source": "mmsa", "path": str(pkl)}}})
    cfg = load_config("params.yaml")
    download(cfg, "mosi")
    with pytest.raises(DataError, match="sha256"):
        align(cfg, "mosi")
    assert not paths.aligned_store("mosi").exists()


def test_checksum_mismatch_stops_download(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pkl = user_file("mosi", "aligned_50.pkl", mmsa_data())
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
