"""The GPU check, prepared: what the paper profile costs on one GPU, in one run (< 8 min).

    python benchmarks/bench_gpu.py [out.json] [--steps 20] [--assume-tflops 40]

For each method at its paper-profile row (pipeline/method_settings.py, MOSEI row; MOSEI-shaped
batches: text 768-d BERT vectors and token ids, audio 74-d, vision 35-d, data.seq_len steps) it
times training steps through the trainer's own pieces (fp32 recurrent layers, per-part
optimizer groups, bf16 autocast, the balancer, gradient clipping, Adam) and a validation forward,
and records peak GPU memory, samples/s and the compute dtypes seen. BERT-base is built from
`BertConfig()` with random weights: the GPU machine has no network to fetch bert-base-uncased,
and the compute is the same. From the measured times it projects the GPU-hours of the whole paper
matrix (datasets x variants x seeds x epochs, every epoch a training pass and a validation pass);
the FLOPs of one full-size step per method (counted on the CPU at batch 2, scaled) give a second,
hardware-independent projection at an assumed sustained throughput.

On a machine without a GPU it runs at TINY size on the CPU (a 2-layer 32-wide BERT, batch <= 8,
16 steps per utterance) and says so: those times are not GPU estimates, and only the FLOP-based
projection means anything there.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import machine  # noqa: E402
from pipeline.settings import config_from_dict  # noqa: E402
from pipeline.data.schema import PAPER_SPLIT_SIZES  # noqa: E402
from pipeline.models.base import task_loss  # noqa: E402
from pipeline.precision import dtype_summary, fp32_recurrent, output_dtypes  # noqa: E402
from pipeline.report.params import METHOD_VARIANTS  # noqa: E402
from pipeline.train import (autocast, build_balancer, build_model, clip_gradients,  # noqa: E402
                            param_groups)
from pipeline.variants import VARIANTS, not_applicable  # noqa: E402
from pipeline.profiles import variant_config

DIMS = {"text": 768, "audio": 74, "vision": 35}  # MOSEI: BERT-base, COVAREP, FACET 4.2
TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def paper_config(tiny: bool):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["profile"] = "paper"
    raw["train"]["device"] = "auto" if not tiny else "cpu"
    return config_from_dict(raw)


def make_bert(tiny: bool):
    from transformers import BertConfig, BertModel
    return BertModel(BertConfig(**TINY_BERT) if tiny else BertConfig())


def make_batch(B: int, L: int, T: int, device, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    b = {m: torch.randn(B, L, d, generator=g) for m, d in DIMS.items()}
    b.update({f"{m}_len": torch.randint(max(1, L // 2), L + 1, (B,), generator=g) for m in DIMS})
    ids = torch.randint(1000, 20000, (B, T), generator=g)
    mask = (torch.arange(T)[None] < torch.randint(T // 2, T + 1, (B, 1), generator=g)).long()
    b["text_bert"] = torch.stack([ids * mask, mask, torch.zeros_like(ids)], 1)
    b["label"] = torch.rand(B, generator=g) * 6 - 3
    b["index"] = torch.arange(B)  # rows of the training split (Self-MM keeps per-sample labels)
    return {k: v.to(device) for k, v in b.items()}


def setup(cfg, variant: str, tiny: bool, device, batch_size: int | None = None):
    vcfg = variant_config(cfg, variant, "mosei")
    model = build_model(vcfg, {m: DIMS[m] for m in vcfg.modalities}, "regression",
                        bert_factory=lambda c: make_bert(tiny) if c.text.finetune else None,
                        n_train=PAPER_SPLIT_SIZES["mosei"]["train"])
    model = fp32_recurrent(model).to(device)
    t = vcfg.train
    optim = torch.optim.Adam(param_groups(model, t.lr, t.weight_decay, t.lr_parts,
                                          t.weight_decay_parts), lr=t.lr)
    balancer = build_balancer(vcfg, "regression")
    if hasattr(balancer, "enabled_from"):
        balancer.enabled_from(0)  # PaSE: measure phase 2 (SGM on), the dearer phase
    B = batch_size or (min(t.batch_size, 8) if tiny else t.batch_size)
    L, T = (16, 16) if tiny else (cfg.data.seq_len, cfg.text.max_tokens)
    batch = make_batch(B, L, T, device)
    if not vcfg.text.finetune:
        batch.pop("text_bert")
    return vcfg, model, optim, balancer, batch


def train_step(vcfg, model, optim, balancer, batch, device, amp: bool):
    inputs = {k: v for k, v in batch.items() if k != "label"}
    with autocast(device, amp):
        out = model(inputs)
        losses = {"task": task_loss(out["pred"], batch["label"], "regression")}
        losses.update(model.extra_losses(out, batch, "regression", 0))
    optim.zero_grad(set_to_none=True)
    if balancer.active(0):
        balancer.backward(model, losses, 0)
        balancer.before_step(model, optim, out, batch, losses, 0)
    else:
        sum(losses.values()).backward()
    clip_gradients(model, vcfg.train)
    optim.step()
    if balancer.active(0) and hasattr(balancer, "reset"):
        balancer.reset(optim)


def timed(fn, device, n: int) -> float:
    """Median seconds of `fn()` over n calls."""
    times = []
    for _ in range(n):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def measure(cfg, variant: str, tiny: bool, device, steps: int) -> dict:
    torch.manual_seed(0)
    vcfg, model, optim, balancer, batch = setup(cfg, variant, tiny, device)
    amp = device.type == "cuda" and vcfg.train.amp
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model.train()
    for _ in range(2):  # warm-up (cuDNN autotuning, prototypes seen)
        train_step(vcfg, model, optim, balancer, batch, device, amp)
    step_s = timed(lambda: train_step(vcfg, model, optim, balancer, batch, device, amp), device, steps)
    model.eval()
    inputs = {k: v for k, v in batch.items() if k != "label"}

    def forward():
        with torch.no_grad(), autocast(device, amp):
            model(inputs)
    eval_s = timed(forward, device, max(steps // 2, 1))

    def run_for_dtypes():
        with torch.no_grad(), (torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda"
                               else torch.autocast("cpu", dtype=torch.bfloat16)):
            model(inputs)
    dtypes = dtype_summary(model, output_dtypes(model, run_for_dtypes))
    B = batch["label"].shape[0]
    out = {"model": vcfg.model, "batch_size": B, "finetunes_bert": vcfg.text.finetune,
           "params": sum(p.numel() for p in model.parameters()),
           "train_step_ms": round(step_s * 1e3, 2), "eval_forward_ms": round(eval_s * 1e3, 2),
           "train_samples_per_s": round(B / step_s, 1), "eval_samples_per_s": round(B / eval_s, 1),
           "dtypes_under_bf16_autocast": dtypes}
    if device.type == "cuda":
        out["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    del model, optim
    return out


def step_flops(cfg, variant: str) -> dict:
    """FLOPs of one full-size training step (forward + backward) per sample, counted on the CPU
    at batch 2 (BERT-base, data.seq_len steps, text.max_tokens tokens)."""
    from torch.utils.flop_counter import FlopCounterMode
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    vcfg, model, optim, balancer, batch = setup(cfg, variant, False, cpu, batch_size=2)
    inputs = {k: v for k, v in batch.items() if k != "label"}
    model.train()
    with FlopCounterMode(display=False) as fc:
        out = model(inputs)
        losses = {"task": task_loss(out["pred"], batch["label"], "regression")}
        losses.update(model.extra_losses(out, batch, "regression", 0))
        sum(losses.values()).backward()
    train = fc.get_total_flops() / 2
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(inputs)
    return {"train_flops_per_sample": train, "eval_flops_per_sample": fc.get_total_flops() / 2}


def matrix(cfg) -> list[tuple[str, str, str]]:
    """(dataset, variant, method variant whose cost stands for it) of the paper matrix: the
    variants of params.yaml plus MAG-BERT (paper profile only), without the n/a cells."""
    variants = list(dict.fromkeys(list(cfg.variants) + ["mag_bert"]))
    cells = []
    for ds in ("mosi", "mosei", "iemocap"):
        task = "classification" if ds == "iemocap" else "regression"
        for v in variants:
            if not_applicable(v, task) or (ds == "iemocap" and v == "mag_bert"):
                continue  # Self-MM: regression only; MAG-BERT: MulT's IEMOCAP has no raw text
            model = VARIANTS[v]["model"]
            cells.append((ds, v, model if model in METHOD_VARIANTS else "pase"))
    return cells


def project(cfg, cells, per_sample: dict[str, tuple[float, float]]) -> dict:
    """GPU-hours of the paper matrix from per-sample (train, eval) seconds of each method."""
    epochs, seeds = cfg.train.epochs, len(cfg.seeds)
    hours, by_ds = 0.0, {}
    for ds, v, method in cells:
        sizes = PAPER_SPLIT_SIZES[ds]
        tr, ev = per_sample[method]
        seconds = seeds * (epochs * (sizes["train"] * tr + sizes["valid"] * ev) + sizes["test"] * ev)
        hours += seconds / 3600
        by_ds[ds] = by_ds.get(ds, 0.0) + seconds / 3600
    return {"gpu_hours": round(hours, 1), "by_dataset": {k: round(v, 1) for k, v in by_ds.items()},
            "gpu_hours_exact": hours}


def concurrent(cfg, cells, measured: dict | None, floor: dict, peak_mib: dict, gpu_mib: float) -> dict:
    """GPU-hours with the seeds of a run concurrent on one GPU (train.workers): each method runs
    k = min(seeds, runs that fit in 90 % of the card's memory, CUDA context included) processes
    at once. Assumption: concurrent runs overlap perfectly until the card's sustained throughput
    is reached, so a cell costs max(serial hours / k, its FLOP-bound hours at the assumed rate):
    small, latency-bound models gain up to k-fold, compute-bound BERT methods gain little."""
    seeds, ctx_mib = len(cfg.seeds), 500.0  # CUDA context per process: assumed 500 MiB (unmeasured)
    fits = {v: max(1, min(seeds, int(0.9 * gpu_mib // (peak_mib.get(v, 0.0) + ctx_mib))))
            for v in floor}
    hours, by_ds = 0.0, {}
    for cell in cells:
        one = [cell]
        h_floor = project(cfg, one, floor)["gpu_hours_exact"]
        h = h_floor if measured is None else max(project(cfg, one, measured)["gpu_hours_exact"] / fits[cell[2]],
                                                 h_floor)
        hours += h
        by_ds[cell[0]] = by_ds.get(cell[0], 0.0) + h
    return {"gpu_hours": round(hours, 1), "by_dataset": {k: round(v, 1) for k, v in by_ds.items()},
            "concurrent_seeds_per_method": fits, "gpu_memory_mib": gpu_mib,
            "assumption": " ".join(concurrent.__doc__.split("Assumption: ")[1].split(":")[0].split())}


def one_pase_training(cfg, per_sample: dict) -> float:
    """Hours of one PaSE training on MOSEI (one seed, all epochs): the supplementary says 4.0 h."""
    import dataclasses
    one = dataclasses.replace(cfg, seeds=[0])
    return round(project(one, [("mosei", "pase", "pase")], per_sample)["gpu_hours_exact"], 2)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, nargs="?", default=REPO / "reports" / "bench_gpu.json")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per method (GPU 20, CPU 3)")
    ap.add_argument("--assume-tflops", type=float, default=40.0,
                    help="sustained bf16 TFLOP/s for the FLOP-based projection (default 40: about a "
                         "third of an A10G/L4-class tensor-core peak)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    gpu = torch.cuda.is_available()
    device, tiny = torch.device("cuda" if gpu else "cpu"), not gpu
    steps = args.steps or (20 if gpu else 3)
    cfg = paper_config(tiny)

    methods, flops = {}, {}
    for v in METHOD_VARIANTS:
        methods[v] = measure(cfg, v, tiny, device, steps)
        flops[v] = step_flops(cfg, v)
        print(f"{v}: {methods[v]['train_step_ms']} ms/step at batch {methods[v]['batch_size']}, "
              f"{flops[v]['train_flops_per_sample'] / 1e9:.1f} GFLOP/sample", flush=True)
        methods[v].update({k: round(x / 1e9, 3) for k, x in
                           (("train_gflops_per_sample", flops[v]["train_flops_per_sample"]),
                            ("eval_gflops_per_sample", flops[v]["eval_flops_per_sample"]))})
    cells = matrix(cfg)
    measured = {v: (m["train_step_ms"] / 1e3 / m["batch_size"], m["eval_forward_ms"] / 1e3 / m["batch_size"])
                for v, m in methods.items()}
    rate = args.assume_tflops * 1e12
    by_flops = {v: (f["train_flops_per_sample"] / rate, f["eval_flops_per_sample"] / rate)
                for v, f in flops.items()}
    result = {
        "benchmark": "gpu_paper_profile",
        "size": "TINY CPU run: not a GPU estimate (tiny BERT, batch <= 8, 16 steps)" if tiny else
                "paper profile at full size (MOSEI rows of pipeline/method_settings.py)",
        "device": torch.cuda.get_device_name(0) if gpu else "cpu (no GPU)",
        "machine": machine(torch=torch.__version__),
        "bert": ("tiny random BertConfig(" + ", ".join(f"{k}={v}" for k, v in TINY_BERT.items()) + ")"
                 if tiny else "BERT-base architecture from BertConfig() with random weights (no "
                 "network on the GPU machine to fetch bert-base-uncased): the same compute"),
        "mixed_precision": "bf16 autocast, recurrent layers in fp32" if gpu else
                           "none in the timed steps (CPU); dtypes listed under CPU bf16 autocast",
        "inputs": {"dims": DIMS, "steps_per_utterance": 16 if tiny else cfg.data.seq_len,
                   "bert_tokens": 16 if tiny else cfg.text.max_tokens},
        "timed_steps": steps,
        "methods": methods,
        "matrix": {"datasets": ["mosi", "mosei", "iemocap"], "cells": len(cells),
                   "variants": sorted({v for _, v, _ in cells}), "seeds": len(cfg.seeds),
                   "epochs": cfg.train.epochs, "split_sizes": PAPER_SPLIT_SIZES},
        "projection_notes": [
            "every run trains all epochs (the MMSA rows' early stopping only shortens them: an "
            "upper bound); ablations and modality subsets cost as full PaSE (upper bound); "
            "IEMOCAP's PaSE runs use frozen GloVe text (no BERT) but are costed with BERT (upper bound)",
            "per-sample cost measured on MOSEI-shaped batches at each method's MOSEI batch size",
            "the FLOP projection counts what torch's FlopCounterMode knows (matrix products, "
            "convolutions, attention); other kernels count as 0, and small models are latency-bound "
            "on a GPU, so it is optimistic for the non-BERT methods, which are a small share of the total",
        ],
        "projection_from_flops": {**project(cfg, cells, by_flops),
                                  "assumed_sustained_tflops": args.assume_tflops},
    }
    gpu_mib = torch.cuda.get_device_properties(0).total_memory / 2**20 if gpu else 141 * 1024.0
    peak = {v: m.get("peak_gpu_memory_mib", 0.0) for v, m in methods.items()}
    result["projection_concurrent_seeds"] = {
        **concurrent(cfg, cells, measured if gpu else None, by_flops, peak, gpu_mib),
        "gpu": "this GPU" if gpu else "an H200-class card (141 GiB) assumed; no GPU here, so no "
               "measured step times: only the FLOP-bound floor, which concurrency cannot lower",
        "targets": "at most 24 GPU-hours for the matrix on one H200-class GPU (issue 17)"}
    result["one_pase_training_hours"] = {
        "from_flops": one_pase_training(cfg, by_flops),
        **({"measured": one_pase_training(cfg, measured)} if gpu else {}),
        "target": "at most 4.0 h (supplementary)"}
    if gpu:
        result["projection_measured"] = project(cfg, cells, measured)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("size", "device", "projection_from_flops")
                      if k in result}, indent=2))
    return result


if __name__ == "__main__":
    main()
