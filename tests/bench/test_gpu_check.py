"""benchmarks/gpu_check.py (the device check) at TINY size on the CPU: the script runs end to end
and writes its JSON; its projection and seed counts checked by hand (the GPU numbers themselves
live in reports/gpu_check.json once a GPU ran it, never in a test)."""
import json
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT))

from benchmarks.bench_gpu import paper_config  # noqa: E402
from benchmarks.gpu_check import by_row, concurrent_bounds, fits, main  # noqa: E402
from pipeline.gpu_fit import GIB  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    main([str(out), "--tiny", "--methods", "pase,late_fusion", "--seed-steps", "2"])
    return json.loads(out.read_text())


def test_tiny_run_writes_every_part(tiny):
    assert tiny["size"].startswith("TINY CPU run") and tiny["device"] == "cpu (no GPU)"
    assert set(tiny["methods"]) == {"pase@mosi", "pase@mosei", "late_fusion@mosi", "late_fusion@mosei"}
    m = tiny["methods"]["late_fusion@mosi"]
    assert m["train_step_ms"] > 0 and m["train_samples_per_s"] == pytest.approx(
        m["batch_size"] / m["train_step_ms"] * 1e3, rel=0.01)
    assert tiny["methods"]["pase@mosei"]["finetunes_bert"] is True
    seed = tiny["real_seed"]
    assert "SYNTHETIC" in seed["dataset"] and seed["epochs"] >= 2 and seed["seconds"] > 0
    assert seed["training_steps"] == seed["epochs"] * -(-seed["train_rows"] // seed["batch_size"])
    assert set(seed["test"]) >= {"mae", "acc2_non0"}
    import os  # the stage's rule for this run: on a CPU, the usable cores, nothing probed
    assert seed["train_workers_null"]["seeds_at_once"] == len(os.sched_getaffinity(0))
    # the matrix of the measured methods only (PaSE's ablations cost as PaSE)
    variants = set(tiny["matrix"]["variants"])
    assert {"pase", "pase-T", "pase-no_sgm", "late_fusion"} <= variants and "tfn" not in variants
    assert tiny["projection_one_seed_at_a_time"]["gpu_hours"] > 0
    assert "projection_seeds_at_once" not in tiny  # no GPU memory measured on a CPU


def test_no_gpu_without_tiny_is_refused(monkeypatch, capsys):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        main(["/dev/null"])
    assert "no GPU visible to torch" in capsys.readouterr().err


def test_cells_are_costed_at_their_rows():
    cells = [("mosi", "pase-T", "pase"), ("mosei", "tfn", "tfn"), ("iemocap", "tfn", "tfn")]
    assert by_row(cells) == [("mosi", "pase-T", "pase@mosi"), ("mosei", "tfn", "tfn@mosei"),
                             ("iemocap", "tfn", "tfn@mosi")]  # IEMOCAP trains at MOSI's row


def test_seeds_at_once_and_the_concurrent_bounds_by_hand():
    cfg = paper_config(tiny=True)  # 200 epochs, 5 seeds
    # one seed process at 7 GiB on a 24 GiB card: 21.6 // 7 = 3; at 23 GiB none: a stated 0
    assert fits(7 * GIB, 24 * GIB, cores=8, seeds=5)["seeds_at_once"] == 3
    too_big = fits(23 * GIB, 24 * GIB, cores=8, seeds=5)
    assert too_big["seeds_at_once"] == 0 and "23.00 GiB" in too_big["why"]
    cells = [("mosi", "pase", "pase@mosi"), ("mosi", "tfn", "tfn@mosi")]
    per_sample = {"pase@mosi": (1e-3, 0.0), "tfn@mosi": (1e-3, 0.0)}  # 1284 s serial each
    out = concurrent_bounds(cfg, cells, per_sample, {"pase@mosi": 3, "tfn@mosi": 8})
    # pase: 1284 / 3 = 428 s; tfn: 8 fit but 5 seeds: 1284 / 5 = 256.8 s
    assert out["gpu_hours_at_best"] == round((428 + 256.8) / 3600, 1)
    assert out["gpu_hours_at_worst"] == round(2 * 1284 / 3600, 1)


def test_a_failing_part_is_recorded_and_the_rest_still_written(tmp_path, monkeypatch):
    """One method that fails (or the real seed) is an "error" entry; the JSON keeps the others and
    projects their cells only (the device's minutes are few: no measurement is thrown away)."""
    import benchmarks.gpu_check as gc

    def measure(cfg, v, tiny, device, steps, dataset):
        if v == "tfn":
            raise RuntimeError("CUDA out of memory. Tried to allocate 9.00 GiB\nmore")
        return {"train_step_ms": 10.0, "eval_forward_ms": 5.0, "batch_size": 10,
                "train_samples_per_s": 1000.0}

    def real_seed(*a):
        raise FileNotFoundError("no vocab")
    monkeypatch.setattr(gc, "measure", measure)
    monkeypatch.setattr(gc, "real_seed", real_seed)
    out = gc.main([str(tmp_path / "g.json"), "--tiny", "--methods", "pase,tfn"])
    assert json.loads((tmp_path / "g.json").read_text()) == json.loads(json.dumps(out))
    assert out["methods"]["tfn@mosi"] == {
        "error": "RuntimeError: CUDA out of memory. Tried to allocate 9.00 GiB"}
    assert out["real_seed"] == {"error": "FileNotFoundError: no vocab"}
    assert "tfn@mosei" in out["matrix"]["not_projected"] and "pase@mosi" not in out["matrix"]["not_projected"]
    # PaSE's cells only: 1 ms a training sample, 0.5 ms an eval sample, 200 epochs, 5 seeds
    cells = [c for c in by_row(gc.matrix(paper_config(tiny=True))) if c[2].startswith("pase@")]
    assert out["matrix"]["cells"] == len(cells)
    from benchmarks.bench_gpu import project
    assert out["projection_one_seed_at_a_time"] == project(
        paper_config(tiny=True), cells, {k: (1e-3, 5e-4) for k in ("pase@mosi", "pase@mosei")})
