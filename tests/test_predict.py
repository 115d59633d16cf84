"""Kept models and `python -m pipeline predict`: the selected model of each seed is saved with
its config, and scores other data: the training store (same numbers as training), another
dataset's store (cross-dataset transfer) and an MMSA pickle (checksum-gated)."""
import csv
import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pipeline import paths, train
from pipeline.__main__ import main
from pipeline.data.store import read_strings
from pipeline.errors import DataError
from pipeline.metrics import regression_metrics
from pipeline.predict import predict_run
from tests.test_pickles import mmsa_data, sha

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def trained(tiny_project):
    """PaSE trained on tiny synthetic MOSI (two seeds); MOSEI's store prepared too."""
    cfg = tiny_project({"seeds": [0, 1], "train": {"epochs": 2}, "sgm": {"start_epoch": 2}},
                       datasets=("mosi", "mosei"))
    results = train.train_variant(cfg, "mosi", "pase")
    return cfg, results


def _predictions(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return (np.array([float(r["prediction"]) for r in rows]), np.array([float(r["label"]) for r in rows]),
            [r["id"] for r in rows])


def test_kept_model_is_the_selected_one_with_its_config(trained):
    cfg, results = trained
    saved = torch.load(paths.seed_dir("mosi", "pase", 1) / "model.pt", weights_only=True)
    assert saved["seed"] == 1 and saved["best_epoch"] == results[1]["best_epoch"]
    assert saved["config"]["model"] == "pase" and saved["config"]["train"]["hidden"] == 16
    assert saved["inputs"]["store_sha256"] and saved["inputs"]["text_encoder"] == "tiny-random-bert"
    assert saved["dims"]["audio"] == 74 and saved["dims"]["vision"] == 35  # params.yaml's synthetic sizes
    with h5py.File(paths.text_features("mosi")) as f:
        assert saved["dims"]["text"] == f["train/text"].shape[-1]


def test_predict_on_the_training_store_gives_the_training_numbers(trained):
    _, results = trained
    main(["predict", "--run", "mosi/pase", "--data", "data/aligned/mosi.h5", "--out", "same"])
    for r in results:
        again = json.loads(Path(f"same/seed{r['seed']}/metrics.json").read_text())
        assert again["test"] == pytest.approx(r["test"], abs=1e-9)
        assert Path(f"same/seed{r['seed']}/predictions.csv").read_text() == \
            (paths.seed_dir("mosi", "pase", r["seed"]) / "predictions.csv").read_text()


def test_predict_a_mosi_model_on_mosei(trained, capsys):
    rc = main(["predict", "--run", "mosi/pase", "--data", str(paths.aligned_store("mosei"))])
    assert rc == 0 and "mosi/pase on data/aligned/mosei.h5 (test, 2 seed(s)): mae " in capsys.readouterr().out
    out = Path(f"predictions/mosi-pase_on_mosei-{sha(paths.aligned_store('mosei'))[:10]}")
    per_seed = []
    for seed in (0, 1):
        pred, label, ids = _predictions(out / f"seed{seed}" / "predictions.csv")
        assert ids == list(read_strings(paths.aligned_store("mosei"), "test", "id"))
        m = json.loads((out / f"seed{seed}" / "metrics.json").read_text())
        want = regression_metrics(pred, label)  # MMSA's metrics from the CSV (6 decimals)
        assert {k: v for k, v in m["test"].items() if k != "corr"} == pytest.approx(
            {k: v for k, v in want.items() if k != "corr"}, abs=1e-6)
        assert m["test"]["corr"] == pytest.approx(want["corr"], abs=1e-3)  # near-constant outputs
        assert m["trained_on"]["store"] == "data/aligned/mosi.h5" and m["data_sha256"]
        per_seed.append(m["test"]["mae"])
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["metrics"]["mae"] == pytest.approx(np.mean(per_seed), abs=1e-6)


def test_predict_on_an_mmsa_pickle_needs_its_checksum(trained):
    pkl = Path("unaligned_50.pkl")
    pkl.write_bytes(pickle.dumps(mmsa_data(aligned=False, da=74, dv=35)))  # MOSEI-sized MMSA layout
    with pytest.raises(DataError, match="sha256"):
        predict_run("mosi/pase", pkl, source="mmsa", data_dataset="mosei")
    r = predict_run("mosi/pase", pkl, source="mmsa", data_dataset="mosei", sha256=sha(pkl))
    out = Path(f"predictions/mosi-pase_on_unaligned_50-{sha(pkl)[:10]}")  # the file's digest
    pred, label, ids = _predictions(out / "seed0/predictions.csv")
    assert len(ids) == 4 and r["metrics"]["mae"] == pytest.approx(
        np.mean([regression_metrics(*_predictions(out / f"seed{s}/predictions.csv")[:2])["mae"]
                 for s in (0, 1)]), abs=1e-6)


def test_predict_refuses_text_features_other_than_the_models(trained):
    """MMSA's aligned files bring token-level BERT features as the text (README "Your real
    data"); a model trained on re-encoded words cannot read them."""
    pkl = Path("aligned_50.pkl")
    pkl.write_bytes(pickle.dumps(mmsa_data(da=74, dv=35)))
    with pytest.raises(DataError, match="its text comes as .*MMSA aligned_50.pkl.*trained on text from"):
        predict_run("mosi/pase", pkl, source="mmsa", data_dataset="mosei", sha256=sha(pkl))


def test_predict_errors_name_what_is_wrong(trained):
    with pytest.raises(DataError, match="no kept model.*train@mosi-late_fusion"):
        predict_run("mosi/late_fusion", paths.aligned_store("mosei"))
    with pytest.raises(DataError, match="a pickle needs --source|file not found"):
        predict_run("mosi/pase", Path("missing.h5"))
    Path("x.pkl").write_bytes(b"0")
    with pytest.raises(Exception, match="--source"):
        predict_run("mosi/pase", Path("x.pkl"))
