"""train.ahead in-process: no pool outside DVC, a pool declines a stage under other parameters,
and a seed process refuses code changed since the pool imported it (under real `dvc repro`:
tests/e2e/test_ahead_dvc.py)."""
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
