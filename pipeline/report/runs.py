"""The runs the report reads: every run's metrics.json, grouped {dataset: {variant: [per-seed
dicts]}}, with lookups, and on demand each run's timing.json and predictions.csv.

It holds no formatting and builds no table: the tables (pipeline/report/tables.py and the modules
it assembles) and the diagnostics (pipeline/report/diagnostics.py) read the runs through it.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from pipeline import paths
from pipeline.data.schema import IEMOCAP_EMOTIONS
from pipeline.report.stats import mean_std


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


def outputs_labels(df: pd.DataFrame, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(model outputs, labels) of a predictions.csv frame: scores and one-hot labels for IEMOCAP."""
    if task == "regression":
        return df["prediction"].to_numpy(np.float64), df["label"].to_numpy(np.float64)
    return (df[[f"{e}_score" for e in IEMOCAP_EMOTIONS]].to_numpy(np.float64),
            df[[f"{e}_label" for e in IEMOCAP_EMOTIONS]].to_numpy(np.int64))


def task_of(ds: str) -> str:
    return "classification" if ds == "iemocap" else "regression"
