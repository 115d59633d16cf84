"""What the table modules share: the row sets of the tables, the `Builder` (cells, CSV records
and a model's block of rows from the runs, and each variant's statistics against full PaSE), and
the intro and note lines every table adds.

A model's block: its "rerun here" row when it ran; on real data, also the paper's "published" row
and a "rerun − published" row whose cells carry ✓ when the difference lies within two seed
standard deviations of our mean (✗ otherwise). On SYNTHETIC data no published number appears.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline import paths
from pipeline.errors import DataError
from pipeline.report import paper
from pipeline.report.formatting import (DIFF, DS_LABEL, PUBLISHED, RERUN, Table, name, num, places,
                                        scale, unit)
from pipeline.report.runs import Runs, outputs_labels, task_of
from pipeline.report.stats import PairedBootstrap, paired_test
from pipeline.balancers import VARIANTS as BALANCER_VARIANTS
from pipeline.variants import VARIANTS

TABLE3_VARIANTS = tuple(r.variant for r in paper.TABLE3.rows)  # pase first
TABLE4_VARIANTS = tuple(r.variant for r in paper.TABLE4.rows)  # pase last
# SGM replaced by each other balancer (its SPEC, pipeline/balancers/): the balancing ablations the
# paper lacks (docs/baselines.md: SGM against other modulation rules, everything else equal)
EXTRA_TABLE3 = BALANCER_VARIANTS
BASELINES = tuple(v for v in VARIANTS if v not in TABLE3_VARIANTS + TABLE4_VARIANTS)


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
                labels = outputs_labels(ref[seeds[0]], task_of(ds))[1]
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
            outputs, labels = outputs_labels(df.loc[ids], task_of(ds))
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


# ---------------------------------------------------------------- intro and notes


def add_intro(t: Table, source: str | None, real: bool, seeds: list[int]) -> None:
    t.intro.append(f"Test split; mean ± sample std over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}); "
                   "model selection on the validation split only. Accuracies and F1 in %.")
    if real and source:
        t.intro.append(f"Published numbers: {source}. ✓ / ✗: our mean lies within / outside two seed "
                       "standard deviations of the published number.")
    if not real:
        t.intro.append("Synthetic data: no published number is shown; these rows check that the "
                       "pipeline works and say nothing about the paper's claims.")


def add_paper_notes(t: Table, ptable: paper.PaperTable, real: bool) -> None:
    if real:
        t.notes += [f"Paper ({ptable.source}): {n}" for n in ptable.notes]


def add_na_notes(t: Table, b: Builder, variants, datasets) -> None:
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
