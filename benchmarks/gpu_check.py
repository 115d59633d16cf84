"""The device check: what the paper profile costs on this GPU, measured, in one run (sized for
8 minutes on one H100; no GPU has run it yet). `bash benchmarks/gpu_check.sh` runs it and writes
reports/gpu_check.json.

    python benchmarks/gpu_check.py [out.json] [--steps 20] [--seed-steps 300] [--tiny]

1. Every method (pipeline/report/params.py METHOD_VARIANTS) at its paper-profile rows for MOSI and
   MOSEI (benchmarks/bench_gpu.py `measure`: synthetic batches at full padded length, BERT-base
   with random weights where the method fine-tunes it): training-step and validation-forward
   times, samples/s, peak memory (allocated and reserved), and the seed processes that fit at once
   (pipeline/gpu_fit.py `seeds_that_fit`, the rule `train.workers: null` follows on CUDA) on this
   card and on the CI shards' card (an A10G: 24 GiB, 8 vCPUs).
2. One real paper-profile PaSE seed (pipeline/train.py `train_seed`: data loading, validation,
   checkpoints, the test predictions) for about `--seed-steps` training steps on synthetic data at
   MOSI's split sizes (labelled synthetic), with its wall time per epoch and peak memory; before
   it, the train stage's own memory probe (gpu_fit.seeds_at_once, in-process here) on the same
   run: how many seeds `train.workers: null` starts, and the seed's peak over the probe's (what
   the 10 % margin must cover).
3. The paper matrix (3 datasets x the variants of params.yaml and MAG-BERT x 5 seeds x 200 epochs,
   the paper's split sizes) projected from the measured per-sample times: one seed at a time,
   and the bounds with the seeds that fit running at once. This replaces the FLOP-count projection
   the previous benchmark made.
`--tiny` (and any run without a GPU, which must ask for it) runs the same code on the CPU at TINY
sizes: a check of the script, not a GPU number; tests/bench/test_gpu_check.py runs it.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import machine  # noqa: E402
from benchmarks.bench_gpu import (ROWS, TINY_BERT, matrix, measure, one_pase_training,  # noqa: E402
                                  paper_config, project)
from pipeline.settings import config_from_dict  # noqa: E402
from pipeline.data.schema import PAPER_SPLIT_SIZES  # noqa: E402
from pipeline.gpu_fit import GIB, MARGIN, GpuFitError, seeds_that_fit, usable_cores  # noqa: E402
from pipeline.report.params import METHOD_VARIANTS  # noqa: E402

CI_CARD = {"name": "A10G (g5.2xlarge, the CI shards')", "total_bytes": 24 * GIB, "cores": 8}


def fits(process_bytes: int, total: int, cores: int, seeds: int) -> dict:
    try:
        n, why = seeds_that_fit(process_bytes, total, total, cores, seeds)
    except GpuFitError as e:
        return {"seeds_at_once": 0, "why": str(e)}
    return {"seeds_at_once": n, "why": why}


def by_row(cells) -> list[tuple[str, str, str]]:
    """The matrix's cells keyed by the measurement that stands for them: method@row (IEMOCAP
    runs on MOSI's row, pipeline/method_settings.py)."""
    return [(ds, v, f"{m}@{ds if ds in ROWS else 'mosi'}") for ds, v, m in cells]


def concurrent_bounds(cfg, cells, per_sample: dict, k: dict) -> dict:
    """GPU-hours with k[key] seeds of a run at once: between the serial hours (the card already
    busy with one seed) and serial / k (perfect overlap); concurrency was not measured."""
    serial = project(cfg, cells, per_sample)["gpu_hours_exact"]
    best = sum(project(cfg, [c], per_sample)["gpu_hours_exact"] / max(1, min(k[c[2]], len(cfg.seeds)))
               for c in cells)
    return {"gpu_hours_at_best": round(best, 1), "gpu_hours_at_worst": round(serial, 1),
            "seeds_at_once": k}


@contextlib.contextmanager
def bert_base_for_finetuning(tiny: bool):
    """The BERT a fine-tuning method loads (pipeline/train.py load_bert): BERT-base with random
    weights (TINY: the 2-layer one); the tokenizer stays the uncased BERT vocabulary."""
    from transformers import BertConfig, BertModel

    from pipeline.features import text
    original = text.load_text_encoder

    def load(name, *a, **kw):
        enc = original(name, *a, **kw)
        model = BertModel(BertConfig(**TINY_BERT) if tiny else BertConfig()).eval()
        return dataclasses.replace(enc, model=model, dim=model.config.hidden_size)
    text.load_text_encoder = load
    try:
        yield
    finally:
        text.load_text_encoder = original


def real_seed(tiny: bool, device: str, seed_steps: int) -> dict:
    """One PaSE seed under the paper profile through the pipeline's own stages and training loop,
    on synthetic data at MOSI's split sizes (TINY: 5 % of them), in a scratch directory."""
    from pipeline import gpu_fit, paths, train
    from pipeline.data.store import StoreDataset
    from pipeline.stages import align, download, embed
    from pipeline.train_stage import run_config
    from pipeline.profiles import variant_config
    scale = 0.05 if tiny else 1.0
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw.update(profile="paper", datasets=["mosi"], seeds=[0], variants=["pase"])
    raw["data"]["mosi"]["source"] = "synthetic"
    raw["train"]["device"] = device
    # the tokenizer of the BERT vocabulary without network (tiny-random-bert's); the BERT that is
    # fine-tuned is BERT-base with random weights (bert_base_for_finetuning)
    raw["paper"].update(text_encoder="tiny-random-bert", allow_synthetic=True, synthetic_scale=scale)
    started, here = time.perf_counter(), os.getcwd()
    with tempfile.TemporaryDirectory() as work:
        os.chdir(work)
        try:
            cfg = config_from_dict(raw)
            for stage in (download, align, embed):
                stage(cfg, "mosi")
            n_train = len(StoreDataset(paths.aligned_store("mosi"), "train", modalities=("audio",)))
            per_epoch = math.ceil(n_train / variant_config(cfg, "pase", "mosi").train.batch_size)
            raw["paper"]["epochs"] = max(2, math.ceil(seed_steps / per_epoch))
            cfg = config_from_dict(raw)
            vcfg, notes, _ = run_config(cfg, "mosi", "pase")
            data_s = time.perf_counter() - started
            probed = {}

            def probe(c, ds, v):  # the stage's probe, here in-process (its BERT is patched)
                probed.update(gpu_fit.measure_seed(c, ds, v))
                return probed
            with bert_base_for_finetuning(tiny):
                if device == "cuda":  # the methods' tensors gone: the peaks are the seed's
                    gc.collect()
                    torch.cuda.empty_cache()
                # what `train.workers: null` decides for this run (CPU: the cores, no probe)
                n, why = gpu_fit.seeds_at_once(vcfg, "mosi", "pase", seeds=5, measure=probe)
                if device == "cuda":
                    gc.collect()
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                result = train.train_seed(vcfg, "mosi", "pase", 0, Path("out"), notes=notes,
                                          progress=False)
                wall = time.perf_counter() - t0
        finally:
            os.chdir(here)
    epochs = result["epochs_run"]
    out = {"dataset": "mosi (SYNTHETIC data at MOSI's split sizes" + (", TINY: 5 %)" if tiny else ")"),
           "variant": "pase", "batch_size": vcfg.train.batch_size, "train_rows": n_train,
           "epochs": epochs, "training_steps": epochs * per_epoch, "seconds": round(wall, 1),
           "seconds_per_epoch": round(wall / epochs, 2), "data_stages_seconds": round(data_s, 1),
           "test": result["test"], "params": result["params"]}
    out["train_workers_null"] = {"seeds_at_once": n, "why": why}
    if device == "cuda":  # the probe's 3 steps against the whole seed's peak: the probe's margin
        out["peak_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
        out["peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["probe_peak_reserved_mib"] = round(probed["peak_reserved_bytes"] / 2**20, 1)
        out["seed_peak_over_probe_peak"] = round(
            out["peak_reserved_mib"] / max(out["probe_peak_reserved_mib"], 1e-9), 3)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, nargs="?", default=REPO / "reports" / "gpu_check.json")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per method (GPU 20, TINY 2)")
    ap.add_argument("--seed-steps", type=int, default=300,
                    help="training steps of the real PaSE seed (whole epochs, at least 2)")
    ap.add_argument("--methods", default=",".join(METHOD_VARIANTS))
    ap.add_argument("--tiny", action="store_true", help="TINY sizes on the CPU (tests)")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    gpu = torch.cuda.is_available() and not args.tiny
    if not gpu and not args.tiny:
        ap.error("no GPU visible to torch: this check measures a GPU (--tiny runs it on the CPU "
                 "at TINY sizes, a check of the script only)")
    tiny, device = not gpu, torch.device("cuda" if gpu else "cpu")
    if tiny:
        torch.set_num_threads(1)
    steps = args.steps or (20 if gpu else 2)
    cfg = paper_config(tiny)
    cores, seeds = usable_cores(), len(cfg.seeds)
    if gpu:  # this process's CUDA context (and anything else on the card): counted per seed
        torch.cuda.init()
        free0, total = torch.cuda.mem_get_info()
        context = total - free0
    methods, per_sample, k = {}, {}, {}
    for v in args.methods.split(","):
        for row in ROWS:
            key = f"{v}@{row}"
            try:
                m = measure(cfg, v, tiny, device, steps, dataset=row)
            except Exception as e:  # noqa: BLE001 (one method's failure must not lose the others')
                methods[key] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
                print(f"{key}: {methods[key]['error']}", flush=True)
                continue
            per_sample[key] = (m["train_step_ms"] / 1e3 / m["batch_size"],
                               m["eval_forward_ms"] / 1e3 / m["batch_size"])
            if gpu:
                process = int(m["peak_reserved_mib"] * 2**20) + context
                m["seed_process_peak_mib"] = round(process / 2**20, 1)
                m["this_card"] = fits(process, total, cores, seeds)
                m["ci_card"] = fits(process, CI_CARD["total_bytes"], CI_CARD["cores"], seeds)
                k[key] = max(1, m["this_card"]["seeds_at_once"])
            methods[key] = m
            print(f"{key}: {m['train_step_ms']} ms/step at batch {m['batch_size']}, "
                  f"{m['train_samples_per_s']} samples/s"
                  + (f", peak {m['seed_process_peak_mib']} MiB, {k[key]} at once" if gpu else ""),
                  flush=True)
    cells = [c for c in by_row(matrix(cfg)) if c[2] in per_sample]
    unmeasured = sorted({c[2] for c in by_row(matrix(cfg))} - set(per_sample))
    try:
        seed = real_seed(tiny, device.type, args.seed_steps)
        print(f"real seed: {seed['training_steps']} steps in {seed['seconds']} s", flush=True)
    except Exception as e:  # noqa: BLE001 (the methods' numbers are still written)
        seed = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
        print(f"real seed: {seed['error']}", flush=True)
    result = {
        "benchmark": "gpu_check",
        "size": "TINY CPU run: a check of the script, not a GPU estimate (tiny BERT, batch <= 8, "
                "16 steps per utterance)" if tiny else
                "paper profile at full size (MOSI and MOSEI rows of pipeline/method_settings.py)",
        "device": torch.cuda.get_device_name(0) if gpu else "cpu (no GPU)",
        "machine": machine(torch=torch.__version__),
        "bert": ("tiny random BertConfig(" + ", ".join(f"{a}={b}" for a, b in TINY_BERT.items()) + ")"
                 if tiny else "BERT-base architecture from BertConfig() with random weights (no "
                 "network on the GPU machine to fetch bert-base-uncased): the same compute and memory"),
        "mixed_precision": "bf16 autocast, recurrent layers in fp32" if gpu else "none (CPU)",
        "inputs": "synthetic batches at full padded length: text 768-d vectors and BERT token ids "
                  f"({16 if tiny else cfg.text.max_tokens} tokens), audio 74-d, vision 35-d, "
                  f"{16 if tiny else cfg.data.seq_len} steps (an upper bound: real batches are cut "
                  "to their longest utterance)",
        "timed_steps": steps,
        "memory_rule": {"margin_of_total": MARGIN, "seeds": seeds, "cores_here": cores,
                        "ci_card": CI_CARD,
                        "cuda_context_mib": round(context / 2**20, 1) if gpu else None,
                        "rule": "pipeline/gpu_fit.py seeds_that_fit: (free - margin x total) // "
                                "(peak reserved + CUDA context), at most the usable cores and seeds"},
        "methods": methods,
        "real_seed": seed,
        "matrix": {"datasets": ["mosi", "mosei", "iemocap"], "cells": len(cells),
                   "not_projected": unmeasured,
                   "variants": sorted({v for _, v, _ in cells}), "seeds": seeds,
                   "epochs": cfg.train.epochs, "split_sizes": PAPER_SPLIT_SIZES},
        "projection_one_seed_at_a_time": project(cfg, cells, per_sample),
        "one_pase_training_hours": {
            "from_steps": one_pase_training(cfg, {"pase": per_sample["pase@mosei"]})
            if "pase@mosei" in per_sample else None,
            "target": "at most 4.0 h on MOSEI (supplementary)"},
        "projection_notes": [
            "every run trains all epochs (the MMSA rows' early stopping only shortens them: an "
            "upper bound); ablations and modality subsets cost as full PaSE (upper bound); "
            "IEMOCAP's PaSE runs use frozen GloVe text (no BERT) but are costed with BERT (upper "
            "bound); IEMOCAP runs are costed at MOSI's row, as they train",
            "per-sample cost from each method's measured step at its row's batch size, full padded "
            "length",
            "the real seed's seconds per epoch include data loading, validation and checkpoints: "
            "compare them with the step-time projection of the same cell",
        ],
    }
    if gpu:
        result["projection_seeds_at_once"] = concurrent_bounds(cfg, cells, per_sample, k)
        if "pase@mosi" in per_sample and "error" not in seed:
            sizes, (tr, ev) = PAPER_SPLIT_SIZES["mosi"], per_sample["pase@mosi"]
            seed["projected_seconds_per_epoch_from_steps"] = round(
                sizes["train"] * tr + sizes["valid"] * ev, 2)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({x: result[x] for x in ("size", "device", "projection_one_seed_at_a_time",
                                             "wall_seconds")}, indent=2))
    return result


if __name__ == "__main__":
    main()
