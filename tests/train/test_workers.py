"""train.workers: seeds in parallel processes give the same bytes as one after another, and a
killed parallel stage resumes per seed."""
import dataclasses
import filecmp
import logging
import shutil

import pytest

from pipeline import paths, train

from pipeline import train_stage
from tests.helpers import die_after_epoch

pytestmark = pytest.mark.usefixtures("one_thread")
FILES = ("metrics.json", "history.json", "predictions.csv", "fused_test.npy", "gate_mean_test.npy")


def _with_workers(cfg, n):
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, workers=n))


def _snapshot(tmp_path, name):
    shutil.copytree(paths.DATA / "runs", tmp_path / name)
    shutil.copytree(paths.DATA / "curves", tmp_path / f"{name}_curves")


def test_two_workers_give_the_bytes_of_one(tiny_project, tmp_path, caplog):
    cfg = tiny_project({"variants": ["pase"], "seeds": [0, 1, 2]})
    train_stage.train_variant(_with_workers(cfg, 1), "mosi", "pase")
    _snapshot(tmp_path, "serial")
    shutil.rmtree(paths.DATA / "runs"), shutil.rmtree(paths.DATA / "curves")
    with caplog.at_level(logging.INFO):
        train_stage.train_variant(_with_workers(cfg, 2), "mosi", "pase")
    assert "seeds 0, 1, 2 in 2 processes" in caplog.text
    _snapshot(tmp_path, "parallel")
    for s in (0, 1, 2):
        for f in FILES:
            a, b = tmp_path / f"serial/mosi/pase/seed{s}/{f}", tmp_path / f"parallel/mosi/pase/seed{s}/{f}"
            assert a.exists() and filecmp.cmp(a, b, shallow=False), (s, f)
    cmp = filecmp.dircmp(tmp_path / "serial_curves", tmp_path / "parallel_curves")
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    curves = sorted((tmp_path / "serial_curves").rglob("*.tsv"))
    assert curves and all(filecmp.cmp(c, tmp_path / "parallel_curves" / c.relative_to(
        tmp_path / "serial_curves"), shallow=False) for c in curves)


def test_killed_parallel_stage_resumes_per_seed(tiny_project, monkeypatch, caplog):
    cfg = _with_workers(tiny_project({"variants": ["late_fusion"], "seeds": [0, 1, 2]}), 2)
    train_stage.train_variant(cfg, "mosi", "late_fusion")
    reference = {f: (paths.seed_dir("mosi", "late_fusion", s) / f).read_bytes()
                 for s in (0, 1, 2) for f in ("metrics.json", "history.json")}
    shutil.rmtree(paths.run_dir("mosi", "late_fusion"))
    real = die_after_epoch(monkeypatch, 1, seed=2)  # forked workers inherit the patch
    with pytest.raises(KeyboardInterrupt):
        train_stage.train_variant(cfg, "mosi", "late_fusion")
    monkeypatch.setattr(train, "_save_checkpoint", real)
    shutil.rmtree(paths.run_dir("mosi", "late_fusion"))  # what DVC does before rerunning a stage
    with caplog.at_level(logging.INFO):
        train_stage.train_variant(cfg, "mosi", "late_fusion")
    assert caplog.text.count("outputs restored, not retrained") == 2  # seeds 0 and 1
    assert "mosi/late_fusion seed 2: resuming after epoch 1" in caplog.text
    assert {f: (paths.seed_dir("mosi", "late_fusion", s) / f).read_bytes()
            for s in (0, 1, 2) for f in ("metrics.json", "history.json")} == reference
