"""Table 3: ablations and fusion strategies, and SGM replaced by each other balancer.

A second part sets each variant against full PaSE, per metric of the table: Δ (mean over seeds of
variant − PaSE), the paired t-test p-value over seeds, the Wilcoxon p-value (n ≥ 6 seeds only),
the 95 % paired bootstrap interval of Δ over test utterances, and "significant": yes when
p (t-test) < 0.05 AND the interval excludes 0, i.e. the difference holds across training seeds and
beyond test-set sampling noise (pipeline/report/stats.py explains each).
"""
from __future__ import annotations

from pipeline.report import paper
from pipeline.report.builder import (EXTRA_TABLE3, TABLE3_VARIANTS, Builder, add_intro,
                                     add_na_notes, add_paper_notes)
from pipeline.report.formatting import (DS_LABEL, LABELS, RERUN, Part, Table, name, num, places,
                                        pval, scale)
from pipeline.balancers import SPECS

ALPHA = 0.05


def table3(b: Builder, seeds) -> Table | None:
    spec = [("mosi", "MOSI Acc-2 (has0/non0)", ("acc2_has0", "acc2_non0")),
            ("mosi", "MOSI F1 (has0/non0)", ("f1_has0", "f1_non0")),
            ("mosei", "MOSEI Acc-2 (has0/non0)", ("acc2_has0", "acc2_non0")),
            ("mosei", "MOSEI F1 (has0/non0)", ("f1_has0", "f1_non0")),
            ("iemocap", "IEMOCAP WA", ("wa",))]
    spec = [s for s in spec if s[0] in b.runs.datasets]
    variants = [v for v in TABLE3_VARIANTS + EXTRA_TABLE3 if any(b.runs.has(d, v) for d, _, _ in spec)]
    if not spec or not variants:
        return None
    dss = list(dict.fromkeys(d for d, _, _ in spec))
    real = not any(b.runs.synthetic(d) for d in dss)
    t = Table("table3", "3", "Ablations and fusion strategies", not real)
    add_intro(t, paper.TABLE3.source, real, seeds)
    cols = [(d, ms) for d, _, ms in spec]
    p = Part("Ablations", ["Model", "Run"] + [h for _, h, _ in spec])
    for v in TABLE3_VARIANTS + EXTRA_TABLE3:
        if v in variants or (real and v in TABLE3_VARIANTS):
            p.rows += b.model_block(t, "ablations", paper.TABLE3 if v in TABLE3_VARIANTS else None,
                                    name(v), v, cols, real)
    t.parts.append(p)
    tests = Part("Each variant against full PaSE (paired over seeds; bootstrap over test utterances)",
                 ["Model", "Dataset", "Metric", "Rerun here", "Δ vs PaSE", "p (paired t)",
                  "p (Wilcoxon)", "95% bootstrap CI of Δ", "Significant"])
    for v in variants:
        if v == "pase":
            continue
        for ds, _, ms in spec:
            for m in ms:
                if not b.runs.ok(ds, v) or not b.runs.ok(ds, "pase"):
                    if b.runs.na(ds, v):
                        tests.rows.append([name(v), DS_LABEL[ds], _mlabel(m), "n/a", "n/a", "n/a",
                                           "n/a", "n/a", "n/a"])
                    continue
                r = b.versus_pase(ds, v, m)
                test, ci = r["test"], r["ci"]
                d = places(m)
                ci_txt = (f"[{num(scale(m, ci.low), d, True)}, {num(scale(m, ci.high), d, True)}]"
                          if ci else "n/a")
                if test.p_ttest is None or ci is None:
                    sig = "n/a"
                else:
                    sig = "yes" if test.p_ttest < ALPHA and ci.excludes_zero else "no"
                tests.rows.append([name(v), DS_LABEL[ds], _mlabel(m), b.rerun_cell(ds, v, m),
                                   num(scale(m, test.delta), d, True), pval(test.p_ttest),
                                   pval(test.p_wilcoxon), ci_txt, sig])
                b.record(t, "tests", name(v), v, RERUN, ds, m, delta_vs_pase=scale(m, test.delta),
                         p_ttest=test.p_ttest, p_wilcoxon=test.p_wilcoxon,
                         ci_low=scale(m, ci.low) if ci else None,
                         ci_high=scale(m, ci.high) if ci else None, significant=sig, note=test.note)
    if tests.rows:
        t.parts.append(tests)
    add_paper_notes(t, paper.TABLE3, real)
    t.notes += [
        "Δ vs PaSE: mean over seeds of (variant − PaSE), percentage points; p (paired t): "
        "scipy.stats.ttest_rel on the per-seed test metrics, paired by seed; p (Wilcoxon): signed-rank, "
        "only with ≥ 6 paired seeds (below, its smallest possible p exceeds 0.05).",
        f"95% CI: paired percentile bootstrap over test utterances ({b.n_boot} resamples, seed "
        f"{b.boot_seed}; the same resamples for both models and every seed), of the per-seed "
        "differences averaged over seeds; it computes the metric from predictions.csv (6 decimals), "
        "so its Δ can differ from the table's in the last digit.",
        "Significant: p (paired t) < 0.05 and the CI excludes 0. No correction for multiple "
        "comparisons. The t-test has n − 1 degrees of freedom (n paired seeds); scipy gives p = 0 "
        "when every per-seed difference is the same, which few seeds make likely: read p with n.",
        *(f"{s.display} instead of SGM ({s.variant}): the PaSE backbone with SGM off and "
          f"{s.summary} (not in the paper)." for s in SPECS.values() if s.variant),
    ]
    add_na_notes(t, b, variants, dss)
    return t


def _mlabel(m: str) -> str:
    for suffix, tag in (("_has0", " (has0)"), ("_non0", " (non0)")):
        if m.endswith(suffix):
            return LABELS[m[: -len(suffix)]] + tag
    return LABELS.get(m, m)
