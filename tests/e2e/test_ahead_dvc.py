"""train.ahead: under real `dvc repro` one pool process trains the seeds ahead of DVC's stages;
the outputs are the bytes of a run without it, an experiment trains ahead only the runs it
changes, and a pool that dies leaves the stages to train their own seeds (a pool that declines:
tests/train/test_ahead.py)."""
import filecmp
import os
import signal
import time
from pathlib import Path

import pytest

from tests.helpers import env, make_repo, run, snapshot

OVERRIDES = {"datasets": ["mosi"], "seeds": [0, 1, 2], "variants": ["pase", "late_fusion", "pase-T"],
             "train": {"epochs": 3, "workers": 2}, "sgm": {"start_epoch": 2}}


def _started(work: Path) -> list[str]:
    """The seeds the pool started, from its log: ['mosi/pase seed 0', ...]."""
    text = (work / "data" / "checkpoints" / "pool" / "pool.log").read_text()
    return [line.split("pipeline.ahead_pool: ")[1].rsplit(":", 1)[0]
            for line in text.splitlines() if line.endswith(": started")]


def _no_pool_left(work: Path) -> bool:
    deadline = time.time() + 10
    while (work / "data" / "checkpoints" / "pool" / "pool.json").exists() and time.time() < deadline:
        time.sleep(0.1)
    return not (work / "data" / "checkpoints" / "pool" / "pool.json").exists()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ahead")
    pooled = make_repo(base / "pooled", OVERRIDES)
    first = run(["dvc", "repro"], pooled)
    plain = make_repo(base / "plain", {**OVERRIDES, "train": {**OVERRIDES["train"], "ahead": False}})
    run(["dvc", "repro"], plain)
    return pooled, plain, first


@pytest.mark.slow
def test_the_pool_gives_the_bytes_of_stages_training_alone(runs):
    pooled, plain, first = runs
    assert snapshot(pooled) == snapshot(plain)  # every run file, table, figure (not timing)
    cmp = filecmp.dircmp(pooled / "data" / "curves", plain / "data" / "curves")
    assert not cmp.left_only and not cmp.right_only
    # every seed trained once, by the pool; none by a stage; nothing left behind
    assert sorted(_started(pooled)) == sorted(f"mosi/{v} seed {s}" for v in OVERRIDES["variants"]
                                              for s in (0, 1, 2))
    assert not (plain / "data" / "checkpoints" / "pool").exists()
    assert [p.name for p in (pooled / "data" / "checkpoints").iterdir()] == ["pool"]
    assert _no_pool_left(pooled)
    assert "up to date" in run(["dvc", "status"], pooled).stdout.lower()


@pytest.mark.slow
def test_an_experiment_trains_ahead_only_the_runs_it_changes(runs):
    pooled, _, _ = runs
    p = run(["dvc", "exp", "run", "-S", "sgm.enabled=false"], pooled)
    assert "Running stage 'train@mosi-late_fusion'" not in p.stdout
    assert sorted(_started(pooled)) == sorted(f"mosi/{v} seed {s}" for v in ("pase", "pase-T")
                                              for s in (0, 1, 2))


@pytest.mark.slow
def test_a_pool_killed_mid_run_leaves_the_stages_to_train_their_seeds(runs, tmp_path):
    _, plain, _ = runs
    work = make_repo(tmp_path / "killed", {**OVERRIDES, "train": {**OVERRIDES["train"], "workers": 1}})
    import subprocess
    proc = subprocess.Popen(["dvc", "repro"], cwd=work, env=env(PIPELINE_LOG="INFO"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pool_json = work / "data" / "checkpoints" / "pool" / "pool.json"
    deadline = time.time() + 300
    while not list((work / "data" / "checkpoints").glob("mosi-pase-seed1-*/last.pt")):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.01)
    import json
    os.kill(json.loads(pool_json.read_text())["pid"], signal.SIGKILL)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    assert "the look-ahead pool has stopped" in out
    assert "mosi/pase seed 1: resuming after epoch" in out  # the stage goes on from the pool's epoch
    assert snapshot(work) == snapshot(plain)
