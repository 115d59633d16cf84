"""Kills under real `dvc repro` (SIGKILL to the whole process group) at each point: inside a
seed, during embed, with a report's leftovers; the rerun ends byte-identical to an uninterrupted
run. Compared: every run's metrics.json, history.json, predictions.csv and .npy files,
reports/metrics.json, the tables but the efficiency table, the figures and their data.
timing.json, the efficiency table and the report's README (which prints it) hold measured wall
time and are left out; so is dvclive's live/ folder (time stamps)."""
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import env, make_repo, run, snapshot

pytestmark = pytest.mark.slow
PARAMS = {"datasets": ["mosi"], "seeds": [0, 1, 2], "variants": ["pase", "late_fusion"],
          "train": {"epochs": 6}, "sgm": {"start_epoch": 2}}


def kill_when(work: Path, cmd: list[str], ready, timeout=300) -> None:
    proc = subprocess.Popen(cmd, cwd=work, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"{cmd} ended before the kill point"
        assert time.time() < deadline
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def forget_earlier_run(work: Path, stage: str) -> None:
    """DVC would check out the uninterrupted run's outputs of `stage` from its cache instead of
    running it; a killed first run of new settings has nothing there."""
    shutil.rmtree(work / ".dvc" / "cache" / "runs", ignore_errors=True)
    for out in yaml.safe_load((work / "dvc.lock").read_text())["stages"][stage]["outs"]:
        (work / ".dvc" / "cache" / "files" / "md5" / out["md5"][:2] / out["md5"][2:]).unlink()


def repro_logged(work: Path) -> str:
    p = subprocess.run(["dvc", "repro"], cwd=work, env=env(PIPELINE_LOG="INFO"), capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout + p.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    work = make_repo(tmp_path_factory.mktemp("repo"), PARAMS)
    run(["dvc", "repro"], work)
    run(["git", "add", "-A"], work)
    run(["git", "commit", "-qm", "uninterrupted run"], work)
    return work, snapshot(work)


def test_killed_inside_seed_2_retrains_only_seed_2(repo):
    work, reference = repo
    ckpts = work / "data" / "checkpoints"
    kill_when(work, ["dvc", "repro", "-f", "-s", "train@mosi-pase"],
              lambda: any(ckpts.glob("mosi-pase-seed2-*/last.pt")))
    assert len(list(ckpts.glob("mosi-pase-seed*-*/done"))) == 2  # seeds 0 and 1 finished
    forget_earlier_run(work, "train@mosi-pase")
    log = repro_logged(work)
    assert "Running stage 'train@mosi-pase'" in log and "Running stage 'embed" not in log
    for s in (0, 1):  # by the look-ahead pool of the killed run (or the stage, train.ahead: false)
        assert f"mosi/pase seed {s}: finished by " in log
    assert "mosi/pase seed 2: resuming after epoch" in log
    assert snapshot(work) == reference
    assert [p.name for p in ckpts.iterdir()] in ([], ["pool"])  # the pool's lock and log stay


def test_killed_during_embed_leaves_a_temp_file_that_the_rerun_removes(repo):
    work, reference = repo
    emb = work / "data" / "embedded"
    kill_when(work, ["dvc", "repro", "-f", "-s", "embed@mosi"], lambda: any(emb.glob(".mosi.h5.*.tmp")))
    assert list(emb.glob(".mosi.h5.*.tmp"))  # what SIGKILL leaves: no cleanup code runs
    forget_earlier_run(work, "embed@mosi")
    log = repro_logged(work)
    assert "Running stage 'embed@mosi'" in log
    assert not list(emb.glob(".*.tmp"))
    assert snapshot(work) == reference
    assert "up to date" in run(["dvc", "status"], work).stdout.lower()


def test_leftovers_of_a_killed_report_are_removed(repo):
    work, reference = repo
    # what a SIGKILL inside atomic writes of the figures and report stages leaves behind
    leftovers = [work / "reports" / ".metrics.json.a1b2c3d4.tmp",
                 work / "reports" / "tables" / ".table1.md.a1b2c3d4.tmp",
                 work / "reports" / "figures" / ".fig3_tsne.png.a1b2c3d4.tmp"]
    for p in leftovers:
        p.write_bytes(b"half")
    run(["dvc", "repro", "-f", "-s", "figures"], work)
    run(["dvc", "repro", "-f", "-s", "report"], work)
    assert not any(p.exists() for p in leftovers)
    assert snapshot(work) == reference
    run(["dvc", "plots", "show", "--json"], work)  # no stray file in the plotted folders


def test_a_subset_of_variants_runs_to_the_report_and_duplicates_are_refused(repo):
    work, _ = repo
    exp = run(["dvc", "exp", "run", "-S", "variants=[late_fusion]"], work)
    assert "Running stage 'figures'" in exp.stdout and "Running stage 'report'" in exp.stdout
    readme = (work / "reports" / "README.md").read_text()
    assert "not drawn for this run set" in readme
    assert yaml.safe_load((work / "reports" / "plots" / "skipped.json").read_text())
    dup = run(["dvc", "exp", "run", "-S", "variants=[late_fusion,late_fusion]"], work, check=False)
    assert dup.returncode != 0
    assert "repeated entries" in dup.stdout + dup.stderr
