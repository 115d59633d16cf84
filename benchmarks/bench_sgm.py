"""What Shapley-based gradient modulation costs: a phase-2 PaSE training step against a phase-1 step.

    python benchmarks/bench_sgm.py [out.json] [--batch-size 64] [--steps 40] [--hidden 64]

Both steps run the same PaSE model (text 384 / audio 74 / vision 35 per word, L = 50, random
features) through the trainer's own pieces: forward, task + PCL + CAL losses, backward, Adam. The
phase-2 step adds what SGM adds: the exact Shapley values over the 8 modality subsets from the
loss terms the step already has (Eq. 18-19), phi (Eq. 20) and the per-modality learning rates
(Eq. 21). Target: phase 2 costs at most 1.2x phase 1. Steps alternate between the two kinds so
that machine load hits both alike; medians are reported. On a GPU the paper profile's mixed
precision (bfloat16 autocast) is used and samples per second are reported; on CPU it says "no GPU".
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.balancers.sgm import SGM  # noqa: E402
from pipeline.models.base import task_loss  # noqa: E402
from pipeline.models.pase import PaSE  # noqa: E402
from pipeline.train import autocast, param_groups  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, nargs="?", default=REPO / "reports" / "bench_sgm.json")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dims, B, L = {"text": 384, "audio": 74, "vision": 35}, args.batch_size, 50
    model = PaSE(dims, 1, "regression", n_classes=3, hidden=args.hidden).to(device)
    optim = torch.optim.Adam(param_groups(model, 1e-3), lr=1e-3)
    sgm = SGM(rho=0.5).enabled_from(0)
    g = torch.Generator().manual_seed(0)
    batch = {m: torch.randn(B, L, d, generator=g).to(device) for m, d in dims.items()}
    batch.update({f"{m}_len": torch.randint(1, L + 1, (B,), generator=g).to(device) for m in dims})
    batch["label"] = (torch.rand(B, generator=g) * 6 - 3).to(device)
    inputs = {k: v for k, v in batch.items() if k != "label"}
    amp = device.type == "cuda"

    def step(phase2: bool) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with autocast(device, amp):
            out = model(inputs)
            losses = {"task": task_loss(out["pred"], batch["label"], "regression")}
            losses.update(model.extra_losses(out, batch, "regression", 0))
        optim.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        if phase2:
            sgm.before_step(model, optim, out, batch, losses, 0)
        optim.step()
        if phase2:
            sgm.reset(optim)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    import copy

    for _ in range(5):  # warm-up (and every prototype class seen)
        step(False)
    # Each pair of steps starts from the same model and optimizer state, so both do the same
    # work (Sinkhorn stops early depending on the prototypes) apart from what SGM adds.
    p1, p2 = [], []
    for i in range(args.steps):
        state = copy.deepcopy((model.state_dict(), optim.state_dict()))
        first, second = (False, True) if i % 2 == 0 else (True, False)
        t_first = step(first)
        model.load_state_dict(state[0])
        optim.load_state_dict(state[1])
        t_second = step(second)
        (p2 if first else p1).append(t_first)
        (p2 if second else p1).append(t_second)
    # The Shapley computation alone, from the loss terms of one step.
    out = model(inputs)
    model.extra_losses(out, batch, "regression", 0)
    t = time.perf_counter()
    for _ in range(200):
        sgm.shapley(out)
    shapley_ms = (time.perf_counter() - t) / 200 * 1e3

    m1, m2 = float(np.median(p1)), float(np.median(p2))
    result = {
        "benchmark": "sgm_step", "device": str(device),
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else "no GPU",
        "machine": platform.platform(), "cpu_threads": args.threads, "batch_size": B,
        "hidden": args.hidden, "steps": args.steps,
        "phase1_step_ms": round(m1 * 1e3, 2), "phase2_step_ms": round(m2 * 1e3, 2),
        "ratio_phase2_over_phase1": round(m2 / m1, 3), "target_ratio": 1.2,
        "shapley_values_ms": round(shapley_ms, 3),
        "samples_per_second_phase2": round(B / m2, 1),
        "mixed_precision": amp,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
