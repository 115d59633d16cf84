"""Figure 3: t-SNE of the fused test representations (fig3_tsne.png, reports/plots/tsne/).

PCA to 50 dimensions when the fused vector is wider, then t-SNE (PCA init, fixed random_state);
classes from the score with the neutral band of `prototype_classes` (pipeline/models/pase.py):
y > 0.5 positive, y < -0.5 negative, else neutral. Each panel also gives the silhouette score of
the classes in the fused space (not in the 2-D map), a number that does not depend on t-SNE's
randomness.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.config import Config
from pipeline.report.fig_common import (DATASET_NAME, NEUTRAL_BAND, SENTIMENTS, VARIANT_NAME, Skip,
                                        any_synthetic, load_runs, read_predictions,
                                        regression_dataset, remove, save_png, sentiment_classes,
                                        titled, wrap, write_csv)

# the figures stage logs under one name, whichever module draws (filter on it: tests, PIPELINE_LOG)
log = logging.getLogger("pipeline.report.figures")

SENTIMENT_COLOR = {"Negative": "#d62728", "Neutral": "#7f7f7f", "Positive": "#1f77b4"}
TSNE_MAX_POINTS = 1500
TSNE_MIN_POINTS = 10  # fewer test utterances: no t-SNE panel
RANDOM_STATE = 0


def tsne_figure(cfg: Config, fig_dir: Path, plot_dir: Path) -> dict[str, Path]:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    ds = regression_dataset(cfg)
    seed = cfg.seeds[0]
    if ds is None:
        raise Skip("needs MOSI or MOSEI in datasets")
    baselines = sorted((v for v in cfg.variants if not v.startswith("pase")),
                       key=lambda v: (v != "self_mm", cfg.variants.index(v)))
    panels = []
    for variant in baselines + ["pase"]:
        run = next((r for r in load_runs(cfg, ds, variant) if r["seed"] == seed), None)
        if run is None or not (run["dir"] / "fused_test.npy").exists():
            if variant == "pase":
                raise Skip(f"no fused_test.npy of pase on {ds}, seed {seed}")
            continue
        if variant != "pase" and len(panels) >= 2:
            continue
        panels.append((variant, run))
    rng_state = RANDOM_STATE
    tidy, results = [], []
    for variant, run in panels:
        fused = np.load(run["dir"] / "fused_test.npy").astype(np.float64)
        pred = read_predictions(run["dir"])
        if len(pred) != len(fused) or len(fused) < TSNE_MIN_POINTS:
            log.warning("figures: fig3_tsne: %s has %d fused vectors for %d predictions; panel "
                        "left out", run["dir"], len(fused), len(pred))
            continue
        classes = sentiment_classes(pred["label"].to_numpy())
        idx = np.arange(len(fused))
        if len(idx) > TSNE_MAX_POINTS:  # the same subsample for every panel of the same test set
            idx = np.sort(np.random.default_rng(rng_state).choice(len(idx), TSNE_MAX_POINTS,
                                                                 replace=False))
        x, cls = fused[idx], classes[idx]
        if x.shape[1] > 50:  # at most as many components as points (small test splits)
            x = PCA(min(50, len(x)), svd_solver="full", random_state=rng_state).fit_transform(x)
        perplexity = float(min(30.0, (len(x) - 1) / 3))
        # One thread: Barnes-Hut's OpenMP loop is 2-3x slower on a busy 2-core machine with
        # more, and one thread sums in one fixed order (same bytes on every run).
        with threadpool_limits(1):
            emb = TSNE(2, perplexity=perplexity, init="pca", learning_rate="auto",
                       random_state=rng_state).fit_transform(x)
        sil = (float(silhouette_score(fused[idx], cls)) if len(set(cls)) > 1 else float("nan"))
        results.append((variant, run, emb, cls, sil))
        tidy.append(pd.DataFrame({
            "dataset": ds, "variant": variant, "seed": seed, "id": pred["id"].to_numpy()[idx],
            "tsne_x": emb[:, 0], "tsne_y": emb[:, 1], "label": pred["label"].to_numpy()[idx],
            "sentiment": [SENTIMENTS[c] for c in cls], "synthetic": bool(run["metrics"].get("synthetic"))}))
    if not results or results[-1][0] != "pase":
        raise Skip(f"no usable PaSE panel (t-SNE needs at least {TSNE_MIN_POINTS} test utterances)")
    synthetic = any_synthetic([r for _, r, *_ in results])
    n = len(results[-1][2])
    title = titled(f"t-SNE of the fused test representations, {DATASET_NAME[ds]}, seed {seed} "
                   f"({n} utterances)", synthetic)
    fig = Figure(figsize=(max(4.3 * len(results), 6.0), 5.0), layout="constrained")
    axes = fig.subplots(1, len(results), squeeze=False)[0]
    for k, (ax, (variant, run, emb, cls, sil)) in enumerate(zip(axes, results)):
        for c, name in enumerate(SENTIMENTS):
            sel = cls == c
            ax.scatter(emb[sel, 0], emb[sel, 1], s=7, alpha=0.7, color=SENTIMENT_COLOR[name],
                       label=f"{name} ({sel.sum()})", linewidths=0, rasterized=True)
        ax.set_title(f"({chr(97 + k)}) {VARIANT_NAME.get(variant, variant)}\n"
                     f"silhouette (fused space) {sil:.3f}", fontsize=10)
        ax.set_xlabel("t-SNE 1 (arbitrary units)")
        ax.set_ylabel("t-SNE 2 (arbitrary units)")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.legend(*axes[-1].get_legend_handles_labels(), loc="outside lower center", ncol=3,
               fontsize=9, markerscale=2.5, frameon=False, title_fontsize=9,
               title=f"True sentiment (score y; neutral: |y| ≤ {NEUTRAL_BAND:g}), count in the PaSE panel")
    fig.suptitle(wrap(title, fig.get_figwidth(), 11), fontsize=11)
    tsne_dir = plot_dir / "tsne"
    remove(tsne_dir)
    for df in tidy:
        write_csv(df, tsne_dir / f"{ds}_{df['variant'].iloc[0]}.csv")
    return {"fig3_tsne": save_png(fig, fig_dir / "fig3_tsne.png", title), "tsne": tsne_dir}
