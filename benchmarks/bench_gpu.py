"""What the GPU check (benchmarks/gpu_check.py, `bash benchmarks/gpu_check.sh`) measures with:
one method's paper-profile training step on synthetic batches, and the paper matrix projected
from measured per-sample times.

Each method runs at its paper-profile row (pipeline/method_settings.py) for a dataset (MOSI's or
MOSEI's row: batch size, width, learning rates), on batches at full padded length: text 768-d
BERT vectors and BERT token ids (`text.max_tokens`), audio 74-d, vision 35-d (MOSEI's COVAREP and
FACET widths, the larger), `data.seq_len` steps. A step is pipeline/train.py's (gpu_fit.train_step:
bf16 autocast with fp32 recurrent layers, per-part optimizer groups, the balancer in its dearer
phase 2, gradient clipping, Adam). BERT-base is built from `BertConfig()` with random weights: the
GPU machine has no network to fetch bert-base-uncased, and the compute and memory are the same.
At TINY size (tests, a machine without a GPU) the BERT is a 2-layer 32-wide one, batches hold at
most 8 rows of 16 steps: those times are no GPU estimate.
"""
from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.settings import config_from_dict  # noqa: E402
from pipeline.data.schema import PAPER_SPLIT_SIZES  # noqa: E402
from pipeline.gpu_fit import phase2, train_step  # noqa: E402
from pipeline.precision import dtype_summary, fp32_recurrent, output_dtypes  # noqa: E402
from pipeline.report.params import METHOD_VARIANTS  # noqa: E402
from pipeline.train import autocast, build_balancer, build_model, param_groups  # noqa: E402
from pipeline.variants import VARIANTS, not_applicable  # noqa: E402
from pipeline.profiles import variant_config  # noqa: E402

DIMS = {"text": 768, "audio": 74, "vision": 35}  # MOSEI: BERT-base, COVAREP, FACET 4.2
TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
ROWS = ("mosi", "mosei")  # the method_settings rows measured; IEMOCAP runs on MOSI's row


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


def setup(cfg, variant: str, tiny: bool, device, batch_size: int | None = None,
          dataset: str = "mosei"):
    """The run's config (`dataset`'s paper-profile row), model, optimizer, balancer (phase 2)
    and one synthetic batch at its batch size and full padded length."""
    vcfg = variant_config(cfg, variant, dataset)
    model = build_model(vcfg, {m: DIMS[m] for m in vcfg.modalities}, "regression",
                        bert_factory=lambda c: make_bert(tiny) if c.text.finetune else None,
                        n_train=PAPER_SPLIT_SIZES[dataset]["train"])
    model = fp32_recurrent(model).to(device)
    t = vcfg.train
    optim = torch.optim.Adam(param_groups(model, t.lr, t.weight_decay, t.lr_parts,
                                          t.weight_decay_parts), lr=t.lr)
    balancer = phase2(build_balancer(vcfg, "regression"))
    B = batch_size or (min(t.batch_size, 8) if tiny else t.batch_size)
    L, T = (16, 16) if tiny else (cfg.data.seq_len, cfg.text.max_tokens)
    batch = make_batch(B, L, T, device)
    if not vcfg.text.finetune:
        batch.pop("text_bert")
    return vcfg, model, optim, balancer, batch


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


def measure(cfg, variant: str, tiny: bool, device, steps: int, dataset: str = "mosei") -> dict:
    """Median training-step and validation-forward times of `variant` at `dataset`'s row, the
    samples/s they give, and on a GPU the peak memory its allocator held (reserved) and used."""
    torch.manual_seed(0)
    if device.type == "cuda":  # the previous method's tensors gone, so the peak is this one's
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    vcfg, model, optim, balancer, batch = setup(cfg, variant, tiny, device, dataset=dataset)
    amp = device.type == "cuda" and vcfg.train.amp

    def step():
        train_step(model, optim, balancer, batch, "regression", vcfg.train, device, amp)
    model.train()
    for _ in range(2):  # warm-up (cuDNN autotuning, prototypes seen)
        step()
    step_s = timed(step, device, steps)
    model.eval()
    inputs = {k: v for k, v in batch.items() if k != "label"}

    def forward():
        with torch.no_grad(), autocast(device, amp):
            model(inputs)
    eval_s = timed(forward, device, max(steps // 2, 1))

    def run_for_dtypes():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            model(inputs)
    dtypes = dtype_summary(model, output_dtypes(model, run_for_dtypes))
    B = batch["label"].shape[0]
    out = {"model": vcfg.model, "row": dataset, "batch_size": B, "finetunes_bert": vcfg.text.finetune,
           "params": sum(p.numel() for p in model.parameters()),
           "train_step_ms": round(step_s * 1e3, 2), "eval_forward_ms": round(eval_s * 1e3, 2),
           "train_samples_per_s": round(B / step_s, 1), "eval_samples_per_s": round(B / eval_s, 1),
           "dtypes_under_bf16_autocast": dtypes}
    if device.type == "cuda":
        out["peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["peak_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return out


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


def one_pase_training(cfg, per_sample: dict) -> float:
    """Hours of one PaSE training on MOSEI (one seed, all epochs): the supplementary says 4.0 h."""
    import dataclasses
    one = dataclasses.replace(cfg, seeds=[0])
    return round(project(one, [("mosei", "pase", "pase")], per_sample)["gpu_hours_exact"], 2)
