"""Interruptions: a killed `dvc repro` leaves nothing that DVC would take as complete, and the
rerun resumes the interrupted training (a training run killed mid-epoch:
tests/train/test_reliability_interrupts.py)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import make_repo, make_user_dirs, run, write_params


@pytest.mark.slow
def test_killed_dvc_repro_leaves_nothing_complete(tmp_path):
    work = make_repo(tmp_path / "repo", {"variants": ["pase"], "train": {"epochs": 40},
                                         "synthetic": {"scale": 0.05}})
    env = dict(os.environ, DVC_NO_ANALYTICS="1", HF_HUB_OFFLINE="1")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    proc = subprocess.Popen(["dvc", "repro"], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    # Wait until training is under way (its first checkpoint exists), then kill the whole group.
    deadline = time.time() + 300
    while time.time() < deadline and not list((work / "data" / "checkpoints").glob("*/last.pt")):
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (work / "data" / "runs" / "mosi" / "pase" / "seed0" / "metrics.json").exists()
    lock = (work / "dvc.lock").read_text() if (work / "dvc.lock").exists() else ""
    assert "train@mosi-pase" not in lock  # DVC recorded no completed training stage
    status = json.loads(run(["dvc", "status", "--json"], work).stdout)
    assert "train@mosi-pase" in status and "report" in status
    # and the rerun finishes, resuming the interrupted training from its checkpoint
    make_user_dirs(work)
    write_params(work / "params.yaml", {"variants": ["pase"], "train": {"epochs": 40},
                                        "synthetic": {"scale": 0.05}})
    run(["dvc", "repro"], work)
    assert (work / "data" / "runs" / "mosi" / "pase" / "seed0" / "metrics.json").exists()
