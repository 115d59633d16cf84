"""How many seed processes train at once (`train.workers: null`), and why.

On CPU: one seed process per usable core (each runs train.num_threads torch threads), as before.
On CUDA: as many as the card's memory holds, from a measurement, never more than the usable
cores (each process needs a core to feed the card) nor the seeds left to train. Before a stage's
seeds start, a short probe (`probe`, in a process of its own so that the stage holds no CUDA
context while its seeds run) builds the real model of the run, at its batch size, on a batch of
the run's own training data at the store's full padded length (the longest a batch can be), and
takes `PROBE_STEPS` training steps (forward, the balancer's backward in its dearer phase 2,
gradient clipping, Adam: the optimizer's state exists after the first) under the run's mixed
precision. Its peak is what the caching allocator held (`max_memory_reserved`), plus the CUDA
context. `seeds_that_fit` turns the measurement into a number and a sentence; it is pure, so the
rule is tested on CPU with measured numbers fed in.

The context is measured as the card's total memory minus what is free when the probe starts
(its own context in place, nothing allocated): exact on a card the stage has to itself (a CI
shard); on a shared card another process's memory is then counted once per seed, so fewer seeds
start, never too many.
"""
from __future__ import annotations

import logging
import os

from pipeline.config import Config
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

# Kept free, as a share of the card's total memory: the allocator's fragmentation between
# processes, cuDNN workspaces picked after the probe's steps, and the validation pass (no_grad,
# smaller than a training step, but a different set of cached blocks).
MARGIN = 0.10
PROBE_STEPS = 3
GIB = 2**30


class GpuFitError(PipelineError):
    """One seed of a run does not fit the card's memory."""


def usable_cores() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def seeds_that_fit(peak_bytes: int, total_bytes: int, free_bytes: int, cores: int, seeds: int,
                   margin: float = MARGIN, what: str = "one seed") -> tuple[int, str]:
    """(seed processes to run at once, why). `peak_bytes`: one seed process's measured peak (its
    allocator's plus its CUDA context); `free_bytes`: what the card has free before any seed
    starts; `margin`: the share of `total_bytes` kept free. Raises GpuFitError where not even
    one seed fits (`what` names the run: method, batch size)."""
    usable = free_bytes - margin * total_bytes
    if peak_bytes <= 0:
        raise ValueError(f"peak_bytes must be positive (a measurement), got {peak_bytes}")
    fit = int(usable // peak_bytes) if usable > 0 else 0
    card = (f"{usable / GIB:.1f} GiB usable of the card's {free_bytes / GIB:.1f} GiB free "
            f"({total_bytes / GIB:.1f} GiB total, {margin:.0%} kept free)")
    if fit < 1:
        raise GpuFitError(f"{what} needs {peak_bytes / GIB:.2f} GiB of GPU memory at its peak "
                          f"(measured), more than the {card}: use a card with more memory, or "
                          "lower the batch size (train.batch_size; under the paper profile the "
                          "method's row in pipeline/method_settings.py sets it)")
    n = max(1, min(fit, cores, seeds))
    limit = ("the memory" if n == fit else f"the {cores} usable cores" if n == cores
             else f"the {seeds} seeds to train")
    reason = (f"{n} at once, set by {limit}: {what} peaks at {peak_bytes / GIB:.2f} GiB "
              f"(measured); {card} hold {fit}; {cores} usable cores; {seeds} seeds to train")
    return n, reason


def seeds_at_once(cfg: Config, dataset: str | None = None, variant: str | None = None,
                  seeds: int | None = None, measure=None) -> tuple[int, str]:
    """(seed processes a stage runs at once, why): what the train stage decides, for a caller
    such as an `explain` command. `cfg`: the run's config (`variant_config(cfg, variant,
    dataset)`, whose train.workers is the user's: a set value wins; train_stage.run_config's
    resets it, so the stage checks it first). `seeds`: how many are left to train (default: all
    of cfg.seeds). On CUDA the probe runs (`measure(cfg, dataset, variant) -> dict`, `probe` by
    default: a few seconds on the GPU); on CPU nothing is measured."""
    cores = usable_cores()
    seeds = len(cfg.seeds) if seeds is None else seeds
    if cfg.train.workers:
        return cfg.train.workers, f"{cfg.train.workers} at once: train.workers is set"
    if not _cuda(cfg.train.device):
        return cores, (f"{cores} at once: one seed process per usable core on the CPU "
                       f"(train.num_threads = {cfg.train.num_threads} torch threads each)")
    if dataset is None or variant is None:
        return 1, "1 at once: on a GPU the count comes from one run's measured memory, and no run was named"
    m = (measure or probe)(cfg, dataset, variant)
    what = f"one seed of {cfg.model} ({dataset}/{variant}) at batch size {m['batch_size']}"
    if m.get("out_of_memory"):
        raise GpuFitError(f"{what} ran out of GPU memory in its first training steps on a card "
                          f"of {m['total_bytes'] / GIB:.1f} GiB ({m['out_of_memory']}): use a card "
                          "with more memory, or lower the batch size (train.batch_size; under the "
                          "paper profile pipeline/method_settings.py)")
    return seeds_that_fit(m["peak_reserved_bytes"] + m["context_bytes"], m["total_bytes"],
                          m["free_bytes"], cores, seeds, what=what)


def _cuda(device: str) -> bool:
    if device == "cpu":
        return False
    import torch
    return device == "cuda" or torch.cuda.is_available()


def probe(cfg: Config, dataset: str, variant: str, steps: int = PROBE_STEPS) -> dict:
    """`measure_seed` on the GPU in a spawned process of its own (the stage then holds no CUDA
    context, nor the probe's cached memory, while its seeds train)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        m = pool.submit(measure_seed, cfg, dataset, variant, steps).result()
    log.info("%s/%s: memory probe (%d training steps at batch %d): peak %.2f GiB allocated, "
             "%.2f GiB reserved, CUDA context %.2f GiB", dataset, variant, steps, m["batch_size"],
             m["peak_allocated_bytes"] / GIB, m["peak_reserved_bytes"] / GIB, m["context_bytes"] / GIB)
    return m


def measure_seed(cfg: Config, dataset: str, variant: str, steps: int = PROBE_STEPS) -> dict:
    """Peak memory of `steps` training steps of the run's real model on its first training batch
    at full padded length, on cfg.train.device; on CPU the memory fields are 0 (the steps run,
    which is what the CPU tests check)."""
    import torch

    from pipeline import paths, train
    from pipeline.data.store import StoreDataset, read_attrs
    from pipeline.precision import fp32_recurrent
    device = train.resolve_device(cfg.train.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats(device)  # in a caller's process: this probe's peak
        free0, total = torch.cuda.mem_get_info(device)
    store, text = paths.aligned_store(dataset), paths.text_features(dataset)
    task = read_attrs(store)["task"]
    mods = tuple(cfg.modalities)
    extra = ("text_bert",) if cfg.text.finetune and "text" in mods else ()
    if extra and cfg.model == "mag_bert" and train._has_text_key(text, "text_word_ids"):
        extra += ("text_word_ids",)
    data = StoreDataset(store, "train", text_file=text, modalities=mods, extra=extra)
    batch = next(data.batches(cfg.train.batch_size))  # untrimmed: the store's full length
    out = {"batch_size": int(batch["label"].shape[0]), "steps": steps, "device": str(device),
           "peak_allocated_bytes": 0, "peak_reserved_bytes": 0, "context_bytes": 0,
           "total_bytes": 0, "free_bytes": 0}
    train.seed_everything(0)
    try:
        model = fp32_recurrent(train.build_model(cfg, {m: data.dims[m] for m in mods}, task,
                                                 n_train=len(data))).to(device)
        optim = torch.optim.Adam(train.param_groups(model, cfg.train.lr, cfg.train.weight_decay,
                                                    cfg.train.lr_parts, cfg.train.weight_decay_parts),
                                 lr=cfg.train.lr)
        balancer = phase2(train.build_balancer(cfg, task))
        batch = {k: v.to(device) for k, v in batch.items()}
        for _ in range(steps):
            train_step(model, optim, balancer, batch, task, cfg.train, device,
                       cfg.train.amp and cuda)
        if cuda:
            torch.cuda.synchronize(device)
    except torch.cuda.OutOfMemoryError as e:
        out["out_of_memory"] = str(e).splitlines()[0]
    finally:
        data.close()
    if cuda:
        out.update(peak_allocated_bytes=torch.cuda.max_memory_allocated(device),
                   peak_reserved_bytes=torch.cuda.max_memory_reserved(device),
                   context_bytes=total - free0, total_bytes=total, free_bytes=total)
    return out


def phase2(balancer):
    """The balancer in the phase it costs most in (PaSE: SGM on from the first epoch)."""
    if hasattr(balancer, "enabled_from"):
        balancer.enabled_from(0)
    return balancer


def train_step(model, optim, balancer, batch: dict, task: str, tcfg, device, amp: bool) -> None:
    """One training step as pipeline/train.py's loop takes it (epoch 0; the balancer active if it
    is from epoch 0); shared with benchmarks/gpu_check.py."""
    from pipeline.models.base import task_loss
    from pipeline.train import autocast, clip_gradients
    with autocast(device, amp):
        out = model({k: v for k, v in batch.items() if k != "label"})
        losses = {"task": task_loss(out["pred"], batch["label"], task)}
        losses.update(model.extra_losses(out, batch, task, 0))
    optim.zero_grad(set_to_none=True)
    if balancer.active(0):
        balancer.backward(model, losses, 0)
        balancer.before_step(model, optim, out, batch, losses, 0)
    else:
        sum(losses.values()).backward()
    clip_gradients(model, tcfg)
    optim.step()
    if balancer.active(0) and hasattr(balancer, "reset"):
        balancer.reset(optim)
