"""Command line: one subcommand per DVC stage.

    python -m pipeline download --dataset mosi
    python -m pipeline align    --dataset mosi
    python -m pipeline embed    --dataset mosi
    python -m pipeline train    --dataset mosi --variant late_fusion
    python -m pipeline figures
    python -m pipeline report
    python -m pipeline count --profile paper
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from pipeline.errors import PipelineError

DATASETS = ("mosi", "mosei", "iemocap")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    sub = parser.add_subparsers(dest="stage", required=True)
    for name, text in [("download", "bring a dataset's raw inputs into data/raw/<dataset>"),
                       ("align", "word-align and pad the raw inputs into data/aligned/<dataset>.h5"),
                       ("embed", "encode the text once into data/embedded/<dataset>.h5")]:
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--dataset", required=True, choices=DATASETS)
    p = sub.add_parser("train", help="train one variant over every seed in params.yaml",
                       description="train one variant over every seed in params.yaml")
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--variant", required=True)
    p = sub.add_parser("report", help="tables and reports/metrics.json from the runs",
                       description="tables and reports/metrics.json from the runs")
    p.add_argument("--variants", nargs="+", default=None, help="default: `variants` in params.yaml")
    sub.add_parser("figures", help="the paper's figures from the runs (reports/figures, reports/plots)",
                   description="the paper's figures from the runs (reports/figures, reports/plots)")
    p = sub.add_parser("count", help="print parameter counts (no data or weights needed)",
                       description="print each method's parameter count, or one variant's "
                                   "(no data or weights needed)")
    p.add_argument("--variant", default=None, help="default: one line per method")
    p.add_argument("--dataset", choices=DATASETS, default="mosei",
                   help="whose row of the paper profile's per-method table (default: mosei)")
    p.add_argument("--profile", choices=("cpu", "paper"), default=None, help="default: params.yaml's")
    p.add_argument("--dims", default="text=768,audio=74,vision=35",
                   help="input sizes (default: BERT-base text, COVAREP audio, FACET 4.2 vision)")
    p.add_argument("--task", choices=("regression", "classification"), default="regression")
    args = parser.parse_args(argv)

    logging.basicConfig(level=os.environ.get("PIPELINE_LOG", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models load from disk; never reach for a hub
    try:
        from pipeline.config import load_config
        cfg = load_config(args.params)
        if args.stage == "download":
            from pipeline.stages import download
            download(cfg, args.dataset)
        elif args.stage == "align":
            from pipeline.stages import align
            align(cfg, args.dataset)
        elif args.stage == "embed":
            from pipeline.stages import embed
            embed(cfg, args.dataset)
        elif args.stage == "train":
            from pipeline.train import train_variant
            train_variant(cfg, args.dataset, args.variant)
        elif args.stage == "figures":
            from pipeline.report.figures import make_figures
            make_figures(cfg)
        elif args.stage == "count":
            from pipeline.report.params import METHOD_VARIANTS, count_lines
            variants = [args.variant] if args.variant else list(METHOD_VARIANTS)
            if args.task == "classification" and not args.variant:
                variants.remove("self_mm")  # regression only
            print(f"parameters ({args.profile or cfg.profile} profile, {args.dataset} row, "
                  f"inputs {args.dims}, {args.task}):")
            print("\n".join(count_lines(cfg, variants, args.profile, args.dims, args.task,
                                        args.dataset)))
        elif args.stage == "report":
            from pipeline.report.summary import report
            report(cfg, args.variants or cfg.variants)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
