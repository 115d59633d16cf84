"""The `report` stage: read every run's outputs and write

- reports/metrics.json   the headline for `dvc metrics show` / `dvc exp show` (`headline`): per
                          dataset PaSE's headline metrics (HEADLINE, means over seeds), its lead
                          over PaSE without SGM and over the best other method, and "synthetic";
                          one terminal row (under 400 characters on the default run)
- reports/metrics_detail.json  every test metric: mean, std and seeds, and each seed's numbers
                          (not a DVC metric: 1,000+ numbers are for reading, not a table)
- reports/tables/        Tables 1-4 and the efficiency table (.md, .tex, .csv; tables.py)
- reports/README.md      the report: run settings, how to read it, every table, the figures
- reports/summary.md     every test metric of every run (mean ± std), one table per dataset

It reads run outputs only (data/runs/<dataset>/<variant>/seed<k>/), never data or models. A
variant not asked for is simply absent; one asked for whose run is missing is an error.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from pipeline import paths
from pipeline import config_checks
from pipeline.config import Config
from pipeline.profiles import size_overrides
from pipeline.data.schema import IEMOCAP_EMOTIONS
from pipeline.data.store import write_atomic
from pipeline.errors import DataError
from pipeline.metrics import REGRESSION_METRICS
from pipeline.report.formatting import SYNTHETIC_TITLE, name, to_markdown, write_tables
from pipeline.report.runs import Runs
from pipeline.report.tables import build_tables

log = logging.getLogger(__name__)
IEMOCAP_COLUMNS = {**{f"{e}_f1": (f"{e.capitalize()} F1", True) for e in IEMOCAP_EMOTIONS},
                   **{f"{e}_acc": (f"{e.capitalize()} Acc", True) for e in IEMOCAP_EMOTIONS},
                   "wa": ("WA", True), "mean_f1": ("Mean F1", True)}
FIGURES = [  # (file under reports/figures, caption); made by the figures stage, not here
    ("fig1_modality_gain.png", "Figure 1: F1 gain from adding audio, vision or both to text only"),
    ("fig3_tsne.png", "Figure 3: t-SNE of the fused test representations"),
    ("fig4_gates.png", "Figure 4: Prototype-gated fusion weights per emotion (IEMOCAP)"),
    ("fig5_shapley.png", "Figure 5: Shapley contributions of each modality, with and without SGM"),
]


def collect(cfg: Config, variants: list[str]) -> dict:
    """{dataset: {variant: [per-seed result dicts]}} for every run the params call for."""
    runs = {}
    for ds in cfg.datasets:
        for v in variants:
            for seed in cfg.seeds:
                f = paths.seed_dir(ds, v, seed) / "metrics.json"
                if not f.exists():
                    raise DataError(f"{f}: missing; run the training stage (dvc repro train@{ds}-{v})")
                try:
                    r = json.loads(f.read_text())
                except json.JSONDecodeError as e:
                    raise DataError(f"{f}: not valid JSON ({e})") from e
                if r.get("status") != "not applicable" and "test" not in r:
                    raise DataError(f"{f}: has no 'test' metrics")
                runs.setdefault(ds, {}).setdefault(v, []).append(r)
    return runs


def summarise(results: list[dict]) -> dict:
    """Mean and sample standard deviation (ddof = 1; 0.0 for a single seed) over seeds of every
    test metric; a variant that does not apply gives {"not_applicable": true, "seeds": 0}."""
    ok = [r for r in results if r.get("status") != "not applicable"]
    if not ok:
        return {"not_applicable": True, "seeds": 0}
    out = {}
    for k in ok[0]["test"]:
        vals = np.array([r["test"][k] for r in ok], dtype=np.float64)
        out[k] = round(float(vals.mean()), 6)
        out[f"{k}_std"] = round(float(vals.std(ddof=1)) if len(vals) > 1 else 0.0, 6)
    out["seeds"] = len(ok)
    return out


# The paper's headline metrics (its Tables 3 and 4): non0 Acc-2 and F1 on MOSI / MOSEI, with MAE
# (the selection metric); WA on IEMOCAP, with the mean F1 over the four emotions (Table 2).
HEADLINE = {"regression": ("acc2_non0", "f1_non0", "mae"), "classification": ("wa", "mean_f1")}
HEADLINE_DECIMALS = 6  # as metrics_detail.json: the headline hides no change the detail shows


def headline(detail: dict) -> dict:
    """The compact `reports/metrics.json` (`metrics_detail.json`'s content in, no run read), the
    one row of `dvc metrics show` and what `dvc exp show` compares across experiments; under 400
    characters wide on the default run. Per dataset:
    - the headline variant's HEADLINE means: PaSE's (a run set without PaSE: the first of
      METHOD_VARIANTS it ran, else its first variant by name);
    - the differences in the first HEADLINE metric (Acc-2 non0; IEMOCAP: WA) the paper's claims
      rest on, each where both runs exist: `vs_no_sgm`, PaSE minus PaSE without SGM (Table 3),
      and `vs_best_other`, the headline variant minus the best other method rerun here
      (Tables 1-2; METHOD_VARIANTS, not PaSE's ablations); positive: the headline is better;
    - "synthetic": bool.
    Standard deviations, every other variant and metric: metrics_detail.json and the tables."""
    from pipeline.variants import METHODS as METHOD_VARIANTS
    out = {}
    for ds, by_variant in detail.items():
        keys = HEADLINE["classification" if ds == "iemocap" else "regression"]
        ran = {v: d["summary"] for v, d in by_variant.items()
               if v != "synthetic" and not d["summary"].get("not_applicable")}
        out[ds] = {"synthetic": by_variant["synthetic"]}
        if not ran:
            continue
        top = next((v for v in ("pase", *METHOD_VARIANTS) if v in ran), min(ran))
        out[ds][top] = {k: round(ran[top][k], HEADLINE_DECIMALS) for k in keys}
        first = keys[0]
        if top == "pase" and "pase-no_sgm" in ran:
            out[ds]["vs_no_sgm"] = round(ran[top][first] - ran["pase-no_sgm"][first], HEADLINE_DECIMALS)
        others = [v for v in METHOD_VARIANTS if v in ran and v != top]
        if others:
            best = max(ran[v][first] for v in others)
            out[ds]["vs_best_other"] = round(ran[top][first] - best, HEADLINE_DECIMALS)
    return out


def metrics_json(runs: Runs) -> dict:
    """Every test metric (`reports/metrics_detail.json`): {dataset: {variant: {"summary":
    summarise(...), "seeds": {seed: {"test": {...}, "best_epoch": n}}}}, "synthetic": bool}."""
    out = {}
    for ds, by_variant in runs.raw.items():
        out[ds] = {v: {"summary": summarise(rs),
                       "seeds": {str(r["seed"]): {"test": r["test"], "best_epoch": r.get("best_epoch")}
                                 for r in rs if "test" in r}}
                   for v, rs in by_variant.items()}
        out[ds]["synthetic"] = runs.synthetic(ds)
    return out


def _settings(cfg: Config, runs: Runs, variants: list[str]) -> list[str]:
    encoders = sorted({str(e) for ds in runs.datasets for v in variants
                       for e in runs.field_values(ds, v, "text_encoder")})
    devices = sorted({d for ds in runs.datasets for v in variants for d in runs.timing(ds, v)[1]})
    data = ", ".join(f"{ds.upper()} ({'synthetic' if runs.synthetic(ds) else 'real'})"
                     for ds in runs.datasets)
    return [
        f"- Data: {data}",
        _text_line(cfg, runs, variants, encoders),
        f"- Profile: {cfg.profile}" + ("" if cfg.profile == "paper" else
                                       " (not the paper's setting: see PAPER_PROFILE in pipeline/profiles.py)"),
        *_profile_lines(cfg, runs),
        f"- Seeds: {', '.join(map(str, cfg.seeds))} ({len(cfg.seeds)} runs per variant and dataset)",
        f"- Variants: {', '.join(variants)}",
        f"- Training devices: {', '.join(devices) or 'not recorded'}",
    ] + [f"- **WARNING** (params): {w}" for w in config_checks.warnings(cfg)] + (
        _method_settings_table(runs) if cfg.profile in ("paper", "cpu-real") else [])


def _text_line(cfg: Config, runs: Runs, variants: list[str], encoders: list[str]) -> str:
    """The text encoder(s): the one fine-tuned end to end (each run's `settings.text`) and the
    frozen vectors read by the others (`text_encoder`, the embed stage's)."""
    tuned, frozen = set(), set()
    for r in (r for ds in runs.datasets for v in variants for r in runs.results(ds, v)):
        s = r.get("settings") or {}
        if "text" not in s.get("modalities", r.get("modalities", ["text"])):
            continue
        if s.get("text", {}).get("finetune"):
            tuned.add(s["text"]["encoder"])
        elif r.get("text_encoder") is not None:
            frozen.add(str(r["text_encoder"]))
    if not tuned:
        return f"- Text encoder: {', '.join(encoders) or 'not recorded'} (frozen, cached vectors)"
    return (f"- Text encoder: {', '.join(sorted(tuned))}, fine-tuned end to end"
            + (" by the methods whose row says so" if cfg.profile in ("paper", "cpu-real") else "")
            + (f"; frozen vectors for the others ({', '.join(sorted(frozen))})" if frozen else ""))


def _profile_lines(cfg: Config, runs: Runs) -> list[str]:
    """The paper and cpu-real profiles' specifics: settings, size overrides, per-dataset notes."""
    lines = []
    if cfg.profile == "paper":
        lines.append("- The paper profile: each method at its own published or MMSA-config settings "
                     "(pipeline/method_settings.py; what ran is each run's metrics.json `settings`)")
    if cfg.profile == "cpu-real":
        lines.append("- The cpu-real profile: real data on a CPU; the bundled MiniLM (not the "
                     "paper's BERT-base) fine-tuned end to end by the methods that fine-tune text, "
                     "at its own learning rate; every other setting the same for every method "
                     "(CPU_REAL_PROFILE in pipeline/profiles.py). Its numbers are \"rerun here\" "
                     "rows: the \"published\" rows are the paper's own")
    size = size_overrides(cfg)
    if size:
        lines.append(f"- Size overrides of the {cfg.profile} profile: "
                     + ", ".join(f"{k}={v}" for k, v in size.items())
                     + " (a rehearsal at reduced size, not the profile's run)")
    notes = sorted({n for rs in runs.raw.values() for runs_ in rs.values() for r in runs_
                    for n in r.get("notes", [])})
    lines += [f"- Note: {n}" for n in notes]
    return lines


def _method_settings_table(runs: Runs) -> list[str]:
    """What each method ran with, per dataset, from the runs' own metrics.json."""
    rows = {}
    for ds, by_variant in runs.raw.items():
        for results in by_variant.values():
            for r in results:
                s = r.get("settings")
                if s and (s["model"], ds) not in rows:
                    t = s["train"]
                    parts = {k: v for k, v in (t.get("lr_parts") or {}).items() if v is not None}
                    # lr_parts.text is the pretrained text encoder's alone (train.param_groups)
                    lr = ", ".join(f"{'text backbone' if k == 'text' else k} {v:g}"
                                   for k, v in parts.items()) if parts else f"{t['lr']:g}"
                    if parts and len(parts) < len(t["lr_parts"]):  # the parts left at train.lr
                        lr += f", rest {t['lr']:g}"
                    clip = f"{t['grad_clip']:g} ({t['grad_clip_mode']})" if t.get("grad_clip") else "none"
                    rows[(s["model"], ds)] = (
                        f"| {s['model']} | {ds} | {lr} | {t['batch_size']} | {t['dropout']:g} | "
                        f"{t['hidden']} | {clip} | {t.get('early_stop') or 'none'} | {t['epochs']} | "
                        f"{'fine-tuned' if s['text']['finetune'] else 'frozen'} |")
    if not rows:
        return []
    return ["", "Each method's settings as run (every run's metrics.json, `settings`):", "",
            "| method | dataset | lr | batch | dropout | width | grad clip | early stop | epochs | BERT |",
            "|---|---|---|---|---|---|---|---|---|---|", *(rows[k] for k in sorted(rows))]


HOW_TO_READ = (
    "Every number is a test-split score, the mean ± sample standard deviation over "
    "the seeds above, of the epoch selected on the validation split. Accuracies and F1 are in "
    "percent; Acc-2 and F1 are printed \"has0/non0\" (negative/non-negative, then "
    "negative/positive with zero labels dropped). \"rerun here\" rows are measured by this "
    "pipeline; \"n/a\" marks a method that does not apply to a dataset. Table 3's second part "
    "tests each variant against full PaSE: Δ is the mean over seeds of (variant − PaSE), p comes "
    "from a paired t-test over seeds (Wilcoxon with six seeds or more), the 95% interval from a "
    "paired bootstrap over test utterances, and \"significant\" needs both p < 0.05 and an "
    "interval that excludes 0. Table 4's Δ row is the full model minus the best single modality, "
    "the paper's definition."
)
HOW_TO_READ_REAL = (
    " \"published\" rows are the paper's numbers (pipeline/report/paper.py cites each table); "
    "\"rerun − published\" gives our mean minus the paper's, with ✓ when the difference is within "
    "two seed standard deviations and ✗ when it is not."
)
HOW_TO_READ_SYNTH = (
    " The data are synthetic, so no published number appears anywhere in this report: the "
    "tables show that the pipeline runs end to end and that the methods behave as designed on "
    "data with known per-modality signal, nothing about the paper's claims."
)


HOW_TO_READ_MIXED = (
    " Some datasets are real and some synthetic: a table shows published numbers only when every "
    "dataset it covers is real; a table with a synthetic dataset says SYNTHETIC in its title and "
    "holds no published number." + HOW_TO_READ_REAL
)


def _how_to_read_data(runs: Runs) -> str:
    flags = {runs.synthetic(ds) for ds in runs.datasets}
    return HOW_TO_READ_SYNTH if flags == {True} else HOW_TO_READ_MIXED if flags == {True, False} \
        else HOW_TO_READ_REAL


def readme(cfg: Config, runs: Runs, variants: list[str], tables, out_dir: Path) -> str:
    synth = any(runs.synthetic(ds) for ds in runs.datasets)
    lines = [f"# PaSE reproduction report{' — ' + SYNTHETIC_TITLE if synth else ''}", ""]
    if synth:
        lines += [f"> **{SYNTHETIC_TITLE}.** At least one dataset ("
                  + ", ".join(ds.upper() for ds in runs.datasets if runs.synthetic(ds))
                  + ") is the synthetic stand-in the pipeline generates when no real data is "
                  "configured (params.yaml, `data.<dataset>.source`).", ""]
    lines += ["Written by `python -m pipeline report` (the `report` stage of dvc.yaml) from "
              "data/runs/. Tables as Markdown, LaTeX and CSV: [tables/](tables/); numbers for "
              "`dvc metrics show`: [metrics.json](metrics.json) (the headline metrics); every "
              "metric of every run: [summary.md](summary.md) and "
              "[metrics_detail.json](metrics_detail.json).", "", "## Settings", ""]
    lines += _settings(cfg, runs, variants) + ["", "## How to read", "",
                                                HOW_TO_READ + _how_to_read_data(runs), ""]
    for t in tables:
        lines += [to_markdown(t, level=2), ""]
    lines += ["## Figures", ""]
    skipped = _skipped_figures(out_dir)
    for fname, caption in FIGURES:
        f = out_dir / "figures" / fname
        if f.exists():
            lines += [f"![{caption}](figures/{fname})", "", f"*{caption}.*", ""]
        elif fname.removesuffix(".png") in skipped:
            lines += [f"- {caption}: not drawn for this run set — "
                      f"{skipped[fname.removesuffix('.png')]}.", ""]
        else:
            lines += [f"- {caption}: not available — `{f}` did not "
                      "exist when this report was written (the figures stage makes it).", ""]
    return "\n".join(lines)


def _skipped_figures(out_dir: Path) -> dict[str, str]:
    """{figure: why the figures stage did not draw it} (reports/plots/skipped.json)."""
    f = out_dir / "plots" / "skipped.json"
    try:
        return json.loads(f.read_text()) if f.exists() else {}
    except ValueError:
        return {}


def summary_markdown(cfg: Config, runs: Runs, metrics: dict) -> str:
    synth = any(runs.synthetic(ds) for ds in runs.datasets)
    title = "Results" + (" — SYNTHETIC DATA (not comparable with the paper)" if synth else "")
    lines = [f"# {title}", ""]
    if synth:
        lines += ["These numbers come from the synthetic data with known per-modality signal that "
                  "the pipeline generates when no real data is configured. They check that the "
                  "pipeline works; they say nothing about the paper's claims.", ""]
    lines += ["Every test metric of every run; the paper-style tables are in README.md and tables/.",
              ""]
    for ds in runs.datasets:
        cols = REGRESSION_METRICS if ds != "iemocap" else IEMOCAP_COLUMNS
        lines += [f"## {ds.upper()}{' (synthetic)' if runs.synthetic(ds) else ''}", "",
                  f"Test split, mean ± std over {len(cfg.seeds)} seeds (selection on validation); "
                  "accuracies and F1 in %.", "",
                  "| Model | Run | " + " | ".join(n for n, _ in cols.values()) + " |",
                  "|---|---|" + "---:|" * len(cols)]
        for v, d in metrics[ds].items():
            if v == "synthetic":
                continue
            m = d["summary"]
            if m.get("not_applicable"):
                cells = ["n/a"] * len(cols)
            else:
                cells = [_pm(k, m.get(k), m.get(f"{k}_std"), m["seeds"]) for k in cols]
            lines.append(f"| {name(v)} ({v}) | rerun here | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _pm(k: str, mean, std, n: int) -> str:
    if mean is None:
        return "-"
    f = 1.0 if k in ("corr", "mae") else 100.0
    d = 3 if k in ("corr", "mae") else 2
    if n < 2 or std is None or not math.isfinite(std):
        return f"{mean * f:.{d}f}"
    return f"{mean * f:.{d}f} ± {std * f:.{d}f}"


def report(cfg: Config, variants: list[str], out_dir: Path = paths.REPORTS, n_boot: int = 1000,
           boot_seed: int = 0) -> Path:
    """Write metrics.json, metrics_detail.json, tables/, README.md and summary.md under `out_dir`;
    returns summary.md.

    `n_boot` / `boot_seed`: resamples and seed of Table 3's paired bootstrap intervals.
    """
    out_dir = Path(out_dir)
    runs = Runs(collect(cfg, variants))
    metrics = metrics_json(runs)
    tables = build_tables(runs, list(cfg.seeds), n_boot=n_boot, boot_seed=boot_seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "metrics.json", json.dumps(headline(metrics), indent=2, sort_keys=True) + "\n")
    write_atomic(out_dir / "metrics_detail.json", json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    written = write_tables(tables, out_dir / "tables")
    write_atomic(out_dir / "README.md", readme(cfg, runs, variants, tables, out_dir) + "\n")
    write_atomic(out_dir / "summary.md", summary_markdown(cfg, runs, metrics) + "\n")
    log.info("report: wrote %s, %s, %s and %d table files under %s", out_dir / "metrics.json",
             out_dir / "README.md", out_dir / "summary.md", len(written), out_dir / "tables")
    return out_dir / "summary.md"
