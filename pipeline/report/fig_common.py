"""What every figure of the figures stage (pipeline/report/figures.py) shares: reading the runs
params.yaml lists, the names and colours of modalities, datasets and variants, the synthetic-data
title, and writing a PNG or CSV atomically.
"""
from __future__ import annotations

import json
import logging
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline import paths
from pipeline.config import Config
from pipeline.data.store import atomic_path

# the figures stage logs under one name, whichever module draws (filter on it: tests, PIPELINE_LOG)
log = logging.getLogger("pipeline.report.figures")

IEMOCAP_EMOTIONS = ("neutral", "happy", "sad", "angry")  # as pipeline.data.schema
MODALITY_ORDER = ("text", "audio", "vision")
MODALITY_NAME = {"text": "Text", "audio": "Audio", "vision": "Visual"}
SENTIMENTS = ("Negative", "Neutral", "Positive")
NEUTRAL_BAND = 0.5  # prototype_classes' default: the scores Acc-7 rounds to 0
DPI = 150
SYNTH = "SYNTHETIC DATA"
DATASET_NAME = {"mosi": "CMU-MOSI", "mosei": "CMU-MOSEI", "iemocap": "IEMOCAP"}
VARIANT_NAME = {"pase": "PaSE (ours)", "self_mm": "Self-MM", "late_fusion": "Late fusion",
                "ef_lstm": "EF-LSTM", "tfn": "TFN", "lmf": "LMF", "mult": "MulT",
                "mag_bert": "MAG-BERT", "cpsl": "CP+SL"}


class Skip(Exception):
    """A figure cannot be drawn from this run set; the message says why (shown in the report)."""


# ------------------------------------------------------------------ reading runs

def load_runs(cfg: Config, dataset: str, variant: str) -> list[dict]:
    """The finished, applicable runs of `variant` on `dataset` for the configured seeds:
    [{"seed", "dir", "metrics"}]. Empty when the variant is not in cfg.variants."""
    if variant not in cfg.variants or dataset not in cfg.datasets:
        return []
    runs, missing = [], []
    for seed in cfg.seeds:
        d = paths.seed_dir(dataset, variant, seed)
        f = d / "metrics.json"
        if not f.exists():
            missing.append(seed)
            continue
        m = json.loads(f.read_text())
        if m.get("status") == "not applicable" or "test" not in m:
            continue
        runs.append({"seed": seed, "dir": d, "metrics": m})
    if missing:
        log.warning("figures: %s/%s has no metrics.json for seed(s) %s; using the other seeds",
                    dataset, variant, ", ".join(map(str, missing)))
    return runs


def any_synthetic(runs) -> bool:
    return any(bool(r["metrics"].get("synthetic")) for r in runs)


def titled(text: str, synthetic: bool) -> str:
    return f"{SYNTH} — {text}" if synthetic else text


def wrap(text: str, width_in: float, fontsize: float) -> str:
    """Break each line of a title so it fits a figure `width_in` inches wide (the layout engine
    makes room for long titles vertically, never horizontally)."""
    chars = max(20, int(width_in * 72 / (fontsize * 0.56)))
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


def regression_dataset(cfg: Config) -> str | None:
    if "mosi" in cfg.datasets:
        return "mosi"
    return next((d for d in cfg.datasets if d != "iemocap"), None)


def sentiment_classes(y: np.ndarray, band: float = NEUTRAL_BAND) -> np.ndarray:
    """0 negative / 1 neutral / 2 positive, the rule of pipeline.models.pase.prototype_classes."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    return np.where(y > band, 2, np.where(y < -band, 0, 1))


def read_predictions(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "predictions.csv", dtype={"id": str})


# ------------------------------------------------------------------ writing

def save_png(fig: Figure, path: Path, title: str) -> Path:
    with atomic_path(path) as tmp:
        # No date in the metadata: the same runs give the same bytes. "Software" names the stage's
        # entry module, as before the figures were split into modules: same bytes still.
        fig.savefig(tmp, dpi=DPI, format="png", metadata={"Title": title, "Software": "pipeline.report.figures"})
    return path


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")
    return path


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
