"""MMSA / MulT pickle readers on small pickles with exactly the documented keys."""
from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from pipeline.data.pickles import load_iemocap, load_mmsa, load_mult, read_pickle_checked
from pipeline.data.schema import SPLITS, PaddedSplit
from pipeline.errors import DataError
from tests.helpers import L, SIZES, dump, mmsa_data, mult_data, sha


# --- checksum gate --------------------------------------------------------------------------------

def test_checksum_gate(tmp_path):
    p = dump(tmp_path / "x.pkl", {"a": 1})
    with pytest.raises(DataError, match=r"x\.pkl.*unverified.*data\.mosi\.sha256.*allow_unverified_pickle"):
        read_pickle_checked(p, None, False, dataset="mosi")
    with pytest.raises(DataError, match=r"x\.pkl: sha256 is [0-9a-f]{64}"):
        read_pickle_checked(p, "ab" * 32, False)
    with pytest.raises(DataError, match="sha256"):  # a wrong sum wins over the opt-in
        read_pickle_checked(p, "ab" * 32, True)
    assert read_pickle_checked(p, sha(p), False) == {"a": 1}
    assert read_pickle_checked(p, sha(p).upper(), False) == {"a": 1}


def test_opt_in_loads_with_warning(tmp_path, caplog):
    p = dump(tmp_path / "x.pkl", {"a": 1})
    with caplog.at_level(logging.WARNING):
        assert read_pickle_checked(p, None, True) == {"a": 1}
    assert "without checksum" in caplog.text


def test_missing_and_corrupt_pickle(tmp_path):
    with pytest.raises(DataError, match=r"nope\.pkl: file not found"):
        read_pickle_checked(tmp_path / "nope.pkl", None, True)
    p = dump(tmp_path / "cut.pkl", mmsa_data())
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"cut\.pkl: corrupt or truncated pickle"):
        read_pickle_checked(p, None, True)
    with pytest.raises(DataError, match=r"cut\.pkl: corrupt or truncated pickle"):
        load_mmsa(p, "mosi", sha(p), False)


# --- MMSA -----------------------------------------------------------------------------------------

def test_mmsa_aligned(tmp_path, caplog):
    raw = mmsa_data(aligned=True)
    p = dump(tmp_path / "aligned_50.pkl", raw)
    with caplog.at_level(logging.INFO, logger="pipeline.data.pickles"):
        out = load_mmsa(p, "mosi", sha(p), False)
    assert list(out) == list(SPLITS)
    for split, n in SIZES.items():
        s, r = out[split], raw[split]
        assert isinstance(s, PaddedSplit) and len(s) == n
        assert s.text.shape == (n, L, 768) and s.text.dtype == np.float32
        assert s.audio.shape == (n, L, 5) and s.vision.shape == (n, L, 20)
        assert s.audio.dtype == s.vision.dtype == np.float32
        assert np.isfinite(s.audio).all()
        mask_len = r["text_bert"][:, 1].sum(1).astype(np.int64)
        for lens in (s.text_len, s.audio_len, s.vision_len):
            assert lens.dtype == np.int64 and np.array_equal(lens, mask_len)
        assert s.labels.dtype == np.float32 and s.labels.shape == (n,)
        assert np.allclose(s.labels, r["regression_labels"])
        assert s.ids == [f"{split}vid{i}$_${i}" for i in range(n)] and all(type(i) is str for i in s.ids)
        assert s.raw_text == [f"utterance {i}" for i in range(n)]
        assert np.array_equal(s.extra["text_bert"], r["text_bert"].astype(np.int64))
    assert out["train"].audio[0, 0, 0] == 0.0
    # everything else is the file's own value, row by row (nothing lost or shifted)
    for split in SPLITS:
        for m in ("text", "audio", "vision"):
            want = np.where(np.isfinite(raw[split][m]), raw[split][m], 0)
            np.testing.assert_array_equal(getattr(out[split], m), want)
    lines = [m for m in caplog.messages if "non-finite" in m]
    assert len(lines) == 9  # one per split and modality
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("train/audio: 2 non-finite" in m for m in warned)  # benign, counted at WARNING
    assert not any("beyond the attention mask" in m for m in caplog.messages)


def test_mmsa_aligned_rows_beyond_the_mask_are_counted(tmp_path, caplog):
    raw = mmsa_data(aligned=True)
    k = int(raw["valid"]["text_bert"][1, 1].sum())
    raw["valid"]["vision"][1, k - 1:, 0] = 1.0  # one utterance has vision rows past its tokens
    p = dump(tmp_path / "aligned_50.pkl", raw)
    with caplog.at_level(logging.WARNING):
        out = load_mmsa(p, "mosi", None, True)
    assert "aligned_50.pkl valid/vision: 1 utterance(s) have non-zero rows beyond" in caplog.text
    assert out["valid"].vision_len[1] == k  # the length stays the attention mask's


def test_mmsa_unaligned_mosei(tmp_path):
    raw = mmsa_data(aligned=False, da=74, dv=35)
    p = dump(tmp_path / "unaligned_50.pkl", raw)
    out = load_mmsa(p, "mosei", None, True)
    s, r = out["valid"], raw["valid"]
    assert s.audio.shape == (3, 9, 74) and s.vision.shape == (3, 7, 35)  # each its own steps
    assert np.array_equal(s.audio_len, r["audio_lengths"]) and np.array_equal(s.vision_len, r["vision_lengths"])
    assert np.array_equal(s.text_len, r["text_bert"][:, 1].sum(1))
    for split in SPLITS:
        np.testing.assert_array_equal(out[split].vision, raw[split]["vision"])


def test_feature_sizes_come_from_the_file(tmp_path):
    """MMSA-FET-style extractions have other sizes: read them, check them against a declaration."""
    p = dump(tmp_path / "aligned_50.pkl", mmsa_data(da=7, dv=33))
    out = load_mmsa(p, "mosi", None, True)
    assert out["test"].audio.shape == (4, L, 7) and out["test"].vision.shape == (4, L, 33)
    assert load_mmsa(p, "mosi", None, True, dims={"audio": 7, "vision": None})["test"].audio.shape == (4, L, 7)
    with pytest.raises(DataError, match=re.escape("aligned_50.pkl: split 'train': 'audio' has 7 features "
                                                  "(shape (5, 6, 7)) but data.mosi.dims.audio declares 74")):
        load_mmsa(p, "mosi", None, True, dims={"audio": 74})


def test_feature_sizes_must_agree_across_splits(tmp_path):
    data = mmsa_data()
    data["test"]["audio"] = data["test"]["audio"][..., :3]
    p = dump(tmp_path / "aligned_50.pkl", data)
    with pytest.raises(DataError, match=re.escape("aligned_50.pkl: split 'test': 'audio' has 3 features "
                                                  "(shape (4, 6, 3)) but split 'train' has 5")):
        load_mmsa(p, "mosi", None, True)


def test_values_beyond_float32_are_refused(tmp_path):
    data = mmsa_data()
    data["valid"]["vision"] = data["valid"]["vision"].astype(np.float64)
    data["valid"]["vision"][2, 1, :3] = 1e39  # finite in float64, inf in float32
    p = dump(tmp_path / "aligned_50.pkl", data)
    with pytest.raises(DataError, match=re.escape("aligned_50.pkl: split 'valid': key 'vision': 3 finite "
                                                  "value(s) exceed the float32 range")):
        load_mmsa(p, "mosi", None, True)


@pytest.mark.parametrize("bad", [np.nan, None, 3])
def test_raw_text_must_be_strings(tmp_path, bad):
    data = mmsa_data()
    texts = data["train"]["raw_text"].astype(object)
    texts[3] = bad
    data["train"]["raw_text"] = texts
    p = dump(tmp_path / "aligned_50.pkl", data)
    with pytest.raises(DataError, match=re.escape("aligned_50.pkl: split 'train': 'raw_text' has 1 entries "
                                                  "that are not strings") + r".*index 3"):
        load_mmsa(p, "mosi", None, True)


def _set(split, key, value):
    def f(d):
        d[split][key] = value(d[split]) if callable(value) else value
    return f


def _drop(split, key=None):
    def f(d):
        if key:
            del d[split][key]
        else:
            del d[split]
    return f


def _empty(split):
    def f(d):
        d[split] = {k: v[:0] for k, v in d[split].items()}
    return f


MMSA_BAD = [
    ("missing split", _drop("valid"), "aligned_50.pkl: missing split 'valid'"),
    ("missing key", _drop("valid", "vision"), "aligned_50.pkl: split 'valid' missing key 'vision'"),
    ("wrong ndim", _set("test", "vision", lambda d: d["vision"][:, 0]),
     "aligned_50.pkl: split 'test': 'vision' has shape (4, 20), expected (N, L, d)"),
    ("aligned steps differ", _set("test", "vision", lambda d: d["vision"][:, :4]),
     "aligned_50.pkl: split 'test': aligned file (no 'audio_lengths') but 'text', 'audio', 'vision' have 6, 6, 4"),
    ("bert rows", _set("test", "text_bert", lambda d: d["text_bert"][:, :2]),
     "aligned_50.pkl: split 'test': 'text_bert' has shape (4, 2, 6), expected (N, 3, 6)"),
    ("N ids vs others", _set("train", "id", lambda d: d["id"][:4]),
     "aligned_50.pkl: split 'train': 'id' has 4 entries but 'raw_text' has 5"),
    ("N labels", _set("train", "regression_labels", lambda d: d["regression_labels"][:2]),
     "aligned_50.pkl: split 'train': 'id' has 5 entries but 'regression_labels' has 2"),
    ("labels range", _set("valid", "regression_labels", np.array([0.5, 3.5, -1.0], dtype=np.float32)),
     "aligned_50.pkl: split 'valid': 'regression_labels' has 1 value(s) outside [-3, 3]"),
    ("labels nan", _set("valid", "regression_labels", np.array([0.5, np.nan, -1.0])),
     "aligned_50.pkl: split 'valid': 'regression_labels' has 1 value(s) outside [-3, 3]"),
    ("empty split", _empty("test"), "aligned_50.pkl: split 'test': is empty"),
]


@pytest.mark.parametrize("mutate, message", [m[1:] for m in MMSA_BAD], ids=[m[0] for m in MMSA_BAD])
def test_mmsa_bad_input(tmp_path, mutate, message):
    data = mmsa_data()
    mutate(data)
    p = dump(tmp_path / "aligned_50.pkl", data)
    with pytest.raises(DataError, match=re.escape(message)):
        load_mmsa(p, "mosi", None, True)


def test_mmsa_unaligned_missing_lengths(tmp_path):
    data = mmsa_data(aligned=False)
    del data["train"]["vision_lengths"]
    p = dump(tmp_path / "unaligned_50.pkl", data)
    with pytest.raises(DataError, match=re.escape("unaligned_50.pkl: split 'train' missing key 'vision_lengths'")):
        load_mmsa(p, "mosi", None, True)


# --- MulT -----------------------------------------------------------------------------------------

def test_mult_mosi(tmp_path, caplog):
    raw, lens = mult_data("mosi")
    p = dump(tmp_path / "mosi_data.pkl", raw)
    with caplog.at_level(logging.INFO, logger="pipeline.data.pickles"):
        out = load_mult(p, "mosi", sha(p), False)
    for split, n in SIZES.items():
        s = out[split]
        assert s.text.shape == (n, L, 300) and s.audio.shape == (n, 8, 5) and s.vision.shape == (n, 7, 20)
        assert s.raw_text is None
        assert s.labels.shape == (n,) and s.labels.dtype == np.float32
        assert np.allclose(s.labels, raw[split]["labels"].reshape(-1))
        for m in ("text", "audio", "vision"):
            got = getattr(s, f"{m}_len")  # MulT's models read every step: the full length
            assert got.dtype == np.int64 and (got == raw[split][m].shape[1]).all(), (split, m)
            want = np.where(np.isfinite(raw[split][m]), raw[split][m], 0)
            np.testing.assert_array_equal(getattr(s, m), want)  # front padding kept in place
        assert s.ids[1] == f"{split}v1_0.0_1.5"
        assert np.isfinite(s.audio).all() and np.isfinite(s.vision).all()
    assert out["train"].audio[0, -1, 0] == 0 and out["train"].vision[0, -1, 1] == 0
    assert any("train/vision: 1 non-finite" in m for m in caplog.messages)


def test_mult_iemocap(tmp_path, caplog):
    raw, lens = mult_data("iemocap")
    p = dump(tmp_path / "iemocap_data.pkl", raw)
    with caplog.at_level(logging.WARNING):
        out = load_iemocap(p, sha(p), False)
    assert "differ from the paper" in caplog.text  # 5/3/4, not 2717/798/938: a warning only
    for split, n in SIZES.items():
        s = out[split]
        assert s.audio.shape == (n, 8, 74) and s.vision.shape == (n, 7, 35)
        assert s.labels.shape == (n, 4) and s.labels.dtype == np.int64
        assert np.array_equal(s.labels, lens[split]["pos"])
        assert s.ids == [f"{split}/{i}" for i in range(n)]  # MulT's IEMOCAP has no 'id'
        assert (s.audio_len == 8).all() and (s.vision_len == 7).all()


def test_mult_iemocap_no_warning_at_paper_sizes(tmp_path, caplog):
    raw, _ = mult_data("iemocap", sizes={"train": 2717, "valid": 798, "test": 938})
    p = dump(tmp_path / "iemocap_data.pkl", raw)
    with caplog.at_level(logging.WARNING):
        out = load_mult(p, "iemocap", None, True)
    assert {s: len(out[s]) for s in SPLITS} == {"train": 2717, "valid": 798, "test": 938}
    assert "differ from the paper" not in caplog.text


MULT_BAD = [
    ("missing split", "mosi", _drop("test"), "mosi_data.pkl: missing split 'test'"),
    ("missing key", "mosi", _drop("valid", "audio"), "mosi_data.pkl: split 'valid' missing key 'audio'"),
    ("text dim differs", "mosi", _set("valid", "text", lambda d: d["text"][..., :100]),
     "mosi_data.pkl: split 'valid': 'text' has 100 features (shape (3, 6, 100)) but split 'train' has 300"),
    ("N ids vs audio", "mosi", _set("train", "id", lambda d: d["id"][:3]),
     "mosi_data.pkl: split 'train': 'id' has 3 entries but 'text' has 5"),
    ("labels range", "mosi", _set("test", "labels", lambda d: d["labels"] * 0 - 4),
     "mosi_data.pkl: split 'test': 'labels' has 4 value(s) outside [-3, 3]"),
    ("labels shape", "mosi", _set("test", "labels", lambda d: np.zeros((4, 2))),
     "mosi_data.pkl: split 'test': 'labels' has shape (4, 2), expected (N,) or (N, 1, 1)"),
    ("empty split", "mosi", _empty("valid"), "mosi_data.pkl: split 'valid': is empty"),
    ("iemocap labels shape", "iemocap", _set("train", "labels", lambda d: d["labels"][:, :3]),
     "iemocap_data.pkl: split 'train': 'labels' has shape (5, 3, 2), expected (N, 4, 2)"),
    ("iemocap labels values", "iemocap", _set("train", "labels", lambda d: d["labels"] * 2),
     "iemocap_data.pkl: split 'train': 'labels' has values other than 0 and 1"),
    ("iemocap vision dim", "iemocap", _set("valid", "vision", lambda d: d["vision"][..., :20]),
     "iemocap_data.pkl: split 'valid': 'vision' has 20 features (shape (3, 7, 20)) but split 'train' has 35"),
]


@pytest.mark.parametrize("dataset, mutate, message", [m[1:] for m in MULT_BAD], ids=[m[0] for m in MULT_BAD])
def test_mult_bad_input(tmp_path, dataset, mutate, message):
    data, _ = mult_data(dataset)
    mutate(data)
    p = dump(tmp_path / ("iemocap_data.pkl" if dataset == "iemocap" else "mosi_data.pkl"), data)
    with pytest.raises(DataError, match=re.escape(message)):
        load_mult(p, dataset, None, True)


def test_iemocap_needs_a_user_path(tmp_path):
    for path in (None, ""):
        with pytest.raises(DataError, match=r"data\.iemocap\.path.*sail\.usc\.edu/iemocap.*iemocap_data\.pkl"):
            load_iemocap(path, None, True)
    missing = tmp_path / "iemocap_data.pkl"
    with pytest.raises(DataError, match=re.escape(str(missing)) + r": IEMOCAP file not found.*sail\.usc\.edu"):
        load_iemocap(missing, None, True)


def test_iemocap_checksum_gate(tmp_path):
    raw, _ = mult_data("iemocap")
    p = dump(tmp_path / "iemocap_data.pkl", raw)
    with pytest.raises(DataError, match=r"data\.iemocap\.sha256"):
        load_iemocap(p, None, False)
