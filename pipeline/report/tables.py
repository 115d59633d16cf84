"""Tables 1-4 and the efficiency table, as Markdown, LaTeX (booktabs) and CSV.

Rows measured here say "rerun here". When a table's data are real (every dataset it covers has
`synthetic: false`), the paper's numbers (pipeline/report/paper.py) sit beside ours: for each row
the paper has, a "published" row and a "rerun − published" row whose cells carry ✓ when the
difference lies within two seed standard deviations of our mean (✗ otherwise); baselines we do
not rerun appear as published rows only. When any dataset a table covers is SYNTHETIC, the title
says "SYNTHETIC DATA — not comparable with the paper" and the table holds no published number at
all, not even in its notes.

Units: accuracies and F1 in percent (2 decimals; the paper's own numbers keep their printed
decimals), Corr and MAE as is (3 decimals). `±` is the sample standard deviation over seeds.

Table 3 adds a second part: each variant against full PaSE, per metric of the table: Δ (mean over
seeds of variant − PaSE), the paired t-test p-value over seeds, the Wilcoxon p-value (n ≥ 6
seeds only), the 95 % paired bootstrap interval of Δ over test utterances, and "significant":
yes when p (t-test) < 0.05 AND the interval excludes 0, i.e. the difference holds across training
seeds and beyond test-set sampling noise (pipeline/report/stats.py explains each).

Table 4's Δ row follows the paper's definition, checked against its numbers (paper.py): the full
model (T+A+V) minus the best single modality, per column; a second row gives the full model
minus the best pair, which the paper does not print.

CSV files are long-format (one line per row × dataset × metric, unrounded, with the unit), for
machines; Markdown and LaTeX follow the paper's layout, for people.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import paths
from pipeline.data.schema import IEMOCAP_EMOTIONS
from pipeline.data.store import atomic_path, write_atomic
from pipeline.errors import DataError
from pipeline.report import paper
from pipeline.report.stats import PairedBootstrap, mean_std, paired_test
from pipeline.balancers import SPECS, VARIANTS as BALANCER_VARIANTS
from pipeline.variants import VARIANTS

SYNTHETIC_TITLE = "SYNTHETIC DATA — not comparable with the paper"
RERUN, PUBLISHED, DIFF = "rerun here", "published", "rerun − published"
ALPHA = 0.05

TABLE3_VARIANTS = tuple(r.variant for r in paper.TABLE3.rows)  # pase first
TABLE4_VARIANTS = tuple(r.variant for r in paper.TABLE4.rows)  # pase last
# SGM replaced by each other balancer (its SPEC, pipeline/balancers/): the balancing ablations the
# paper lacks (README: SGM against other modulation rules, everything else equal)
EXTRA_TABLE3 = BALANCER_VARIANTS
BASELINES = tuple(v for v in VARIANTS if v not in TABLE3_VARIANTS + TABLE4_VARIANTS)
NAMES = {  # display names; the paper's row names where it has the row
    **{r.variant: r.name for t in (paper.TABLE3, paper.TABLE4, paper.TABLE1) for r in t.rows
       if r.variant},
    "pase": "PaSE", "late_fusion": "Late fusion", "ef_lstm": "EF-LSTM", "tfn": "TFN", "lmf": "LMF",
    "cpsl": "CP+SL",
    **{s.variant: f"{s.display} instead of SGM" for s in SPECS.values() if s.variant},
}
NOT_PERCENT = ("corr", "mae")
LABELS = {"acc2": "Acc-2", "f1": "F1", "acc7": "Acc-7", "acc5": "Acc-5", "corr": "Corr",
          "mae": "MAE", "wa": "WA", **{f"{e}_f1": f"{e.capitalize()} F1" for e in IEMOCAP_EMOTIONS},
          **{f"{e}_acc": f"{e.capitalize()} Acc" for e in IEMOCAP_EMOTIONS}}
DS_LABEL = {"mosi": "MOSI", "mosei": "MOSEI", "iemocap": "IEMOCAP"}


def name(variant: str) -> str:
    return NAMES.get(variant, variant)


def unit(metric: str) -> str:
    return "" if metric in NOT_PERCENT else "%"


def scale(metric: str, x: float | None) -> float | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return x
    return x if metric in NOT_PERCENT else 100.0 * x


def places(metric: str) -> int:
    return 3 if metric in NOT_PERCENT else 2


def num(x: float | None, d: int, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    s = f"{x:+.{d}f}" if sign else f"{x:.{d}f}"
    return s.replace("-", "−") if sign else s


def pval(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


# ---------------------------------------------------------------- the runs


class Runs:
    """Every run's metrics.json, grouped {dataset: {variant: [per-seed dicts]}}, with lookups."""

    def __init__(self, raw: dict):
        self.raw = raw
        self._pred: dict = {}

    @property
    def datasets(self) -> list[str]:
        return list(self.raw)

    def has(self, ds: str, v: str) -> bool:
        return bool(self.raw.get(ds, {}).get(v))

    def results(self, ds: str, v: str) -> list[dict]:
        return [r for r in self.raw.get(ds, {}).get(v, []) if r.get("status") != "not applicable"]

    def na(self, ds: str, v: str) -> str | None:
        """The reason a run that exists does not apply (every seed says so), else None."""
        rs = self.raw.get(ds, {}).get(v, [])
        if rs and not self.results(ds, v):
            return rs[0].get("reason", "not applicable")
        return None

    def ok(self, ds: str, v: str) -> bool:
        return bool(self.results(ds, v))

    def synthetic(self, ds: str) -> bool:
        # A run without the flag counts as synthetic: never risk a paper comparison by default.
        return any(bool(r.get("synthetic", True)) for rs in self.raw.get(ds, {}).values() for r in rs
                   if r.get("status") != "not applicable")

    def per_seed(self, ds: str, v: str, metric: str) -> dict[int, float]:
        return {int(r["seed"]): float(r["test"][metric]) for r in self.results(ds, v)
                if metric in r.get("test", {})}

    def summary(self, ds: str, v: str, metric: str) -> tuple[float, float, int]:
        return mean_std(self.per_seed(ds, v, metric).values())

    def field_values(self, ds: str, v: str, key: str) -> list:
        return [r.get(key) for r in self.results(ds, v) if r.get(key) is not None]

    def timing(self, ds: str, v: str) -> tuple[list[float], list[str]]:
        secs, devs = [], []
        for r in self.results(ds, v):
            f = paths.seed_dir(ds, v, r["seed"]) / "timing.json"
            if f.exists():
                t = json.loads(f.read_text())
                secs.append(float(t["train_seconds_this_process"]))
                devs.append(str(t.get("device", "?")))
        return secs, devs

    def predictions(self, ds: str, v: str) -> dict[int, pd.DataFrame] | None:
        """{seed: predictions.csv indexed by id}, or None when a seed's file is missing."""
        key = (ds, v)
        if key not in self._pred:
            out = {}
            for r in self.results(ds, v):
                f = paths.seed_dir(ds, v, r["seed"]) / "predictions.csv"
                if not f.exists():
                    out = None
                    break
                out[int(r["seed"])] = pd.read_csv(f, dtype={"id": str}).set_index("id")
            self._pred[key] = out
        return self._pred[key]


def _outputs(df: pd.DataFrame, task: str) -> tuple[np.ndarray, np.ndarray]:
    if task == "regression":
        return df["prediction"].to_numpy(np.float64), df["label"].to_numpy(np.float64)
    return (df[[f"{e}_score" for e in IEMOCAP_EMOTIONS]].to_numpy(np.float64),
            df[[f"{e}_label" for e in IEMOCAP_EMOTIONS]].to_numpy(np.int64))


def task_of(ds: str) -> str:
    return "classification" if ds == "iemocap" else "regression"


# ---------------------------------------------------------------- table model


@dataclass
class Part:
    caption: str  # "" for a one-part table
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    align: str = ""  # LaTeX column spec; default: l for the first two and text columns, r else


@dataclass
class Table:
    name: str  # file stem: table1, table2, ...
    number: str  # "1", "2", ..., "E"
    title: str
    synthetic: bool
    parts: list[Part] = field(default_factory=list)
    intro: list[str] = field(default_factory=list)  # lines under the title
    notes: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)  # long-format CSV lines

    @property
    def caption(self) -> str:
        """The title for LaTeX's \\caption (which numbers the table itself)."""
        return f"{SYNTHETIC_TITLE} — {self.title}" if self.synthetic else self.title

    @property
    def heading(self) -> str:
        label = {"E": "Efficiency", "O": "Oracle", "D": "Diagnostics"}.get(self.number,
                                                                         f"Table {self.number}")
        return f"{label} — {SYNTHETIC_TITLE} — {self.title}" if self.synthetic else \
            f"{label} — {self.title}"


CSV_FIELDS = ["table", "part", "model", "variant", "run", "dataset", "metric", "unit", "value",
              "std", "n", "published", "diff_vs_published", "within_2std", "delta_vs_pase",
              "p_ttest", "p_wilcoxon", "ci_low", "ci_high", "significant", "note"]


# ---------------------------------------------------------------- cells and blocks


class Builder:
    """Builds the tables from the runs. `n_boot` / `boot_seed`: the paired bootstrap's settings."""

    def __init__(self, runs: Runs, n_boot: int = 1000, boot_seed: int = 0):
        self.runs, self.n_boot, self.boot_seed = runs, n_boot, boot_seed
        self._boot: dict = {}
        self._draws: dict = {}  # {dataset: {(variant, seeds): draws per seed}}

    # -- numbers
    def rerun_cell(self, ds: str, v: str, metric: str) -> str:
        reason = self.runs.na(ds, v)
        if reason:
            return "n/a"
        if not self.runs.ok(ds, v):
            return ""
        m, s, n = self.runs.summary(ds, v, metric)
        if n == 0:
            return "-"
        d = places(metric)
        body = num(scale(metric, m), d)
        return body if n < 2 else f"{body} ± {num(scale(metric, s), d)}"

    def diff_cell(self, ds: str, v: str, metric: str, pub: float | None) -> tuple[str, dict]:
        m, s, n = self.runs.summary(ds, v, metric)
        if pub is None or not self.runs.ok(ds, v) or n == 0:
            return "-", {}
        diff = scale(metric, m) - pub
        d = places(metric)
        if n < 2:
            return f"{num(diff, d, sign=True)} (1 seed)", {"diff_vs_published": diff}
        within = abs(diff) <= 2 * scale(metric, s)
        return (f"{num(diff, d, sign=True)} {'✓' if within else '✗'}",
                {"diff_vs_published": diff, "within_2std": within})

    def record(self, t: Table, part: str, model: str, v: str | None, run: str, ds: str,
               metric: str, **kw) -> None:
        rec = {"table": t.name, "part": part, "model": model, "variant": v or "", "run": run,
               "dataset": ds, "metric": metric, "unit": unit(metric)}
        if run == RERUN and v and self.runs.ok(ds, v):
            m, s, n = self.runs.summary(ds, v, metric)
            rec.update(value=scale(metric, m), std=scale(metric, s), n=n)
        elif run == RERUN and v and self.runs.na(ds, v):
            rec.update(note="not applicable: " + self.runs.na(ds, v))
        rec.update(kw)
        t.records.append(rec)

    def model_block(self, t: Table, part: str, ptable: paper.PaperTable | None, row_name: str,
                    v: str | None, cols: list[tuple[str, tuple[str, ...]]], real: bool,
                    published_override: dict | None = None) -> list[list[str]]:
        """Rows for one model: rerun here (if run), published and rerun − published (real data).

        cols: (dataset, metrics) per column; two metrics make a "has0/non0" cell.
        """
        rows = []
        prow = None
        if real and ptable is not None:
            try:
                prow = ptable.row(v if v else row_name)
            except KeyError:
                prow = None
        label = row_name if not v or row_name == v else f"{row_name} ({v})"
        run_here = v is not None and any(self.runs.has(ds, v) for ds, _ in cols)
        if run_here:
            cells = []
            for ds, ms in cols:
                cells.append(" / ".join(self.rerun_cell(ds, v, m) for m in ms)
                             if self.runs.ok(ds, v) else self.rerun_cell(ds, v, ms[0]))
                for m in ms:
                    self.record(t, part, row_name, v, RERUN, ds, m)
            rows.append([label, RERUN] + cells)
        if prow is not None or published_override:
            def pub(ds, m):
                if published_override and (ds, m) in published_override:
                    return published_override[(ds, m)]
                return prow.values.get(ds, {}).get(m) if prow else None
            cells = []
            for ds, ms in cols:
                cells.append("/".join(num(pub(ds, m), paper.decimals(ptable.key, m) if ptable else 2)
                                      for m in ms))
                for m in ms:
                    self.record(t, part, row_name, v, PUBLISHED, ds, m, value=pub(ds, m),
                                note=ptable.source if ptable else "")
            pname = row_name
            if prow is not None and prow.marker:
                pname = f"{row_name} [{prow.marker}] {prow.venue}"
            rows.append([pname, PUBLISHED] + cells)
            if run_here and any(self.runs.ok(ds, v) for ds, _ in cols):
                cells = []
                for ds, ms in cols:
                    parts_ = []
                    for m in ms:
                        c, extra = self.diff_cell(ds, v, m, pub(ds, m))
                        parts_.append(c)
                        if extra:
                            self.record(t, part, row_name, v, DIFF, ds, m, value=extra["diff_vs_published"],
                                        published=pub(ds, m), **extra)
                    cells.append(" / ".join(parts_))
                rows.append([row_name, DIFF] + cells)
        return rows

    # -- statistics against PaSE
    def bootstrap(self, ds: str) -> tuple[PairedBootstrap, pd.Index] | None:
        """The dataset's bootstrap (resamples shared by every variant) on PaSE's test ids."""
        if ds not in self._boot:
            self._boot[ds] = None
            ref = self.runs.predictions(ds, "pase") if self.runs.ok(ds, "pase") else None
            if ref:
                seeds = sorted(ref)
                ids = ref[seeds[0]].index
                labels = _outputs(ref[seeds[0]], task_of(ds))[1]
                boot = PairedBootstrap(task_of(ds), labels, self.n_boot, self.boot_seed)
                self._boot[ds] = (boot, ids)
        return self._boot[ds]

    def aligned(self, ds: str, v: str, ids) -> dict[int, np.ndarray] | None:
        """{seed: test outputs in the order of `ids`} (cached), None without predictions."""
        key = ("aligned", v)
        cache = self._draws.setdefault(ds, {})
        if key not in cache:
            cache[key] = self._aligned(ds, v, ids)
        return cache[key]

    def _aligned(self, ds: str, v: str, ids) -> dict[int, np.ndarray] | None:
        preds = self.runs.predictions(ds, v)
        if not preds:
            return None
        out = {}
        ref_labels = self._boot[ds][0].labels
        for seed, df in preds.items():
            f = paths.seed_dir(ds, v, seed) / "predictions.csv"
            if len(df) != len(ids) or not df.index.isin(ids).all():
                raise DataError(f"{f}: its test ids differ from those of {ds}/pase; both must "
                                "score the same test set")
            outputs, labels = _outputs(df.loc[ids], task_of(ds))
            if not np.allclose(labels, ref_labels, atol=1e-5):
                raise DataError(f"{f}: its test labels differ from those of {ds}/pase for the same "
                                "ids; were they trained on different data?")
            out[seed] = outputs
        return out

    def versus_pase(self, ds: str, v: str, metric: str) -> dict:
        """Paired t / Wilcoxon over seeds and the paired bootstrap CI of Δ = v − pase."""
        out = {"delta": None, "test": None, "ci": None}
        if not (self.runs.ok(ds, v) and self.runs.ok(ds, "pase")):
            return out
        test = paired_test(self.runs.per_seed(ds, v, metric), self.runs.per_seed(ds, "pase", metric))
        out.update(test=test, delta=test.delta)
        b = self.bootstrap(ds)
        if b is None or test.n == 0:
            return out
        boot, ids = b
        mine, ref = self.aligned(ds, v, ids), self.aligned(ds, "pase", ids)
        if mine is None or ref is None:
            return out
        seeds = [s for s in test.seeds if s in mine and s in ref]
        if not seeds:
            return out
        key, vkey = ("pase", tuple(seeds)), (v, tuple(seeds))
        if key not in self._draws.setdefault(ds, {}):
            self._draws[ds][key] = [boot.draws(ref[s]) for s in seeds]
        if vkey not in self._draws[ds]:
            self._draws[ds][vkey] = [boot.draws(mine[s]) for s in seeds]
        out["ci"] = boot.diff([mine[s] for s in seeds], [ref[s] for s in seeds], metric,
                              reference_draws=self._draws[ds][key],
                              variant_draws=self._draws[ds][vkey])
        return out


# ---------------------------------------------------------------- the tables


def _intro(t: Table, source: str | None, real: bool, seeds: list[int]) -> None:
    t.intro.append(f"Test split; mean ± sample std over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}); "
                   "model selection on the validation split only. Accuracies and F1 in %.")
    if real and source:
        t.intro.append(f"Published numbers: {source}. ✓ / ✗: our mean lies within / outside two seed "
                       "standard deviations of the published number.")
    if not real:
        t.intro.append("Synthetic data: no published number is shown; these rows check that the "
                       "pipeline works and say nothing about the paper's claims.")


def _paper_notes(t: Table, ptable: paper.PaperTable, real: bool) -> None:
    if real:
        t.notes += [f"Paper ({ptable.source}): {n}" for n in ptable.notes]


def _na_notes(t: Table, b: Builder, variants, datasets) -> None:
    seen = set()
    for ds in datasets:
        for v in variants:
            r = b.runs.na(ds, v)
            if r and (v, r) not in seen:
                seen.add((v, r))
                t.notes.append(f"n/a: {name(v)} ({v}) does not apply to {DS_LABEL[ds]}: {r}.")
    # what a run had to do differently (e.g. a source without raw text keeps frozen text)
    run_notes = {n for ds in datasets for v in variants for r in b.runs.results(ds, v)
                 for n in r.get("notes", [])}
    t.notes += [f"Note: {n}." for n in sorted(run_notes)]


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
    _intro(t, paper.TABLE1.source, real, seeds)
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
    _paper_notes(t, paper.TABLE1, real)
    if real and any(r[1].startswith(MMSA_RUN) for p in t.parts for r in p.rows):
        t.notes.append(f"\"{MMSA_RUN}\" rows: the MMSA toolkit's own reruns of the baseline, "
                       f"{paper.MMSA_SOURCE}; (aligned) / (unaligned): the features it used.")
    if real and "mosi" in dss:
        c = paper.CPSL_SECONDARY
        t.notes.append(f"CP+SL {c['value']:.2f} MOSI Acc-2 is {c['status']}: {c['source']}.")
    _na_notes(t, b, variants, dss)
    return t


def table2(b: Builder, seeds) -> Table | None:
    if "iemocap" not in b.runs.datasets:
        return None
    ds = "iemocap"
    real = not b.runs.synthetic(ds)
    t = Table("table2", "2", "IEMOCAP: F1 per emotion, and WA", not real)
    _intro(t, paper.TABLE2.source, real, seeds)
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
    _paper_notes(t, paper.TABLE2, real)
    t.notes.append("F1: weighted F1 of each emotion's binary decision (MulT's protocol); WA: accuracy "
                   "of the arg-max emotion over the four classes.")
    _na_notes(t, b, [r.variant for r in paper.TABLE2.rows if r.variant] + list(BASELINES), [ds])
    return t


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
    _intro(t, paper.TABLE3.source, real, seeds)
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
    _paper_notes(t, paper.TABLE3, real)
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
    _na_notes(t, b, variants, dss)
    return t


def _mlabel(m: str) -> str:
    for suffix, tag in (("_has0", " (has0)"), ("_non0", " (non0)")):
        if m.endswith(suffix):
            return LABELS[m[: -len(suffix)]] + tag
    return LABELS.get(m, m)


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
    _intro(t, paper.TABLE4.source, real, seeds)
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
    _paper_notes(t, paper.TABLE4, real)
    t.notes.append("Δ (vs best single modality): the paper's definition, checked against its "
                   f"numbers: {paper.TABLE4_DELTA_DEFINITION}. Here the best single modality is "
                   "chosen per column among the single-modality runs present; Δ (vs best pair), "
                   "which the paper does not print, is the gain over the best two-modality run.")
    return t


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


def provenance(runs: Runs, pairs) -> str:
    """Which profile and text encoder produced the runs of (dataset, variant) `pairs`, from their
    metrics.json: the profile (`settings.profile`), and per run with text the encoder it
    fine-tuned end to end (`settings.text`) or the frozen vectors it read (`text_encoder`, the
    embed stage's). A profile other than paper is said not to be the paper's setting: its numbers
    are "rerun here" rows, never "published" ones (those come from pipeline/report/paper.py only)."""
    profiles, tuned, frozen = set(), {}, set()
    for ds, v in pairs:
        for r in runs.results(ds, v):
            s = r.get("settings") or {}
            profiles.add(s.get("profile", "not recorded"))
            if "text" not in s.get("modalities", r.get("modalities", ["text"])):
                continue
            if (s.get("text") or {}).get("finetune"):
                tuned.setdefault(s["text"]["encoder"], []).append(v)
            elif r.get("text_encoder"):
                frozen.add(str(r["text_encoder"]))
    line = f"Produced by profile {', '.join(sorted(profiles)) or 'not recorded'}"
    if profiles - {"paper", "not recorded"}:
        line += " (not the paper's setting)"
    parts = [f"{enc}, fine-tuned end to end in {', '.join(sorted(set(vs)))}"
             for enc, vs in sorted(tuned.items())]
    if frozen:
        parts.append(f"frozen vectors of {', '.join(sorted(frozen))}" + (" in the others" if tuned else ""))
    return f"{line}; text: {'; '.join(parts) or 'not recorded'}."


def build_tables(runs: Runs, seeds: list[int], n_boot: int = 1000, boot_seed: int = 0) -> list[Table]:
    from pipeline.report.diagnostics import oracle_table, probe_table
    b = Builder(runs, n_boot, boot_seed)
    out = [f(b, seeds) for f in (table1, table2, table3, table4, efficiency, oracle_table,
                                 probe_table)]
    out = [t for t in out if t is not None]
    for t in out:  # each table says which profile and text encoder produced its rows
        pairs = dict.fromkeys((r["dataset"], r["variant"]) for r in t.records
                              if r["run"] == RERUN and r.get("variant"))
        if pairs:
            t.intro.insert(0, provenance(runs, pairs))
    return out


# ---------------------------------------------------------------- rendering


TEXT_COLUMNS = ("Model", "Run", "Dataset", "Metric", "Device", "Significant")


def to_markdown(t: Table, level: int = 2) -> str:
    h = "#" * level
    lines = [f"{h} {t.heading}", ""]
    for x in t.intro:
        lines += [x, ""]
    for p in t.parts:
        if p.caption:
            lines += [f"{h}# {p.caption}", ""]
        lines.append("| " + " | ".join(p.columns) + " |")
        lines.append("|" + "|".join("---" if i < 2 or c in TEXT_COLUMNS else "---:"
                                     for i, c in enumerate(p.columns)) + "|")
        for r in p.rows:
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
        lines.append("")
    if t.notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in t.notes] + [""]
    return "\n".join(lines)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
        "±": r"$\pm$", "−": r"$-$", "Δ": r"$\Delta$", "σ": r"$\sigma$", "✓": r"\checkmark{}",
        "✗": r"$\times$", "♡": r"$\heartsuit$", "◇": r"$\diamond$", "≥": r"$\geq$", "≤": r"$\leq$",
        "—": "---", "–": "--", "→": r"$\rightarrow$", "“": "``", "”": "''", "’": "'", "·": r"$\cdot$",
        "<": r"$<$", ">": r"$>$", "×": r"$\times$"}


def tex_escape(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in s)


def _tex_cell(c: str, align: str, header: bool = False) -> str:
    """A cell on two lines where it has two parts ("has0 / non0" values; a heading's
    "(has0/non0)"), which halves the width of Tables 1 and 3."""
    if " / " in c:
        lines = c.split(" / ", 1)
    elif header and " (" in c:
        head, rest = c.split(" (", 1)
        lines = [head, "(" + rest]
    else:
        return tex_escape(c)
    return f"\\shortstack[{align}]{{{tex_escape(lines[0])}\\\\{tex_escape(lines[1])}}}"


def to_latex(t: Table) -> str:
    """Each part as a `table*` (both columns of a two-column paper such as AAAI's or ACL's). A
    tabular wider than \\textwidth is scaled down to it (measured in a box first, so a table that
    fits keeps its natural size); notes are set ragged right at the text width. The caption is
    the title alone: LaTeX prints "Table n:" itself."""
    out = ["% Generated by pipeline/report/tables.py for a two-column paper (table* spans both "
           "columns); needs \\usepackage{booktabs,graphicx,amssymb}.", ""]
    for i, p in enumerate(t.parts):
        align = p.align or "".join("l" if i < 2 or c in TEXT_COLUMNS else "r"
                                   for i, c in enumerate(p.columns))
        caption = t.caption + (f" ({p.caption})" if p.caption else "")
        out += ["\\begin{table*}[t]", "\\centering", "\\small", "\\setlength{\\tabcolsep}{4pt}",
                f"\\caption{{{tex_escape(caption)}}}",
                f"\\label{{tab:{t.name}{'-' + str(i + 1) if len(t.parts) > 1 else ''}}}",
                "\\sbox0{%", f"\\begin{{tabular}}{{{align}}}", "\\toprule",
                " & ".join(_tex_cell(c, a, header=True) for c, a in zip(p.columns, align))
                + " \\\\", "\\midrule"]
        out += [" & ".join(_tex_cell(c, a) for c, a in zip(r, align)) + " \\\\" for r in p.rows]
        out += ["\\bottomrule", "\\end{tabular}}%",
                "\\ifdim\\wd0>\\textwidth\\resizebox{\\textwidth}{!}{\\usebox0}\\else\\usebox0\\fi"]
        if i == len(t.parts) - 1 and (t.intro or t.notes):
            out += ["\\par\\smallskip",
                    "\\begin{minipage}{\\textwidth}\\footnotesize\\raggedright"]
            out += [tex_escape(x) + "\\par" for x in t.intro + t.notes]
            out += ["\\end{minipage}"]
        out += ["\\end{table*}", ""]
    return "\n".join(out)


def write_csv(t: Table, path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="raise")
        w.writeheader()
        for rec in t.records:
            row = {k: _csv_value(rec.get(k)) for k in CSV_FIELDS}
            w.writerow(row)


def _csv_value(x):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (float, np.floating)):
        return repr(float(x))
    return x


TABLE_NAMES = ("table1", "table2", "table3", "table4", "efficiency", "oracle", "diagnostics")


def write_tables(tables: list[Table], out_dir: Path) -> list[Path]:
    """reports/tables/<name>.md, .tex and .csv for every table; returns the paths written.
    Files of a table this report does not make (its runs are gone) are removed, not left stale."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stem in TABLE_NAMES:
        for suffix in (".md", ".tex", ".csv"):
            (out_dir / f"{stem}{suffix}").unlink(missing_ok=True)
    written = []
    for t in tables:
        for suffix, text in ((".md", to_markdown(t)), (".tex", to_latex(t))):
            path = out_dir / f"{t.name}{suffix}"
            write_atomic(path, text + "\n")
            written.append(path)
        write_csv(t, out_dir / f"{t.name}.csv")
        written.append(out_dir / f"{t.name}.csv")
    return written
