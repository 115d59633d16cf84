"""The efficiency table: each method's wall time per training run (timing.json) and parameter
count (metrics.json), beside the supplementary's published hours and counts on real data.
"""
from __future__ import annotations

import math

from pipeline.report import paper
from pipeline.report.builder import BASELINES, Builder
from pipeline.report.formatting import DS_LABEL, PUBLISHED, RERUN, Part, Table, name
from pipeline.report.stats import mean_std


def efficiency(b: Builder, seeds) -> Table | None:
    dss = b.runs.datasets
    models = ["pase"] + list(BASELINES)
    if not any(b.runs.ok(d, v) for d in dss for v in models):
        return None
    real = not any(b.runs.synthetic(d) for d in dss)
    t = Table("efficiency", "E", "Training time and parameters", not real)
    t.intro.append("Ours: mean wall time of one training run (one seed) from timing.json, and the "
                   "parameter count from metrics.json.")
    if real:
        t.intro.append(f"Published: {paper.EFFICIENCY_SOURCE}.")
    else:
        t.intro.append("Synthetic data (scaled-down splits): times are not comparable with the paper's.")
    p = Part("", ["Model", "Run", "Dataset", "Runs", "Wall time per run", "Device", "Parameters"])

    def ours(v):
        for ds in dss:
            if not b.runs.ok(ds, v):
                continue
            secs, devs = b.runs.timing(ds, v)
            params = b.runs.field_values(ds, v, "params")
            m, s, n = mean_std(secs)
            p.rows.append([name(v), RERUN, DS_LABEL[ds],
                           str(n), _duration(m, s) if n else "-",
                           ", ".join(sorted(set(devs))) or "-",
                           f"{int(params[0]):,}" if params else "-"])
            t.records.append({"table": t.name, "part": "", "model": name(v), "variant": v,
                              "run": RERUN, "dataset": ds, "metric": "train_seconds", "unit": "s",
                              "value": m if n else None, "std": s if n else None, "n": n,
                              "note": ", ".join(sorted(set(devs)))})
            t.records.append({"table": t.name, "part": "", "model": name(v), "variant": v,
                              "run": RERUN, "dataset": ds, "metric": "params", "unit": "",
                              "value": int(params[0]) if params else None})

    done = set()
    if real:
        for r in paper.EFFICIENCY:
            if r.variant == "pase":
                continue
            if r.variant:
                ours(r.variant)
                done.add(r.variant)
            p.rows.append([r.name, PUBLISHED, "not stated", "-", f"{r.train_hours:.1f} h",
                           "A100 (supplementary)", f"{r.params:,}"])
            for metric, value, u in (("train_hours", r.train_hours, "h"), ("params", r.params, "")):
                t.records.append({"table": t.name, "part": "", "model": r.name, "variant": r.variant or "",
                                  "run": PUBLISHED, "dataset": "", "metric": metric, "unit": u,
                                  "value": value, "note": paper.EFFICIENCY_SOURCE})
    for v in BASELINES:
        if v not in done:
            ours(v)
    ours("pase")
    if real:
        r = next(r for r in paper.EFFICIENCY if r.variant == "pase")
        p.rows.append([r.name, PUBLISHED, "not stated", "-", f"{r.train_hours:.1f} h",
                       "A100 (supplementary)", f"{r.params:,}"])
        for metric, value, u in (("train_hours", r.train_hours, "h"), ("params", r.params, "")):
            t.records.append({"table": t.name, "part": "", "model": r.name, "variant": "pase",
                              "run": PUBLISHED, "dataset": "", "metric": metric, "unit": u,
                              "value": value, "note": paper.EFFICIENCY_SOURCE})
        t.notes += [f"Supplementary ({paper.EFFICIENCY_SOURCE}): {n}" for n in paper.EFFICIENCY_NOTES]
    t.notes.append("Wall time is timing.json's train_seconds_this_process: a run resumed from a "
                   "checkpoint counts only its last process. Parameters: the trained model's count "
                   "(metrics.json `params`); with frozen, cached text vectors the text encoder is "
                   "not part of the model, so only the paper profile (fine-tuned BERT-base) "
                   "compares with the supplementary's counts.")
    t.parts.append(p)
    return t


def _duration(m: float, s: float) -> str:
    if m >= 3600:
        d, u = 3600.0, "h"
    elif m >= 60:
        d, u = 60.0, "min"
    else:
        d, u = 1.0, "s"
    body = f"{m / d:.2f} {u}"
    return body if not math.isfinite(s) else f"{m / d:.2f} ± {s / d:.2f} {u}"
