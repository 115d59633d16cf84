"""Table 4: modality combinations (negative/positive Acc-2 and F1; IEMOCAP WA).

Its Δ row follows the paper's definition, checked against its numbers (paper.py): the full model
(T+A+V) minus the best single modality, per column; a second row gives the full model minus the
best pair, which the paper does not print.
"""
from __future__ import annotations

from pipeline.report import paper
from pipeline.report.builder import TABLE4_VARIANTS, Builder, add_intro, add_paper_notes
from pipeline.report.formatting import PUBLISHED, RERUN, Part, Table, name, num, pval, scale
from pipeline.report.stats import paired_test


def table4(b: Builder, seeds) -> Table | None:
    spec = [("mosi", "MOSI Acc-2", "acc2_non0"), ("mosi", "MOSI F1", "f1_non0"),
            ("mosei", "MOSEI Acc-2", "acc2_non0"), ("mosei", "MOSEI F1", "f1_non0"),
            ("iemocap", "IEMOCAP WA", "wa")]
    spec = [s for s in spec if s[0] in b.runs.datasets]
    variants = [v for v in TABLE4_VARIANTS if any(b.runs.has(d, v) for d, _, _ in spec)]
    if not spec or not variants or variants == ["pase"]:
        return None
    dss = list(dict.fromkeys(d for d, _, _ in spec))
    real = not any(b.runs.synthetic(d) for d in dss)
    t = Table("table4", "4", "Modality combinations (negative/positive Acc-2 and F1; IEMOCAP WA)",
              not real)
    add_intro(t, paper.TABLE4.source, real, seeds)
    cols = [(d, (m,)) for d, _, m in spec]
    p = Part("", ["Model", "Run"] + [h for _, h, _ in spec])
    for v in TABLE4_VARIANTS:
        if v in variants or real:
            p.rows += b.model_block(t, "", paper.TABLE4, paper.TABLE4.by_variant()[v].name, v, cols,
                                    real)
    for label, group, tag in (("Δ (vs best single modality)", paper.SINGLE_MODALITY_VARIANTS, "single"),
                              ("Δ (vs best pair)", paper.PAIR_VARIANTS, "pair")):
        cells, any_cell = [], False
        for ds, _, m in spec:
            cands = [(b.runs.summary(ds, v, m)[0], v) for v in group if b.runs.ok(ds, v)]
            if not cands or not b.runs.ok(ds, "pase"):
                cells.append("-")
                continue
            best_mean, best = max(cands)
            full = b.runs.summary(ds, "pase", m)[0]
            delta = scale(m, full - best_mean)
            test = paired_test(b.runs.per_seed(ds, "pase", m), b.runs.per_seed(ds, best, m))
            cells.append(f"{num(delta, 2, True)} (vs {name(best)})")
            any_cell = True
            b.record(t, "", label, "pase", RERUN, ds, m, value=delta,
                     note=f"PaSE(T+A+V) minus {name(best)} ({best}); paired over seeds: "
                          f"p (t) = {pval(test.p_ttest)}", p_ttest=test.p_ttest,
                     p_wilcoxon=test.p_wilcoxon)
        if any_cell:
            p.rows.append([label, RERUN] + cells)
        if real and tag == "single":
            pub = [num(paper.TABLE4_DELTA.get((ds, m)), 2, True) for ds, _, m in spec]
            p.rows.append([label, PUBLISHED] + pub)
            for ds, _, m in spec:
                b.record(t, "", label, "pase", PUBLISHED, ds, m, value=paper.TABLE4_DELTA.get((ds, m)),
                         note=paper.TABLE4.source)
    t.parts.append(p)
    add_paper_notes(t, paper.TABLE4, real)
    t.notes.append("Δ (vs best single modality): the paper's definition, checked against its "
                   f"numbers: {paper.TABLE4_DELTA_DEFINITION}. Here the best single modality is "
                   "chosen per column among the single-modality runs present; Δ (vs best pair), "
                   "which the paper does not print, is the gain over the best two-modality run.")
    return t
