"""Whole-run benchmark: the training part of `dvc repro` in one run under three schedules:
`serial` (`train.workers: 1`, `train.ahead: false`: each stage trains its seeds one after
another), `parallel_seeds` (`workers: null`, the usable cores, `ahead: false`: each stage's seeds
at once) and `default` (`workers: null`, `ahead: true`: the look-ahead pool, pipeline/ahead.py,
trains the seeds of the next stages while DVC moves on).

    python benchmarks/bench_repro.py OUT.json [--dataset mosi] [--variants pase late_fusion ...]

A scratch `git clone` of this repository (committed files only) with the default params.yaml
except `datasets` and `variants`; its data stages run first (untimed), then `dvc repro` of
the rest (configure, every train stage, figures, report) once per schedule. Wall time,
CPU percentage ((user + sys) / wall, all child processes) and the peak resident memory of one
process come from the operating system (getrusage), as `/usr/bin/time -v` reports them. The two
runs must give byte-identical run outputs (timing.json excepted) and reports; `identical` says so.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, pool_usage  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, DVC_NO_ANALYTICS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
           PIPELINE_LOG="WARNING", PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])


def sh(cmd, cwd) -> str:
    p = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"{cmd} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p.stdout


def set_params(work: Path, **top) -> None:
    import yaml
    params = yaml.safe_load((work / "params.yaml").read_text())
    for k, v in top.items():
        if k in ("workers", "ahead"):
            params["train"][k] = v
        else:
            params[k] = v
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def timed_repro(work: Path) -> dict:
    """`dvc repro` from the configure stage on, as on a fresh clone whose data stages have run:
    the later stages' outputs and DVC's cache removed (else DVC checks the outputs out of its
    cache instead of running the stages; not --force, under which every run's old outputs would
    look up to date to the look-ahead pool until DVC deletes them)."""
    import shutil
    for part in ("data/configs", "data/runs", "data/curves", ".dvc/cache", "reports/figures",
                 "reports/plots", "reports/tables", "reports/summary.md", "reports/README.md",
                 "reports/metrics.json", "reports/metrics_detail.json"):
        p = work / part
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = sh(["dvc", "repro"], work)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak = after.ru_maxrss / 1024
    pool_cpu, pool_peak = pool_usage(work)  # the look-ahead pool is no child of DVC's
    cpu += pool_cpu
    peak = max(peak, pool_peak)
    return {"wall_seconds": round(wall, 2), "cpu_percent": round(100 * cpu / wall, 1),
            "peak_rss_mib_any_process": round(peak, 1),
            "train_stages_run": out.count("Running stage 'train@")}


def snapshot(work: Path, name: str) -> Path:
    dst = work.parent / name
    dst.mkdir()
    for part in ("data/runs", "data/curves", "reports"):
        subprocess.run(["cp", "-r", str(work / part), str(dst / Path(part).name)], check=True)
    return dst


TIMING = ("timing.json", "efficiency.csv", "efficiency.md", "efficiency.tex")  # wall times


def same_outputs(a: Path, b: Path) -> list[str]:
    """Files that differ between the two runs, the timing files and tables excepted (and in
    reports/README.md the lines of the efficiency table it embeds)."""
    diff = []
    for f in sorted(a.rglob("*")):
        if f.is_file() and f.name == "README.md" and f.parent.name == "reports":
            g = b / f.relative_to(a)
            timing = set()
            for t in (a, b):
                timing |= set((t / "reports/tables/efficiency.md").read_text().splitlines()) \
                    if (t / "reports/tables/efficiency.md").exists() else set()

            def keep(t):
                return [line for line in t.read_text().splitlines() if line not in timing]
            if keep(f) != keep(g):
                diff.append(str(f.relative_to(a)))
        elif f.is_file() and f.name not in TIMING:
            g = b / f.relative_to(a)
            if not g.exists() or not filecmp.cmp(f, g, shallow=False):
                diff.append(str(f.relative_to(a)))
    return diff


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--dataset", default="mosi")
    ap.add_argument("--variants", nargs="+", default=["pase", "pase-ogm_ge", "late_fusion", "tfn"])
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_repro_") as tmp:
        work = Path(tmp) / "repo"
        sh(["git", "clone", "-q", str(REPO), str(work)], tmp)
        for ds in ("mosi", "mosei", "iemocap"):  # data/user/<ds>/ (kept by .gitkeep files)
            (work / "data" / "user" / ds).mkdir(parents=True, exist_ok=True)
        set_params(work, datasets=[args.dataset], variants=args.variants)
        sh(["dvc", "repro", f"embed@{args.dataset}"], work)  # untimed: the data stages
        times, diffs, first = {}, {}, None
        for name, workers, ahead in (("serial", 1, False), ("parallel_seeds", None, False),
                                     ("default", None, True)):
            set_params(work, workers=workers, ahead=ahead)
            times[name] = timed_repro(work)
            snap = snapshot(work, name)
            if first is None:
                first = snap
            else:
                diffs[name] = same_outputs(first, snap)
    result = {
        "machine": machine(),
        "what": f"dvc repro from configure on: {args.dataset} x "
                f"{len(args.variants)} variants ({', '.join(args.variants)}) x 5 seeds, default params",
        **times,
        "workers_default": len(os.sched_getaffinity(0)),
        "serial_over_default_wall": round(times["serial"]["wall_seconds"]
                                          / times["default"]["wall_seconds"], 2),
        "parallel_seeds_over_default_wall": round(times["parallel_seeds"]["wall_seconds"]
                                                  / times["default"]["wall_seconds"], 2),
        "identical": not any(diffs.values()),
        "differing_files": {k: v[:20] for k, v in diffs.items() if v},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
