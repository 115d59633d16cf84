"""Metrics files, tables and summaries: the `report` stage (`python -m pipeline report`).

Modules:
- `summary`: the stage's entry point `report(cfg, variants, out_dir=Path("reports"))`; writes
  reports/metrics.json (the headline, for `dvc metrics show` / `dvc exp show`),
  reports/metrics_detail.json (every metric and seed), reports/tables/, reports/README.md and
  reports/summary.md from the runs under data/runs/.
- `tables`: assembles the tables (`build_tables`): Tables 1-4, the efficiency table, the oracle and
  the diagnostics, each as Markdown, LaTeX (booktabs) and CSV; published numbers beside ours only
  when the data are real, never beside synthetic numbers. Its rooms, each importing only those
  listed before it: `runs` (reading the runs), `formatting` (names, units, the table model and its
  renderings), `builder` (the Builder and the tables' shared rows and notes), then one module per
  table: `table1`, `table2`, `table3`, `table4`, `efficiency`, and `diagnostics` (oracle, probes).
- `stats`: mean ± sample std over seeds, paired t / Wilcoxon tests against full PaSE, and the
  vectorised paired bootstrap confidence interval of a difference over test utterances.
- `paper`: the paper's published numbers (Tables 1-4, the supplementary's efficiency table, CP+SL's
  unverified figure) as data, each with its source, and the map from paper rows to our variants.
- `params`: parameter count of a variant's model without data or weights (`python -m pipeline count`).

The figures (reports/figures/) are the `figures` stage's, not this one's: `figures.make_figures`
draws each from its own module (`fig1_gain`, `fig3_tsne`, `fig4_gates`, `fig5_shapley`,
`fig_diagnostics`, sharing `fig_common`); README.md links them when they exist.
"""
