"""A seed's epoch checkpoint (`last.pt` in its folder, pipeline/resume.py): the model, the
optimizer, the trainer's state and every RNG state (torch's CPU generator, each CUDA device's,
numpy's and Python's `random`), so a resumed seed draws what an uninterrupted one draws.

A checkpoint that cannot be used (truncated, corrupt, not one of this model, made on another
device, or made before checkpoints held every RNG state) is named in a warning, renamed to
`last.pt.corrupt-<time>` and the seed restarts from its first epoch: never a reason to stop.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from pipeline.data.store import atomic_path

log = logging.getLogger(__name__)

CHECKPOINT_KEYS = {"model", "optim", "torch_rng", "cuda_rng", "numpy_rng", "python_rng", "device",
                   "state"}


def rng_states() -> dict:
    """Every RNG a seed draws from: torch's CPU generator, each CUDA device's (only where this
    process has initialised CUDA: asking would otherwise start it), numpy's and Python's."""
    import random

    import numpy as np
    import torch
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return {"torch_rng": torch.get_rng_state(), "cuda_rng": cuda, "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate()}


def set_rng_states(saved: dict) -> None:
    import random

    import numpy as np
    import torch
    torch.set_rng_state(saved["torch_rng"].cpu())  # (torch.load mapped them to the run's device)
    if saved["cuda_rng"]:
        torch.cuda.set_rng_state_all([t.cpu() for t in saved["cuda_rng"]])
    np.random.set_state(saved["numpy_rng"])
    random.setstate(saved["python_rng"])


def save_checkpoint(path: Path, model, optim, state: dict) -> None:
    import torch  # here: a stage that only restores finished seeds never imports torch
    device = next(iter(model.parameters()), torch.empty(0)).device.type
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: a full disk is an OSError
        torch.save({"model": model.state_dict(), "optim": optim.state_dict(), **rng_states(),
                    "device": device, "state": state}, f)


def load_checkpoint(path: Path, model, optim, device) -> dict | None:
    """Restore model, optimizer and every RNG from `path`; returns the trainer state, or None when
    there is no checkpoint or it cannot be used (then it is set aside and the seed starts afresh)."""
    if not path.exists():
        return None
    import torch
    try:
        saved = torch.load(path, map_location=device, weights_only=False)
        _check(saved, model, optim, torch.device(device).type)
    except Exception as e:  # truncated, corrupt, another model's, or older: never a reason to stop
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(path, aside)
        log.warning("%s: unreadable checkpoint (%s: %s); set aside as %s, the seed restarts from "
                    "its first epoch", path, type(e).__name__, (str(e).splitlines() or [""])[0][:200], aside)
        return None
    optim.load_state_dict(saved["optim"])
    set_rng_states(saved)
    model.load_state_dict(saved["model"])
    return saved["state"]


def _check(saved, model, optim, device: str) -> None:
    """Everything load_checkpoint applies, checked first, so a bad file changes nothing."""
    import random

    import numpy as np
    import torch
    if not isinstance(saved, dict) or not {"model", "optim", "torch_rng", "state"} <= set(saved):
        raise ValueError("not a checkpoint of this trainer (keys missing)")
    if not CHECKPOINT_KEYS <= set(saved):  # written before checkpoints held every RNG state
        raise ValueError("it holds no CUDA, numpy or Python RNG state (an older checkpoint format)")
    if saved["device"] != device:
        raise ValueError(f"it was made on {saved['device']}, this run trains on {device}")
    mine = model.state_dict()
    theirs = saved["model"]
    if set(theirs) != set(mine) or any(tuple(theirs[k].shape) != tuple(v.shape) for k, v in mine.items()):
        raise ValueError("its weights do not fit this model")
    groups = saved["optim"].get("param_groups", [])
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in optim.param_groups]:
        raise ValueError("its optimizer state does not fit this model")
    rng = saved["torch_rng"]
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8 or rng.shape != torch.get_rng_state().shape:
        raise ValueError("its RNG state is malformed")
    cuda = saved["cuda_rng"]
    if not isinstance(cuda, list) or not all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8
                                             for t in cuda):
        raise ValueError("its CUDA RNG states are malformed")
    if cuda and len(cuda) != (torch.cuda.device_count() if torch.cuda.is_available() else 0):
        raise ValueError(f"it holds the RNG states of {len(cuda)} CUDA devices; this process sees "
                         f"{torch.cuda.device_count() if torch.cuda.is_available() else 0}")
    try:  # set on throwaway generators: raises on a malformed state
        np.random.RandomState().set_state(saved["numpy_rng"])
        random.Random().setstate(saved["python_rng"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"its numpy or Python RNG state is malformed ({e})") from None
    state = saved["state"]
    if not isinstance(state, dict) or not {"epoch", "history", "best_model"} <= set(state):
        raise ValueError("its trainer state is incomplete")
