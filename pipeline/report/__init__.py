"""Metrics files, tables and summaries: the `report` stage (`python -m pipeline report`).

Modules:
- `summary`: the stage's entry point `report(cfg, variants, out_dir=Path("reports"))`; writes
  reports/metrics.json (the headline, for `dvc metrics show` / `dvc exp show`),
  reports/metrics_detail.json (every metric and seed), reports/tables/, reports/README.md and
  reports/summary.md from the runs under data/runs/.
- `tables`: Tables 1-4 and the efficiency table, each as Markdown, LaTeX (booktabs) and CSV;
  published numbers beside ours only when the data are real, never beside synthetic numbers.
- `stats`: mean ± sample std over seeds, paired t / Wilcoxon tests against full PaSE, and the
  vectorised paired bootstrap confidence interval of a difference over test utterances.
- `paper`: the paper's published numbers (Tables 1-4, the supplementary's efficiency table, CP+SL's
  unverified figure) as data, each with its source, and the map from paper rows to our variants.
- `params`: parameter count of a variant's model without data or weights (`python -m pipeline count`).

The figures (reports/figures/) are made elsewhere; README.md links them when they exist.
"""
