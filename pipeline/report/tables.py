"""The report's tables: Tables 1-4, the efficiency table, the oracle and the diagnostics, each
said to come from the profile and text encoder of its runs (`build_tables`).

Rows measured here say "rerun here". When a table's data are real (every dataset it covers has
`synthetic: false`), the paper's numbers (pipeline/report/paper.py) sit beside ours: for each row
the paper has, a "published" row and a "rerun − published" row whose cells carry ✓ when the
difference lies within two seed standard deviations of our mean (✗ otherwise); baselines we do
not rerun appear as published rows only. When any dataset a table covers is SYNTHETIC, the title
says "SYNTHETIC DATA — not comparable with the paper" and the table holds no published number at
all, not even in its notes.

This module only assembles. The rooms:
- runs.py: the runs' metrics.json, timing.json and predictions.csv (`Runs`);
- formatting.py: display names, units, the table model (`Table`, `Part`) and its Markdown, LaTeX
  and CSV renderings (`write_tables`);
- builder.py: the `Builder` every table uses (cells, records, statistics against PaSE), the
  tables' row sets and their shared notes;
- table1.py, table2.py, table3.py, table4.py, efficiency.py: one table each;
- diagnostics.py: the oracle and the imbalance diagnostics tables.
"""
from __future__ import annotations

from pipeline.report.builder import Builder
from pipeline.report.diagnostics import oracle_table, probe_table
from pipeline.report.efficiency import efficiency
from pipeline.report.formatting import RERUN, Table
from pipeline.report.runs import Runs
from pipeline.report.table1 import table1
from pipeline.report.table2 import table2
from pipeline.report.table3 import table3
from pipeline.report.table4 import table4


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
