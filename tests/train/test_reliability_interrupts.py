"""Interruptions: a training run killed mid-epoch resumes to the same numbers (a killed `dvc repro`:
tests/e2e/test_reliability_interrupts_dvc.py)."""
import pytest

from pipeline import paths, train

from pipeline import train_stage


@pytest.mark.parametrize("variant, kill_at", [("pase", 4), ("late_fusion", 2)])
def test_killed_mid_epoch_resumes_to_identical_metrics(tiny_project, monkeypatch, variant, kill_at):
    cfg = tiny_project({"train": {"epochs": 3}, "sgm": {"start_epoch": 2}})
    train_stage.train_variant(cfg, "mosi", variant)
    reference = (paths.seed_dir("mosi", variant, 0) / "metrics.json").read_bytes()
    history = (paths.seed_dir("mosi", variant, 0) / "history.json").read_bytes()

    real_loss, calls = train.task_loss, {"n": 0}

    def dies_mid_epoch(pred, label, task):
        calls["n"] += 1
        if calls["n"] == kill_at:  # two steps an epoch here: 4 = inside epoch 2, 2 = before any checkpoint
            raise KeyboardInterrupt("killed mid-epoch")
        return real_loss(pred, label, task)

    monkeypatch.setattr(train, "task_loss", dies_mid_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_stage.train_variant(cfg, "mosi", variant)
    monkeypatch.setattr(train, "task_loss", real_loss)
    train_stage.train_variant(cfg, "mosi", variant)  # resumes from the last epoch's checkpoint
    assert (paths.seed_dir("mosi", variant, 0) / "metrics.json").read_bytes() == reference
    assert (paths.seed_dir("mosi", variant, 0) / "history.json").read_bytes() == history
