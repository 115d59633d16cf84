"""Table 2: IEMOCAP, F1 of each emotion's binary decision and WA (accuracy of the arg-max emotion).

Rows: the paper's Table 2 (a row we rerun has its block of rows, pipeline/report/builder.py), then
the baselines we run that the paper lacks, then PaSE (whose published WA is paper.PASE_IEMOCAP_WA).
"""
from __future__ import annotations

from pipeline.report import paper
from pipeline.report.builder import BASELINES, Builder, add_intro, add_na_notes, add_paper_notes
from pipeline.report.formatting import Part, Table, name

def table2(b: Builder, seeds) -> Table | None:
    if "iemocap" not in b.runs.datasets:
        return None
    ds = "iemocap"
    real = not b.runs.synthetic(ds)
    t = Table("table2", "2", "IEMOCAP: F1 per emotion, and WA", not real)
    add_intro(t, paper.TABLE2.source, real, seeds)
    order = [("Happy F1", "happy_f1"), ("Sad F1", "sad_f1"), ("Angry F1", "angry_f1"),
             ("Neutral F1", "neutral_f1"), ("WA", "wa")]
    cols = [(ds, (m,)) for _, m in order]
    p = Part("", ["Model", "Run"] + [h for h, _ in order])
    for r in paper.TABLE2.rows:
        if r.variant == "pase":
            continue
        if real or (r.variant and b.runs.has(ds, r.variant)):
            p.rows += b.model_block(t, "", paper.TABLE2, r.name, r.variant, cols, real)
    for v in BASELINES:
        if v not in {r.variant for r in paper.TABLE2.rows} and b.runs.has(ds, v):
            p.rows += b.model_block(t, "", None, name(v), v, cols, real)
    p.rows += b.model_block(t, "", paper.TABLE2, "PaSE", "pase", cols, real,
                            published_override={(ds, "wa"): paper.PASE_IEMOCAP_WA} if real else None)
    t.parts.append(p)
    add_paper_notes(t, paper.TABLE2, real)
    t.notes.append("F1: weighted F1 of each emotion's binary decision (MulT's protocol); WA: accuracy "
                   "of the arg-max emotion over the four classes.")
    add_na_notes(t, b, [r.variant for r in paper.TABLE2.rows if r.variant] + list(BASELINES), [ds])
    return t
