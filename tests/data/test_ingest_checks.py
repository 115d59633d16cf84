"""Real-data ingest through the real stages: lossless per-modality shapes, requested cuts, tracked
user files, and one test per refused input (the message names the file, the split and the key,
and no store is written)."""
import logging
import re

import numpy as np
import pytest

from pipeline import paths
from pipeline.settings import load_config
from pipeline.data.store import open_store, read_attrs, verify_inputs
from pipeline.errors import ConfigError, DataError
from pipeline.stages import align, download, embed
from tests.helpers import mmsa_data, mult_data, project, user_file, write_params

FILE = "data/user/mosi/unaligned_50.pkl"


def refused(cfg, ds, *patterns):
    download(cfg, ds)
    with pytest.raises(DataError) as e:
        align(cfg, ds)
    for p in patterns:
        assert re.search(p, str(e.value)), (p, str(e.value))
    assert not paths.aligned_store(ds).exists()  # nothing half-written
    return str(e.value)


# --- lossless shapes -----------------------------------------------------------------------------

def test_unaligned_mmsa_keeps_every_modality_at_its_own_length(tmp_path, monkeypatch):
    raw = mmsa_data(aligned=False, da=74, dv=35)  # MOSEI-like sizes; audio 9 steps, vision 7, text 6
    cfg, _ = project(tmp_path, monkeypatch, raw, ds="mosei")
    download(cfg, "mosei")
    align(cfg, "mosei")
    store = paths.aligned_store("mosei")
    a = read_attrs(store)
    assert a["alignment"] == "none" and a["lengths"] == {"text": 6, "audio": 9, "vision": 7}
    assert a["cut"] == {s: {"text": 0, "audio": 0, "vision": 0} for s in ("train", "valid", "test")}
    with open_store(store) as f:
        for s in ("train", "valid", "test"):
            for m in ("audio", "vision"):
                np.testing.assert_array_equal(f[s][f"{m}_len"][:], raw[s][f"{m}_lengths"])
                np.testing.assert_array_equal(f[s][m][:], np.nan_to_num(raw[s][m], neginf=0))
    embed(cfg, "mosei")  # unaligned: the configured encoder reads the words
    assert read_attrs(paths.text_features("mosei"))["encoder"] == "tiny-random-bert"
    verify_inputs(store, paths.text_features("mosei"))


def test_a_cut_happens_only_when_asked_and_is_counted(tmp_path, monkeypatch, caplog):
    raw = mmsa_data(aligned=False)
    cfg, _ = project(tmp_path, monkeypatch, raw, max_len={"audio": 4})
    download(cfg, "mosi")
    with caplog.at_level(logging.WARNING):
        align(cfg, "mosi")
    a = read_attrs(paths.aligned_store("mosi"))
    want = {s: int((raw[s]["audio_lengths"] > 4).sum()) for s in ("train", "valid", "test")}
    assert {s: c["audio"] for s, c in a["cut"].items()} == want and sum(want.values()) > 0
    assert a["lengths"] == {"text": 6, "audio": 4, "vision": 7}
    assert f"'audio': {sum(want.values())}" in caplog.text  # the log line says how many
    with open_store(paths.aligned_store("mosi")) as f:
        np.testing.assert_array_equal(f["valid/audio_len"][:], np.minimum(raw["valid"]["audio_lengths"], 4))
        np.testing.assert_array_equal(f["valid/audio"][:], np.nan_to_num(raw["valid"]["audio"][:, :4], neginf=0))


def test_a_cut_of_a_front_padded_array_keeps_the_real_steps():
    """MulT pads at the front: a cut keeps the last steps and counts the utterances whose real
    (non-padding) steps were more than the limit."""
    from pipeline.data.checks import cut
    from pipeline.data.schema import PaddedSplit
    a = np.zeros((3, 6, 2), dtype=np.float32)
    for i, k in enumerate((2, 4, 6)):  # real steps per utterance, at the end, holding their index
        a[i, 6 - k:] = np.arange(6 - k, 6, dtype=np.float32)[:, None] + 1
    full = np.full(3, 6, dtype=np.int64)  # MulT's lengths: every step
    p = PaddedSplit(ids=["a", "b", "c"], audio=a.copy(), audio_len=full.copy(), vision=a.copy(),
                    vision_len=full.copy(), labels=np.zeros(3, np.float32))
    assert cut(p, {"audio": 3}, front_padded=True) == {"audio": 2, "vision": 0}  # 4 and 6 > 3
    np.testing.assert_array_equal(p.audio, a[:, 3:])
    assert p.audio[0, :, 0].tolist() == [0, 5, 6] and p.audio[2, :, 0].tolist() == [4, 5, 6]
    assert p.audio_len.tolist() == [3, 3, 3] and p.vision.shape == (3, 6, 2)


def test_a_mult_file_is_cut_from_the_front(tmp_path, monkeypatch):
    raw, lens = mult_data("mosi")  # front-padded: the last lens[m] steps hold the features
    cfg, _ = project(tmp_path, monkeypatch, raw, name="mosi_data_noalign.pkl", source="mult",
                     max_len={"audio": 4})
    download(cfg, "mosi")
    align(cfg, "mosi")
    a = read_attrs(paths.aligned_store("mosi"))
    assert {s: c["audio"] for s, c in a["cut"].items()} == {
        s: int((lens[s]["audio"] > 4).sum()) for s in ("train", "valid", "test")}
    with open_store(paths.aligned_store("mosi")) as f:
        for s in ("train", "valid", "test"):
            np.testing.assert_array_equal(f[s]["audio"][:], np.nan_to_num(raw[s]["audio"][:, -4:], neginf=0))
            assert (f[s]["audio_len"][:] == 4).all()


def test_aligned_file_cannot_be_cut_unevenly(tmp_path, monkeypatch):
    cfg, _ = project(tmp_path, monkeypatch, mmsa_data(), name="aligned_50.pkl",
                     max_len={"audio": 4, "vision": 5})
    download(cfg, "mosi")
    with pytest.raises(ConfigError, match=r"data\.mosi\.max_len.*aligned file \(aligned_50\.pkl\)"):
        align(cfg, "mosi")


def test_mult_noalign_keeps_its_own_lengths(tmp_path, monkeypatch):
    raw, _ = mult_data("mosi")  # text 6 steps, audio 8, vision 7: a _noalign file
    cfg, _ = project(tmp_path, monkeypatch, raw, name="mosi_data_noalign.pkl", source="mult")
    download(cfg, "mosi")
    align(cfg, "mosi")
    a = read_attrs(paths.aligned_store("mosi"))
    assert a["alignment"] == "none" and a["lengths"] == {"text": 6, "audio": 8, "vision": 7}
    assert a["features"]["text"] == "MulT mosi_data_noalign.pkl text 300-d (GloVe)"


def test_mmsa_fet_feature_sizes_are_read_and_declared_sizes_checked(tmp_path, monkeypatch):
    cfg, _ = project(tmp_path, monkeypatch, mmsa_data(aligned=False, da=33, dv=709))
    download(cfg, "mosi")
    align(cfg, "mosi")
    a = read_attrs(paths.aligned_store("mosi"))
    assert a["dims"] == {"text": 768, "audio": 33, "vision": 709}
    assert a["features"]["vision"] == "MMSA unaligned_50.pkl vision 709-d"
    paths.aligned_store("mosi").unlink()
    cfg, _ = project(tmp_path, monkeypatch, mmsa_data(aligned=False, da=33, dv=709), dims={"audio": 74})
    refused(cfg, "mosi", re.escape(f"{FILE}: split 'train': 'audio' has 33 features"), r"dims\.audio declares 74")


# --- tracked inputs ------------------------------------------------------------------------------

def test_user_file_outside_data_user_is_refused(tmp_path, monkeypatch):
    cfg, _ = project(tmp_path, monkeypatch, mmsa_data())
    other = tmp_path / "elsewhere.pkl"
    other.write_bytes(b"x")
    write_params(tmp_path / "params.yaml", {"data": {"mosi": {"source": "mmsa", "path": str(other),
                                                              "allow_unverified_pickle": True}}})
    with pytest.raises(DataError, match=r"elsewhere\.pkl: data\.mosi\.path must lie under data/user/mosi/"):
        download(load_config("params.yaml"), "mosi")


def test_file_replaced_after_download_is_refused(tmp_path, monkeypatch):
    cfg, pkl = project(tmp_path, monkeypatch, mmsa_data(aligned=False))
    download(cfg, "mosi")
    user_file("mosi", pkl.name, mmsa_data(aligned=False, da=7))
    with pytest.raises(DataError, match=r"unaligned_50\.pkl: changed since the download stage"):
        align(cfg, "mosi")


def test_training_refuses_a_damaged_store(tmp_path, monkeypatch):
    cfg, _ = project(tmp_path, monkeypatch, mmsa_data(aligned=False))
    download(cfg, "mosi")
    align(cfg, "mosi")
    embed(cfg, "mosi")
    store = paths.aligned_store("mosi")
    verify_inputs(store, paths.text_features("mosi"))
    import h5py
    with h5py.File(store, "r+") as f:  # one value changes, as a bit flip in a DVC cache would
        f["test/audio"][0, 0, 0] += 1.0
    from pipeline import train
    from pipeline import train_stage
    with pytest.raises(DataError, match=r"mosi\.h5: content checksum .* does not match"):
        train_stage.train_variant(cfg, "mosi", "late_fusion")


# --- refused inputs, one test each ---------------------------------------------------------------

def test_lengths_that_remove_a_modality_from_a_whole_split(tmp_path, monkeypatch):
    raw = mmsa_data(aligned=False)
    raw["valid"]["vision_lengths"][:] = 0
    cfg, _ = project(tmp_path, monkeypatch, raw)
    refused(cfg, "mosi", re.escape(f"{FILE}: split 'valid': 'vision_lengths' is 0 for 3 of 3"),
            "whole split has no vision")


def test_lengths_that_remove_a_modality_beyond_the_fraction(tmp_path, monkeypatch):
    raw = mmsa_data(aligned=False)
    raw["train"]["audio_lengths"][:2] = 0  # 2 of 5 = 40% > 10%
    cfg, _ = project(tmp_path, monkeypatch, raw)
    refused(cfg, "mosi", re.escape(f"{FILE}: split 'train': 'audio_lengths' is 0 for 2 of 5"),
            r"max_empty_fraction = 0\.1")


def test_few_empty_utterances_are_a_warning_with_the_count(tmp_path, monkeypatch, caplog):
    raw = mmsa_data(aligned=False)
    raw["train"]["audio_lengths"][:2] = 0
    cfg, _ = project(tmp_path, monkeypatch, raw, data={"max_empty_fraction": 0.5})
    download(cfg, "mosi")
    with caplog.at_level(logging.WARNING):
        align(cfg, "mosi")
    assert f"{FILE}: split 'train': 'audio_lengths' is 0 for 2 of 5 utterances" in caplog.text
    assert read_attrs(paths.aligned_store("mosi"))["ingest"]["empty"]["train"]["audio"] == 2


def test_empty_aligned_text_names_the_attention_mask(tmp_path, monkeypatch):
    raw = mmsa_data()
    raw["test"]["text_bert"][:, 1] = 0
    cfg, _ = project(tmp_path, monkeypatch, raw, name="aligned_50.pkl")
    refused(cfg, "mosi", re.escape("aligned_50.pkl: split 'test': 'text_bert[:, 1] (attention mask)' is 0 for 4 of 4"))


def test_ids_shared_between_splits(tmp_path, monkeypatch):
    raw = mmsa_data(aligned=False)
    raw["test"]["id"] = raw["test"]["id"].astype(object)
    raw["test"]["id"][1] = raw["train"]["id"][3]
    cfg, _ = project(tmp_path, monkeypatch, raw)
    refused(cfg, "mosi", re.escape(f"{FILE}: splits 'train' and 'test': key 'id' has 1 value(s) in both"))


def test_split_that_copies_another(tmp_path, monkeypatch):
    raw = mmsa_data(aligned=False)
    ids = raw["test"]["id"]
    raw["test"] = {k: v.copy() for k, v in raw["train"].items()}
    raw["test"]["id"] = np.array([f"copy{i}" for i in range(5)])  # new ids, same utterances
    cfg, _ = project(tmp_path, monkeypatch, raw)
    assert len(ids) == 4
    refused(cfg, "mosi", re.escape(f"{FILE}: split 'test' is a copy of split 'train'"), "keys")


@pytest.mark.parametrize("case, pattern", [
    ("one utterance", r"split 'valid': 1 utterance\(s\); at least 2"),
    ("one sign", r"split 'valid': key 'regression_labels' has no negative score"),
    ("constant", r"split 'valid': key 'regression_labels' is constant \(2\)"),
])
def test_split_too_small_to_score(tmp_path, monkeypatch, case, pattern):
    raw = mmsa_data(aligned=False)
    if case == "one utterance":
        raw["valid"] = {k: v[:1] for k, v in raw["valid"].items()}
    else:
        raw["valid"]["regression_labels"][:] = [2.0, 2.0, 2.0] if case == "constant" else [0.5, 1.0, 2.0]
    cfg, _ = project(tmp_path, monkeypatch, raw)
    refused(cfg, "mosi", re.escape(FILE) + ": " + pattern)


def test_iemocap_emotion_with_one_class_cannot_be_scored(tmp_path, monkeypatch):
    raw, _ = mult_data("iemocap")
    raw["test"]["labels"][:, 2] = [1.0, 0.0]  # sad: every test utterance negative
    cfg, _ = project(tmp_path, monkeypatch, raw, name="iemocap_data.pkl", source="mult", ds="iemocap")
    refused(cfg, "iemocap", re.escape("iemocap_data.pkl: split 'test': key 'labels' emotion 2 (sad) has only class 0"))
