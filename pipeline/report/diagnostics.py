"""Imbalance diagnostics and the synthetic oracle.

Unimodal probes (the measure balancing papers use): for each multimodal
run, each frozen encoder's output (`probe_features.npz`, written by the train stage at the end of
each seed from the selected model) gets a linear head fitted on the train split (least squares
with a small ridge, closed form: deterministic, no tuning; IEMOCAP: the four one-hot columns,
"present" when the score exceeds 1/2, WA from the arg-max) and scored on test. Beside it, the
same modality's unimodal model (pase-T / pase-A / pase-V) on test. Gap = probe − unimodal model:
negative means joint training left that encoder worse than training it alone (under-optimised).
Metric: Pearson r for MOSI/MOSEI (scale-free, natural for a least-squares probe), WA for IEMOCAP.
Per seed, paired over seeds: the probe against the unimodal model of the same seed.

Oracle (synthetic complementary data): data/raw/<ds>/oracle.json, the Bayes-optimal score of
each modality set from the generator's latents (pipeline/data/synthetic.py), beside the PaSE
run of that set.
"""
from __future__ import annotations

import json

import numpy as np

from pipeline.balancers import VARIANTS as BALANCER_VARIANTS
from pipeline import paths
from pipeline.metrics import iemocap_metrics, regression_metrics
from pipeline.report.formatting import RERUN, Part, Table, name, num, pval
from pipeline.report.runs import outputs_labels, task_of
from pipeline.report.stats import mean_std, paired_test

DIAGNOSED = ("pase", "pase-no_sgm", *BALANCER_VARIANTS, "cpsl")  # each balancer's variant
UNIMODAL = {"text": "pase-T", "audio": "pase-A", "vision": "pase-V"}
RIDGE = 1e-3
ORACLE_SETS = {"T": "pase-T", "A": "pase-A", "V": "pase-V", "TA": "pase-TA", "TV": "pase-TV",
               "AV": "pase-AV", "TAV": "pase"}


def metric_of(ds: str) -> str:
    return "wa" if ds == "iemocap" else "corr"


def linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Ridge least squares with an intercept (features standardised on train)."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-8
    a = np.c_[(x_train - mu) / sd, np.ones(len(x_train))]
    b = np.c_[(x_test - mu) / sd, np.ones(len(x_test))]
    reg = RIDGE * len(a) * np.eye(a.shape[1])
    reg[-1, -1] = 0.0
    w = np.linalg.solve(a.T @ a + reg, a.T @ y_train.reshape(len(a), -1).astype(np.float64))
    return b @ w


def probe_scores(ds: str, variant: str, seed: int, test_labels: np.ndarray) -> dict[str, float]:
    """{modality: test metric of its encoder's linear probe}; {} without saved features."""
    f = paths.seed_dir(ds, variant, seed) / "probe_features.npz"
    if not f.exists():
        return {}
    z = np.load(f)
    y = z["train/label"]
    out = {}
    for key in z.files:
        split, _, m = key.partition("/")
        if split != "train" or m == "label":
            continue
        pred = linear_probe(z[f"train/{m}"], y, z[f"test/{m}"])
        if ds == "iemocap":
            out[m] = iemocap_metrics(pred - 0.5, test_labels)["wa"]
        else:
            out[m] = regression_metrics(pred[:, 0], test_labels)["corr"]
    return out


def test_labels(ds: str, variant: str, seed: int) -> np.ndarray | None:
    """The test labels as the run's predictions.csv holds them."""
    import pandas as pd
    f = paths.seed_dir(ds, variant, seed) / "predictions.csv"
    if not f.exists():
        return None
    df = pd.read_csv(f, dtype={"id": str})
    if ds != "iemocap":
        return df["label"].to_numpy(np.float64)
    from pipeline.data.schema import IEMOCAP_EMOTIONS
    return df[[f"{e}_label" for e in IEMOCAP_EMOTIONS]].to_numpy(np.int64)


def unimodal_score(ds: str, modality: str, seed: int) -> float | None:
    f = paths.seed_dir(ds, UNIMODAL[modality], seed) / "metrics.json"
    if not f.exists():
        return None
    m = json.loads(f.read_text())
    return m.get("test", {}).get(metric_of(ds))


def collect(ds: str, variants, seeds) -> list[dict]:
    """One row per (variant, modality, seed): probe and unimodal model scores (figures stage)."""
    rows = []
    for v in variants:
        for seed in seeds:
            labels = test_labels(ds, v, seed)
            if labels is None:
                continue
            for m, s in probe_scores(ds, v, seed, labels).items():
                rows.append({"dataset": ds, "variant": v, "modality": m, "seed": seed,
                             "metric": metric_of(ds), "probe": s,
                             "unimodal": unimodal_score(ds, m, seed)})
    return rows


def probe_table(b, seeds):
    """The diagnostics table (a formatting.Table) or None when no diagnosed run has features."""
    dss = [d for d in b.runs.datasets if any(b.runs.ok(d, v) for v in DIAGNOSED)]
    rows, records = [], []
    for ds in dss:
        metric = metric_of(ds)
        for v in DIAGNOSED:
            preds = b.runs.predictions(ds, v) if b.runs.ok(ds, v) else None
            if not preds:
                continue
            per_mod: dict[str, dict[int, float]] = {}
            for seed, df in preds.items():
                labels = outputs_labels(df, task_of(ds))[1]
                for m, s in probe_scores(ds, v, seed, labels).items():
                    per_mod.setdefault(m, {})[seed] = s
            for m, scores in per_mod.items():
                uni = b.runs.per_seed(ds, UNIMODAL[m], metric)
                pm, ps, n = mean_std(scores.values())
                um, us, un = mean_std(uni.values()) if uni else (None, None, 0)
                test = paired_test(scores, uni) if uni else None
                gap = test.delta if test is not None and test.n else None
                rows.append([name(v), RERUN, ds.upper(), m, f"{num(pm, 3)} ± {num(ps, 3)} ({n})",
                             f"{num(um, 3)} ± {num(us, 3)} ({un})" if un else "-",
                             num(gap, 3, True) if gap is not None else "-",
                             pval(test.p_ttest) if test is not None else "-"])
                records.append({"table": "diagnostics", "part": "", "model": name(v), "variant": v,
                                "run": RERUN, "dataset": ds, "metric": f"probe_{m}_{metric}",
                                "unit": "", "value": pm, "std": ps, "n": n,
                                "delta_vs_pase": gap, "p_ttest": test.p_ttest if test else None,
                                "note": f"unimodal model {UNIMODAL[m]}: {um}"})
    if not rows:
        return None
    synthetic = any(b.runs.synthetic(d) for d in dss)
    t = Table("diagnostics", "D", "Imbalance diagnostics: linear probes on frozen encoders vs "
              "unimodal models", synthetic)
    t.intro.append("Each encoder of a jointly trained model, frozen, with a linear probe fitted "
                   "on train and scored on test, beside the same modality's unimodal PaSE model "
                   "(pase-T/A/V). Gap = probe − unimodal, paired over seeds (t-test p). A negative "
                   "gap: joint training under-optimised that encoder. Metric: Pearson r "
                   "(MOSI/MOSEI), WA (IEMOCAP).")
    p = Part("", ["Model", "Run", "Dataset", "Modality", "Probe", "Unimodal model", "Gap", "p (t)"])
    p.rows = rows
    t.parts.append(p)
    t.records = records
    return t


def load_oracle(ds: str) -> dict | None:
    f = paths.raw_dir(ds) / "oracle.json"
    return json.loads(f.read_text()) if f.exists() else None


def oracle_table(b, seeds):
    """Best achievable score per modality set (synthetic complementary data) beside PaSE's runs."""
    rows, records = [], []
    for ds in b.runs.datasets:
        oracle = load_oracle(ds)
        if not oracle:
            continue
        metrics = ("wa",) if ds == "iemocap" else ("corr", "mae", "acc2_non0")
        for key, v in ORACLE_SETS.items():
            cells = []
            for m in metrics:
                mm, ms, n = b.runs.summary(ds, v, m) if b.runs.ok(ds, v) else (None, None, 0)
                cells.append(f"{num(mm, 3)} ± {num(ms, 3)}" if n else "-")
                cells.append(num(oracle[key][m], 3))
                records.append({"table": "oracle", "part": "", "model": name(v), "variant": v,
                                "run": "oracle", "dataset": ds, "metric": m, "unit": "",
                                "value": oracle[key][m], "note": f"model: {mm}"})
            if ds == "iemocap":
                cells += ["-"] * 4
            rows.append([ds.upper(), key, name(v)] + cells)
    if not rows:
        return None
    t = Table("oracle", "O", "Best achievable score per modality set (oracle) beside the runs", True)
    t.intro.append("Synthetic complementary data: the oracle is the Bayes prediction from the "
                   "generator's latent observations of the modalities in the set (before the "
                   "words' quantisation and the per-word noise), so no model can beat it beyond "
                   "sampling noise. MOSI/MOSEI columns: Corr, MAE, Acc-2 (non0); IEMOCAP: WA.")
    p = Part("", ["Dataset", "Set", "Model", "Corr / WA", "Oracle", "MAE", "Oracle MAE",
                  "Acc-2", "Oracle Acc-2"])
    p.rows = rows
    t.parts.append(p)
    t.records = records
    return t
