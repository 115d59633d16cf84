"""Evaluation metrics, the one place they are defined.

Regression (MOSI / MOSEI) follows MMSA's `metricsTop.py` exactly:
- MAE = mean |p - y|; Corr = Pearson r (np.corrcoef) over all samples;
- Acc-7 / Acc-5: clip both to [-3, 3] / [-2, 2], `np.round` (half to even), compare;
- Acc-2 "has0" (negative / non-negative): `y >= 0` vs `p >= 0` over all samples;
- Acc-2 "non0" (negative / positive): samples with `y == 0` dropped, then `y > 0` vs `p > 0`;
- F1: `f1_score(true, pred, average="weighted")` for each Acc-2 variant.

IEMOCAP follows MulT's protocol: for each emotion (neutral, happy, sad, angry) a binary decision,
scored with accuracy and weighted F1. `wa` is the 4-class weighted accuracy (plain accuracy of
the arg-max emotion, i.e. each class weighted by its frequency), used by the paper's Tables 3-4.
"""
from __future__ import annotations

import numpy as np

from pipeline.data.schema import IEMOCAP_EMOTIONS

# Display names and whether higher is better, in the order of the paper's Table 1.
REGRESSION_METRICS = {
    "acc2_has0": ("Acc-2 (has0)", True),
    "acc2_non0": ("Acc-2 (non0)", True),
    "f1_has0": ("F1 (has0)", True),
    "f1_non0": ("F1 (non0)", True),
    "acc7": ("Acc-7", True),
    "acc5": ("Acc-5", True),
    "corr": ("Corr", True),
    "mae": ("MAE", False),
}


def _multiclass_acc(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.round(pred) == np.round(true)))


def regression_metrics(pred, true) -> dict[str, float]:
    """MMSA's MOSI/MOSEI metrics on predicted and true sentiment scores."""
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    y = np.asarray(true, dtype=np.float64).reshape(-1)
    if p.shape != y.shape or p.size == 0:
        raise ValueError(f"predictions {p.shape} and labels {y.shape} must be equal, non-empty")
    if not np.all(np.isfinite(p)):
        raise ValueError("predictions contain NaN or inf")
    from sklearn.metrics import accuracy_score, f1_score  # here: a stage that only restores
    nz = y != 0                                            # seeds skips its 0.7 s import
    out = {
        "mae": float(np.mean(np.abs(p - y))),
        "corr": float(np.corrcoef(p, y)[0, 1]) if p.std() > 0 and y.std() > 0 else 0.0,
        "acc7": _multiclass_acc(np.clip(p, -3, 3), np.clip(y, -3, 3)),
        "acc5": _multiclass_acc(np.clip(p, -2, 2), np.clip(y, -2, 2)),
        "acc2_has0": float(accuracy_score(y >= 0, p >= 0)),
        "f1_has0": float(f1_score(y >= 0, p >= 0, average="weighted")),
        "acc2_non0": float(accuracy_score(y[nz] > 0, p[nz] > 0)) if nz.any() else 0.0,
        "f1_non0": float(f1_score(y[nz] > 0, p[nz] > 0, average="weighted")) if nz.any() else 0.0,
    }
    return out


def iemocap_metrics(logits, true) -> dict[str, float]:
    """MulT's per-emotion binary accuracy and weighted F1, plus 4-class WA.

    `logits`: (N, 4, 2) per-emotion two-way scores, or (N, 4) scores where > 0 means present.
    `true`: (N, 4) 0/1 labels (one emotion per utterance in the four-class set).
    """
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(true).astype(np.int64).reshape(-1, len(IEMOCAP_EMOTIONS))
    if logits.ndim == 3:
        present = logits.argmax(axis=2)
        score = logits[:, :, 1] - logits[:, :, 0]
    else:
        present = (logits > 0).astype(np.int64)
        score = logits
    if present.shape != y.shape:
        raise ValueError(f"predictions {present.shape} and labels {y.shape} differ")
    from sklearn.metrics import accuracy_score, f1_score
    out = {}
    for k, emo in enumerate(IEMOCAP_EMOTIONS):
        out[f"{emo}_acc"] = float(accuracy_score(y[:, k], present[:, k]))
        out[f"{emo}_f1"] = float(f1_score(y[:, k], present[:, k], average="weighted"))
    out["wa"] = float(np.mean(score.argmax(axis=1) == y.argmax(axis=1)))
    out["mean_f1"] = float(np.mean([out[f"{e}_f1"] for e in IEMOCAP_EMOTIONS]))
    return out


def selection_score(metrics: dict[str, float], task: str) -> float:
    """The validation number model selection maximises: -MAE for regression, mean F1 for IEMOCAP."""
    return -metrics["mae"] if task == "regression" else metrics["mean_f1"]
