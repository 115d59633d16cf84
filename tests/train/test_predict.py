"""Kept models and `python -m pipeline predict`: the selected model of each seed is saved with
its config, and scores other data: the training store (same numbers as training), another
dataset's store (cross-dataset transfer) and an MMSA pickle (checksum-gated)."""
import csv
import json
import logging
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pipeline import paths, train

from pipeline import train_stage
from pipeline.__main__ import main
from pipeline.data.store import read_strings
from pipeline.errors import DataError
from pipeline.metrics import regression_metrics
from pipeline.predict import predict_run
from tests.helpers import mmsa_data, mult_data, sha, write_params

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def trained(tiny_project):
    """PaSE trained on tiny synthetic MOSI (two seeds); MOSEI's store prepared too."""
    cfg = tiny_project({"seeds": [0, 1], "train": {"epochs": 2}, "sgm": {"start_epoch": 2}},
                       datasets=("mosi", "mosei"))
    results = train_stage.train_variant(cfg, "mosi", "pase")
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


# --- what predict reads belongs to the run and to the model (issue 23) ----------------------------

def test_predict_reproduces_a_model_trained_at_another_seq_len(tiny_project):
    """The run's config holds `data` guarded empty; model.pt records the embed stage's seq_len
    (8 here, not the default 50), and predict re-embeds at it: training's predictions exactly."""
    cfg = tiny_project({"data": {"seq_len": 8}, "train": {"epochs": 2}, "sgm": {"start_epoch": 2}})
    (result,) = train_stage.train_variant(cfg, "mosi", "pase")
    saved = torch.load(paths.seed_dir("mosi", "pase", 0) / "model.pt", weights_only=True)
    assert saved["embedding"]["seq_len"] == 8 and saved["embedding"]["encoded"]
    r = predict_run("mosi/pase", paths.aligned_store("mosi"), out="same")
    assert Path("same/seed0/predictions.csv").read_text() == \
        (paths.seed_dir("mosi", "pase", 0) / "predictions.csv").read_text()
    assert r["metrics"]["mae"] == pytest.approx(result["test"]["mae"], abs=1e-6)
    with h5py.File("same/inputs/text_features.h5") as f, h5py.File(paths.text_features("mosi")) as g:
        assert f["test/text"].shape[1] == 8 and f.attrs["content_sha256"] == g.attrs["content_sha256"]


def test_predict_refuses_what_it_cannot_read_with_a_clear_error(trained, capsys):
    rc = main(["predict", "--run", "mosi/pase", "--data", str(paths.text_features("mosi"))])
    err = capsys.readouterr().err
    assert rc == 2 and f"{paths.text_features('mosi')}: text features written by the embed stage" in err
    assert "data/aligned/<dataset>.h5" in err
    Path("taken").write_text("a file")
    rc = main(["predict", "--run", "mosi/pase", "--data", "data/aligned/mosi.h5", "--out", "taken"])
    assert rc == 2 and "--out taken: an existing file" in capsys.readouterr().err
    assert Path("taken").read_text() == "a file"
    model = paths.seed_dir("mosi", "pase", 1) / "model.pt"
    model.write_bytes(model.read_bytes()[:model.stat().st_size // 2])  # an interrupted copy
    rc = main(["predict", "--run", "mosi/pase", "--data", "data/aligned/mosi.h5"])
    assert rc == 2 and f"{model}: not a readable model file (truncated or corrupt?)" in capsys.readouterr().err


def test_two_files_of_one_name_get_their_own_outputs(trained):
    first = mmsa_data(aligned=False, da=74, dv=35)
    second = mmsa_data(aligned=False, da=74, dv=35)
    second["test"]["regression_labels"] = -second["test"]["regression_labels"]  # another file
    outs = set()
    for folder, contents in (("a", first), ("b", second)):
        pkl = Path(folder) / "unaligned_50.pkl"
        pkl.parent.mkdir()
        pkl.write_bytes(pickle.dumps(contents))
        predict_run("mosi/pase", pkl, source="mmsa", data_dataset="mosei", sha256=sha(pkl))
        out = Path(f"predictions/mosi-pase_on_unaligned_50-{sha(pkl)[:10]}")
        assert json.loads((out / "metrics.json").read_text())["data_sha256"] == sha(pkl)
        outs.add(out)
    assert len(outs) == 2 and all((o / "seed1" / "predictions.csv").is_file() for o in outs)


@pytest.fixture
def trained_on_own_features(tiny_project):
    """late_fusion trained on an MMSA aligned file's own (token-level BERT) text features."""
    from tests.helpers import user_file
    pkl = user_file("mosi", "aligned_50.pkl", mmsa_data())
    cfg = tiny_project({"data": {"mosi": {"source": "mmsa", "path": str(pkl),
                                          "allow_unverified_pickle": True}}})
    (result,) = train_stage.train_variant(cfg, "mosi", "late_fusion")
    assert torch.load(paths.seed_dir("mosi", "late_fusion", 0) / "model.pt",
                      weights_only=True)["embedding"]["encoded"] is False
    return pkl


def test_text_features_are_matched_by_content_not_by_file_name(trained_on_own_features):
    pkl = trained_on_own_features
    renamed = Path("renamed.pkl")
    renamed.write_bytes(pkl.read_bytes())  # byte-identical under another name: the same features
    predict_run("mosi/late_fusion", renamed, out="renamed", source="mmsa", data_dataset="mosi",
                sha256=sha(renamed))
    assert Path("renamed/seed0/predictions.csv").read_text() == \
        (paths.seed_dir("mosi", "late_fusion", 0) / "predictions.csv").read_text()
    other = mmsa_data()
    for s in other:
        other[s]["text"] = other[s]["text"] * 0.5  # same shapes and name, another encoder's vectors
    impostor = Path("elsewhere/aligned_50.pkl")
    impostor.parent.mkdir()
    impostor.write_bytes(pickle.dumps(other))
    with pytest.raises(DataError, match="own text features .*nothing records which encoder made them"):
        predict_run("mosi/late_fusion", impostor, source="mmsa", data_dataset="mosi", sha256=sha(impostor))
    words = Path("unaligned_50.pkl")  # raw words: re-encoded, not the features the model read
    words.write_bytes(pickle.dumps(mmsa_data(aligned=False)))
    with pytest.raises(DataError, match="its words are encoded by 'tiny-random-bert', but the model "
                                        "read the source's own text features"):
        predict_run("mosi/late_fusion", words, source="mmsa", data_dataset="mosi", sha256=sha(words))


def test_a_fine_tuned_model_reads_the_words_of_any_data_with_raw_text(tiny_project):
    """MAG-BERT tokenises the words itself (its word map included): training's predictions on
    its store; data without raw text (a MulT pickle) is refused for that reason."""
    cfg = tiny_project({"text": {"finetune": True, "max_tokens": 16}, "train": {"epochs": 1},
                        "variants": ["mag_bert"], "data": {"seq_len": 8}})
    train_stage.train_variant(cfg, "mosi", "mag_bert")
    predict_run("mosi/mag_bert", paths.aligned_store("mosi"), out="same")
    assert Path("same/seed0/predictions.csv").read_text() == \
        (paths.seed_dir("mosi", "mag_bert", 0) / "predictions.csv").read_text()
    pkl = Path("mosi_data.pkl")
    pkl.write_bytes(pickle.dumps(mult_data("mosi")[0]))
    with pytest.raises(DataError, match="mosi_data.pkl: has no raw text, and the model fine-tunes "
                                        "tiny-random-bert on the words"):
        predict_run("mosi/mag_bert", pkl, source="mult", data_dataset="mosi", sha256=sha(pkl))


def test_predict_uses_only_the_seed_folders_of_the_run(trained, tmp_path, caplog):
    """After `seeds` shrinks, seed1/ left from the earlier settings is not the run's."""
    assert predict_run("mosi/pase", paths.aligned_store("mosi"), out="one")["seeds"] == [0, 1]
    assert Path("one/seed1/predictions.csv").is_file()
    write_params(tmp_path / "params.yaml", {"seeds": [0], "train": {"epochs": 2}, "sgm": {"start_epoch": 2}})
    with caplog.at_level(logging.WARNING, logger="pipeline.predict"):
        r = predict_run("mosi/pase", paths.aligned_store("mosi"), out="one")
    stray = str(paths.seed_dir("mosi", "pase", 1))
    # ... and the earlier prediction of seed 1 in the same --out folder goes too
    assert r["seeds"] == [0] and r["metrics"]["seeds"] == 1 and not Path("one/seed1").exists()
    assert r["skipped"][0].startswith(f"{stray}: seed 1 is not among the run's seeds [0]")
    assert f"skipping {stray}" in caplog.text
    # settings changed since training: neither folder is the run's
    write_params(tmp_path / "params.yaml", {"seeds": [0, 1], "train": {"epochs": 2, "lr": 0.002},
                                            "sgm": {"start_epoch": 2}})
    with pytest.raises(DataError, match=r"no kept model of the run .*seed0: trained with other "
                                        r"settings .*differs in: train"):
        predict_run("mosi/pase", paths.aligned_store("mosi"))
    # the seeds' fingerprints (code and inputs) must agree
    write_params(tmp_path / "params.yaml", {"seeds": [0, 1], "train": {"epochs": 2}, "sgm": {"start_epoch": 2}})
    f = paths.seed_dir("mosi", "pase", 1) / "model.pt"
    saved = torch.load(f, weights_only=True)
    saved["fingerprint"] = saved["fingerprint"].rsplit("-", 1)[0] + "-0123abcd"
    torch.save(saved, f)
    with pytest.raises(DataError, match="trained under different code or inputs"):
        predict_run("mosi/pase", paths.aligned_store("mosi"))
