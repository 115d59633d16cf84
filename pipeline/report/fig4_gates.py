"""Figure 4: the mean PGF gate per modality and emotion (fig4_gates.png, reports/plots/gates.csv).

True emotion = argmax of the one-hot labels in predictions.csv; per seed the mean gate per
emotion, then mean (and std) over seeds. Without IEMOCAP in the run set: MOSI's (or MOSEI's)
sentiment classes instead, and the title says so.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.config import Config
from pipeline.report.fig_common import (DATASET_NAME, IEMOCAP_EMOTIONS, MODALITY_NAME, MODALITY_ORDER,
                                        SENTIMENTS, Skip, any_synthetic, load_runs,
                                        read_predictions, regression_dataset, save_png,
                                        sentiment_classes, titled, wrap, write_csv)

# the figures stage logs under one name, whichever module draws (filter on it: tests, PIPELINE_LOG)
log = logging.getLogger("pipeline.report.figures")


def _gate_groups(ds: str, pred: pd.DataFrame) -> tuple[np.ndarray, tuple[str, ...]]:
    if ds == "iemocap":
        labels = pred[[f"{e}_label" for e in IEMOCAP_EMOTIONS]].to_numpy()
        return labels.argmax(axis=1), tuple(e.capitalize() for e in IEMOCAP_EMOTIONS)
    return sentiment_classes(pred["label"].to_numpy()), SENTIMENTS


def gates_figure(cfg: Config, fig_dir: Path, plot_dir: Path) -> dict[str, Path]:
    def usable(ds):
        return [r for r in load_runs(cfg, ds, "pase") if (r["dir"] / "gate_mean_test.npy").exists()]

    ds = "iemocap" if "iemocap" in cfg.datasets else None
    runs = usable(ds) if ds else []
    fallback = not runs
    if fallback:
        ds = regression_dataset(cfg)
        runs = usable(ds) if ds else []
    if not runs:
        raise Skip("no gate_mean_test.npy of pase (PGF on) on IEMOCAP or MOSI/MOSEI")
    per_seed, groups, counts = [], None, None
    mods = None
    for r in runs:
        gates = np.load(r["dir"] / "gate_mean_test.npy").astype(np.float64)
        pred = read_predictions(r["dir"])
        run_mods = list(r["metrics"]["modalities"])
        if gates.shape != (len(pred), len(run_mods)):
            log.warning("figures: fig4_gates: %s: gates of shape %s for %d predictions and "
                        "modalities %s; seed left out", r["dir"], gates.shape, len(pred), run_mods)
            continue
        order = [m for m in MODALITY_ORDER if m in run_mods]
        if mods is not None and order != mods:
            continue
        mods = order
        gates = gates[:, [run_mods.index(m) for m in order]]
        grp, groups = _gate_groups(ds, pred)
        table = np.full((len(groups), len(order)), np.nan)
        for g in range(len(groups)):
            if (grp == g).any():
                table[g] = gates[grp == g].mean(axis=0)
        per_seed.append(table)
        counts = np.bincount(grp, minlength=len(groups))
    if not per_seed:
        raise Skip("no usable gate file")
    stack = np.stack(per_seed)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a group absent from every seed: nan
        mean = np.nanmean(stack, axis=0)
        std = np.nanstd(stack, axis=0, ddof=1) if len(stack) > 1 else np.zeros_like(mean)
    synthetic = any_synthetic(runs)
    what = "emotion" if ds == "iemocap" else "sentiment class"
    note = ("" if not fallback else
            f"\nIEMOCAP not in the run set: {DATASET_NAME[ds]} sentiment classes instead")
    title = titled(f"Mean PGF gate value per modality and {what}, {DATASET_NAME[ds]} test set\n"
                   + (f"PaSE, mean ± std over {len(per_seed)} seeds" if len(per_seed) > 1
                      else f"PaSE, seed {runs[0]['seed']}") + note, synthetic)
    rows = []
    for g, gname in enumerate(groups):
        for j, m in enumerate(mods):
            rows.append({"dataset": ds, "variant": "pase", "group_kind": what, "group": gname,
                         "modality": m, "cell": f"{gname} / {MODALITY_NAME[m]}",
                         "gate_mean": mean[g, j], "gate_std": std[g, j],
                         "n_samples": int(counts[g]), "n_seeds": len(per_seed),
                         "synthetic": synthetic})

    fig = Figure(figsize=(max(6.0, 2.6 + 1.4 * len(mods)), 2.4 + 0.8 * len(groups)),
                 layout="constrained")
    ax = fig.add_subplot()
    finite = mean[np.isfinite(mean)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi - lo < 1e-6:
        lo, hi = lo - 0.01, hi + 0.01
    im = ax.imshow(mean, cmap="viridis", vmin=lo, vmax=hi, aspect="auto")
    for g in range(len(groups)):
        for j in range(len(mods)):
            v = mean[g, j]
            if not np.isfinite(v):
                ax.text(j, g, "n/a", ha="center", va="center", fontsize=9)
                continue
            dark = (v - lo) / (hi - lo) < 0.55
            ax.text(j, g, f"{v:.3f}" + (f"\n±{std[g, j]:.3f}" if len(per_seed) > 1 else ""),
                    ha="center", va="center", fontsize=9, color="white" if dark else "black")
    ax.set_xticks(range(len(mods)))
    ax.set_xticklabels([MODALITY_NAME[m] for m in mods])
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels([f"{gname} (n={counts[g]})" for g, gname in enumerate(groups)])
    ax.set_xlabel("Modality")
    ax.set_ylabel(f"True {what} (test samples)")
    cb = fig.colorbar(im, ax=ax)
    cb.set_label("Mean gate σ(·) (0–1; colour: data range)")
    fig.suptitle(wrap(title, fig.get_figwidth(), 9), fontsize=9)
    return {"fig4_gates": save_png(fig, fig_dir / "fig4_gates.png", title),
            "gates": write_csv(pd.DataFrame(rows), plot_dir / "gates.csv")}
