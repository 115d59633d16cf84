"""How many seeds train at once (pipeline/gpu_fit.py): the rule, on measured numbers fed in; the
CPU path unchanged; the stage's log; the probe's steps on the real model (CPU here: its memory
is measured only on a GPU, benchmarks/gpu_check.py)."""
import dataclasses
import logging
import os

import pytest

from pipeline import gpu_fit
from pipeline.gpu_fit import GIB, GpuFitError, seeds_that_fit

pytestmark = pytest.mark.usefixtures("one_thread")
MIB = 2**20


def test_seeds_that_fit_by_hand():
    # a 24 GiB A10G, free before any seed (the measured context in each seed's peak); 10 % kept:
    # 24 - 2.4 = 21.6 GiB usable; a BERT-base seed at 7 GiB fits 3
    n, why = seeds_that_fit(7 * GIB, 24 * GIB, 24 * GIB, cores=8, seeds=5)
    assert n == 3 and why.startswith("3 at once, set by the memory") and "7.00 GiB" in why
    # the cores bind: 16 small seeds would fit, 8 cores
    n, why = seeds_that_fit(1 * GIB, 24 * GIB, 24 * GIB, cores=8, seeds=10)
    assert n == 8 and "the 8 usable cores" in why
    # the seeds left bind
    assert seeds_that_fit(1 * GIB, 24 * GIB, 24 * GIB, cores=8, seeds=2)[0] == 2
    # memory another process holds counts: 10 GiB free of 24 -> 10 - 2.4 = 7.6 GiB: 1 seed of 7
    assert seeds_that_fit(7 * GIB, 24 * GIB, 10 * GIB, cores=8, seeds=5)[0] == 1
    # a stated margin: none kept, 24 // 7 = 3; half kept, 12 // 7 = 1
    assert seeds_that_fit(7 * GIB, 24 * GIB, 24 * GIB, 8, 5, margin=0.0)[0] == 3
    assert seeds_that_fit(7 * GIB, 24 * GIB, 24 * GIB, 8, 5, margin=0.5)[0] == 1


def test_one_seed_that_does_not_fit_is_a_clear_error():
    with pytest.raises(GpuFitError) as e:
        seeds_that_fit(23 * GIB, 24 * GIB, 24 * GIB, cores=8, seeds=5,
                       what="one seed of pase (mosi/pase) at batch size 64")
    msg = str(e.value)
    assert "pase (mosi/pase) at batch size 64" in msg and "23.00 GiB" in msg
    assert "21.6 GiB usable" in msg and "train.batch_size" in msg
    with pytest.raises(ValueError):
        seeds_that_fit(0, 24 * GIB, 24 * GIB, 8, 5)  # no measurement is no answer


def _cfg(cfg, **train):
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))


def test_seeds_at_once_on_cpu_is_the_cores_and_set_workers_win(tiny_project):
    cfg = tiny_project()
    cores = len(os.sched_getaffinity(0))
    n, why = gpu_fit.seeds_at_once(_cfg(cfg, workers=None), "mosi", "pase")
    assert n == cores and f"{cores} at once" in why and "usable core" in why
    assert gpu_fit.seeds_at_once(_cfg(cfg, workers=3), "mosi", "pase") == \
        (3, "3 at once: train.workers is set")


def test_seeds_at_once_on_cuda_uses_the_measured_peak(tiny_project, monkeypatch):
    cfg = _cfg(tiny_project(), workers=None, device="cuda")
    monkeypatch.setattr(gpu_fit, "usable_cores", lambda: 8)
    measured = {"batch_size": 16, "peak_reserved_bytes": 6 * GIB, "context_bytes": 512 * MIB,
                "total_bytes": 24 * GIB, "free_bytes": 24 * GIB, "peak_allocated_bytes": 5 * GIB}
    seen = []

    def measure(c, ds, v):
        seen.append((ds, v))
        return measured
    n, why = gpu_fit.seeds_at_once(cfg, "mosi", "pase", seeds=5, measure=measure)
    assert seen == [("mosi", "pase")]
    assert n == 3 and "pase (mosi/pase) at batch size 16 peaks at 6.50 GiB" in why  # 21.6 // 6.5
    with pytest.raises(GpuFitError, match="ran out of GPU memory.*batch"):
        gpu_fit.seeds_at_once(cfg, "mosi", "pase", measure=lambda *a: {
            **measured, "out_of_memory": "CUDA out of memory. Tried to allocate 2.00 GiB"})
    # no run named (the look-ahead pool): one at a time on a GPU, never a guess
    assert gpu_fit.seeds_at_once(cfg)[0] == 1


def test_the_stage_logs_how_many_seeds_run_together_and_why(tiny_project, caplog):
    from pipeline import train
    from pipeline import train_stage
    cfg = tiny_project({"seeds": [0], "train": {"epochs": 2, "workers": None, "ahead": False}})
    with caplog.at_level(logging.INFO, logger="pipeline.train_stage"):
        train_stage.train_variant(cfg, "mosi", "late_fusion")
    cores = len(os.sched_getaffinity(0))
    assert f"mosi/late_fusion: seed processes: {cores} at once: one seed process per usable core" \
        in caplog.text


def test_measure_seed_runs_the_real_model_at_its_batch_size(tiny_project):
    from pipeline.profiles import variant_config
    cfg = tiny_project()
    vcfg = variant_config(cfg, "pase", "mosi")
    m = gpu_fit.measure_seed(vcfg, "mosi", "pase", steps=2)
    assert m["batch_size"] == vcfg.train.batch_size and m["device"] == "cpu" and m["steps"] == 2
    assert m["peak_reserved_bytes"] == 0 and "out_of_memory" not in m  # measured on a GPU only
