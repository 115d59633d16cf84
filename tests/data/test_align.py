"""pipeline.data.align against mmsdk's own pipeline, on .csd files written by mmsdk."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.data import intervals as A
from pipeline.data.align import align_cmu, align_video, replace_nonfinite
from pipeline.data.intervals import align_to_reference
from pipeline.errors import DataError
from tests.csd_fixtures import write_cmu_fixture, write_csd
from tests.helpers import MODS, mmsdk_pipeline, reference_utterances

import mmsdk.mmdatasdk as md  # noqa: E402  (required: the reference implementation)
TOL = dict(rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# mmsdk's reference pipeline (the standard CMU tutorial recipe)


def read_video(path: Path, vid: str):
    with h5py.File(path, "r") as f:
        g = f[list(f.keys())[0]]["data"][vid]
        return g["intervals"][()], g["features"][()]


# ---------------------------------------------------------------------------------------------
# align_video / align_cmu == mmsdk


CASES = [("mosi", 0), ("mosi", 1), ("mosi", 2), ("mosei", 3), ("mosei", 4)]


@pytest.fixture(scope="module", params=CASES, ids=[f"{d}-seed{s}" for d, s in CASES])
def case(request, tmp_path_factory):
    dataset, seed = request.param
    fx = write_cmu_fixture(tmp_path_factory.mktemp(f"{dataset}{seed}"), dataset, seed=seed,
                           nonfinite=seed % 2 == 1)
    with pytest.MonkeyPatch.context() as mp:
        ref = mmsdk_pipeline(fx["paths"], mp)
    return fx, ref


def test_align_video_matches_mmsdk(case):
    fx, ref = case
    n_segments = 0
    for vid in fx["videos"]:
        w_iv, w_tok = read_video(fx["paths"]["words"], vid)
        l_iv, _ = read_video(fx["paths"]["labels"], vid)
        mods = {name: read_video(fx["paths"][name], vid) for name in MODS}
        segments = align_video(w_iv, w_tok, mods, l_iv)
        expected = sorted(k for k in ref if k.split("[")[0] == vid)
        assert sorted(f"{vid}[{s.index}]" for s in segments) == expected
        for seg in segments:
            r = ref[f"{vid}[{seg.index}]"]
            np.testing.assert_array_equal(seg.interval, r["labels"][0][0])
            if r["words"] is None:
                assert len(seg.words.word) == 0
            else:
                # the tokens, in order
                assert seg.words.features[:, 0].tolist() == r["words"][1][:, 0].tolist()
                np.testing.assert_allclose(seg.words.intervals, r["words"][0], **TOL)
                assert seg.tokens == [t.decode() for t in r["words"][1][:, 0]]
            for name in MODS:
                rows = seg.modalities[name]
                if r[name] is None:
                    assert rows.features.shape == (0, fx["dims"][name])
                    continue
                np.testing.assert_allclose(rows.intervals, r[name][0], **TOL)
                # NaN / ±inf exactly where mmsdk has them
                np.testing.assert_allclose(rows.features, r[name][1], **TOL)
            n_segments += 1
    assert n_segments == len(ref)


def test_align_cmu_matches_mmsdk(case, caplog):
    fx, ref = case
    expected = reference_utterances(ref, fx["folds"])
    with caplog.at_level(logging.INFO, logger="pipeline.data.align"):
        got = align_cmu(fx["paths"], fx["folds"], progress=False)
    assert set(got) == {"train", "valid", "test"}
    for split, u in got.items():
        e = expected[split]
        assert u.ids == e["ids"]
        assert u.words == e["words"]
        np.testing.assert_allclose(u.labels, e["labels"], **TOL)
        assert u.labels.dtype == np.float32
        for field, name in (("audio", "COVAREP"), ("vision", "FACET")):
            arrays = getattr(u, field)
            assert len(arrays) == len(u.ids)
            for a, b, words in zip(arrays, e[name], u.words):
                assert a.dtype == np.float32 and a.shape == (len(words), fx["dims"][name])
                np.testing.assert_allclose(a, b, **TOL)
    # every video of a fold is there; the one in no fold is skipped and counted
    in_folds = {v for vs in fx["folds"].values() for v in vs}
    assert {i.split("[")[0] for u in got.values() for i in u.ids} <= in_folds
    assert "skipped 1 videos that are in no fold" in caplog.text
    for field, name in (("audio", "COVAREP"), ("vision", "FACET")):
        n = sum(e["nonfinite"][name] for e in expected.values())
        assert f"{field} ({name}): replaced {n} non-finite values" in caplog.text
    if fx["n_nonfinite"]:
        assert sum(e["nonfinite"]["COVAREP"] for e in expected.values()) > 0


# ---------------------------------------------------------------------------------------------
# align_to_reference == brute force (mmsdk's own intersect function, one reference at a time)


def brute_force(ref, sub, feat, eps=A.EPSILON):
    m, d = len(ref), feat.shape[1]
    ivs = np.stack([ref.min(1), ref.max(1)], 1).astype(np.result_type(ref, sub))  # mmsdk's clipped dtype
    means, hit = np.zeros((m, d)), np.zeros(m, bool)
    for i in range(m):
        if abs(ref[i, 0] - ref[i, 1]) < eps:
            continue
        entry = {"intervals": sub, "features": feat}
        iv, f = md.mmdataset._mmdataset__intersect_and_copy(None, ref[i], entry, eps)
        if len(iv):
            hit[i] = True
            means[i] = np.average(f, axis=0)
            ivs[i] = iv.min(), iv.max()
    return means, ivs, hit


def random_case(rng, kind: str, n=300, m=60, d=3):
    grid = lambda x: np.round(x / 0.0005) * 0.0005  # noqa: E731 - lands on eps boundaries often
    if kind == "frames":  # sorted, contiguous frames, some zero-length or shorter than eps
        k = np.arange(n)
        sub = np.stack([k * 0.01, (k + 1) * 0.01], 1)
        short = rng.random(n) < 0.05
        sub[short, 1] = sub[short, 0] + rng.choice([0.0, 0.0005, 0.001], short.sum())
        sub = sub[rng.permutation(n)]  # given in any order
    else:  # overlapping, unsorted, reversed, zero-length
        s = grid(rng.uniform(0, 3, n))
        sub = np.stack([s, s + grid(rng.exponential(0.05, n))], 1)
        zero = rng.random(n) < 0.05
        sub[zero, 1] = sub[zero, 0]
        rev = rng.random(n) < 0.05
        sub[rev] = sub[rev, ::-1]
    r = grid(rng.uniform(-0.1, 3.1, m))
    ref = np.stack([r, r + grid(rng.exponential(0.1, m))], 1)
    short = rng.random(m) < 0.1
    ref[short, 1] = ref[short, 0] + rng.choice([0, 0.0005, 0.001], short.sum())
    feat = rng.normal(size=(n, d))
    return ref, sub, feat


@pytest.mark.parametrize("kind", ["frames", "messy"])
@pytest.mark.parametrize("seed", range(6))
def test_align_to_reference_brute_force(kind, seed):
    rng = np.random.default_rng(seed)
    ref, sub, feat = random_case(rng, kind)
    if seed % 3 == 2:  # non-finite features propagate as in np.average
        bad = rng.choice(len(feat), 10), rng.integers(0, feat.shape[1], 10)
        feat[bad] = rng.choice([np.nan, np.inf, -np.inf], 10)
    got = align_to_reference(ref, sub, feat)
    means, ivs, hit = brute_force(ref, sub, feat)
    np.testing.assert_array_equal(got.hit, hit)
    np.testing.assert_allclose(got.features, means, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got.intervals, ivs)


@pytest.mark.parametrize("dtypes", [(np.float32, np.float32), (np.float32, np.float64),
                                    (np.float64, np.float32)])
def test_align_to_reference_chunked_and_float32(monkeypatch, dtypes):
    """Tiny chunks split the candidate pairs; float32 intervals use the same (promoted) float
    arithmetic as mmsdk."""
    monkeypatch.setattr(A, "_CHUNK_PAIRS", 7)
    for seed, kind in enumerate(("frames", "messy", "frames", "messy")):
        ref, sub, feat = random_case(np.random.default_rng(11 + seed), kind)
        ref, sub = ref.astype(dtypes[0]), sub.astype(dtypes[1])
        got = align_to_reference(ref, sub, feat)
        means, ivs, hit = brute_force(ref, sub, feat)
        np.testing.assert_array_equal(got.hit, hit)
        np.testing.assert_allclose(got.features, means, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(got.intervals, ivs)
        assert got.intervals.dtype == np.result_type(*dtypes)


def test_align_to_reference_edges():
    ref = np.array([[0.0, 1.0], [1.0, 1.0005], [2.0, 3.0]])
    sub = np.array([[0.9995, 1.5], [0.5, 0.5], [-1.0, 0.0005], [0.2, 0.4]])
    feat = np.arange(8.0).reshape(4, 2)
    got = align_to_reference(ref, sub, feat)
    # [0.9995, 1.5] clipped to [0.9995, 1.0]: 0.0005 <= eps, dropped; zero-length dropped;
    # [-1, 0.0005] clipped to [0, 0.0005], dropped; [0.2, 0.4] kept. ref 1 is shorter than eps.
    np.testing.assert_array_equal(got.hit, [True, False, False])
    np.testing.assert_array_equal(got.features, [[6, 7], [0, 0], [0, 0]])
    np.testing.assert_array_equal(got.intervals, [[0.2, 0.4], [1.0, 1.0005], [2.0, 3.0]])
    empty = align_to_reference(ref, np.zeros((0, 2)), np.zeros((0, 2)))
    assert not empty.hit.any() and empty.features.shape == (3, 2)


# ---------------------------------------------------------------------------------------------
# row matching, silence, non-finite values


def test_row_matching_when_a_modality_has_fewer_rows(tmp_path, caplog):
    """'hello' straddles the segment start but its FACET frames all lie before it: the segment has
    the word row and no FACET row for it. The word keeps its place with zeros for FACET."""
    vid = "2iD-tVS8NPw"  # a MOSI train video
    words_iv = np.array([[0.0, 1.0], [1.0, 1.4], [1.4, 2.0]])
    words = np.array([[b"hello"], [b"sp"], [b"world"]])
    k = np.arange(200)
    cov_iv, cov = np.stack([k * 0.01, (k + 1) * 0.01], 1), np.ones((200, 2), np.float32)
    fac_iv = np.array([[0.0, 0.5], [1.5, 1.9]])  # nothing in [0.5, 1.5]
    fac = np.array([[7.0, 7.0], [3.0, -np.inf]], np.float32)
    seg_iv, labels = np.array([[0.6, 2.0]]), np.array([[1.5]])
    segs = align_video(words_iv, words, {"COVAREP": (cov_iv, cov), "FACET": (fac_iv, fac)}, seg_iv)
    assert segs[0].tokens == ["hello", "sp", "world"]
    assert len(segs[0].modalities["COVAREP"].word) == 3
    np.testing.assert_array_equal(segs[0].modalities["FACET"].word, [1, 2])  # sp (imputed), world

    paths = {}
    seqs = {"words": (words_iv, words), "COVAREP": (cov_iv, cov), "FACET": (fac_iv, fac),
            "labels": (seg_iv, labels)}
    for name, (iv, feat) in seqs.items():
        paths[name] = tmp_path / f"{name}.csd"
        write_csd(paths[name], name, {vid: {"intervals": iv, "features": feat}})
    with caplog.at_level(logging.INFO, logger="pipeline.data.align"):
        u = align_cmu(paths, {"train": [vid], "valid": [], "test": []}, progress=False)["train"]
    assert u.ids == [f"{vid}[0]"] and u.words == [["hello", "world"]]
    np.testing.assert_array_equal(u.vision[0], [[0, 0], [3, 0]])
    np.testing.assert_array_equal(u.audio[0], [[1, 1], [1, 1]])
    np.testing.assert_allclose(u.labels, [1.5])
    assert "vision (FACET): 1 words had no row in their segment (zero-filled), 0 rows" in caplog.text
    assert "vision (FACET): replaced 1 non-finite values" in caplog.text
    assert "audio (COVAREP): replaced 0 non-finite values" in caplog.text


def test_replace_nonfinite():
    x = np.array([[1.0, np.nan], [np.inf, -np.inf]], np.float32)
    y, n = replace_nonfinite(x)
    assert n == 3 and y.dtype == np.float32
    np.testing.assert_array_equal(y, [[1, 0], [0, 0]])
    assert np.isnan(x[0, 1])  # the input is left alone
    z = np.ones(3)
    assert replace_nonfinite(z) == (z, 0)


# ---------------------------------------------------------------------------------------------
# errors


@pytest.fixture()
def small(tmp_path):
    return write_cmu_fixture(tmp_path, n_videos_per_split=(1, 1, 0), covarep_dim=4, facet_dim=3)


def test_missing_and_non_hdf5_files(small):
    paths = dict(small["paths"])
    paths["FACET"] = small["root"] / "nowhere.csd"
    with pytest.raises(DataError, match=re.escape(str(paths["FACET"]))):
        align_cmu(paths, small["folds"], progress=False)
    paths["FACET"].write_text("<html>502 Bad Gateway</html>")
    with pytest.raises(DataError, match=re.escape(str(paths["FACET"])) + ".*not a readable HDF5"):
        align_cmu(paths, small["folds"], progress=False)


def test_truncated_file(small):
    path = small["paths"]["COVAREP"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=re.escape(str(path))):
        align_cmu(small["paths"], small["folds"], progress=False)


def test_rows_differ_and_dims_differ(small):
    path = small["paths"]["FACET"]
    vid = small["folds"]["valid"][0]
    with h5py.File(path, "r+") as f:
        g = f[list(f.keys())[0]]["data"][vid]
        feat = g["features"][()]
        del g["features"]
        g["features"] = feat[:-1]
    with pytest.raises(DataError, match=re.escape(f"{path}: video '{vid}'") + ".*feature rows"):
        align_cmu(small["paths"], small["folds"], progress=False)
    with h5py.File(path, "r+") as f:
        g = f[list(f.keys())[0]]["data"][vid]
        del g["features"]
        g["features"] = np.zeros((len(g["intervals"]), 5), np.float32)
    with pytest.raises(DataError) as err:
        align_cmu(small["paths"], small["folds"], progress=False)
    msg = str(err.value)  # names the file, the odd video and the one it was compared with
    assert str(path) in msg and f"'{vid}'" in msg and "columns" in msg


def test_video_missing_from_a_sequence_is_skipped(small, caplog):
    """Like mmsdk's unify: a video must be in every sequence."""
    vid = small["folds"]["train"][0]
    with h5py.File(small["paths"]["FACET"], "r+") as f:
        del f[list(f.keys())[0]]["data"][vid]
    with caplog.at_level(logging.INFO, logger="pipeline.data.align"):
        got = align_cmu(small["paths"], small["folds"], progress=False)
    assert len(got["train"]) == 0 and len(got["valid"]) > 0
    assert "1 fold videos are not in every computational sequence" in caplog.text
