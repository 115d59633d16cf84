"""The paper's published numbers, as data: the one place they live (DESIGN.md, "Conventions").

Every table says where it comes from (`source`: file under /work/shared/papers and table number)
and carries the notes a reader needs. Values are in the paper's units: accuracies and F1 in
percent, Corr and MAE as printed; "-" (not provided) is None. `tests/report/test_report.py` parses the
paper's text and checks every number here against it, so a typo fails.

Paper rows map to the variants this pipeline reruns (`Row.variant`, see pipeline/variants.py);
rows without a variant are published-only baselines.

Nothing here may be shown beside numbers measured on SYNTHETIC data (the tables that
pipeline/report/tables.py assembles leave the published numbers out of every table made from
synthetic runs; builder.py's model blocks show them on real data only).
"""
from __future__ import annotations

from dataclasses import dataclass, field

PAPER = "pase-paper.txt"
SUPPLEMENTARY = "pase-supplementary.txt"


@dataclass(frozen=True)
class Row:
    name: str  # as printed in the paper (source markers and venues separate)
    values: dict  # {dataset: {metric: value or None}}, the paper's units
    variant: str | None = None  # our variant that reruns this row (pipeline/variants.py)
    marker: str | None = None  # Table 1's source marker: ♡, ◇ or * (None: the original paper)
    venue: str | None = None  # Table 1's subscript, as printed (e.g. "ACL19")


@dataclass(frozen=True)
class PaperTable:
    key: str
    title: str
    source: str  # file and table number
    columns: tuple  # ((dataset, metric), ...) in the printed order ("a/b" cells split in two)
    rows: tuple  # Row, in the printed order
    decimals: dict = field(default_factory=dict)  # metric -> decimals as printed
    notes: tuple = ()

    def row(self, name_or_variant: str) -> Row:
        for r in self.rows:
            if name_or_variant in (r.name, r.variant):
                return r
        raise KeyError(f"{self.key}: no row {name_or_variant!r}")

    def by_variant(self) -> dict:
        return {r.variant: r for r in self.rows if r.variant}

    def flat(self, row: Row) -> tuple:
        """A row's values in the printed column order (what the paper's text line holds)."""
        return tuple(row.values[ds][m] for ds, m in self.columns)


def _nest(columns, flat) -> dict:
    if len(columns) != len(flat):
        raise ValueError(f"{len(flat)} values for {len(columns)} columns")
    out: dict = {}
    for (ds, m), v in zip(columns, flat):
        out.setdefault(ds, {})[m] = v
    return out


def _table(key, title, source, columns, rows, decimals, notes) -> PaperTable:
    built = tuple(Row(name=r[0], values=_nest(columns, r[1]), **(r[2] if len(r) > 2 else {}))
                  for r in rows)
    return PaperTable(key, title, source, tuple(columns), built, decimals, tuple(notes))


PCT2 = {"acc2_has0": 2, "acc2_non0": 2, "f1_has0": 2, "f1_non0": 2, "acc7": 2, "corr": 3,
        "mae": 3, "wa": 2}

# ---------------------------------------------------------------- Table 1: MOSI and MOSEI

_T1_METRICS = ("acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "acc7", "corr", "mae")
TABLE1 = _table(
    "table1", "Comparison with SOTA methods on MOSI and MOSEI", f"{PAPER}, Table 1",
    [(ds, m) for ds in ("mosi", "mosei") for m in _T1_METRICS],
    [
        ("MuLT", (79.51, 80.47, 79.46, 80.49, 36.74, 0.667, 0.892,
                  81.10, 83.63, 81.05, 83.46, 52.34, 0.605, 0.671),
         {"variant": "mult", "marker": "♡", "venue": "ACL19"}),
        ("MAG-BERT", (82.37, 84.43, 82.50, 84.61, 43.62, 0.727, 0.781,
                      82.51, 84.82, 82.77, 84.71, 52.67, 0.755, 0.543),
         {"variant": "mag_bert", "marker": "◇", "venue": "ACL20"}),
        ("SelfMM", (82.54, 84.77, 84.42, 85.95, 45.79, 0.795, 0.712,
                    82.68, 84.96, 82.95, 84.93, 53.46, 0.767, 0.529),
         {"variant": "self_mm", "marker": "◇", "venue": "AAAI21"}),
        ("HyCon", (None, 85.20, 82.68, 84.91, 46.60, 0.790, 0.713,
                   None, 85.40, None, 85.60, 52.80, 0.776, 0.601),
         {"marker": "◇", "venue": "TAC22"}),
        ("ConKI", (84.37, 86.13, 84.33, 86.13, 48.43, 0.816, 0.681,
                   82.73, 86.25, 83.08, 86.15, 54.25, 0.782, 0.529),
         {"marker": "◇", "venue": "ACL23"}),
        ("ConFEDE", (84.17, 85.52, 84.13, 85.52, 42.27, 0.742, 0.784,
                     81.65, 85.82, 82.17, 85.83, 54.86, 0.780, 0.522),
         {"marker": "◇", "venue": "ACL23"}),
        ("CLGSI", (83.97, 86.43, 83.63, 86.25, 47.96, 0.790, 0.703,
                   84.01, 86.32, 84.21, 86.18, 54.56, 0.763, 0.532),
         {"marker": "◇", "venue": "NAACL24"}),
        ("MCL-MCF", (84.90, 87.30, 84.70, 87.20, None, 0.799, 0.692,
                     84.20, 86.40, 84.40, 86.30, None, 0.767, 0.536),
         {"marker": "◇", "venue": "TAC24"}),
        ("MFON", (84.84, 86.89, 84.75, 86.86, 44.90, 0.797, 0.725,
                  82.70, 86.32, 83.13, 86.29, 53.72, 0.780, 0.528),
         {"marker": "◇", "venue": "COLING25"}),
        ("GLoMo", (84.10, 86.70, 83.90, 86.60, 48.30, 0.782, 0.718,
                   83.70, 86.50, 84.00, 86.40, 55.00, 0.771, 0.539),
         {"marker": "◇", "venue": "MM25"}),
        ("EUAR", (83.24, 84.58, 84.22, 84.58, 48.18, 0.789, 0.711,
                  82.20, 85.64, 82.02, 85.46, 51.07, 0.785, 0.596),
         {"marker": "*", "venue": "MM25"}),
        ("KEBR", (84.84, 87.27, 84.83, 87.25, 47.81, 0.819, 0.683,
                  84.01, 86.74, 84.25, 86.68, 54.37, 0.799, 0.517),
         {"marker": "*", "venue": "MM25"}),
        ("Semi-IIN", (85.28, 87.04, 85.19, 87.00, 46.50, 0.822, 0.679,
                      84.98, 87.70, 85.27, 87.65, 55.89, 0.804, 0.497),
         {"marker": "*", "venue": "AAAI25"}),
        ("MSAmba", (85.99, 87.43, 85.99, 87.40, 49.67, 0.809, 0.707,
                    85.78, 86.86, 85.99, 86.93, 54.21, 0.796, 0.507),
         {"marker": "*", "venue": "AAAI25"}),
        ("PaSE", (86.40, 88.32, 86.34, 88.25, 50.92, 0.847, 0.695,
                  86.07, 88.10, 86.21, 87.96, 55.76, 0.831, 0.523),
         {"variant": "pase"}),
    ],
    PCT2,
    [
        "Acc-2 and F1 are printed 'has0/non0': negative/non-negative (zero counted as "
        "non-negative), then negative/positive (zero labels dropped).",
        "Source markers (the paper's caption): ♡ results from Zhuang et al. (2024) [GLoMo], "
        "◇ results from Yu et al. (2023) [ConKI], * reproduced by the PaSE authors from the public "
        "code; no marker: the original paper. '-' = not provided.",
        "Venues are the table's subscripts as printed; the paper's references date GLoMo, EUAR and "
        "KEBR to ACM MM 2024 (32nd ACM MM), not 'MM25'. The text spells MSAmba 'MSamba'.",
        "The paper's bold/underline marks (best/second best) are not kept; PaSE's MOSI MAE "
        "(0.695) is not the best of the table (Semi-IIN 0.679, ConKI 0.681).",
        "The text's 'relative gains of 0.89% in Acc-2 and 1.25% in Acc-7' over MSAmba are absolute "
        "percentage points (88.32 - 87.43, 50.92 - 49.67).",
    ],
)

# ---------------------------------------------------------------- Table 2: IEMOCAP

TABLE2 = _table(
    "table2", "Comparison on IEMOCAP across emotion classes (F1-score)", f"{PAPER}, Table 2",
    [("iemocap", f"{e}_f1") for e in ("happy", "sad", "angry", "neutral")],
    [
        ("MCTN", (83.1, 82.8, 84.6, 67.7)),
        ("Self-MM", (90.8, 86.7, 88.4, 72.7), {"variant": "self_mm"}),
        ("SMIL", (86.8, 85.2, 84.9, 68.9)),
        ("GCNet", (87.7, 86.9, 85.2, 71.1)),
        ("UMDF", (87.9, 86.5, 85.8, 70.5)),
        ("DMD", (91.1, 88.4, 88.6, 72.2)),
        ("CorrKD", (87.5, 85.9, 86.1, 71.5)),
        ("PaSE", (91.5, 88.6, 89.4, 73.2), {"variant": "pase"}),
    ],
    {f"{e}_f1": 1 for e in ("happy", "sad", "angry", "neutral")},
    [
        "F1 per emotion, one binary decision per emotion (MulT's protocol); the paper does not say "
        "whether F1 is weighted (we use weighted F1, as MulT).",
        "Table 2 has no WA column; PaSE's IEMOCAP WA (80.47) is from Tables 3-5.",
        "Self-MM is listed on IEMOCAP by the paper; our self_mm is not applicable there (it "
        "generates unimodal regression labels, pipeline/variants.py).",
        "The text's 'average improvement of 2.93% over prior methods' is not reproduced by the "
        "table (PaSE's mean F1 over the four emotions minus the prior methods' mean: 2.98 points).",
    ],
)
PASE_IEMOCAP_WA = 80.47  # Tables 3, 4 and 5

# ---------------------------------------------------------------- Table 3: ablations

_T3_COLUMNS = [(ds, m) for ds in ("mosi", "mosei")
               for m in ("acc2_has0", "acc2_non0", "f1_has0", "f1_non0")] + [("iemocap", "wa")]
TABLE3 = _table(
    "table3", "Ablation studies for each module (MOSI, MOSEI, IEMOCAP)", f"{PAPER}, Table 3",
    _T3_COLUMNS,
    [
        ("PaSE", (86.40, 88.32, 86.34, 88.25, 86.07, 88.10, 86.21, 87.96, 80.47), {"variant": "pase"}),
        ("- PCL", (85.21, 87.25, 85.17, 87.16, 84.73, 86.91, 84.96, 86.83, 78.54),
         {"variant": "pase-no_pcl"}),
        ("- CAL", (85.04, 86.80, 85.06, 86.82, 84.54, 86.69, 84.47, 86.62, 78.13),
         {"variant": "pase-no_cal"}),
        ("- SGM", (83.65, 85.47, 83.60, 85.39, 83.13, 85.03, 83.46, 85.08, 76.80),
         {"variant": "pase-no_sgm"}),
        ("- PGF", (84.57, 86.37, 82.48, 86.32, 83.06, 86.05, 84.45, 85.90, 77.94),
         {"variant": "pase-no_pgf"}),
        ("+ Sum", (84.45, 86.92, 84.34, 86.26, 83.73, 86.59, 83.89, 86.53, 78.43),
         {"variant": "pase-sum"}),
        ("+ Con", (85.92, 87.40, 85.85, 87.37, 85.37, 87.14, 85.51, 87.10, 79.16),
         {"variant": "pase-concat"}),
        ("+ Att", (85.60, 87.26, 85.53, 87.19, 85.25, 86.85, 85.40, 86.97, 78.75),
         {"variant": "pase-attention"}),
    ],
    PCT2,
    [
        "Rows '- PCL', '- CAL', '- SGM' form the paper's 'Ablation Study' block; '- PGF', '+ Sum', "
        "'+ Con' (MLP over the concatenation), '+ Att' the 'Ablation on Fusion Strategy' block.",
        "IEMOCAP column: weighted accuracy (WA).",
        "The text's drops (PCL 1.07/1.19, CAL 1.52/1.41, SGM 2.85/3.07 on MOSI/MOSEI) are PaSE "
        "minus the row in non0 Acc-2, in percentage points.",
    ],
)

# ---------------------------------------------------------------- Table 4: modality combinations

_T4_COLUMNS = [("mosi", "acc2_non0"), ("mosi", "f1_non0"), ("mosei", "acc2_non0"),
               ("mosei", "f1_non0"), ("iemocap", "wa")]
TABLE4 = _table(
    "table4", "Performance under different modality combinations", f"{PAPER}, Table 4",
    _T4_COLUMNS,
    [
        ("A", (60.01, 58.79, 69.04, 68.56, 67.34), {"variant": "pase-A"}),
        ("V", (61.43, 61.50, 68.69, 68.74, 57.31), {"variant": "pase-V"}),
        ("T", (84.70, 84.23, 84.36, 84.08, 74.80), {"variant": "pase-T"}),
        ("A+V", (63.35, 63.32, 72.03, 71.90, 68.75), {"variant": "pase-AV"}),
        ("T+A", (86.71, 86.79, 86.47, 86.42, 78.93), {"variant": "pase-TA"}),
        ("T+V", (87.14, 86.99, 86.73, 86.45, 77.52), {"variant": "pase-TV"}),
        ("PaSE(T+A+V)", (88.32, 88.25, 88.10, 87.96, 80.47), {"variant": "pase"}),
    ],
    PCT2,
    [
        "Only negative/positive (non0) Acc-2 and F1 are reported for MOSI and MOSEI; IEMOCAP: WA.",
        "The Δ row is PaSE(T+A+V) minus T (text only) in percentage points: 88.32-84.70=3.62, "
        "88.25-84.23=4.02, 88.10-84.36=3.74, 87.96-84.08=3.88, 80.47-74.80=5.67. T is the best "
        "single modality in every column, so Δ = full minus the best single modality; it is not "
        "the gain over the best pair (T+V: 1.18, 1.26, 1.37, 1.51; T+A on IEMOCAP: 1.54).",
        "The text's 'average gain of 4.02% over all bimodal variants' is the MOSI F1 Δ over T, not "
        "a gain over the bimodal rows; its 'V+T yields a 2.76% improvement' is MOSI F1, "
        "T+V minus T (86.99-84.23).",
    ],
)
# The printed Δ row and its definition (checked against the rows by the tests).
TABLE4_DELTA = {("mosi", "acc2_non0"): 3.62, ("mosi", "f1_non0"): 4.02,
                ("mosei", "acc2_non0"): 3.74, ("mosei", "f1_non0"): 3.88, ("iemocap", "wa"): 5.67}
TABLE4_DELTA_DEFINITION = "full (T+A+V) minus the best single modality (T in every column)"
SINGLE_MODALITY_VARIANTS = ("pase-A", "pase-V", "pase-T")
PAIR_VARIANTS = ("pase-AV", "pase-TA", "pase-TV")

# ---------------------------------------------------------------- efficiency (supplementary)


@dataclass(frozen=True)
class EfficiencyRow:
    name: str
    train_hours: float
    params: int
    variant: str | None = None


EFFICIENCY_SOURCE = f"{SUPPLEMENTARY}, Table 2"
EFFICIENCY = (
    EfficiencyRow("SelfMM", 7.7, 121_835_723, "self_mm"),
    EfficiencyRow("GLoMo", 9.3, 109_818_887),
    EfficiencyRow("EUAR", 3.9, 110_436_422),
    EfficiencyRow("KEBR", 4.6, 127_467_631),
    EfficiencyRow("PaSE", 4.0, 114_795_953, "pase"),
)
EFFICIENCY_NOTES = (
    "Training time and parameters as printed; the supplementary does not say on which dataset, "
    "for how many epochs or seeds the time was measured (its hardware: one NVIDIA A100).",
    "The text calls PaSE comparable to 'SelfMM, ConKI, and KEBR'; ConKI is not in the table.",
)

# ---------------------------------------------------------------- CP+SL (not from a paper)

CPSL_SECONDARY = {
    "name": "CP+SL", "variant": "cpsl", "dataset": "mosi", "metric": "Acc-2", "value": 89.31,
    "status": "UNVERIFIED",
    "source": "a secondary summary cited in DESIGN.md ('The second method: CP+SL'); not in "
              "cp-sl-abstract.txt, not from a paper; whether has0 or non0 is not stated",
}

# ---------------------------------------------------------------- MMSA's own reruns

# The MMSA toolkit's published reruns of the baselines on MOSI and MOSEI (regression), beside our
# reruns as a second reference for real data only. Percent as published; MMSA prints MAE and Corr
# times 100, stored here in the paper's units (0.9488, 0.669). "Data setting": MMSA's word-aligned
# or unaligned features (this pipeline trains on word-aligned sequences). MMSA's late-fusion
# baseline (LF-DNN, concatenated unimodal features into a DNN) is not our late_fusion (averaged
# unimodal predictions), so it is not matched.
MMSA_SOURCE = ("MMSA (github.com/thuiar/MMSA), results/result-stat.md, Regression tables, commit "
               "a239548; Yu et al., \"Learning Modality-Specific Representations with Self-Supervised "
               "Multi-Task Learning\", AAAI 2021, and its toolkit")
_MMSA_METRICS = ("acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc5", "acc7", "mae", "corr")
_MMSA = {  # variant: (setting, {dataset: values in _MMSA_METRICS order, as printed})
    "ef_lstm": ("aligned", {"mosi": (77.38, 77.4, 78.48, 78.44, 40.15, 35.39, 94.88, 66.9),
                            "mosei": (73.96, 73.45, 78.55, 78.75, 51.76, 50.49, 59.28, 68.93)}),
    "tfn": ("unaligned", {"mosi": (77.99, 78.03, 79.08, 79.06, 39.39, 34.46, 94.73, 67.33),
                          "mosei": (78.5, 78.05, 81.89, 82.04, 53.1, 51.6, 57.26, 71.41)}),
    "lmf": ("unaligned", {"mosi": (77.9, 78.0, 79.18, 79.2, 38.13, 33.82, 95.04, 65.1),
                          "mosei": (80.54, 80.14, 83.48, 83.6, 52.99, 51.59, 57.57, 71.69)}),
    "mult": ("unaligned", {"mosi": (79.71, 79.79, 80.98, 81.0, 42.68, 36.91, 87.99, 70.22),
                           "mosei": (81.15, 80.73, 84.63, 84.73, 54.18, 52.84, 55.93, 73.31)}),
    "self_mm": ("unaligned", {"mosi": (83.0, 83.05, 84.82, 84.81, 52.66, 46.07, 72.44, 78.92),
                              "mosei": (81.94, 81.62, 84.88, 85.02, 56.06, 54.4, 53.46, 75.87)}),
}
MMSA_RERUN = {v: (setting, {ds: {m: (x / 100 if m in ("mae", "corr") else x)
                                 for m, x in zip(_MMSA_METRICS, vals)}
                            for ds, vals in by_ds.items()})
              for v, (setting, by_ds) in _MMSA.items()}


# ---------------------------------------------------------------- lookups

TABLES = {t.key: t for t in (TABLE1, TABLE2, TABLE3, TABLE4)}
# Printed row name -> our variant, over every table ("SelfMM" and "Self-MM" are both self_mm).
PAPER_TO_VARIANT: dict[str, str] = {}
for _r in [r for t in TABLES.values() for r in t.rows] + list(EFFICIENCY):
    if _r.variant:
        assert PAPER_TO_VARIANT.setdefault(_r.name, _r.variant) == _r.variant, _r.name
PAPER_TO_VARIANT[CPSL_SECONDARY["name"]] = CPSL_SECONDARY["variant"]
del _r


def published(table: str, variant: str, dataset: str, metric: str) -> float | None:
    """The paper's number for our variant in one of its tables (paper units), or None."""
    t = TABLES[table]
    row = t.by_variant().get(variant)
    if row is None:
        return None
    if table == "table2" and metric == "wa" and variant == "pase":
        return PASE_IEMOCAP_WA
    return row.values.get(dataset, {}).get(metric)


def decimals(table: str, metric: str) -> int:
    return TABLES[table].decimals.get(metric, 2)
