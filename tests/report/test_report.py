"""The report stage: paper numbers against the paper's text, statistics, and the tables written
from fake run directories (no training; fast)."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from pipeline.settings import config_from_dict
from pipeline.errors import DataError
from pipeline.metrics import iemocap_metrics, regression_metrics
from pipeline.report import paper
from pipeline.report.stats import (WILCOXON_MIN_N, PairedBootstrap, bootstrap_diff, paired_test,
                                   weighted_metrics)
from pipeline.report.summary import report
from pipeline.variants import VARIANTS
from tests.helpers import ROOT, SEEDS, _write_run

PAPERS = Path("/work/shared/papers")
if not PAPERS.exists():  # the papers live beside the project on the build machines
    PAPERS = ROOT / "shared" / "papers"
needs_papers = pytest.mark.skipif(not (PAPERS / "pase-paper.txt").exists(),
                                  reason="the paper's text is not on this machine")

VARS = ["pase", "pase-no_sgm", "pase-sum", "pase-T", "pase-A", "pase-TA", "mult", "self_mm"]
# Numbers that only the paper has (PaSE's rows, the efficiency table, CP+SL's summary).
PAPER_ONLY = ["88.32", "86.34/88.25", "86.40/88.32", "80.47", "114,795,953", "89.31", "| published |",
              "pase-paper.txt", "UNVERIFIED", "MMSA rerun", "79.71/80.98"]


# ---------------------------------------------------------------- the paper's numbers


def _paper_lines(fname: str) -> list[str]:
    return (PAPERS / fname).read_text(encoding="utf-8").splitlines()


def _block(lines: list[str], n: int) -> list[str]:
    """The lines between the captions of Table n-1 and Table n (the rows of Table n)."""
    start = 0 if n == 1 else next(i for i, l in enumerate(lines) if l.startswith(f"Table {n - 1}:"))
    end = next(i for i, l in enumerate(lines) if l.startswith(f"Table {n}:"))
    return lines[start:end]


def _parse(cells: list[str]) -> tuple:
    out = []
    for c in cells:
        for x in c.split("/"):
            x = x.replace("$\\uparrow", "").replace("$", "").strip()
            out.append(None if x == "-" else float(x))
    return tuple(out)


def _rows(block: list[str]) -> dict[str, tuple]:
    rows = {}
    for l in block:
        parts = re.sub(r"</?[ubi]>", "", l).split("\t")
        if len(parts) > 1:
            rows[parts[0].strip()] = parts[1:]
    return rows


def _printed_label(t: paper.PaperTable, r: paper.Row) -> str:
    if t is paper.TABLE1:
        return f"{r.name} [{r.marker}] _{{{r.venue}}}" if r.marker else "PaSE(ours)"
    if t is paper.TABLE2 and r.name == "PaSE":
        return "PaSE (ours)"
    return r.name


@needs_papers
@pytest.mark.parametrize("n,table", [(1, paper.TABLE1), (2, paper.TABLE2), (3, paper.TABLE3),
                                     (4, paper.TABLE4)])
def test_paper_numbers_match_the_papers_text(n, table):
    assert table.source == f"pase-paper.txt, Table {n}"
    printed = _rows(_block(_paper_lines("pase-paper.txt"), n))
    for r in table.rows:
        label = _printed_label(table, r)
        assert label in printed, f"{label!r} not found in Table {n} of the paper"
        assert table.flat(r) == _parse(printed[label]), f"Table {n}, row {label}"
    assert len(table.rows) == len([k for k in printed if _parse_ok(printed[k])
                                   and not k.startswith("$")]), "a row of the paper is missing"


def _parse_ok(cells) -> bool:
    try:
        _parse(cells)
        return True
    except ValueError:
        return False


@needs_papers
def test_pase_row_of_table1_spot_check():
    line = next(l for l in _paper_lines("pase-paper.txt") if l.startswith("PaSE(ours)\t"))
    nums = re.findall(r"\d+\.\d+", line)
    assert nums[:2] == ["86.40", "88.32"] and nums[6] == "0.695" and nums[-1] == "0.523"
    pase = paper.TABLE1.row("pase").values
    assert (pase["mosi"]["acc2_has0"], pase["mosi"]["acc2_non0"], pase["mosei"]["acc7"]) == \
        (float(nums[0]), float(nums[1]), float(nums[11]))


@needs_papers
def test_table4_delta_row_and_its_definition():
    printed = _rows(_block(_paper_lines("pase-paper.txt"), 4))
    delta = _parse(printed["$\\Delta(\\%)$"])
    assert delta == tuple(paper.TABLE4_DELTA[c] for c in paper.TABLE4.columns)
    full, text = paper.TABLE4.row("pase"), paper.TABLE4.row("pase-T")
    for ds, m in paper.TABLE4.columns:
        best_single = max(paper.TABLE4.row(v).values[ds][m] for v in paper.SINGLE_MODALITY_VARIANTS)
        assert best_single == text.values[ds][m]
        assert round(full.values[ds][m] - best_single, 2) == paper.TABLE4_DELTA[(ds, m)]


@needs_papers
def test_efficiency_numbers_match_the_supplementary():
    assert paper.EFFICIENCY_SOURCE == "pase-supplementary.txt, Table 2"
    rows = _rows(_block(_paper_lines("pase-supplementary.txt"), 2))
    for r in paper.EFFICIENCY:
        hours, params = rows[r.name]
        assert float(hours.rstrip("h")) == r.train_hours and int(params.replace(",", "")) == r.params


def test_paper_rows_map_to_known_variants():
    assert paper.PAPER_TO_VARIANT["PaSE"] == "pase" and paper.PAPER_TO_VARIANT["- PCL"] == "pase-no_pcl"
    assert paper.PAPER_TO_VARIANT["T"] == "pase-T" and paper.PAPER_TO_VARIANT["MuLT"] == "mult"
    assert paper.PAPER_TO_VARIANT["MAG-BERT"] == "mag_bert" and paper.PAPER_TO_VARIANT["SelfMM"] == "self_mm"
    assert set(paper.PAPER_TO_VARIANT.values()) <= set(VARIANTS)
    assert paper.CPSL_SECONDARY["status"] == "UNVERIFIED" and paper.CPSL_SECONDARY["value"] == 89.31
    assert [r.marker for r in paper.TABLE1.rows[:3]] == ["♡", "◇", "◇"]
    assert paper.TABLE1.row("HyCon").values["mosi"]["acc2_has0"] is None


# ---------------------------------------------------------------- statistics


def test_weighted_metrics_equal_pipeline_metrics():
    rng = np.random.default_rng(0)
    y = np.round(rng.uniform(-3, 3, 300) * 3) / 3
    y[:20] = 0
    p = y + rng.normal(0, 1, 300)
    p[:3] = 0
    idx = rng.integers(0, 300, 300)
    w = np.bincount(idx, minlength=300)[None].astype(float)
    for got, want in ((weighted_metrics("regression", p, y), regression_metrics(p, y)),
                      (weighted_metrics("regression", p, y, w), regression_metrics(p[idx], y[idx]))):
        for k, v in want.items():
            assert got[k][0] == pytest.approx(v, abs=1e-10), k
    lab = np.eye(4, dtype=int)[rng.integers(0, 4, 200)]
    for out in (rng.normal(0, 1, (200, 4)) + lab, rng.normal(0, 1, (200, 4, 2))):
        got, want = weighted_metrics("classification", out, lab), iemocap_metrics(out, lab)
        for k, v in want.items():
            assert got[k][0] == pytest.approx(v, abs=1e-12), k


def test_paired_test_is_scipys_and_wilcoxon_from_six_seeds():
    a, b = {0: 0.80, 1: 0.83, 2: 0.79}, {0: 0.84, 1: 0.85, 2: 0.84, 9: 0.5}
    t = paired_test(a, b)
    assert t.seeds == (0, 1, 2) and t.p_wilcoxon is None and "6" in t.note
    assert t.p_ttest == pytest.approx(sps.ttest_rel([0.80, 0.83, 0.79], [0.84, 0.85, 0.84]).pvalue, rel=1e-12)
    x, y = [1.0, 2.1, 2.9, 4.2, 5.0, 6.3], [1.2, 2.5, 3.0, 4.9, 5.4, 7.0]
    t6 = paired_test(x, y)
    assert WILCOXON_MIN_N == 6 and t6.p_wilcoxon == pytest.approx(sps.wilcoxon(x, y).pvalue)
    assert t6.delta == pytest.approx(np.mean(np.subtract(x, y)))


def test_bootstrap_is_paired_reproducible_and_covers_the_observed_difference():
    rng = np.random.default_rng(1)
    y = rng.uniform(-3, 3, 400)
    ref = [y + rng.normal(0, 0.5, 400) for _ in range(3)]
    var = [y + rng.normal(0, 0.9, 400) for _ in range(3)]
    ci = bootstrap_diff("regression", var, ref, y, "mae", n_boot=500, seed=3)
    again = bootstrap_diff("regression", var, ref, y, "mae", n_boot=500, seed=3)
    other = bootstrap_diff("regression", var, ref, y, "mae", n_boot=500, seed=4)
    assert (ci.low, ci.high) == (again.low, again.high) != (other.low, other.high)
    want = np.mean([regression_metrics(v, y)["mae"] - regression_metrics(r, y)["mae"]
                    for v, r in zip(var, ref)])
    assert ci.observed == pytest.approx(want) and ci.low <= ci.observed <= ci.high
    assert ci.excludes_zero and ci.low > 0  # the noisier model has the larger MAE
    # the same model against itself: every paired resample gives exactly 0
    same = PairedBootstrap("regression", y, 200, 0).diff(ref, ref, "f1_non0")
    assert same.low == same.high == same.observed == 0


# ---------------------------------------------------------------- the report from fake runs


@pytest.fixture
def fake_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def make(synthetic=True, overrides=None, variants=VARS, datasets=("mosi", "iemocap")):
        rng = np.random.default_rng(42)
        for ds in datasets:
            for v in variants:
                for s in SEEDS:
                    _write_run(ds, v, s, rng, synthetic, (overrides or {}).get((ds, v, s)))
        return config_from_dict({"datasets": list(datasets), "seeds": SEEDS, "variants": list(variants)})
    return make


def _metric(ds, v, m):
    return {s: json.loads((Path("data/runs") / ds / v / f"seed{s}" / "metrics.json").read_text())["test"][m]
            for s in SEEDS}


def _csv(path):
    import csv
    with open(path) as f:
        return list(csv.DictReader(f))


def test_synthetic_report_layout_statistics_and_no_paper_numbers(fake_runs):
    cfg = fake_runs(synthetic=True)
    Path("reports/figures").mkdir(parents=True)
    Path("reports/figures/fig3_tsne.png").write_bytes(b"\x89PNG fake")
    out = report(cfg, cfg.variants, n_boot=300)
    rep = Path("reports")
    assert out == rep / "summary.md"
    for name in ("table1", "table2", "table3", "table4", "efficiency"):
        for suffix in (".md", ".tex", ".csv"):
            assert (rep / "tables" / f"{name}{suffix}").exists(), name + suffix
    t1, t2, t3, t4 = (( rep / "tables" / f"table{i}.md").read_text() for i in (1, 2, 3, 4))
    eff = (rep / "tables" / "efficiency.md").read_text()

    # titles say SYNTHETIC, and no number of the paper appears anywhere
    for text in (t1, t2, t3, t4, eff):
        assert "SYNTHETIC DATA — not comparable with the paper" in text.splitlines()[0]
    everything = "\n".join(p.read_text() for p in rep.rglob("*") if p.suffix in (".md", ".tex", ".csv", ".json"))
    for s in PAPER_ONLY:
        assert s not in everything, s
    assert "SYNTHETIC" in (rep / "summary.md").read_text().splitlines()[0]
    assert "SYNTHETIC DATA" in (rep / "README.md").read_text().splitlines()[0]

    # every row of the paper's Tables 1-4 that our variants cover is there
    for ptable, text in ((paper.TABLE1, t1), (paper.TABLE2, t2), (paper.TABLE3, t3), (paper.TABLE4, t4)):
        for r in ptable.rows:
            if r.variant in VARS:
                assert f"| {r.name} ({r.variant}) | rerun here |" in text, (ptable.key, r.name)
    # Table 1 layout: the paper's metric columns, our rows, MOSEI absent (not run)
    for col in ("Acc-2 (has0/non0)", "F1 (has0/non0)", "Acc-7", "Corr", "MAE"):
        assert col in t1
    assert "### MOSI" in t1 and "MOSEI" not in t1
    assert "| MuLT (mult) | rerun here |" in t1 and "| SelfMM (self_mm) | rerun here |" in t1
    assert "| PaSE (pase) | rerun here |" in t1 and "HyCon" not in t1 and "MAG-BERT" not in t1
    # mean ± sample std
    acc7 = np.array(list(_metric("mosi", "pase", "acc7").values())) * 100
    assert f"{acc7.mean():.2f} ± {acc7.std(ddof=1):.2f}" in t1
    corr = np.array(list(_metric("mosi", "pase", "corr").values()))
    assert f"{corr.mean():.3f} ± {corr.std(ddof=1):.3f}" in t1
    # Table 2: emotions and WA; Self-MM does not apply to IEMOCAP
    for col in ("Happy F1", "Sad F1", "Angry F1", "Neutral F1", "WA"):
        assert col in t2
    assert re.search(r"\| Self-MM \(self_mm\) \| rerun here \| n/a \| n/a \| n/a \| n/a \| n/a \|", t2)
    # Table 3: rows run here only, the paper's columns for the datasets run
    for row in ("| PaSE (pase) |", "| - SGM (pase-no_sgm) |", "| + Sum (pase-sum) |"):
        assert row in t3
    assert "- PCL" not in t3 and "MOSEI" not in t3
    for col in ("MOSI Acc-2 (has0/non0)", "MOSI F1 (has0/non0)", "IEMOCAP WA", "Δ vs PaSE",
                "p (paired t)", "p (Wilcoxon)", "95% bootstrap CI of Δ", "Significant"):
        assert col in t3
    # Table 4: combinations run here and the Δ row (full minus the best single modality)
    for row in ("| T (pase-T) |", "| A (pase-A) |", "| T+A (pase-TA) |", "| PaSE(T+A+V) (pase) |",
                "| Δ (vs best single modality) |", "| Δ (vs best pair) |"):
        assert row in t4
    assert "| A+V" not in t4 and "| T+V" not in t4
    for col in ("MOSI Acc-2", "MOSI F1", "IEMOCAP WA"):
        assert col in t4
    full, single = _metric("mosi", "pase", "acc2_non0"), [
        np.mean(list(_metric("mosi", v, "acc2_non0").values())) for v in ("pase-T", "pase-A")]
    delta = 100 * (np.mean(list(full.values())) - max(single))
    assert f"{delta:+.2f}".replace("-", "−") + " (vs T)" in t4

    # paired test = scipy's on the same numbers; bootstrap CI covers Δ
    rows = [r for r in _csv(rep / "tables" / "table3.csv") if r["part"] == "tests"]
    r = next(r for r in rows if r["variant"] == "pase-no_sgm" and r["dataset"] == "mosi"
             and r["metric"] == "acc2_non0")
    a, b = _metric("mosi", "pase-no_sgm", "acc2_non0"), _metric("mosi", "pase", "acc2_non0")
    want = sps.ttest_rel([a[s] for s in SEEDS], [b[s] for s in SEEDS]).pvalue
    assert float(r["p_ttest"]) == pytest.approx(want, rel=1e-12)
    assert r["p_wilcoxon"] == ""  # 2 seeds < 6
    assert float(r["delta_vs_pase"]) == pytest.approx(100 * (np.mean(list(a.values())) - np.mean(list(b.values()))))
    assert rows and all(r["ci_low"] for r in rows)
    for r in rows:
        assert float(r["ci_low"]) <= float(r["delta_vs_pase"]) <= float(r["ci_high"])
        assert r["significant"] in ("yes", "no")
    # the same resamples (fixed seed) give the same intervals
    report(cfg, cfg.variants, out_dir=Path("again"), n_boot=300)
    assert (Path("again/tables/table3.csv").read_text() == (rep / "tables" / "table3.csv").read_text())

    # metrics.json for dvc
    d = json.loads((rep / "metrics_detail.json").read_text())
    assert d["mosi"]["synthetic"] is True and d["mosi"]["pase"]["summary"]["seeds"] == 2
    assert d["mosi"]["pase"]["summary"]["acc7"] == pytest.approx(acc7.mean() / 100, abs=1e-6)
    assert d["mosi"]["pase"]["seeds"]["1"]["test"]["acc7"] == pytest.approx(acc7[1] / 100)
    assert d["iemocap"]["self_mm"]["summary"]["not_applicable"] is True
    # the DVC metric is the compact headline: PaSE's headline metrics (means) and its leads
    m = json.loads((rep / "metrics.json").read_text())
    assert m["mosi"]["synthetic"] is True and "self_mm" not in m["iemocap"]
    assert set(m["mosi"]["pase"]) == {"acc2_non0", "f1_non0", "mae"}
    assert set(m["iemocap"]["pase"]) == {"wa", "mean_f1"}
    assert set(m["mosi"]) == {"synthetic", "pase", "vs_no_sgm", "vs_best_other"}
    a2 = np.array(list(_metric("mosi", "pase", "acc2_non0").values()))
    assert m["mosi"]["pase"]["acc2_non0"] == pytest.approx(a2.mean(), abs=1e-4)
    assert d["mosi"]["pase"]["summary"]["acc2_non0_std"] == pytest.approx(a2.std(ddof=1), abs=1e-4)
    no_sgm = np.array(list(_metric("mosi", "pase-no_sgm", "acc2_non0").values()))
    assert m["mosi"]["vs_no_sgm"] == pytest.approx(a2.mean() - no_sgm.mean(), abs=1e-4)
    best = max(np.mean(list(_metric("mosi", v, "acc2_non0").values())) for v in ("mult", "self_mm"))
    assert m["mosi"]["vs_best_other"] == pytest.approx(a2.mean() - best, abs=1e-4)
    wa = {v: np.mean(list(_metric("iemocap", v, "wa").values())) for v in ("pase", "mult")}
    assert m["iemocap"]["vs_best_other"] == pytest.approx(wa["pase"] - wa["mult"], abs=1e-4)  # self_mm n/a
    # README: settings, every table inline, the figure that exists embedded, the others named
    readme = (rep / "README.md").read_text()
    assert "minilm" in readme and "Profile: cpu" in readme and "Seeds: 0, 1" in readme
    assert "How to read" in readme and all(f"Table {i}" in readme for i in (1, 2, 3, 4))
    assert "](figures/fig3_tsne.png)" in readme
    assert "fig1_modality_gain.png` did not exist" in readme and "](figures/fig1_modality_gain.png)" not in readme


def _latex_ok(tex: str) -> None:
    body = re.sub(r"\\[{}]", "", tex)  # escaped braces
    body = "\n".join(l for l in body.splitlines() if not l.lstrip().startswith("%"))
    depth = 0
    for ch in body:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0, "a } closes nothing"
    assert depth == 0, "unbalanced braces"
    for env in ("table", "tabular", "minipage"):
        assert body.count(f"\\begin{{{env}}}") == body.count(f"\\end{{{env}}}")
    assert body.count("\\begin{tabular}") >= 1
    for m in re.finditer(r"\\begin\{tabular\}\{([lrc]+)\}(.*?)\\end\{tabular\}", body, re.S):
        ncol = len(m.group(1))
        rows = [l for l in m.group(2).splitlines() if l.rstrip().endswith("\\\\")]
        assert rows
        for l in rows:
            assert len(re.findall(r"(?<!\\)&", l)) == ncol - 1, l
        assert "\\toprule" in m.group(2) and "\\midrule" in m.group(2) and "\\bottomrule" in m.group(2)
    assert re.search(r"(?<!\\)[#_^]", re.sub(r"\\label\{[^}]*\}", "", body)) is None


def test_latex_is_well_formed(fake_runs):
    cfg = fake_runs(synthetic=False)
    report(cfg, cfg.variants, n_boot=100)
    for tex in Path("reports/tables").glob("*.tex"):
        _latex_ok(tex.read_text())


def test_real_data_tables_show_published_numbers_and_the_2std_flag(fake_runs):
    # PaSE on MOSI: non0 Acc-2 close to the paper's 88.32 (within 2 std), has0 far from 86.40.
    over = {("mosi", "pase", 0): {"acc2_non0": 0.8800, "acc2_has0": 0.8000},
            ("mosi", "pase", 1): {"acc2_non0": 0.8870, "acc2_has0": 0.8100}}
    cfg = fake_runs(synthetic=False, overrides=over)
    report(cfg, cfg.variants, n_boot=100)
    rep = Path("reports/tables")
    t1, t2, t3, t4, eff = ((rep / f"{n}.md").read_text()
                           for n in ("table1", "table2", "table3", "table4", "efficiency"))
    for text in (t1, t2, t3, t4, eff):
        assert "SYNTHETIC" not in text
    assert "| PaSE | published | 86.40/88.32 | 86.34/88.25 | 50.92 | 0.847 | 0.695 |" in t1
    assert "| PaSE (pase) | rerun here | 80.50 ± 0.71 / 88.35 ± 0.49 |" in t1
    diff_row = next(l for l in t1.splitlines() if l.startswith("| PaSE | rerun − published |"))
    assert diff_row.split(" | ")[2] == "−5.90 ✗ / +0.03 ✓"
    # published-only baselines, with their source marker, and the unverified CP+SL number
    assert "| HyCon [◇] TAC22 | published | -/85.20 | 82.68/84.91 | 46.60 | 0.790 | 0.713 |" in t1
    assert "89.31" in t1 and "UNVERIFIED" in t1 and "pase-paper.txt, Table 1" in t1
    assert "| MCTN | published | 83.1 | 82.8 | 84.6 | 67.7 | - |" in t2
    assert "| Self-MM | published |" in t2 and "| Self-MM | rerun − published |" not in t2
    assert "| PaSE | published | 91.5 | 88.6 | 89.4 | 73.2 | 80.47 |" in t2
    # MMSA's own rerun of a baseline, cited (thuiar/MMSA results/result-stat.md, MOSI, MulT:
    # 79.71 / 79.79 / 80.98 / 81.0, Acc-7 36.91, MAE 87.99 and Corr 70.22 printed x100)
    assert "| MuLT | MMSA rerun (unaligned) | 79.71/80.98 | 79.79/81.00 | 36.91 | 0.702 | 0.880 |" in t1
    assert "| SelfMM | MMSA rerun (unaligned) | 83.00/84.82 | 83.05/84.81 | 46.07 | 0.789 | 0.724 |" in t1
    assert "results/result-stat.md" in t1
    assert "| - PCL | published | 85.21/87.25 | 85.17/87.16 | 78.54 |" in t3  # MOSEI not run
    assert "| + Sum | rerun − published |" in t3
    assert "| Δ (vs best single modality) | published | +3.62 | +4.02 | +5.67 |" in t4
    assert "114,795,953" in eff and "7.7 h" in eff
    rows = _csv(rep / "table1.csv")
    flag = next(r for r in rows if r["run"] == "rerun − published" and r["variant"] == "pase"
                and r["metric"] == "acc2_non0" and r["dataset"] == "mosi")
    assert flag["within_2std"] == "true" and float(flag["diff_vs_published"]) == pytest.approx(0.03)
    assert json.loads(Path("reports/metrics.json").read_text())["mosi"]["synthetic"] is False


def test_missing_run_is_an_error_and_unrequested_variants_are_absent(fake_runs):
    cfg = fake_runs(synthetic=True, variants=["pase", "mult", "pase-T"], datasets=("mosi",))
    with pytest.raises(DataError, match="pase-no_pcl"):
        report(cfg, ["pase", "pase-no_pcl"])
    report(cfg, ["pase", "pase-T"], n_boot=50)
    assert Path("reports/tables/table4.md").exists()
    report(cfg, ["pase"], n_boot=50)
    t1 = Path("reports/tables/table1.md").read_text()
    assert "PaSE (pase)" in t1 and "mult" not in t1
    assert not Path("reports/tables/table4.md").exists()  # no modality combination was run


PDFLATEX = shutil.which("pdflatex")
# A two-column page of AAAI's and ACL's size (\textwidth 505 pt); \resizebox is wrapped to log the
# natural width of every table that had to be scaled.
TWO_COLUMN = r"""\documentclass[twocolumn,10pt]{article}
\usepackage{booktabs,graphicx,amssymb}
\setlength{\textwidth}{505pt}\setlength{\columnsep}{25pt}
\let\origresizebox\resizebox
\renewcommand{\resizebox}[3]{\typeout{NATURAL-WIDTH \the\wd0}\origresizebox{#1}{#2}{#3}}
\begin{document}
\input{TABLE}
\end{document}
"""


@pytest.mark.skipif(PDFLATEX is None, reason="pdflatex is not installed (Debian: apt-get install "
                    "texlive-latex-base texlive-latex-recommended)")
@pytest.mark.parametrize("synthetic", [False, True])
def test_latex_tables_fit_a_two_column_page(fake_runs, synthetic):
    """Every .tex table, with every variant on the three datasets (real: with the published rows),
    compiles inside a two-column paper's table* with no overfull box."""
    cfg = fake_runs(synthetic=synthetic, variants=list(VARIANTS),
                    datasets=("mosi", "mosei", "iemocap"))
    report(cfg, cfg.variants, n_boot=50)
    texs = sorted(Path("reports/tables").glob("*.tex"))
    assert [t.stem for t in texs] == ["efficiency", "table1", "table2", "table3", "table4"]
    for tex in texs:
        doc = Path(f"doc_{tex.stem}.tex")
        doc.write_text(TWO_COLUMN.replace("TABLE", tex.as_posix()))
        p = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", doc.name],
                           capture_output=True, text=True, timeout=120)
        log = Path(f"doc_{tex.stem}.log").read_text(errors="replace")
        assert p.returncode == 0, f"{tex}: {log[-3000:]}"
        assert "Overfull \\hbox" not in log, f"{tex}: " + "\n".join(
            l for l in log.splitlines() if "Overfull" in l)
        natural = [float(w) for w in re.findall(r"NATURAL-WIDTH ([\d.]+)pt", log)]
        assert all(w <= 1.45 * 505 for w in natural), (tex, natural)  # scaled to >= 69 %: readable
        text = tex.read_text()
        assert "\\caption{Table" not in text and "\\caption{Efficiency" not in text  # LaTeX numbers it


def test_table3_sets_sgm_against_ogm_ge_and_mmpareto(fake_runs):
    cfg = fake_runs(synthetic=True, variants=["pase", "pase-no_sgm", "pase-ogm_ge", "pase-mmpareto"],
                    datasets=("mosi",))
    report(cfg, cfg.variants, n_boot=50)
    t3 = Path("reports/tables/table3.md").read_text()
    ablations = t3.split("### Each variant")[0]
    for row in ("| PaSE (pase) |", "| - SGM (pase-no_sgm) |", "| OGM-GE instead of SGM (pase-ogm_ge) |",
                "| MMPareto instead of SGM (pase-mmpareto) |"):
        assert row in ablations
    tests = [l for l in t3.split("### Each variant")[1].splitlines() if l.startswith("| MMPareto")]
    assert len(tests) == 4  # MOSI Acc-2 and F1, has0 and non0, each against full PaSE


def test_headline_without_pase_or_others():
    """A run set without PaSE heads with its first method; no comparison without its runs."""
    from pipeline.report.summary import headline
    summ = {"acc2_non0": 0.7, "f1_non0": 0.6, "mae": 1.0, "acc2_non0_std": 0.1}
    detail = {"mosi": {"synthetic": False, "tfn": {"summary": summ},
                       "late_fusion": {"summary": {**summ, "acc2_non0": 0.65}},
                       "pase-T": {"summary": {**summ, "acc2_non0": 0.9}}}}
    # late_fusion comes first in METHOD_VARIANTS; PaSE's ablations are not "other methods"
    assert headline(detail) == {"mosi": {"synthetic": False, "vs_best_other": -0.05,
                                         "late_fusion": {"acc2_non0": 0.65, "f1_non0": 0.6, "mae": 1.0}}}
    alone = {"mosi": {"synthetic": True, "pase": {"summary": summ}}}
    assert headline(alone) == {"mosi": {"synthetic": True,
                                        "pase": {"acc2_non0": 0.7, "f1_non0": 0.6, "mae": 1.0}}}

