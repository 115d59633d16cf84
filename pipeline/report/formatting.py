"""How the report's tables look: display names, units and number formats, the table model
(`Table` of `Part`s, with its long-format CSV records), and its renderings as Markdown, LaTeX
(booktabs) and CSV.

Units: accuracies and F1 in percent (2 decimals; the paper's own numbers keep their printed
decimals), Corr and MAE as is (3 decimals). `±` is the sample standard deviation over seeds.

CSV files are long-format (one line per row × dataset × metric, unrounded, with the unit), for
machines; Markdown and LaTeX follow the paper's layout, for people.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.data.schema import IEMOCAP_EMOTIONS
from pipeline.data.store import atomic_path, write_atomic
from pipeline.report import paper
from pipeline.balancers import SPECS

SYNTHETIC_TITLE = "SYNTHETIC DATA — not comparable with the paper"
RERUN, PUBLISHED, DIFF = "rerun here", "published", "rerun − published"
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
    # names the assembler the report stage runs (build_tables), as before the split: same bytes
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
