"""Command line: one subcommand per DVC stage.

    python -m pipeline download --dataset mosi
    python -m pipeline align    --dataset mosi
    python -m pipeline embed    --dataset mosi
    python -m pipeline configure
    python -m pipeline train    --dataset mosi --variant late_fusion
    python -m pipeline figures
    python -m pipeline report
    python -m pipeline count --profile paper
    python -m pipeline predict  --run mosi/pase --data data/aligned/mosei.h5
    python -m pipeline explain  --dataset mosi --variant pase [--json]
    python -m pipeline pool     --dvc-pid N   (started by a train stage under dvc repro)
    python -m pipeline codedeps [--write]     (each stage's code deps in dvc.yaml, from its imports)
"""
from __future__ import annotations

import argparse
import json
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
    text = "write each dataset x variant's effective config to data/configs (what its train stage depends on)"
    sub.add_parser("configure", help=text, description=text)
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
    p.add_argument("--profile", choices=("cpu", "paper", "cpu-real"), default=None, help="default: params.yaml's")
    p.add_argument("--dims", default=None,
                   help="input sizes, e.g. text=768,audio=74,vision=35 (default: the width of the "
                        "profile's text encoder, MiniLM 384 or BERT-base 768; COVAREP audio 74; "
                        "FACET 4.2 vision 35)")
    p.add_argument("--task", choices=("regression", "classification"), default="regression")
    text = "score a run's kept models (one a seed) on a store or pickle: predictions and metrics"
    p = sub.add_parser("predict", help=text, description=text)
    p.add_argument("--run", required=True, help="<dataset>/<variant> of a trained run, e.g. mosi/pase")
    p.add_argument("--data", required=True, help="an HDF5 store from the align stage (e.g. "
                   "data/aligned/mosei.h5) or an MMSA / MulT pickle (.pkl)")
    p.add_argument("--split", choices=("train", "valid", "test"), default="test")
    p.add_argument("--out", default=None,
                   help="output folder (default: predictions/<dataset>-<variant>_on_<data name>)")
    p.add_argument("--source", choices=("mmsa", "mult"), help="pickles: whose layout")
    p.add_argument("--data-dataset", choices=DATASETS, help="pickles: which dataset it holds")
    p.add_argument("--sha256", help="pickles: the file's sha256 (a pickle can run code)")
    p.add_argument("--allow-unverified-pickle", action="store_true",
                   help="pickles: read without a checksum (only a file you trust)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    text = ("what one run will do: its resolved settings, text path and optimiser groups (lr, "
            "weight decay, balancer), from the aligned and embedded stores; no training")
    p = sub.add_parser("explain", help=text, description=text)
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--variant", required=True, nargs="+", help="one or more variants")
    p.add_argument("--json", action="store_true", help="print the whole answer as JSON")
    p.add_argument("--markdown", action="store_true",
                   help="print each variant's optimiser groups as a row of the README's table")
    text = "train seeds ahead of DVC's stages (started by the first train stage; pipeline/ahead.py)"
    p = sub.add_parser("pool", help=text, description=text)
    p.add_argument("--dvc-pid", type=int, required=True, help="stop when this process has ended")
    text = "check (or --write) each stage's code deps in dvc.yaml: what its command imports"
    p = sub.add_parser("codedeps", help=text, description=text)
    p.add_argument("--write", action="store_true", help="rewrite dvc.yaml's code deps")
    args = parser.parse_args(argv)

    logging.basicConfig(level=os.environ.get("PIPELINE_LOG", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models load from disk; never reach for a hub
    try:
        if args.stage == "codedeps":  # reads the code and dvc.yaml, not params.yaml
            from pipeline.codedeps import main as codedeps
            return codedeps(args.write)
        from pipeline.settings import load_config
        cfg = load_config(args.params)
        from pipeline import paths
        from pipeline.data.store import remove_temp_files  # what a killed run of this stage left
        remove_temp_files(*paths.stage_outputs(args.stage, getattr(args, "dataset", None),
                                               getattr(args, "variant", None)))
        if args.stage == "download":
            from pipeline.stages import download
            download(cfg, args.dataset)
        elif args.stage == "align":
            from pipeline.stages import align
            align(cfg, args.dataset)
        elif args.stage == "embed":
            from pipeline.stages import embed
            embed(cfg, args.dataset)
        elif args.stage == "configure":
            from pipeline.effective import configure
            configure(cfg)
        elif args.stage == "train":
            from pipeline.effective import check_file
            from pipeline.train_stage import train_variant  # no torch unless it trains
            from pipeline.profiles import variant_config
            # the stage depends on data/configs/<dataset>/<variant>.json: it must be what runs
            check_file(variant_config(cfg, args.variant, args.dataset), args.dataset, args.variant)
            train_variant(cfg, args.dataset, args.variant)
        elif args.stage == "pool":
            from pipeline.ahead_pool import serve
            return serve(args.dvc_pid, args.params)
        elif args.stage == "figures":
            from pipeline.report.figures import make_figures
            make_figures(cfg)
        elif args.stage == "count":
            from pipeline.report.params import METHOD_VARIANTS, count_lines
            variants = [args.variant] if args.variant else list(METHOD_VARIANTS)
            if args.task == "classification" and not args.variant:
                variants.remove("self_mm")  # regression only
            print(f"parameters ({args.profile or cfg.profile} profile, {args.dataset} row, "
                  f"inputs {args.dims or 'of the profile'}, {args.task}):")
            print("\n".join(count_lines(cfg, variants, args.profile, args.dims, args.task,
                                        args.dataset)))
        elif args.stage == "predict":
            from pipeline.predict import predict_run
            r = predict_run(args.run, args.data, args.out, args.split, source=args.source,
                            data_dataset=args.data_dataset, sha256=args.sha256,
                            allow_unverified=args.allow_unverified_pickle, device=args.device,
                            cfg=cfg)
            m = r["metrics"]
            print(f"{args.run} on {args.data} ({args.split}, {len(r['seeds'])} seed(s)): " + ", ".join(
                f"{k} {m[k]:.4f} ± {m[k + '_std']:.4f}" for k in m if f"{k}_std" in m))
        elif args.stage == "explain":
            from pipeline import explain
            infos = [explain.explain(cfg, args.dataset, v) for v in args.variant]
            if args.json:
                print(json.dumps(infos[0] if len(infos) == 1 else infos, indent=1, sort_keys=True))
            elif args.markdown:
                print("\n".join([explain.MARKDOWN_HEAD] + [explain.markdown_row(i) for i in infos]))
            else:
                print("\n\n".join(explain.render(i) for i in infos))
        elif args.stage == "report":
            from pipeline.report.summary import report
            report(cfg, args.variants or cfg.variants)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
