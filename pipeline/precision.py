"""Mixed precision you can trust: recurrent layers in fp32 under autocast, and a listing of the
dtype each module computes in (tests/models/test_autocast_dtypes.py, benchmarks/bench_gpu.py)."""
from __future__ import annotations

import torch
from torch import nn


def _to_fp32(x):
    if torch.is_tensor(x) and x.is_floating_point():
        return x.float()
    if isinstance(x, nn.utils.rnn.PackedSequence):
        return x._replace(data=x.data.float())
    if isinstance(x, tuple):
        return tuple(_to_fp32(v) for v in x)
    return x


_FP32_CLASSES: dict[type, type] = {}


def _fp32_class(cls: type) -> type:
    """A subclass of an RNN class whose forward runs with autocast off, on fp32 inputs."""
    if cls not in _FP32_CLASSES:
        def forward(self, *args, **kwargs):
            with torch.autocast(device_type="cuda", enabled=False), \
                    torch.autocast(device_type="cpu", enabled=False):
                return super(sub, self).forward(*_to_fp32(args), **kwargs)
        sub = type(f"FP32{cls.__name__}", (cls,), {"forward": forward, "_fp32": True})
        _FP32_CLASSES[cls] = sub
    return _FP32_CLASSES[cls]


def fp32_recurrent(model: nn.Module) -> nn.Module:
    """Run every LSTM/GRU/RNN of `model` in fp32 under autocast. torch's autocast runs RNNs in
    low precision (on CPU in bf16, as tests/models/test_autocast_dtypes.py shows; on CUDA the cuDNN RNN
    path is reported to cast to fp16, not to the autocast dtype, and bf16 autocast has no loss
    scaling); each recurrent module's class is swapped for a subclass
    that switches autocast off and casts its inputs to fp32 (weights, state_dict and the
    recurrence are unchanged). tests/models/test_autocast_dtypes.py lists each module's compute dtype."""
    for module in model.modules():
        if isinstance(module, nn.RNNBase) and not getattr(module, "_fp32", False):
            module.__class__ = _fp32_class(type(module))
    return model


def output_dtypes(model: nn.Module, run) -> dict[str, torch.dtype]:
    """{module name: dtype of its first floating output} for every module that ran in `run()`
    (forward hooks; `run` calls the model, e.g. under autocast)."""
    def first_float(x):
        if torch.is_tensor(x):
            return x.dtype if x.is_floating_point() else None
        if isinstance(x, nn.utils.rnn.PackedSequence):
            return x.data.dtype
        if isinstance(x, (tuple, list)):
            return next((d for d in map(first_float, x) if d is not None), None)
        if isinstance(x, dict):
            return next((d for d in map(first_float, x.values()) if d is not None), None)
        hidden = getattr(x, "last_hidden_state", None)  # transformers' output objects
        return hidden.dtype if torch.is_tensor(hidden) else None

    seen = {}
    handles = [m.register_forward_hook(lambda mod, args, out, name=name: seen.__setitem__(name, first_float(out)))
               for name, m in model.named_modules()]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return {k: v for k, v in seen.items() if v is not None}


def dtype_summary(model: nn.Module, dtypes: dict[str, torch.dtype]) -> dict:
    """Leaf modules counted by compute dtype, and every recurrent module's dtype."""
    modules = dict(model.named_modules())
    leaves = {n: str(d).replace("torch.", "") for n, d in dtypes.items()
              if not list(modules[n].children())}
    counts = {d: sum(v == d for v in leaves.values()) for d in sorted(set(leaves.values()))}
    rnns = {n: str(dtypes.get(n)).replace("torch.", "") for n, m in modules.items()
            if isinstance(m, nn.RNNBase)}
    return {"leaf_modules_by_dtype": counts, "recurrent": rnns}
