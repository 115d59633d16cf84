"""train.ahead in-process: no pool outside DVC, a pool declines a stage under other parameters,
a seed process refuses code changed since the pool imported it, and the races between the pool
and the stages (under real `dvc repro`: tests/e2e/test_ahead_dvc.py)."""
import time

from pipeline import ahead, ahead_pool, paths, resume


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
