"""Every model on unaligned batches: each modality has its own number of steps (MMSA's unaligned
MOSI is text 50, audio 375, vision 500; here 6 / 11 / 13) and its own lengths. Masking is per
modality: changing the padding past a modality's own length changes no output, changing a value
inside it does."""
import pytest
import torch

from pipeline import train
from pipeline.settings import config_from_dict
from pipeline.variants import VARIANTS
from pipeline.profiles import variant_config
from tests.helpers import tiny_bert

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = {"text": 6, "audio": 11, "vision": 13}
DIMS = {"text": 12, "audio": 5, "vision": 7}
B = 5


def batch(seed=0, finetune=False):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, L in STEPS.items():
        out[m] = torch.randn(B, L, DIMS[m], generator=g)
        # lengths below the padded size (and one at it), different for every modality
        out[f"{m}_len"] = torch.tensor([L, L - 1, 2, L // 2, 1])
    if finetune:
        ids = torch.randint(5, 90, (B, 8), generator=g)
        mask = (torch.arange(8)[None] < torch.tensor([8, 6, 3, 5, 2])[:, None]).long()
        out["text_bert"] = torch.stack([ids * mask, mask, torch.zeros_like(ids)], 1)
    out["index"] = torch.arange(B)
    return out


def model_for(variant, encoder="conv"):
    finetune = variant == "mag_bert"
    cfg = variant_config(config_from_dict({"train": {"hidden": 16, "encoder": encoder, "device": "cpu"},
                                           "text": {"finetune": finetune}}), variant)
    torch.manual_seed(0)
    model = train.build_model(cfg, {m: DIMS[m] for m in cfg.modalities}, "regression",
                              bert_factory=lambda c: tiny_bert() if c.text.finetune else None, n_train=B)
    return model.eval(), cfg, finetune


def outputs(model, b):
    with torch.no_grad():
        out = model(b)
    flat = {}

    def walk(prefix, v):
        if isinstance(v, torch.Tensor):
            flat[prefix] = v
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}", x)
    walk("out", out)
    return flat


CASES = [(v, "conv") for v in VARIANTS] + [("pase", "lstm")]


@pytest.mark.parametrize("variant, encoder", CASES, ids=[f"{v}-{e}" for v, e in CASES])
def test_masking_is_per_modality(variant, encoder):
    model, cfg, finetune = model_for(variant, encoder)
    b = batch(finetune=finetune)
    ref = outputs(model, b)
    assert ref["out.pred"].shape == (B, 1) and torch.isfinite(ref["out.pred"]).all()
    for m in cfg.modalities:
        if m == "text" and finetune:
            continue  # a fine-tuned BERT reads token ids, not the text features
        # padding past this modality's own lengths: any values, same outputs
        noisy = dict(b)
        x = b[m].clone()
        pad = torch.arange(x.shape[1])[None, :] >= b[f"{m}_len"][:, None]
        x[pad] = 1e3 * torch.randn(int(pad.sum()), x.shape[-1])
        noisy[m] = x
        got = outputs(model, noisy)
        for k, v in ref.items():
            torch.testing.assert_close(got[k], v, rtol=1e-4, atol=1e-4, msg=f"{variant}: {m} padding changed {k}")
        # a value inside the length does change the prediction (the check above can fail)
        inside = dict(b)
        x = b[m].clone()
        x[2, 1] += 5.0 * torch.randn(x.shape[-1], generator=torch.Generator().manual_seed(1))  # utterance 2 has length 2 in every modality: step 1 is real
        inside[m] = x
        changed = outputs(model, inside)
        assert any(not torch.allclose(changed[k], v) for k, v in ref.items()), (variant, m)
