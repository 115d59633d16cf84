"""The training loop: one file, read top to bottom.

`train_variant` (the stage around this loop: pipeline/train_stage.py) runs one (dataset, variant)
over every seed in params.yaml. Each seed:
seed everything -> build the model -> epochs of (train, validate, checkpoint) -> load the epoch
with the best validation score -> predict the test split once -> score it. The test labels are
read only after the predictions exist.

Two phases (PaSE, "Dual-Phase Optimization"): phase 1 trains with the task loss plus the model's
own loss terms; phase 2 starts when the validation score has not improved for `sgm.patience`
epochs (or at `sgm.start_epoch`) and switches the balancer on (SGM for PaSE). A balancer acts
between `backward()` and `optimizer.step()`, on the optimizer's groups (`param_groups`).

A checkpoint is written atomically after every epoch (pipeline/checkpoints.py) and an interrupted
run resumes from it with the same numbers; finished seeds survive a killed stage, under the same
code, parameters and inputs only (pipeline/resume.py). Outputs: pipeline/run_outputs.py.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pipeline import checkpoints, paths, resume
from pipeline import run_outputs
from pipeline.config import Config
from pipeline.data.schema import IEMOCAP_EMOTIONS
from pipeline.data.store import StoreDataset, atomic_path, read_attrs, write_atomic
from pipeline.errors import ConfigError, PipelineError
from pipeline.metrics import iemocap_metrics, regression_metrics, selection_score
from pipeline.models.base import Balancer, count_parameters, out_dim_for, task_loss
from pipeline.precision import fp32_recurrent
from pipeline.profiles import effective_settings

log = logging.getLogger(__name__)


class NonFiniteLoss(PipelineError):
    """A loss term became NaN or inf; the last good checkpoint is kept."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' was asked for but no GPU is visible to torch; "
                          "allowed here: 'auto', 'cpu'")
    return torch.device(name)


def load_bert(cfg: Config):
    """The text encoder to fine-tune (paper profile), or None for frozen cached vectors."""
    if not cfg.text.finetune:
        return None
    from pipeline.features.text import load_text_encoder
    return load_text_encoder(cfg.text.encoder).model


def build_model(cfg: Config, dims: dict[str, int], task: str, bert_factory=load_bert,
                n_train: int = 0) -> nn.Module:
    out_dim = out_dim_for(task)
    if cfg.model == "pase":
        from pipeline.models import pase
        return pase.build(dims, out_dim, task, cfg, bert=bert_factory(cfg))
    if cfg.model == "late_fusion":
        from pipeline.models.late_fusion import LateFusion
        return LateFusion(dims, out_dim, hidden=cfg.train.hidden, dropout=cfg.train.dropout,
                          **cfg.model_args)
    from pipeline.models.baselines import BASELINES, NEEDS
    if cfg.model in BASELINES:
        kw = dict(cfg.model_args)  # the paper profile's per-method constructor arguments
        needs = NEEDS.get(cfg.model, ())
        if "bert" in needs or ("bert_if_finetuned" in needs and cfg.text.finetune):
            bert = bert_factory(cfg)
            if bert is None:
                raise ConfigError(f"model: {cfg.model!r} adapts BERT's layers, so it needs "
                                  "text.finetune: true (the GPU profile)")
            kw["bert"] = bert
            if "bert_if_finetuned" in needs:  # PaSE's text encoder (MAG-BERT reads [CLS] itself)
                kw["text_pooling"] = cfg.text.pooling
        if "task" in needs:
            kw["task"] = task
        if "n_train" in needs:
            kw["n_train"] = n_train
        if "encoder" in needs:
            kw.setdefault("encoder", cfg.train.encoder)
        return BASELINES[cfg.model](dims, out_dim, hidden=cfg.train.hidden,
                                    dropout=cfg.train.dropout, **kw)
    raise ConfigError(f"model: {cfg.model!r} is unknown")


def build_balancer(cfg: Config, task: str) -> Balancer:
    """The gradient-balancing part (pipeline/balancers/): SGM for PaSE (phase 2), or another."""
    from pipeline import balancers
    return balancers.build(cfg, task)


def pretrained_parameters(model: nn.Module) -> set[int]:
    """ids of the parameters of the pretrained backbones in `model`: every transformers model in
    it (the text encoder `load_bert` gives a fine-tuning run). Everything else was initialised
    by our code and is a new layer."""
    import sys
    if "transformers" not in sys.modules:  # no transformers model can exist then
        return set()
    from transformers import PreTrainedModel
    return {id(p) for mod in model.modules() if isinstance(mod, PreTrainedModel)
            for p in mod.parameters()}


def param_groups(model: nn.Module, lr: float, weight_decay: float = 0.0, lr_parts=None,
                 weight_decay_parts=None) -> list[dict]:
    """The optimizer's groups, each with the modality a balancer scales it by ("modality"; None
    for "shared"):
    - "text.backbone": a pretrained text encoder being fine-tuned, at `lr_parts.text`;
    - one group per modality encoder's own new layers ("audio", "vision": `lr_parts.audio`,
      `.vision`; "text": the projection over a fine-tuned backbone, CP+SL's norm and scale, or a
      whole frozen-text encoder), where text's new layers train as "shared" (MMSA counts Self-MM's
      text projection in its "other" rate): `lr_parts.text` belongs to the backbone only;
    - "shared": everything else (fusion, heads) at `lr_parts.shared`.
    A part left None takes `lr` / `weight_decay`; `weight_decay_parts` follows the same rule."""
    def part(parts, name):
        return getattr(parts, name, None) if parts is not None and name else None

    pretrained = pretrained_parameters(model)
    groups, taken = [], set()
    for m, params in model.modality_parameters().items():
        params = [p for p in params if p.requires_grad and id(p) not in taken]
        taken.update(id(p) for p in params)
        backbone = [p for p in params if id(p) in pretrained]
        layers = [p for p in params if id(p) not in pretrained]
        if backbone:
            groups.append({"params": backbone, "name": f"{m}.backbone", "modality": m, "part": m})
        groups.append({"params": layers, "name": m, "modality": m,
                       "part": "shared" if m == "text" else m})
    shared = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    groups.append({"params": shared, "name": "shared", "modality": None, "part": "shared"})
    for g in groups:
        own_lr, own_wd = part(lr_parts, g["part"]), part(weight_decay_parts, g["part"])
        g["lr"] = g["base_lr"] = lr if own_lr is None else own_lr
        g["weight_decay"] = weight_decay if own_wd is None else own_wd
    return [g for g in groups if g["params"]]


def clip_gradients(model: nn.Module, tcfg) -> None:
    """train.grad_clip: clip_grad_norm_ over every trainable parameter, or clip_grad_value_ (the
    rule MMSA's trainers use for MulT); after any balancer has rescaled the gradients."""
    if tcfg.grad_clip is None:
        return
    params = [p for p in model.parameters() if p.requires_grad and p.grad is not None]
    if tcfg.grad_clip_mode == "value":
        nn.utils.clip_grad_value_(params, tcfg.grad_clip)
    else:
        nn.utils.clip_grad_norm_(params, tcfg.grad_clip)


def score(outputs: np.ndarray, labels: np.ndarray, task: str) -> dict[str, float]:
    if task == "regression":
        return regression_metrics(outputs.reshape(-1), labels)
    return iemocap_metrics(outputs.reshape(-1, len(IEMOCAP_EMOTIONS), 2), labels)


def autocast(device: torch.device, enabled: bool):
    """Mixed precision on the GPU profile (bfloat16 needs no loss scaling); full precision on
    CPU. Recurrent layers stay in fp32 inside it (pipeline/precision.py, `fp32_recurrent`)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def trim_padding(batch: dict) -> dict:
    """Cut the time axis to the longest sequence in the batch: every model masks by length, so
    the result is the same, and short utterances padded to 50 steps cost 2-3x less."""
    mods = [m for m in ("text", "audio", "vision") if m in batch and batch[m].dim() == 3]
    if not mods:
        return batch
    longest = max(int(batch[f"{m}_len"].max()) for m in mods)
    longest = max(longest, 1)
    if any(batch[m].shape[1] > longest for m in mods):
        batch = dict(batch)
        for m in mods:
            batch[m] = batch[m][:, :longest]
    return batch


def to_device(batch: dict, device, drop=("label",)) -> dict:
    batch = trim_padding(batch)
    return {k: v.to(device, non_blocking=True) for k, v in batch.items() if k not in drop}


@torch.no_grad()
def predict(model: nn.Module, data: StoreDataset, batch_size: int, device, amp=False,
            keep=("pred",)) -> dict[str, np.ndarray]:
    """Model outputs for a whole split, in order. The label never reaches the model.
    A dict-valued output (e.g. "features": {modality: (B, h)}) comes back as "<key>_<modality>"."""
    model.eval()
    outs = {k: [] for k in keep}
    for batch in data.batches(batch_size):
        with autocast(device, amp):
            out = model(to_device(batch, device))
        for k in keep:
            if isinstance(out.get(k), dict):
                for m, v in out[k].items():
                    outs.setdefault(f"{k}_{m}", []).append(v.float().cpu().numpy())
            elif k in out:
                outs[k].append(out[k].float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in outs.items() if v}


def _has_text_key(text_file: Path, key: str) -> bool:
    import h5py
    with h5py.File(text_file, "r") as f:
        return key in f["train"]


def train_seed(cfg: Config, dataset: str, variant: str, seed: int, out: Path,
               notes: tuple[str, ...] = (), progress: bool | None = None,
               curves: Path | None = None) -> dict:
    """Train one seed; write metrics.json, predictions.csv and history to `out`, the per-epoch
    curves to `curves` (default data/curves/..., dvclive; `dvc plots show`)."""
    curves = paths.curves_dir(dataset, variant, seed) if curves is None else curves
    tcfg = cfg.train
    store, text = paths.aligned_store(dataset), paths.text_features(dataset)
    attrs, text_attrs = read_attrs(store), read_attrs(text)
    task = attrs["task"]
    device = resolve_device(tcfg.device)
    amp = tcfg.amp and device.type == "cuda"
    if tcfg.num_threads:
        torch.set_num_threads(tcfg.num_threads)
    seed_everything(seed)
    mods = tuple(cfg.modalities)
    extra = ("text_bert",) if cfg.text.finetune and "text" in mods else ()
    if extra and cfg.model == "mag_bert" and _has_text_key(text, "text_word_ids"):
        extra += ("text_word_ids",)  # word-level rows onto sub-word tokens (embed stage's map)
    data = {s: StoreDataset(store, s, text_file=text, modalities=mods, extra=extra)
            for s in ("train", "valid", "test")}
    model = build_model(cfg, {m: data["train"].dims[m] for m in mods}, task,
                        n_train=len(data["train"]))
    model = fp32_recurrent(model).to(device)
    optim = torch.optim.Adam(param_groups(model, tcfg.lr, tcfg.weight_decay, tcfg.lr_parts,
                                          tcfg.weight_decay_parts), lr=tcfg.lr)
    balancer = build_balancer(cfg, task)
    monitor = None  # SGM computing Shapley values for the logs (PaSE models), changes nothing

    # same code, parameters and inputs, or not resumed
    ckpt_dir = resume.seed_folder(resume.run_record(cfg, dataset, variant), seed)
    ckpt = ckpt_dir / "last.pt"
    state = {"epoch": 0, "best_score": -math.inf, "best_epoch": -1, "best_model": None,
             "history": [], "phase": 1, "phase2_epoch": None, "since_best": 0}
    saved = checkpoints.load_checkpoint(ckpt, model, optim, device)
    if saved is not None:
        state = saved
        log.info("%s/%s seed %d: resuming after epoch %d from %s", dataset, variant, seed,
                 state["epoch"], ckpt)

    if state["phase2_epoch"] is not None and hasattr(balancer, "enabled_from"):
        balancer.enabled_from(state["phase2_epoch"] - 1)  # resumed inside phase 2
    out.mkdir(parents=True, exist_ok=True)
    live = run_outputs.open_curves(curves)
    for past in state["history"]:  # re-log what an interrupted run had logged
        run_outputs.log_epoch(live, past)

    started = time.perf_counter()
    epochs = tqdm(range(state["epoch"], tcfg.epochs), desc=f"{dataset}/{variant} seed {seed}",
                  initial=state["epoch"], total=tcfg.epochs,
                  disable=None if progress is None else not progress)
    for epoch in epochs:
        if tcfg.early_stop and state["since_best"] >= tcfg.early_stop:
            log.info("%s/%s seed %d: early stop after epoch %d (%d epochs without a better "
                     "validation score)", dataset, variant, seed, epoch, state["since_best"])
            break  # checked here, so a resumed run stops where the uninterrupted one did
        balancing = balancer.active(epoch)  # SGM: from the phase switch; others: their window
        model.on_epoch_start(epoch, state["phase"])
        model.train()
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)  # same order after a resume
        sums: dict[str, float] = {}
        n_steps = 0
        for step, batch in enumerate(data["train"].batches(tcfg.batch_size, shuffle=True, generator=gen)):
            batch = to_device(batch, device, drop=())
            with autocast(device, amp):
                out_ = model({k: v for k, v in batch.items() if k != "label"})
                losses = {"task": task_loss(out_["pred"], batch["label"], task)}
                losses.update(model.extra_losses(out_, batch, task, epoch))
            for name, value in losses.items():
                if not torch.isfinite(value):
                    raise NonFiniteLoss(
                        f"{dataset}/{variant} seed {seed}: loss term {name!r} is {value.item()} at "
                        f"epoch {epoch + 1}, step {step}; last good checkpoint: "
                        f"{ckpt if ckpt.exists() else 'none yet'}")
            optim.zero_grad(set_to_none=True)
            if balancing:
                balancer.backward(model, losses, epoch)
                info = balancer.before_step(model, optim, out_, batch, losses, epoch)
            else:
                sum(losses.values()).backward()
                info = {}
            if ("intra" in out_ or "inter" in out_) and not any(k.startswith("shapley_") for k in info):
                # Contributions are logged in every phase and variant (Figure 5 compares runs
                # with and without SGM); they are loss values the step already has.
                if monitor is None:
                    from pipeline.balancers.sgm import SGM
                    monitor = SGM(rho=cfg.sgm.rho)
                info.update({f"shapley_{m}": v for m, v in monitor.shapley(out_).items()})
            clip_gradients(model, tcfg)
            optim.step()
            n_steps += 1
            for k, v in {**{f"loss_{k}": v.item() for k, v in losses.items()}, **info}.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        if balancing and hasattr(balancer, "reset"):
            balancer.reset(optim)  # validation and checkpoints see the base learning rates
        valid = score(predict(model, data["valid"], tcfg.batch_size, device, amp)["pred"],
                      data["valid"].labels(), task)
        record = {"epoch": epoch + 1, "phase": state["phase"],
                  **{k: v / max(n_steps, 1) for k, v in sums.items()},
                  **{f"valid_{k}": v for k, v in valid.items()}}
        state["history"].append(record)
        run_outputs.log_epoch(live, record)
        current = selection_score(valid, task)
        if epochs.disable:  # no progress bar off a terminal (CI, a redirected job): one line an epoch
            log.info("%s/%s seed %d: epoch %d/%d, phase %d, train loss %.4f, validation score %.4f "
                     "(best so far %.4f)", dataset, variant, seed, epoch + 1, tcfg.epochs,
                     state["phase"], sum(v for k, v in record.items() if k.startswith("loss_")),
                     current, max(current, state["best_score"]))
        if current > state["best_score"]:  # model selection on the validation split only
            state.update(best_score=current, best_epoch=epoch + 1, since_best=0,
                         best_model={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        else:
            state["since_best"] += 1
        if state["phase"] == 1 and _phase2_due(cfg, epoch + 1, state["since_best"]):
            state.update(phase=2, phase2_epoch=epoch + 2)
            if hasattr(balancer, "enabled_from"):
                balancer.enabled_from(epoch + 1)  # 0-based index of the first phase-2 epoch
            log.info("%s/%s seed %d: phase 2 from epoch %d", dataset, variant, seed, epoch + 2)
        state["epoch"] = epoch + 1
        _save_checkpoint(ckpt, model, optim, state)
        epochs.set_postfix(loss=f"{record.get('loss_task', 0):.4f}", best=state["best_epoch"])

    model.load_state_dict(state["best_model"])
    test_out = predict(model, data["test"], tcfg.batch_size, device, amp,
                       keep=("pred", "fused", "gate_mean"))
    test_labels = data["test"].labels()  # read once, after the predictions exist
    test = score(test_out["pred"], test_labels, task)
    result = {
        "dataset": dataset, "variant": variant, "seed": seed, "synthetic": bool(attrs.get("synthetic")),
        "model": cfg.model, "modalities": list(mods), "best_epoch": state["best_epoch"],
        "epochs": tcfg.epochs, "phase2_epoch": state["phase2_epoch"],
        "valid": state["history"][state["best_epoch"] - 1], "test": test,
        "params": count_parameters(model), "text_encoder": text_attrs.get("encoder"),
        "epochs_run": state["epoch"], "settings": effective_settings(cfg, dataset), "notes": list(notes),
        "run_key": ckpt_dir.name,  # code, parameters and inputs (pipeline/resume.py): what made it
    }
    run_outputs.save_model(out / "model.pt", model, cfg, dataset=dataset, variant=variant, seed=seed, task=task,
               dims={m: data["train"].dims[m] for m in mods}, n_train=len(data["train"]),
               best_epoch=state["best_epoch"], key=ckpt_dir.name,
               inputs={"store": str(store), "text_features": str(text),
                       "store_sha256": text_attrs.get("store_sha256"),
                       "text_encoder": text_attrs.get("encoder")})
    write_atomic(out / "metrics.json", json.dumps(result, indent=2, sort_keys=True) + "\n")
    write_atomic(out / "history.json", json.dumps(state["history"], indent=1, sort_keys=True) + "\n")
    run_outputs.write_predictions(out / "predictions.csv", data["test"], test_out["pred"], test_labels, task)
    for key in ("fused", "gate_mean"):  # for the t-SNE (Figure 3) and gate (Figure 4) plots
        if key in test_out:
            with atomic_path(out / f"{key}_test.npy") as tmp, open(tmp, "wb") as f:
                np.save(f, test_out[key].astype(np.float32))
    run_outputs.save_probe_features(out / "probe_features.npz", {
        split: predict(model, data[split], tcfg.batch_size, device, amp, keep=("features",))
        for split in ("train", "test")}, data["train"].labels())
    write_atomic(out / "timing.json", json.dumps(
        {"train_seconds_this_process": round(time.perf_counter() - started, 3),
         "device": str(device)}, indent=2) + "\n")
    run_outputs.close_curves(live)
    # a rerun after a later seed's kill restores this one (its curves too: another DVC output)
    resume.keep_finished(ckpt_dir, out, curves=curves)
    log.info("%s/%s seed %d: test %s", dataset, variant, seed,
             ", ".join(f"{k}={v:.4f}" for k, v in test.items()))
    return result


def _phase2_due(cfg: Config, epochs_done: int, since_best: int) -> bool:
    if cfg.sgm.switch == "epoch":
        return epochs_done + 1 >= cfg.sgm.start_epoch
    return since_best >= cfg.sgm.patience


def _save_checkpoint(path: Path, model, optim, state) -> None:
    checkpoints.save_checkpoint(path, model, optim, state)
