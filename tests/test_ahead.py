"""train.ahead: under real `dvc repro` one pool process trains the seeds ahead of DVC's stages;
the outputs are the bytes of a run without it, an experiment trains ahead only the runs it
changes, and a pool that dies or declines leaves the stages to train their own seeds."""
import filecmp
import os
import signal
import time
from pathlib import Path

import pytest

from pipeline import ahead, ahead_pool, paths, resume
from tests.test_dvc_pipeline import make_repo, run
from tests.test_reliability_dvc import env, snapshot

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


def test_no_pool_outside_dvc(monkeypatch):
    monkeypatch.delenv("DVC_STAGE", raising=False)
    assert ahead.dvc_process() is None
    monkeypatch.setenv("DVC_STAGE", "train@mosi-pase")  # but no DVC process above this one
    assert ahead.dvc_process() is None


def test_a_stage_under_other_parameters_is_declined(tiny_project):
    """The pool trains what params.yaml gives now; a stage announcing another key (it runs under
    other code, parameters or inputs) is told so, and trains its seeds itself."""
    from pipeline import train
    from pipeline import train_stage
    cfg = tiny_project({"variants": ["late_fusion"], "seeds": [0, 1]})
    from pipeline.effective import configure
    configure(cfg)
    pool = ahead_pool.Pool(None, "params.yaml")
    vcfg, _, _ = train_stage.run_config(cfg, "mosi", "late_fusion")
    key = resume.fingerprint(resume.run_record(vcfg, "mosi", "late_fusion"))
    ahead.POOL.mkdir(parents=True, exist_ok=True)
    (ahead.POOL / "started").write_text("mosi late_fusion 0123456789abcdef\n")
    pool._read_announcements()
    assert not pool._dispatch()  # nothing started for it
    for s in (0, 1):
        failed = paths.checkpoint_dir("mosi", "late_fusion", s, "0123456789abcdef") / ahead.FAILED
        assert "other code, parameters or inputs" in failed.read_text()
    assert not paths.checkpoint_dir("mosi", "late_fusion", 0, key).exists()


def test_a_seed_process_refuses_code_changed_since_the_pool_imported_it(tmp_path):
    """The pool keys its runs by the code it imported (resume.pin_code); a seed process whose
    files on disk differ from that code trains nothing and says why."""
    import multiprocessing
    real = resume.code_hashes(disk=True)
    imported = {**real, "pipeline/train.py": "0" * 64}  # the pool imported another train.py
    folder = tmp_path / "mosi-late_fusion-seed0-0123456789abcdef"
    folder.mkdir()
    p = multiprocessing.get_context("fork").Process(
        target=ahead_pool._train_one, args=(None, "mosi", "late_fusion", 0, (), folder, imported, 20))
    p.start()
    p.join(60)
    assert p.exitcode == 1
    assert "code on disk changed" in (folder / ahead.FAILED).read_text()
    assert not (folder / resume.DONE).exists() and not (folder / ahead.SEED_LOG).exists()
    try:  # what the pool's records use once pinned
        resume.pin_code(imported)
        assert resume.code_hashes() == imported and resume.code_hashes(disk=True) == real
    finally:
        resume.pin_code(None)


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


# ------------------------------------------------------------------ races and leftovers

def _pool(tiny_project, overrides):
    from pipeline.effective import configure
    cfg = tiny_project(overrides)
    configure(cfg)
    ahead.POOL.mkdir(parents=True, exist_ok=True)
    return cfg, ahead_pool.Pool(None, "params.yaml")


def _key(cfg, variant: str) -> str:
    from pipeline import train_stage
    vcfg, _, _ = train_stage.run_config(cfg, "mosi", variant)
    return resume.fingerprint(resume.run_record(vcfg, "mosi", variant))


def _finish(pool, timeout=180):
    deadline = time.time() + timeout
    while pool.flights:
        assert time.time() < deadline
        pool._reap()
        time.sleep(0.05)


def test_a_declined_stage_waits_for_the_seeds_the_pool_trains_for_it(tiny_project, monkeypatch):
    """The pool trains a seed ahead; its stage then starts under that key while the pool cannot
    plan it now (say params.yaml is being saved). Declining wrote `failed` into the folder of the
    seed in flight, and the stage trained it in the same folder at the same time; now the seed in
    flight finishes for the stage, and only the seeds not started are declined."""
    cfg, pool = _pool(tiny_project, {"variants": ["pase", "late_fusion"], "seeds": [0, 1]})
    key = _key(cfg, "late_fusion")
    assert pool._dispatch()  # ahead of DVC (one worker): late_fusion seed 0
    (folder,) = pool.flights
    assert folder == paths.checkpoint_dir("mosi", "late_fusion", 0, key)
    monkeypatch.setattr(pool, "_plan", lambda ds, variant: None)
    (ahead.POOL / "started").write_text(f"mosi late_fusion {key}\n")
    pool._read_announcements()
    pool._dispatch()
    assert folder in pool.flights and not (folder / ahead.FAILED).exists()
    assert (paths.checkpoint_dir("mosi", "late_fusion", 1, key) / ahead.FAILED).exists()
    _finish(pool)
    assert (folder / resume.DONE / "metrics.json").exists() and not (folder / ahead.FAILED).exists()


def test_a_stage_clean_up_leaves_a_pool_seed_of_another_run_alone(tiny_project):
    """A stage finishing under one key removed every folder of its stage, also the one a pool
    seed was training under another key; now a folder in use stays and the seed finishes."""
    cfg, pool = _pool(tiny_project, {"variants": ["pase", "late_fusion"], "train": {"epochs": 6}})
    assert pool._dispatch()
    (folder,) = pool.flights
    deadline = time.time() + 120
    while not (folder / "last.pt").exists():  # mid-training
        assert time.time() < deadline and pool.flights
        time.sleep(0.02)
    resume.clean("mosi", "late_fusion", "0123456789abcdef")  # the stage ran under another key
    _finish(pool)
    # removed, the folder came back with the seed's next checkpoint, without its key.json and
    # its log (the stage prints it), and a kill before that next checkpoint lost its epochs
    assert (folder / resume.DONE / "metrics.json").exists() and (folder / resume.KEY_FILE).exists()
    assert "seed 0: test" in (folder / ahead.SEED_LOG).read_text()


def test_the_pool_removes_what_it_trained_for_stages_no_stage_claimed(tiny_project):
    """When the DVC command ends, the pool's folders of stages that never started (trained ahead
    for nothing, finished or killed) go; a started stage's stay for its rerun to resume."""
    cfg, pool = _pool(tiny_project, {"variants": ["pase", "late_fusion", "pase-T"], "seeds": [0, 1]})
    claimed = _key(cfg, "late_fusion")
    (ahead.POOL / "started").write_text(f"mosi late_fusion {claimed}\n")
    pool._read_announcements()
    for _ in range(3):  # late_fusion's seeds 0 and 1, then pase-T's seed 0 ahead
        assert pool._dispatch()
        _finish(pool)
    assert pool._dispatch()  # pase-T seed 1, in flight when DVC ends
    ahead_folders = sorted(paths.DATA.joinpath("checkpoints").glob("mosi-pase-T-seed*"))
    assert len(ahead_folders) == 2 and (ahead_folders[0] / resume.DONE).is_dir()
    pool.run()  # its DVC process (none here) has ended
    assert not any(f.exists() for f in ahead_folders)
    for s in (0, 1):
        assert (paths.checkpoint_dir("mosi", "late_fusion", s, claimed) / resume.DONE).is_dir()
