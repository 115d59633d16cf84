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

The figures, one module each: fig1_gain.py, fig3_tsne.py, fig4_gates.py, fig5_shapley.py (each
says the choices it makes where the paper leaves room) and fig_diagnostics.py (the imbalance
diagnostics, pipeline/report/diagnostics.py); what they share is in fig_common.py.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from pipeline import paths
from pipeline.config import Config
from pipeline.data.store import write_atomic
from pipeline.report.fig1_gain import modality_gain
from pipeline.report.fig3_tsne import tsne_figure
from pipeline.report.fig4_gates import gates_figure
from pipeline.report.fig5_shapley import shapley_figure
from pipeline.report.fig_common import Skip, remove
from pipeline.report.fig_diagnostics import diagnostics_figure

log = logging.getLogger(__name__)

FIGURES = {"fig1_modality_gain": "modality_gain.csv", "fig3_tsne": "tsne",
           "fig4_gates": "gates.csv", "fig5_shapley": "shapley",
           "fig_diagnostics": "diagnostics.csv"}


SKIPPED = "skipped.json"  # under reports/plots: {figure: why it was not drawn}, for the report


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
            remove(fig_dir / f"{name}.png")
            remove(plot_dir / FIGURES[name])
        made.update(result)
    write_atomic(plot_dir / SKIPPED, json.dumps(skipped, indent=2, sort_keys=True) + "\n")
    for name, p in made.items():
        if name.startswith("fig"):
            log.info("figures: wrote %s", p)
    return made
