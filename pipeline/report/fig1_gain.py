"""Figure 1: the F1 gain from adding audio, vision or both to text only (fig1_modality_gain.png,
reports/plots/modality_gain.csv).

Gain = F1 of the larger modality set minus F1 of `pase-T`, paired by seed, in percentage points;
MOSI/MOSEI use the non0 weighted F1 (the paper's F1), IEMOCAP both its mean F1 over the four
emotions and WA (two groups of bars). Error bars: sample std over seeds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.config import Config
from pipeline.report.fig_common import (DATASET_NAME, IEMOCAP_EMOTIONS, Skip, any_synthetic,
                                        load_runs, save_png, titled, wrap, write_csv)

# Fig. 1: (bar label, variant, what it adds to text)
COMBOS = (("+A", "pase-TA", "audio"), ("+V", "pase-TV", "visual"), ("+VA", "pase", "audio + visual"))
COMBO_COLOR = {"+A": "#2ca02c", "+V": "#ff7f0e", "+VA": "#9467bd"}
GAIN_METRICS = {"mosi": (("f1_non0", "F1 (non0)"),), "mosei": (("f1_non0", "F1 (non0)"),),
                "iemocap": (("mean_f1", "mean F1"), ("wa", "WA"))}


def _metric(m: dict, key: str) -> float:
    test = m["test"]
    if key == "mean_f1" and key not in test:
        return float(np.mean([test[f"{e}_f1"] for e in IEMOCAP_EMOTIONS]))
    return float(test[key])


def _std(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(x.std(ddof=1)) if len(x) > 1 else 0.0


def modality_gain(cfg: Config, fig_dir: Path, plot_dir: Path) -> dict[str, Path]:
    rows = []
    synthetic = False
    for ds in cfg.datasets:
        text_only = {r["seed"]: r for r in load_runs(cfg, ds, "pase-T")}
        if not text_only:
            continue
        combined = {v: {r["seed"]: r for r in load_runs(cfg, ds, v)} for _, v, _ in COMBOS}
        for key, metric_name in GAIN_METRICS[ds]:
            for label, variant, added in COMBOS:
                runs = combined[variant]
                seeds = sorted(set(runs) & set(text_only))
                if not seeds:
                    continue
                base = np.array([_metric(text_only[s]["metrics"], key) for s in seeds]) * 100
                full = np.array([_metric(runs[s]["metrics"], key) for s in seeds]) * 100
                gain = full - base
                synth = any_synthetic([runs[s] for s in seeds] + [text_only[s] for s in seeds])
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
    title = titled(f"Gain over text-only PaSE from adding audio (+A), visual (+V) or both (+VA)\n"
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
    fig.suptitle(wrap(title, fig.get_figwidth(), 10), fontsize=10)
    return {"fig1_modality_gain": save_png(fig, fig_dir / "fig1_modality_gain.png", title),
            "modality_gain": write_csv(df, plot_dir / "modality_gain.csv")}
