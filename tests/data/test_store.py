"""The HDF5 store: round trip, lazy batched reads, atomic writes and clear errors."""
import h5py
import numpy as np
import pytest

from pipeline.data.schema import PaddedSplit, SPLITS, Utterances, pad_utterances
from pipeline.data.store import StoreDataset, open_store, read_attrs, read_strings, write_store
from pipeline.errors import DataError


def make_split(n, L=6, da=3, dv=2, seed=0, task="regression"):
    rng = np.random.default_rng(seed)
    labels = (rng.uniform(-3, 3, n).astype(np.float32) if task == "regression"
              else np.eye(4, dtype=np.int64)[rng.integers(0, 4, n)])
    return PaddedSplit(ids=[f"v{seed}[{i}]" for i in range(n)],
                       audio=rng.normal(size=(n, L, da)).astype(np.float32),
                       audio_len=rng.integers(1, L + 1, n), vision=rng.normal(size=(n, L, dv)).astype(np.float32),
                       vision_len=rng.integers(1, L + 1, n), labels=labels,
                       raw_text=[f"word{i} other" for i in range(n)])


def splits(task="regression"):
    return {s: make_split(n, seed=i, task=task) for i, (s, n) in enumerate(zip(SPLITS, (20, 7, 9)))}


def test_round_trip_and_attrs(tmp_path):
    path = write_store(tmp_path / "d.h5", splits(), {"dataset": "mosi", "synthetic": True,
                                                    "task": "regression", "features": {"audio": "x"}})
    attrs = read_attrs(path)
    assert attrs["synthetic"] and attrs["features"] == {"audio": "x"}
    with open_store(path) as f:
        assert f["train/audio"].shape == (20, 6, 3) and f["train/audio"].dtype == np.float32
        assert f["valid/label"].shape == (7,)
    assert read_strings(path, "test", "id")[2] == "v2[2]"
    assert read_strings(path, "train", "raw_text")[0] == "word0 other"


def test_lazy_dataset_batches_match_the_arrays(tmp_path):
    data = splits()
    path = write_store(tmp_path / "d.h5", data, {"task": "regression"})
    ds = StoreDataset(path, "train", modalities=("audio", "vision"))
    assert len(ds) == 20 and ds.dims == {"audio": 3, "vision": 2}
    idx = np.array([7, 2, 7, 19, 0])  # unsorted, with a repeat
    b = ds[idx]
    np.testing.assert_array_equal(b["audio"].numpy(), data["train"].audio[idx])
    np.testing.assert_array_equal(b["vision_len"].numpy(), data["train"].vision_len[idx])
    np.testing.assert_array_equal(b["label"].numpy(), data["train"].labels[idx])
    one = ds[3]
    np.testing.assert_array_equal(one["audio"].numpy(), data["train"].audio[3])
    seen = np.concatenate([b["index"].numpy() for b in ds.batches(6, shuffle=True,
                                                                  generator=__import__("torch").Generator().manual_seed(1))])
    assert sorted(seen) == list(range(20))
    with pytest.raises(IndexError):
        ds[[20]]


def test_nan_is_refused_and_nothing_is_left(tmp_path):
    data = splits()
    data["valid"].audio[0, 0, 0] = np.nan
    with pytest.raises(DataError, match=r"valid/audio: contains NaN"):
        write_store(tmp_path / "d.h5", data, {"task": "regression"})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("test"), "split 'test' missing"),
    (lambda d: setattr(d["train"], "labels", d["train"].labels * 2), "outside"),
    (lambda d: setattr(d["train"], "audio", d["train"].audio[:5]), "train/audio: 5 rows"),
    (lambda d: setattr(d["valid"], "ids", []), "split is empty"),
    (lambda d: setattr(d["train"], "vision", d["train"].vision[:, :, 0]), "expected \\(N, L, d\\)"),
])
def test_bad_splits_are_refused(tmp_path, mutate, message):
    data = splits()
    mutate(data)
    with pytest.raises(DataError, match=message):
        write_store(tmp_path / "d.h5", data, {"task": "regression"})
    assert not (tmp_path / "d.h5").exists()


def test_classification_labels_checked(tmp_path):
    write_store(tmp_path / "ok.h5", splits("classification"), {"task": "classification"})
    bad = splits("classification")
    bad["train"].labels = bad["train"].labels * 3
    with pytest.raises(DataError, match="0/1 emotion labels"):
        write_store(tmp_path / "bad.h5", bad, {"task": "classification"})


def test_truncated_and_foreign_files_name_the_file(tmp_path):
    path = write_store(tmp_path / "d.h5", splits(), {"task": "regression"})
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"d.h5: not a readable HDF5 file"):
        open_store(path)
    with pytest.raises(DataError, match=r"missing.h5: not found"):
        open_store(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_group("train")
    with pytest.raises(DataError, match="split 'valid' missing"):
        open_store(tmp_path / "other.h5")


def test_pad_utterances_cuts_and_pads():
    u = Utterances(ids=["a", "b"], words=[["x"] * 3, ["y"] * 9],
                   audio=[np.ones((3, 2)), np.arange(18.0).reshape(9, 2)],
                   vision=[np.ones((3, 1)), np.ones((9, 1))], labels=np.array([0.5, -1.0]))
    p = pad_utterances(u, 5, {"audio": 2, "vision": 1}, "train")
    assert p.audio.shape == (2, 5, 2) and list(p.audio_len) == [3, 5]
    assert (p.audio[0, 3:] == 0).all()
    np.testing.assert_array_equal(p.audio[1], np.arange(10.0).reshape(5, 2))  # the head is kept
    assert p.raw_text == ["x x x", " ".join(["y"] * 9)]
    with pytest.raises(DataError, match="train/audio: utterance 0"):
        pad_utterances(u, 5, {"audio": 4, "vision": 1}, "train")
