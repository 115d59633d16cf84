"""Run every benchmark and gather the numbers in reports/bench.json (docs/performance.md).

    python benchmarks/run_all.py [--quick] [--default-run]

- alignment vs mmsdk (bench_align.py), data loading vs a training step (bench_loader.py),
  a phase-2 (SGM) step vs a phase-1 step (bench_sgm.py): each in its own process;
- the whole run under three schedules (bench_repro.py: `dvc repro` of the training part of one
  dataset x 4 variants with seeds one after another, each stage's seeds at once, and the default
  look-ahead pool, in a scratch clone), as ratios measured in one run;
- the default `dvc repro` on a fresh clone (bench_default_run.py, ~8 min: run with
  `--default-run`, otherwise the last reports/bench_default_run.json is copied in): wall time,
  CPU percentage with the look-ahead pool's, peak memory;
- the cpu-real profile's budget (bench_cpu_real.py) at a tenth of MOSI's real sizes (--quick: a
  fiftieth) into bench_cpu_real_scaled.json: a smoke test of the measurement; the committed
  real-size measurement, reports/bench_cpu_real.json, is made by hand (docs/performance.md);
- the experiment matrix: training seconds per run, read from every run's timing.json under
  data/runs/ (so run `dvc repro` first).
`--quick` shortens each benchmark (fewer videos, steps, rows) for a smoke test.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def run(script: str, out: Path, *extra: str) -> dict:
    subprocess.run([sys.executable, str(REPO / "benchmarks" / script), str(out), *extra],
                   check=True, cwd=REPO)
    return json.loads(out.read_text())


def matrix_timing(runs: Path) -> dict:
    per_run = {}
    for t in sorted(runs.glob("*/*/seed*/timing.json")):
        ds, variant = t.parts[-4], t.parts[-3]
        per_run.setdefault(f"{ds}/{variant}", []).append(json.loads(t.read_text())["train_seconds_this_process"])
    if not per_run:
        return {"note": "no runs under data/runs: run `dvc repro` first"}
    seconds = {k: round(float(np.mean(v)), 2) for k, v in per_run.items()}
    slowest = max(seconds, key=seconds.get)
    return {"train_seconds_per_run_mean": seconds, "runs": sum(len(v) for v in per_run.values()),
            "total_train_seconds": round(float(sum(sum(v) for v in per_run.values())), 1),
            "slowest": slowest}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "bench.json")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--default-run", action="store_true",
                    help="also time the default dvc repro on a fresh clone (~8 min)")
    args = ap.parse_args(argv)
    tmp = args.out.parent
    quick_align = ["--videos", "10", "--seconds", "30"] if args.quick else []
    quick_loader = ["--n", "2000", "--epochs", "1", "--steps", "5"] if args.quick else []
    quick_sgm = ["--steps", "5"] if args.quick else []
    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": __import__("os").cpu_count()},
        "alignment": run("bench_align.py", tmp / "bench_align.json", *quick_align),
        "loader": run("bench_loader.py", tmp / "bench_loader.json", *quick_loader),
        "sgm_step": run("bench_sgm.py", tmp / "bench_sgm.json", *quick_sgm),
        "whole_run": run("bench_repro.py", tmp / "bench_repro.json",
                         *(["--variants", "late_fusion", "pase"] if args.quick else [])),
        "cpu_real_budget": run("bench_cpu_real.py", tmp / "bench_cpu_real_scaled.json",
                               "--scale", "0.02" if args.quick else "0.1"),
        "matrix": matrix_timing(REPO / "data" / "runs"),
    }
    default_run = REPO / "reports" / "bench_default_run.json"
    if args.default_run:
        run("bench_default_run.py", default_run)
    result["default_run"] = (json.loads(default_run.read_text()) if default_run.exists() else
                             {"note": "run benchmarks/bench_default_run.py (or run_all.py --default-run)"})
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
