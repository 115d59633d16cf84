"""The paper's figures, redrawn from this pipeline's run outputs (`data/runs/...`).

`make_figures(cfg)` writes, for each figure, a PNG under `reports/figures/` and the numbers it
plots as tidy CSV under `reports/plots/` (for `dvc plots`):

| figure (paper)                  | PNG                        | data (reports/plots/)             |
|---------------------------------|----------------------------|-----------------------------------|
| Fig. 1, gain over text-only     | fig1_modality_gain.png     | modality_gain.csv                 |
| Fig. 3, t-SNE of fused features | fig3_tsne.png              | tsne/<dataset>_<variant>.csv      |
| Fig. 4, PGF gates per emotion   | fig4_gates.png             | gates.csv                         |
| Fig. 5 / suppl. Fig. 1, SGM     | fig5_shapley.png           | shapley/<dataset>_<variant>.csv   |

It reads run outputs only (metrics.json, history.json, predictions.csv, fused_test.npy,
gate_mean_test.npy), and only of the variants and seeds that params.yaml lists: a figure whose
runs are missing is skipped with a log line (and an old copy of it is removed), never drawn from
stale or partial data. Every figure made from synthetic data says "SYNTHETIC DATA" in its title;
the title is also stored in the PNG's "Title" text chunk, so a test (or a reader with
`PIL.Image.open(p).text`) can check it without looking at pixels.

Choices, where the paper leaves room:
- Fig. 1: gain = F1 of the larger modality set minus F1 of `pase-T`, paired by seed, in percentage
  points; MOSI/MOSEI use the non0 weighted F1 (the paper's F1), IEMOCAP both its mean F1 over
  the four emotions and WA (two groups of bars). Error bars: sample std over seeds.
- Fig. 3: PCA to 50 dimensions when the fused vector is wider, then t-SNE (PCA init, fixed
  random_state); classes from the score with the neutral band of `prototype_classes`
  (pipeline/models/pase.py): y > 0.5 positive, y < -0.5 negative, else neutral. Each panel also
  gives the silhouette score of the classes in the fused space (not in the 2-D map), a number
  that does not depend on t-SNE's randomness.
- Fig. 4: true emotion = argmax of the one-hot labels in predictions.csv; per seed the mean gate
  per emotion, then mean (and std) over seeds.
- Fig. 5: Shapley values can be negative; a share is max(psi_m, 0) / sum_k max(psi_k, 0), per seed
  and epoch, then averaged over seeds. The phase-2 marker is the mean over `pase` seeds of the
  first epoch logged with phase 2.
"""
from __future__ import annotations

import json
import logging
import shutil
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pipeline import paths
from pipeline.config import Config
from pipeline.data.store import atomic_path, write_atomic

log = logging.getLogger(__name__)

IEMOCAP_EMOTIONS = ("neutral", "happy", "sad", "angry")  # as pipeline.data.schema
MODALITY_ORDER = ("text", "audio", "vision")
MODALITY_NAME = {"text": "Text", "audio": "Audio", "vision": "Visual"}
MODALITY_COLOR = {"text": "#1f77b4", "audio": "#2ca02c", "vision": "#ff7f0e"}
SCORE_COLOR = "#d62728"  # the supplementary draws Acc-2 in red
SENTIMENTS = ("Negative", "Neutral", "Positive")
SENTIMENT_COLOR = {"Negative": "#d62728", "Neutral": "#7f7f7f", "Positive": "#1f77b4"}
NEUTRAL_BAND = 0.5  # prototype_classes' default: the scores Acc-7 rounds to 0
TSNE_MAX_POINTS = 1500
TSNE_MIN_POINTS = 10  # fewer test utterances: no t-SNE panel
RANDOM_STATE = 0
DPI = 150
SYNTH = "SYNTHETIC DATA"
DATASET_NAME = {"mosi": "CMU-MOSI", "mosei": "CMU-MOSEI", "iemocap": "IEMOCAP"}
VARIANT_NAME = {"pase": "PaSE (ours)", "self_mm": "Self-MM", "late_fusion": "Late fusion",
                "ef_lstm": "EF-LSTM", "tfn": "TFN", "lmf": "LMF", "mult": "MulT",
                "mag_bert": "MAG-BERT", "cpsl": "CP+SL"}
# Fig. 1: (bar label, variant, what it adds to text)
COMBOS = (("+A", "pase-TA", "audio"), ("+V", "pase-TV", "visual"), ("+VA", "pase", "audio + visual"))
COMBO_COLOR = {"+A": "#2ca02c", "+V": "#ff7f0e", "+VA": "#9467bd"}
GAIN_METRICS = {"mosi": (("f1_non0", "F1 (non0)"),), "mosei": (("f1_non0", "F1 (non0)"),),
                "iemocap": (("mean_f1", "mean F1"), ("wa", "WA"))}
FIGURES = {"fig1_modality_gain": "modality_gain.csv", "fig3_tsne": "tsne",
           "fig4_gates": "gates.csv", "fig5_shapley": "shapley",
           "fig_diagnostics": "diagnostics.csv"}


SKIPPED = "skipped.json"  # under reports/plots: {figure: why it was not drawn}, for the report


class Skip(Exception):
    """A figure cannot be drawn from this run set; the message says why (shown in the report)."""


# ------------------------------------------------------------------ reading runs

def _load_runs(cfg: Config, dataset: str, variant: str) -> list[dict]:
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


def _synthetic(runs) -> bool:
    return any(bool(r["metrics"].get("synthetic")) for r in runs)


def _title(text: str, synthetic: bool) -> str:
    return f"{SYNTH} — {text}" if synthetic else text


def _wrap(text: str, width_in: float, fontsize: float) -> str:
    """Break each line of a title so it fits a figure `width_in` inches wide (the layout engine
    makes room for long titles vertically, never horizontally)."""
    chars = max(20, int(width_in * 72 / (fontsize * 0.56)))
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


def _metric(m: dict, key: str) -> float:
    test = m["test"]
    if key == "mean_f1" and key not in test:
        return float(np.mean([test[f"{e}_f1"] for e in IEMOCAP_EMOTIONS]))
    return float(test[key])


def _std(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(x.std(ddof=1)) if len(x) > 1 else 0.0


def _regression_dataset(cfg: Config) -> str | None:
    if "mosi" in cfg.datasets:
        return "mosi"
    return next((d for d in cfg.datasets if d != "iemocap"), None)


def sentiment_classes(y: np.ndarray, band: float = NEUTRAL_BAND) -> np.ndarray:
    """0 negative / 1 neutral / 2 positive, the rule of pipeline.models.pase.prototype_classes."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    return np.where(y > band, 2, np.where(y < -band, 0, 1))


def _save(fig: Figure, path: Path, title: str) -> Path:
    with atomic_path(path) as tmp:
        # No date in the metadata: the same runs give the same bytes.
        fig.savefig(tmp, dpi=DPI, format="png", metadata={"Title": title, "Software": "pipeline.report.figures"})
    return path


def _write_csv(df: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")
    return path


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


# ------------------------------------------------------------------ Figure 1

def modality_gain(cfg: Config, fig_dir: Path, plot_dir: Path) -> dict[str, Path]:
    rows = []
    synthetic = False
    for ds in cfg.datasets:
        text_only = {r["seed"]: r for r in _load_runs(cfg, ds, "pase-T")}
        if not text_only:
            continue
        combined = {v: {r["seed"]: r for r in _load_runs(cfg, ds, v)} for _, v, _ in COMBOS}
        for key, metric_name in GAIN_METRICS[ds]:
            for label, variant, added in COMBOS:
                runs = combined[variant]
                seeds = sorted(set(runs) & set(text_only))
                if not seeds:
                    continue
                base = np.array([_metric(text_only[s]["metrics"], key) for s in seeds]) * 100
                full = np.array([_metric(runs[s]["metrics"], key) for s in seeds]) * 100
                gain = full - base
                synth = _synthetic([runs[s] for s in seeds] + [text_only[s] for s in seeds])
                synthetic |= synth
                rows.append({"dataset": ds, "metric": key, "metric_name": metric_name,
                             "combination": label, "variant": variant, "baseline": "pase-T",
                             "label": f"{ds.upper()} {metric_name} {label}",
                             "gain_pp": gain.mean(), "gain_std_pp": _std(gain),
                             "text_only_pct": base.mean(), "combined_pct": full.mean(),
                             "n_seeds": len(seeds), "seeds": " ".join(map(str, seeds)),
                             "synthetic": synth})
    if not rows:
        raise Skip("needs runs of pase-T and of pase-TA, pase-TV or pase (variants: "
                   f"{', '.join(cfg.variants)})")
    df = pd.DataFrame(rows)
    groups = list(dict.fromkeys(zip(df.dataset, df.metric)))
    present = [c for c, _, _ in COMBOS if c in set(df.combination)]
    n_seeds = sorted(set(df.n_seeds))
    seeds_txt = f"{n_seeds[0]}" if len(n_seeds) == 1 else f"{n_seeds[0]}–{n_seeds[-1]}"
    plural = "" if n_seeds == [1] else "s"
    title = _title(f"Gain over text-only PaSE from adding audio (+A), visual (+V) or both (+VA)\n"
                   f"test split, mean ± std over {seeds_txt} seed{plural}", synthetic)

    fig = Figure(figsize=(max(6.0, 1.9 * len(groups) + 2.2), 5.0), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(present)
    ymax = ymin = 0.0
    for j, combo in enumerate(present):
        sub = df[df.combination == combo].set_index(["dataset", "metric"])
        xs, ys, es = [], [], []
        for i, g in enumerate(groups):
            if g in sub.index:
                xs.append(i + (j - (len(present) - 1) / 2) * width)
                ys.append(sub.loc[g, "gain_pp"])
                es.append(sub.loc[g, "gain_std_pp"])
        added = next(a for c, _, a in COMBOS if c == combo)
        ax.bar(xs, ys, width * 0.92, yerr=es, capsize=3, color=COMBO_COLOR[combo],
               label=f"{combo} (text + {added})", error_kw={"elinewidth": 1})
        for x, y, e in zip(xs, ys, es):
            top = y + e if y >= 0 else y - e
            ax.annotate(f"{y:+.2f}", (x, top), xytext=(0, 3 if y >= 0 else -3),
                        textcoords="offset points", ha="center",
                        va="bottom" if y >= 0 else "top", fontsize=8)
            ymax, ymin = max(ymax, y + e), min(ymin, y - e)
    span = max(ymax - ymin, 1e-6)
    ax.set_ylim(ymin - 0.12 * span if ymin < 0 else 0, ymax + 0.15 * span)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{DATASET_NAME[d]}\n{dict(GAIN_METRICS[d])[k]}" for d, k in groups])
    ax.set_ylabel("Gain over text-only (percentage points)")
    ax.set_xlabel("Dataset and test metric")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=len(present),
               fontsize=8, frameon=False, title="Modalities added to text", title_fontsize=8)
    fig.suptitle(_wrap(title, fig.get_figwidth(), 10), fontsize=10)
    return {"fig1_modality_gain": _save(fig, fig_dir / "fig1_modality_gain.png", title),
            "modality_gain": _write_csv(df, plot_dir / "modality_gain.csv")}


# ------------------------------------------------------------------ Figure 3

def _read_predictions(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "predictions.csv", dtype={"id": str})


def tsne_figure(cfg: Config, fig_dir: Path, plot_dir: Path) -> dict[str, Path]:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    ds = _regression_dataset(cfg)
    seed = cfg.seeds[0]
    if ds is None:
        raise Skip("needs MOSI or MOSEI in datasets")
    baselines = sorted((v for v in cfg.variants if not v.startswith("pase")),
                       key=lambda v: (v != "self_mm", cfg.variants.index(v)))
    panels = []
    for variant in baselines + ["pase"]:
        run = next((r for r in _load_runs(cfg, ds, variant) if r["seed"] == seed), None)
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
        pred = _read_predictions(run["dir"])
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
    synthetic = _synthetic([r for _, r, *_ in results])
    n = len(results[-1][2])
    title = _title(f"t-SNE of the fused test representations, {DATASET_NAME[ds]}, seed {seed} "
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
    fig.suptitle(_wrap(title, fig.get_figwidth(), 11), fontsize=11)
    tsne_dir = plot_dir / "tsne"
    _remove(tsne_dir)
    for df in tidy:
        _write_csv(df, tsne_dir / f"{ds}_{df['variant'].iloc[0]}.csv")
    return {"fig3_tsne": _save(fig, fig_dir / "fig3_tsne.png", title), "tsne": tsne_dir}


# ------------------------------------------------------------------ Figure 4

def _gate_groups(ds: str, pred: pd.DataFrame) -> tuple[np.ndarray, tuple[str, ...]]:
    if ds == "iemocap":
        labels = pred[[f"{e}_label" for e in IEMOCAP_EMOTIONS]].to_numpy()
        return labels.argmax(axis=1), tuple(e.capitalize() for e in IEMOCAP_EMOTIONS)
    return sentiment_classes(pred["label"].to_numpy()), SENTIMENTS


def gates_figure(cfg: Config, fig_dir: Path, plot_dir: Path) -> dict[str, Path]:
    def usable(ds):
        return [r for r in _load_runs(cfg, ds, "pase") if (r["dir"] / "gate_mean_test.npy").exists()]

    ds = "iemocap" if "iemocap" in cfg.datasets else None
    runs = usable(ds) if ds else []
    fallback = not runs
    if fallback:
        ds = _regression_dataset(cfg)
        runs = usable(ds) if ds else []
    if not runs:
        raise Skip("no gate_mean_test.npy of pase (PGF on) on IEMOCAP or MOSI/MOSEI")
    per_seed, groups, counts = [], None, None
    mods = None
    for r in runs:
        gates = np.load(r["dir"] / "gate_mean_test.npy").astype(np.float64)
        pred = _read_predictions(r["dir"])
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
    synthetic = _synthetic(runs)
    what = "emotion" if ds == "iemocap" else "sentiment class"
    note = ("" if not fallback else
            f"\nIEMOCAP not in the run set: {DATASET_NAME[ds]} sentiment classes instead")
    title = _title(f"Mean PGF gate value per modality and {what}, {DATASET_NAME[ds]} test set\n"
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
    fig.suptitle(_wrap(title, fig.get_figwidth(), 9), fontsize=9)
    return {"fig4_gates": _save(fig, fig_dir / "fig4_gates.png", title),
            "gates": _write_csv(pd.DataFrame(rows), plot_dir / "gates.csv")}


# ------------------------------------------------------------------ Figure 5

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
            runs = _load_runs(cfg, ds, variant)
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
    synthetic = _synthetic([r for _, found in panels for v in found.values() for r in v[1]])
    has_no_sgm = any("pase-no_sgm" in found for _, found in panels)
    title = _title("Modality contributions (Shapley shares, left) and validation score (right)\n"
                   + ("PaSE with SGM (solid) and without SGM (dashed)" if has_no_sgm
                      else "PaSE with SGM") + ", mean over seeds", synthetic)
    fig = Figure(figsize=(max(5.4 * len(panels), 7.5), 5.0), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    shap_dir = plot_dir / "shapley"
    _remove(shap_dir)
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
            out["synthetic"] = _synthetic(runs)
            _write_csv(out, shap_dir / f"{ds}_{variant}.csv")
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
    fig.suptitle(_wrap(title, fig.get_figwidth(), 10), fontsize=10)
    return {"fig5_shapley": _save(fig, fig_dir / "fig5_shapley.png", title), "shapley": shap_dir}


# ------------------------------------------------------------------ entry point

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
    synth = _synthetic(_load_runs(cfg, dss[0], variants[0])) if variants else True
    png = _save(fig, fig_dir / "fig_diagnostics.png",
                _title("Encoder probes (bars) vs unimodal models (dashed)", synth))
    csv = _write_csv(df, plot_dir / "diagnostics.csv")
    return {"fig_diagnostics": png, "diagnostics": csv}


def make_figures(cfg: Config, out_dir: Path = paths.REPORTS) -> dict[str, Path]:
    """Draw every figure whose runs exist. Returns {name: path}: the PNGs as `fig1_modality_gain`,
    `fig3_tsne`, `fig4_gates`, `fig5_shapley`, and their data as `modality_gain` (CSV), `tsne`
    (folder of CSVs), `gates` (CSV), `shapley` (folder of CSVs). A skipped figure has no entry,
    its old PNG and data are removed, and reports/plots/skipped.json says why (the report shows
    it). Both folders always exist, as dvc.yaml declares them, whatever subset of datasets and
    variants ran."""
    out_dir = Path(out_dir)
    fig_dir, plot_dir = out_dir / "figures", out_dir / "plots"
    fig_dir.mkdir(parents=True, exist_ok=True)
    plot_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for name, maker in (("fig1_modality_gain", modality_gain), ("fig3_tsne", tsne_figure),
                        ("fig4_gates", gates_figure), ("fig5_shapley", shapley_figure),
                        ("fig_diagnostics", diagnostics_figure)):
        try:
            result = maker(cfg, fig_dir, plot_dir)
        except Skip as e:
            log.info("figures: skipping %s: %s", name, e)
            skipped[name], result = str(e), {}
        except Exception as e:  # noqa: BLE001 - one figure must not cost the others and the report
            log.exception("figures: %s failed; skipped", name)
            skipped[name], result = f"drawing failed ({type(e).__name__}: {e})", {}
        if not result:
            _remove(fig_dir / f"{name}.png")
            _remove(plot_dir / FIGURES[name])
        made.update(result)
    write_atomic(plot_dir / SKIPPED, json.dumps(skipped, indent=2, sort_keys=True) + "\n")
    for name, p in made.items():
        if name.startswith("fig"):
            log.info("figures: wrote %s", p)
    return made
