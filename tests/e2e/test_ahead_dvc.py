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

from pipeline import ahead
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


# ------------------------------------------------------------------ only what DVC asked for

@pytest.mark.slow
def test_a_targeted_repro_trains_no_seed_of_another_stage(tmp_path):
    """`dvc repro train@mosi-late_fusion` on a fresh clone runs one train stage: the pool stays
    off (it used to train pase-T, next in the matrix, and kill it at exit). With two targets it
    trains those two stages' seeds only and leaves nothing behind."""
    import subprocess
    work = make_repo(tmp_path / "targets", OVERRIDES)
    p = subprocess.run(["dvc", "repro", "train@mosi-late_fusion"], cwd=work, env=env(PIPELINE_LOG="INFO"),
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert ("the look-ahead pool stays off (the train stages of train@mosi-late_fusion: one train "
            "stage, nothing to train ahead)") in p.stderr
    pool = work / "data" / "checkpoints" / "pool"
    assert not (pool / "pool.log").exists()  # no pool process was started
    runs = work / "data" / "runs" / "mosi"
    assert [d.name for d in runs.iterdir() if d.is_dir()] == ["late_fusion"]
    assert [d.name for d in (work / "data" / "checkpoints").iterdir()] == ["pool"]

    run(["dvc", "repro", "train@mosi-late_fusion", "train@mosi-pase"], work)
    assert sorted(_started(work)) == [f"mosi/pase seed {s}" for s in (0, 1, 2)]
    assert _no_pool_left(work)
    assert [d.name for d in (work / "data" / "checkpoints").iterdir()] == ["pool"]
    assert sorted(d.name for d in runs.iterdir() if d.is_dir()) == ["late_fusion", "pase"]


def test_the_pool_knows_which_train_stages_a_dvc_command_runs(tmp_path, monkeypatch):
    """DVC's own parser and planner on the command line: no targets (any -S) is the whole
    matrix; targets are what DVC would run for them; anything it cannot be sure of is None."""
    work = make_repo(tmp_path / "plan", OVERRIDES)
    monkeypatch.chdir(work)
    matrix = [("mosi", v) for v in OVERRIDES["variants"]]

    def plan(*args):
        return ahead.planned_stages(list(args), matrix)[0]

    assert plan("repro") == plan("exp", "run", "-S", "sgm.enabled=false") == matrix
    assert plan("repro", "-f", "--pull", "-s") == matrix  # no targets: every stage of dvc.yaml
    assert plan("repro", "train@mosi-late_fusion") == [("mosi", "late_fusion")]
    assert plan("exp", "run", "-S", "train.lr=0.1", "train@mosi-pase-T") == [("mosi", "pase-T")]
    assert plan("repro", "--downstream", "train@mosi-pase") == [("mosi", "pase")]
    assert sorted(plan("repro", "train@mosi-pase-T", "train@mosi-pase")) == [("mosi", "pase"), ("mosi", "pase-T")]
    assert sorted(plan("repro", "report")) == sorted(matrix)  # the report needs every run
    assert sorted(plan("repro", "-p", "train@mosi-pase")) == sorted(matrix)  # its whole pipeline
    assert plan("repro", "-s", "report") == [] and plan("repro", "embed@mosi") == []
    for unsure in (("repro", "--dry"), ("repro", "-i"), ("exp", "run", "--temp"),
                   ("exp", "run", "--queue"), ("status",), ("repro", "--no-such-option"),
                   ("repro", "train@mosi-no_such_variant")):
        stages, why = ahead.planned_stages(list(unsure), matrix)
        assert stages is None and why, unsure
    assert ahead._dvc_args(["/v/bin/python", "/v/bin/dvc", "repro", "x"]) == ["repro", "x"]
    assert ahead._dvc_args(["python", "-m", "dvc", "exp", "run"]) == ["exp", "run"]
    assert ahead._dvc_args(["/usr/bin/dvc"]) == [] and ahead._dvc_args(["python", "x.py"]) is None


def test_the_pool_stays_off_on_a_gpu():
    import types

    import torch
    assert ahead._on_gpu("cuda") and not ahead._on_gpu("cpu")
    assert ahead._on_gpu("auto") == torch.cuda.is_available()
    vcfg = types.SimpleNamespace(train=types.SimpleNamespace(device="cuda"))
    why, stages = ahead._why_off({"pid": os.getpid(), "started": 0}, vcfg, "mosi", "pase")
    assert stages is None and "GPU" in why
