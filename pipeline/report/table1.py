"""Table 1: MOSI and MOSEI, PaSE against other methods (Acc-2 and F1 has0/non0, Acc-7, Corr, MAE).

Rows: the paper's Table 1 (a row we rerun has its block of rows, pipeline/report/builder.py), then
the baselines we run that the paper lacks, then PaSE. On real data also MMSA's own published
reruns of a baseline (paper.MMSA_RERUN) and CP+SL's unverified secondary figure.
"""
from __future__ import annotations

from pipeline.report import paper
from pipeline.report.builder import BASELINES, Builder, add_intro, add_na_notes, add_paper_notes
from pipeline.report.formatting import DS_LABEL, Part, Table, name, num

MMSA_RUN = "MMSA rerun"


def _mmsa_rows(b: Builder, t: Table, part: str, row_name: str, v: str | None, ds: str, cols,
               real: bool) -> list[list[str]]:
    """MMSA's published rerun of a baseline (paper.MMSA_RERUN), on real data only."""
    if not real or v not in paper.MMSA_RERUN:
        return []
    setting, values = paper.MMSA_RERUN[v]
    if ds not in values:
        return []
    cells = []
    for d, ms in cols:
        cells.append("/".join(num(values[d].get(m), paper.decimals("table1", m)) for m in ms))
        for m in ms:
            b.record(t, part, row_name, v, f"{MMSA_RUN} ({setting})", d, m, value=values[d].get(m),
                     note=paper.MMSA_SOURCE)
    return [[row_name, f"{MMSA_RUN} ({setting})"] + cells]


def table1(b: Builder, seeds) -> Table | None:
    dss = [d for d in ("mosi", "mosei") if d in b.runs.datasets]
    variants = [r.variant for r in paper.TABLE1.rows if r.variant] + list(BASELINES)
    if not dss:
        return None
    real = not any(b.runs.synthetic(d) for d in dss)
    t = Table("table1", "1", f"{' and '.join(DS_LABEL[d] for d in dss)}: comparison with other methods",
              not real)
    add_intro(t, paper.TABLE1.source, real, seeds)
    metrics = [("Acc-2 (has0/non0)", ("acc2_has0", "acc2_non0")), ("F1 (has0/non0)", ("f1_has0", "f1_non0")),
               ("Acc-7", ("acc7",)), ("Corr", ("corr",)), ("MAE", ("mae",))]
    for ds in dss:
        cols = [(ds, ms) for _, ms in metrics]
        p = Part(DS_LABEL[ds], ["Model", "Run"] + [h for h, _ in metrics])
        in_paper = [r for r in paper.TABLE1.rows if r.variant != "pase"]
        for r in in_paper:
            if r.variant and b.runs.has(ds, r.variant) or real:
                p.rows += b.model_block(t, p.caption, paper.TABLE1, r.name, r.variant, cols, real)
                p.rows += _mmsa_rows(b, t, p.caption, r.name, r.variant, ds, cols, real)
        for v in BASELINES:
            if v not in {r.variant for r in paper.TABLE1.rows} and b.runs.has(ds, v):
                p.rows += b.model_block(t, p.caption, None, name(v), v, cols, real)
                p.rows += _mmsa_rows(b, t, p.caption, name(v), v, ds, cols, real)
            if real and v == "cpsl" and ds == "mosi":
                c = paper.CPSL_SECONDARY
                p.rows.append([c["name"], f"{c['status']} secondary summary",
                               f"{c['value']:.2f} (has0 or non0 not stated)", "-", "-", "-", "-"])
                b.record(t, p.caption, c["name"], "cpsl", f"{c['status']} secondary summary", ds,
                         "acc2 (has0 or non0 not stated)", value=c["value"], note=c["source"])
        p.rows += b.model_block(t, p.caption, paper.TABLE1, "PaSE", "pase", cols, real)
        t.parts.append(p)
    add_paper_notes(t, paper.TABLE1, real)
    if real and any(r[1].startswith(MMSA_RUN) for p in t.parts for r in p.rows):
        t.notes.append(f"\"{MMSA_RUN}\" rows: the MMSA toolkit's own reruns of the baseline, "
                       f"{paper.MMSA_SOURCE}; (aligned) / (unaligned): the features it used.")
    if real and "mosi" in dss:
        c = paper.CPSL_SECONDARY
        t.notes.append(f"CP+SL {c['value']:.2f} MOSI Acc-2 is {c['status']}: {c['source']}.")
    add_na_notes(t, b, variants, dss)
    return t
