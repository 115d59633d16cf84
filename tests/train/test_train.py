"""The training loop: selection on validation, determinism, resume, label hygiene, failures."""
import json

import h5py
import numpy as np
import pytest
import torch

from pipeline import paths, train

from pipeline import train_stage
from pipeline.data.store import content_digest
from pipeline.errors import ConfigError
from pipeline.stages import embed


def metrics_bytes(ds="mosi", variant="late_fusion", seed=0):
    return (paths.seed_dir(ds, variant, seed) / "metrics.json").read_bytes()


def test_trains_beats_constant_and_writes_outputs(tiny_project):
    # the redundant generator: a margin over the constant that late fusion can reach at this size
    # (on the complementary default the oracle itself is at ~0.65 of the constant's MAE)
    cfg = tiny_project({"synthetic": {"scale": 0.1, "kind": "redundant"},
                        "train": {"epochs": 8, "lr": 0.003}})
    (res,) = train_stage.train_variant(cfg, "mosi", "late_fusion")
    out = paths.seed_dir("mosi", "late_fusion", 0)
    m = json.loads((out / "metrics.json").read_text())
    assert m["synthetic"] is True and 1 <= m["best_epoch"] <= 8
    with h5py.File(paths.aligned_store("mosi")) as f:
        y_train, y_test = f["train/label"][:], f["test/label"][:]
    constant_mae = np.mean(np.abs(y_test - np.median(y_train)))
    assert m["test"]["mae"] < 0.8 * constant_mae
    lines = (out / "predictions.csv").read_text().splitlines()
    assert lines[0] == "id,prediction,label" and len(lines) == len(y_test) + 1
    # dvclive's per-epoch curve (x = the 1-based epoch) equals history.json; no summary file in
    # the directory dvc.yaml declares as plots
    curves = paths.curves_dir("mosi", "late_fusion", 0)
    rows = [l.split("\t") for l in (curves / "plots" / "metrics" / "valid_mae.tsv").read_text().splitlines()]
    history = json.loads((out / "history.json").read_text())
    assert rows[0] == ["step", "valid_mae"]
    assert [(int(s), float(v)) for s, v in rows[1:]] == [(h["epoch"], h["valid_mae"]) for h in history]
    assert {p.suffix for p in curves.rglob("*") if p.is_file()} == {".tsv"}
    assert not any(paths.DATA.joinpath("checkpoints").glob("*/last.pt"))  # cleaned on success


def test_same_seed_same_bytes_other_seed_differs(tiny_project):
    cfg = tiny_project()
    train_stage.train_variant(cfg, "mosi", "late_fusion")
    first = metrics_bytes()
    train_stage.train_variant(cfg, "mosi", "late_fusion")
    assert metrics_bytes() == first
    cfg.seeds = [1]
    train_stage.train_variant(cfg, "mosi", "late_fusion")
    assert metrics_bytes(seed=1) != first.replace(b'"seed": 0', b'"seed": 1')


def test_resume_after_interruption_gives_the_same_metrics(tiny_project, monkeypatch):
    cfg = tiny_project({"train": {"epochs": 4}})
    train_stage.train_variant(cfg, "mosi", "late_fusion")
    reference = metrics_bytes()

    real_save = train._save_checkpoint

    def save_then_die(path, model, optim, state):
        real_save(path, model, optim, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt("killed after epoch 2")

    monkeypatch.setattr(train, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_stage.train_variant(cfg, "mosi", "late_fusion")
    assert list(paths.DATA.joinpath("checkpoints").glob("*/last.pt"))
    monkeypatch.setattr(train, "_save_checkpoint", real_save)
    train_stage.train_variant(cfg, "mosi", "late_fusion")  # resumes at epoch 3
    assert metrics_bytes() == reference


@pytest.mark.parametrize("variant", ["late_fusion", "pase", "pase-ogm_ge"])
def test_test_labels_do_not_change_predictions(tiny_project, variant):
    cfg = tiny_project({"sgm": {"start_epoch": 2}})
    train_stage.train_variant(cfg, "mosi", variant)
    pred_col = lambda: [l.split(",")[1] for l in  # noqa: E731
                        (paths.seed_dir("mosi", variant, 0) / "predictions.csv").read_text().splitlines()]
    before = pred_col()
    with h5py.File(paths.aligned_store("mosi"), "r+") as f:
        lab = f["test/label"]
        lab[...] = np.random.default_rng(0).permutation(lab[:])
        f.attrs["content_sha256"] = content_digest(f)  # a deliberate edit: training checks the sum
    embed(cfg, "mosi")  # and that the text was embedded from this store (labels do not enter it)
    train_stage.train_variant(cfg, "mosi", variant)
    assert pred_col() == before


def test_missing_gpu_is_a_clear_error(tiny_project, monkeypatch):
    cfg = tiny_project({"train": {"device": "cuda"}})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="train.device: 'cuda'.*no GPU"):
        train_stage.train_variant(cfg, "mosi", "late_fusion")


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tiny_project, monkeypatch):
    cfg = tiny_project({"train": {"epochs": 3}})
    real_loss, calls = train.task_loss, {"n": 0}
    steps_per_epoch = -(-len(h5py.File(paths.aligned_store("mosi"))["train/label"]) // cfg.train.batch_size)

    def loss_goes_nan(pred, label, task):
        calls["n"] += 1
        loss = real_loss(pred, label, task)
        return loss * float("nan") if calls["n"] > steps_per_epoch else loss

    monkeypatch.setattr(train, "task_loss", loss_goes_nan)
    with pytest.raises(train.NonFiniteLoss, match=r"loss term 'task' is nan at epoch 2, step 0; last good checkpoint: .*last.pt"):
        train_stage.train_variant(cfg, "mosi", "late_fusion")
    (ckpt,) = paths.DATA.joinpath("checkpoints").glob("*/last.pt")
    assert torch.load(ckpt, weights_only=False)["state"]["epoch"] == 1


def test_unknown_variant(tiny_project):
    cfg = tiny_project()
    with pytest.raises(ConfigError, match="variant 'pase2' is unknown"):
        train_stage.train_variant(cfg, "mosi", "pase2")


def test_iemocap_classification_runs(tiny_project):
    cfg = tiny_project({"datasets": ["iemocap"], "synthetic": {"scale": 0.05}}, datasets=("iemocap",))
    (res,) = train_stage.train_variant(cfg, "iemocap", "late_fusion")
    assert set(res["test"]) >= {"neutral_f1", "happy_f1", "sad_f1", "angry_f1", "wa"}
    assert res["test"]["wa"] > 0.25  # above chance on four emotions
