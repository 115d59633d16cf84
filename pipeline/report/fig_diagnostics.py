"""The imbalance diagnostics figure (fig_diagnostics.png, reports/plots/diagnostics.csv): the
numbers of pipeline/report/diagnostics.py, drawn.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.config import Config
from pipeline.report.fig_common import (VARIANT_NAME, Skip, any_synthetic, load_runs, save_png,
                                        titled, write_csv)


def diagnostics_figure(cfg: Config, fig_dir: Path, plot_dir: Path) -> dict[str, Path]:
    """Imbalance diagnostics (pipeline/report/diagnostics.py): per dataset, each diagnosed
    model's encoder probes (bars, mean ± sd over seeds) and the unimodal models (dashed lines)."""
    from pipeline.report import diagnostics as dg
    variants = [v for v in dg.DIAGNOSED if v in cfg.variants]
    rows = [r for ds in cfg.datasets for r in dg.collect(ds, variants, cfg.seeds)]
    if not rows:
        raise Skip("needs probe_features.npz of " + ", ".join(dg.DIAGNOSED[:-1]) + " or "
                   f"{dg.DIAGNOSED[-1]} runs")
    df = pd.DataFrame(rows)
    dss = list(dict.fromkeys(df["dataset"]))
    fig = Figure(figsize=(4.2 * len(dss) + 1.0, 3.8), layout="constrained")
    axes = fig.subplots(1, len(dss), squeeze=False)[0]
    mods = ["text", "audio", "vision"]
    colors = {"text": "#1f77b4", "audio": "#2ca02c", "vision": "#ff7f0e"}
    for ax, ds in zip(axes, dss):
        d = df[df["dataset"] == ds]
        vs = [v for v in variants if v in set(d["variant"])]
        width = 0.8 / len(mods)
        for j, m in enumerate(mods):
            g = d[d["modality"] == m].groupby("variant")["probe"]
            means = [g.mean().get(v, np.nan) for v in vs]
            stds = [g.std().get(v, 0.0) if g.count().get(v, 0) > 1 else 0.0 for v in vs]
            xs = np.arange(len(vs)) + (j - 1) * width
            ax.bar(xs, means, width, yerr=stds, color=colors[m], label=f"{m} probe")
            uni = d[d["modality"] == m]["unimodal"].dropna()
            if len(uni):
                ax.axhline(uni.mean(), color=colors[m], ls="--", lw=1)
        ax.set_xticks(np.arange(len(vs)))
        ax.set_xticklabels([VARIANT_NAME.get(v, v) for v in vs], rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(d["metric"].iloc[0])
        ax.set_title(ds.upper(), fontsize=9)
    axes[0].legend(fontsize=7)
    synth = any_synthetic(load_runs(cfg, dss[0], variants[0])) if variants else True
    png = save_png(fig, fig_dir / "fig_diagnostics.png",
                titled("Encoder probes (bars) vs unimodal models (dashed)", synth))
    csv = write_csv(df, plot_dir / "diagnostics.csv")
    return {"fig_diagnostics": png, "diagnostics": csv}
