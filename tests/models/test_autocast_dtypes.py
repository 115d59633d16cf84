"""Mixed precision you can trust: under bf16 autocast every recurrent layer computes in fp32.

Each model is built at its paper-profile row (a tiny random BERT stands in for BERT-base), run
once under `torch.autocast('cpu', dtype=torch.bfloat16)`, and a forward hook on every module
records the dtype of its output: the listing shows what runs in bf16 and what in fp32.
"""
import json

import pytest
import torch
import yaml
from torch import nn

from pipeline.settings import config_from_dict
from pipeline.precision import dtype_summary, fp32_recurrent, output_dtypes
from pipeline.train import build_model
from pipeline.profiles import variant_config
from tests.helpers import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")
DIMS = {"text": 24, "audio": 6, "vision": 5}


def paper_cfg():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["profile"] = "paper"
    raw["paper"]["text_encoder"] = "tiny-random-bert"
    return config_from_dict(raw)


def batch(B=3, L=7, T=9):
    g = torch.Generator().manual_seed(0)
    b = {m: torch.randn(B, L, d, generator=g) for m, d in DIMS.items()}
    b.update({f"{m}_len": torch.tensor([L, L - 2, 1]) for m in DIMS})
    ids = torch.randint(5, 100, (B, T), generator=g)
    b["text_bert"] = torch.stack([ids, torch.ones_like(ids), torch.zeros_like(ids)], 1)
    return b


def compute_dtypes(model: nn.Module, inputs: dict) -> dict[str, torch.dtype]:
    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(inputs)
    return output_dtypes(model, run)


@pytest.mark.parametrize("variant", ["pase", "ef_lstm", "tfn", "lmf", "mult", "self_mm", "cpsl",
                                     "mag_bert"])
def test_recurrent_layers_compute_in_fp32_under_bf16_autocast(variant, capsys):
    from pipeline.features.text import load_text_encoder
    vcfg = variant_config(paper_cfg(), variant, "mosi")
    dims = dict(DIMS, text=DIMS["text"])
    model = build_model(vcfg, dims, "regression",
                        bert_factory=lambda c: load_text_encoder("tiny-random-bert").model, n_train=3)
    model = fp32_recurrent(model).eval()
    inputs = batch()
    if not vcfg.text.finetune:
        inputs.pop("text_bert")
    dtypes = compute_dtypes(model, inputs)
    rnns = [n for n, m in model.named_modules() if isinstance(m, nn.RNNBase)]
    with capsys.disabled():  # the listing, for the log of a CI run
        print(f"\n{variant}: " + json.dumps(dtype_summary(model, dtypes)))
    for n in rnns:
        assert dtypes[n] == torch.float32, (variant, n, dtypes[n])
    # autocast is really on: matrix products elsewhere compute in bf16
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and dtypes.get(n)]
    assert linears and any(dtypes[n] == torch.bfloat16 for n in linears), variant
    if variant in ("pase", "ef_lstm", "tfn", "self_mm", "cpsl"):
        assert rnns, f"{variant} should have a recurrent layer at its paper settings"


def test_without_the_wrapper_autocast_runs_an_lstm_in_bf16():
    """What the wrapper prevents: torch's autocast runs a plain fp32 LSTM in low precision."""
    torch.manual_seed(0)
    bare, x = nn.LSTM(4, 4, batch_first=True), torch.randn(2, 3, 4)
    wrapped = fp32_recurrent(nn.LSTM(4, 4, batch_first=True))
    wrapped.load_state_dict(bare.state_dict())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, full = bare(x)[0], wrapped(x)[0]
    assert low.dtype == torch.bfloat16 and full.dtype == torch.float32
    assert torch.allclose(full, bare(x)[0], atol=1e-6)  # the wrapped one equals fp32 outside autocast
