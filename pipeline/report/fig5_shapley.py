"""Figure 5 / supplementary Fig. 1: modality contributions under SGM (fig5_shapley.png,
reports/plots/shapley/).

Shapley values can be negative; a share is max(psi_m, 0) / sum_k max(psi_k, 0), per seed and
epoch, then averaged over seeds. The phase-2 marker is the mean over `pase` seeds of the first
epoch logged with phase 2.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pipeline.config import Config
from pipeline.report.fig_common import (DATASET_NAME, MODALITY_NAME, MODALITY_ORDER, Skip,
                                        any_synthetic, load_runs, remove, save_png, titled, wrap,
                                        write_csv)

# the figures stage logs under one name, whichever module draws (filter on it: tests, PIPELINE_LOG)
log = logging.getLogger("pipeline.report.figures")

MODALITY_COLOR = {"text": "#1f77b4", "audio": "#2ca02c", "vision": "#ff7f0e"}
SCORE_COLOR = "#d62728"  # the supplementary draws Acc-2 in red


def _score_key(ds: str) -> tuple[str, str]:
    return ("valid_wa", "Validation WA (%)") if ds == "iemocap" else \
        ("valid_acc2_non0", "Validation Acc-2 (non0, %)")


def _history_table(runs: list[dict], ds: str) -> tuple[pd.DataFrame, float, list[str]] | None:
    """Per-epoch mean over seeds of the Shapley shares and the validation score; the mean
    phase-2 start epoch (nan when no seed switched); the modalities."""
    score_key, _ = _score_key(ds)
    frames, starts, mods = [], [], None
    for r in runs:
        f = r["dir"] / "history.json"
        if not f.exists():
            continue
        h = pd.DataFrame(json.loads(f.read_text()))
        run_mods = [m for m in MODALITY_ORDER if f"shapley_{m}" in h.columns]
        if not run_mods or "epoch" not in h.columns:
            continue
        mods = mods or run_mods
        if run_mods != mods:
            continue
        psi = h[[f"shapley_{m}" for m in mods]].to_numpy(dtype=np.float64).clip(min=0)
        total = psi.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(total > 0, psi / np.where(total > 0, total, 1), np.nan)
        df = pd.DataFrame(share, columns=[f"share_{m}" for m in mods])
        df["epoch"] = h["epoch"].to_numpy()
        df["valid_score"] = h[score_key].to_numpy(dtype=np.float64) if score_key in h else np.nan
        frames.append(df)
        if "phase" in h.columns and (h["phase"] == 2).any():
            starts.append(float(h.loc[h["phase"] == 2, "epoch"].min()))
    if not frames:
        return None
    all_ = pd.concat(frames)
    table = all_.groupby("epoch").mean().reset_index()
    table["n_seeds"] = all_.groupby("epoch").size().to_numpy()
    return table, (float(np.mean(starts)) if starts else float("nan")), mods


def shapley_figure(cfg: Config, fig_dir: Path, plot_dir: Path) -> dict[str, Path]:
    conditions = (("pase", True), ("pase-no_sgm", False))
    panels = []
    for ds in cfg.datasets:
        found = {}
        for variant, sgm in conditions:
            runs = load_runs(cfg, ds, variant)
            res = _history_table(runs, ds) if runs else None
            if res is not None:
                found[variant] = (sgm, runs, *res)
        if "pase" not in found:
            continue
        if "pase-no_sgm" not in found:
            log.info("figures: fig5_shapley: %s has no pase-no_sgm runs; drawing PaSE with SGM only", ds)
        panels.append((ds, found))
    if not panels:
        raise Skip("needs history.json with Shapley values of pase")
    synthetic = any_synthetic([r for _, found in panels for v in found.values() for r in v[1]])
    has_no_sgm = any("pase-no_sgm" in found for _, found in panels)
    title = titled("Modality contributions (Shapley shares, left) and validation score (right)\n"
                   + ("PaSE with SGM (solid) and without SGM (dashed)" if has_no_sgm
                      else "PaSE with SGM") + ", mean over seeds", synthetic)
    fig = Figure(figsize=(max(5.4 * len(panels), 7.5), 5.0), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    shap_dir = plot_dir / "shapley"
    remove(shap_dir)
    mods_seen: list[str] = []
    for ax, (ds, found) in zip(axes, panels):
        _, score_label = _score_key(ds)
        ax2 = ax.twinx()
        p2 = float("nan")
        for variant, (sgm, runs, table, start, mods) in found.items():
            ls = "-" if sgm else "--"
            for m in mods:
                ax.plot(table.epoch, table[f"share_{m}"], ls=ls, color=MODALITY_COLOR[m], lw=1.6)
                if m not in mods_seen:
                    mods_seen.append(m)
            ax2.plot(table.epoch, table.valid_score * 100, ls=ls, color=SCORE_COLOR, lw=1.6)
            if sgm:
                p2 = start
            out = table.copy()
            out.insert(0, "sgm", sgm)
            out.insert(0, "variant", variant)
            out.insert(0, "dataset", ds)
            out["valid_metric"] = _score_key(ds)[0].removeprefix("valid_")
            out["phase2_epoch"] = start
            out["synthetic"] = any_synthetic(runs)
            write_csv(out, shap_dir / f"{ds}_{variant}.csv")
        if np.isfinite(p2):
            ax.axvline(p2, color="black", ls=":", lw=1.2)
            lo, hi = ax.get_xlim()
            right = (p2 - lo) / (hi - lo) > 0.6  # label on the side of the line with room
            ax.annotate(f"phase 2 (SGM)\nfrom epoch {p2:.3g}", (p2, 0.02),
                        xycoords=("data", "axes fraction"), xytext=(-4 if right else 4, 0),
                        textcoords="offset points", ha="right" if right else "left", va="bottom",
                        fontsize=8, bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none",
                                          "alpha": 0.8})
        n = max(len(v[1]) for v in found.values())
        ax.set_title(f"{DATASET_NAME[ds]} ({n} seed{'s' if n > 1 else ''})", fontsize=10)
        ax.set_xlabel("Epoch")
        if ax is axes[0]:
            ax.set_ylabel("Shapley share per modality\n(ψ⁺ₘ / Σₖ ψ⁺ₖ, shares sum to 1)")
        ax.set_ylim(0, 1.05)
        ax2.set_ylabel(score_label, color=SCORE_COLOR)
        ax2.tick_params(axis="y", colors=SCORE_COLOR)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=MODALITY_COLOR[m], lw=2, label=f"{MODALITY_NAME[m]} share")
               for m in mods_seen]
    handles.append(Line2D([], [], color=SCORE_COLOR, lw=2, label="Validation score (right axis)"))
    handles.append(Line2D([], [], color="gray", ls="-", lw=1.6, label="with SGM (pase)"))
    if has_no_sgm:
        handles.append(Line2D([], [], color="gray", ls="--", lw=1.6, label="without SGM (pase-no_sgm)"))
    handles.append(Line2D([], [], color="black", ls=":", lw=1.2, label="phase-2 start (mean over seeds)"))
    fig.legend(handles=handles, loc="outside lower center", fontsize=8, frameon=False,
               ncol=max(1, min(len(handles), 4, int(fig.get_figwidth() / 2.3))))
    fig.suptitle(wrap(title, fig.get_figwidth(), 10), fontsize=10)
    return {"fig5_shapley": save_png(fig, fig_dir / "fig5_shapley.png", title), "shapley": shap_dir}
