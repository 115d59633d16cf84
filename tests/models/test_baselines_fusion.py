"""Fusion baselines (EF-LSTM, TFN, LMF, MulT): they learn, and each has its paper's mechanism."""
import itertools

import pytest
import torch
from torch import nn

from pipeline.models.base import MultimodalModel
from pipeline.models.baselines import BASELINES
from pipeline.models.baselines.lmf import LMF
from pipeline.models.baselines.mult import MulT
from pipeline.models.baselines.tfn import TFN

DIMS = {"text": 12, "audio": 5, "vision": 4}
N, L = 64, 6
NAMES = ["ef_lstm", "lmf", "mult", "tfn"]  # the fusion baselines (others register more)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def make_batch(n=N, steps=None, dims=DIMS, seed=0, min_len=2):
    """Zero-padded sequences with random true lengths and a label that is a function of them."""
    steps = steps or {m: L for m in dims}
    g = torch.Generator().manual_seed(seed)
    batch, means = {}, {}
    for m, d in dims.items():
        lens = torch.randint(min_len, steps[m] + 1, (n,), generator=g)
        mask = (torch.arange(steps[m])[None, :] < lens[:, None]).float()[..., None]
        x = torch.randn(n, steps[m], d, generator=g) * mask
        batch[m], batch[f"{m}_len"] = x, lens
        means[m] = x.sum(1) / lens[:, None]
    y = torch.zeros(n)
    if "text" in means:
        y += 2 * torch.tanh(2 * means["text"][:, 0])
    if "audio" in means:
        y += 1.5 * means["audio"][:, 0]
    if "vision" in means:
        y -= means["vision"][:, 1]
    batch["label"] = y.clamp(-3, 3)
    batch["index"] = torch.arange(n)
    return batch


def build(name, dims=DIMS, out_dim=1, seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("hidden", 16)
    return BASELINES[name](dims, out_dim, **kw)


def pad_with_noise(batch, seed=1):
    """The same batch with random values in every padded position."""
    g = torch.Generator().manual_seed(seed)
    out = dict(batch)
    for m in DIMS:
        x, lens = batch[m], batch[f"{m}_len"]
        pad = (torch.arange(x.shape[1])[None, :] >= lens[:, None]).float()[..., None]
        out[m] = x + pad * torch.randn(x.shape, generator=g) * 5
    return out


def test_registry_and_contract():
    assert set(NAMES) <= set(BASELINES)
    batch = make_batch(n=8)
    for name in NAMES:
        model = build(name)
        assert isinstance(model, MultimodalModel)
        out = model(batch)
        assert out["pred"].shape == (8, 1) and out["fused"].shape[0] == 8
        assert "unimodal" not in out  # none of these four has unimodal heads
        groups = model.modality_parameters()
        assert set(groups) == set(DIMS)
        ids = [{id(p) for p in ps} for ps in groups.values()]
        assert all(ids) and all(not (a & b) for a, b in itertools.combinations(ids, 2))
        out["pred"].sum().backward()
        for m, ps in groups.items():  # every modality's own parameters get a gradient
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in ps), (name, m)


@pytest.mark.parametrize("name", NAMES)
def test_training_loss_falls(name):
    batch = make_batch()
    model = build(name, hidden=32, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)

    def loss_now():
        return nn.functional.mse_loss(model(batch)["pred"].view(-1), batch["label"])

    with torch.no_grad():
        model.eval()
        initial = loss_now().item()
    model.train()
    for _ in range(60):
        opt.zero_grad()
        loss = loss_now()
        loss.backward()
        opt.step()
    with torch.no_grad():
        model.eval()
        final = loss_now().item()
    assert final < 0.5 * initial, (name, initial, final)


@pytest.mark.parametrize("name", NAMES)
def test_iemocap_shaped_output_trains_with_cross_entropy(name):
    batch = make_batch(n=32)
    means = torch.stack([batch["text"][:, :, k].sum(1) for k in range(4)], 1)
    labels = (means > 0).long()  # (B, 4) per-emotion 0/1
    model = build(name, out_dim=8, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        pred = model(batch)["pred"]
        assert pred.shape == (32, 8)
        loss = nn.functional.cross_entropy(pred.view(-1, 2), labels.view(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("name", NAMES)
def test_padding_is_ignored(name):
    batch = make_batch(n=16)
    model = build(name).eval()
    with torch.no_grad():
        a, b = model(batch)["pred"], model(pad_with_noise(batch))["pred"]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_extra_padding_steps_change_nothing(name):
    """Sequences run over their true length: three more zero steps at the end change no output
    (an LSTM run over the padded length would move its state on the zero inputs)."""
    batch = make_batch(n=16)
    longer = dict(batch)
    for m in DIMS:
        longer[m] = torch.cat([batch[m], torch.zeros(16, 3, DIMS[m])], dim=1)
    model = build(name).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(batch)["pred"], model(longer)["pred"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_empty_modality_gives_finite_outputs_and_gradients(name):
    batch = make_batch(n=16)
    batch["audio_len"] = batch["audio_len"].clone()
    batch["audio_len"][:8] = 0  # half the samples have no audio
    batch["audio"][:8] = 0
    batch["vision_len"] = torch.zeros_like(batch["vision_len"])  # no sample has vision
    batch["vision"] = torch.zeros_like(batch["vision"])
    model = build(name)
    out = model(batch)
    assert torch.isfinite(out["pred"]).all() and torch.isfinite(out["fused"]).all()
    out["pred"].pow(2).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output(name):
    batch = make_batch(n=8)
    outs = []
    for _ in range(2):
        model = build(name, seed=3)
        torch.manual_seed(7)
        outs.append(model(batch)["pred"])  # training mode: dropout draws from the seed too
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    other = build(name, seed=4)
    torch.manual_seed(7)
    assert not torch.equal(other(batch)["pred"], outs[0])


@pytest.mark.parametrize("name", NAMES)
def test_modality_subsets(name):
    for k in (1, 2):
        for mods in itertools.combinations(DIMS, k):
            dims = {m: DIMS[m] for m in mods}
            if name == "mult" and k == 1:
                with pytest.raises(ValueError, match="at least 2 modalities"):
                    build(name, dims=dims)
                continue
            model = build(name, dims=dims)
            out = model(make_batch(n=4, dims=dims))
            assert out["pred"].shape == (4, 1) and set(model.modality_parameters()) == set(mods)


def test_bad_arguments_are_clear_errors():
    for name in NAMES:
        with pytest.raises(ValueError, match="unknown modalities"):
            build(name, dims={"text": 12, "speech": 3})
    with pytest.raises(ValueError, match="rank"):
        build("lmf", rank=0)
    with pytest.raises(ValueError, match="divisible"):
        build("mult", d_model=10, heads=4)


# --- TFN: the outer product -------------------------------------------------------------------

def test_tfn_tensor_is_the_outer_product_with_appended_ones():
    model = build("tfn", dropout=0.0).eval()  # hidden 16: z_t 16-d, z_a = z_v 4-d
    assert isinstance(model, TFN) and model.fusion_shape == (17, 5, 5)
    batch = make_batch(n=8)
    with torch.no_grad():
        out = model(batch)
    z = out["features"]
    assert out["fused"].shape == (8, 17 * 5 * 5)
    t = out["fused"].view(8, 17, 5, 5)
    # the unimodal vectors themselves (times the other modalities' constant 1s)
    torch.testing.assert_close(t[:, :16, 4, 4], z["text"])
    torch.testing.assert_close(t[:, 16, :4, 4], z["audio"])
    torch.testing.assert_close(t[:, 16, 4, :4], z["vision"])
    assert torch.equal(t[:, 16, 4, 4], torch.ones(8))
    # bimodal and trimodal products
    torch.testing.assert_close(t[:, :16, :4, 4], z["text"][:, :, None] * z["audio"][:, None, :])
    torch.testing.assert_close(t[:, :16, :4, :4], torch.einsum("bi,bj,bk->bijk", z["text"], z["audio"],
                                                              z["vision"]))


def test_tfn_two_modalities_is_a_two_way_product():
    model = build("tfn", dims={"text": 12, "vision": 4}, sizes={"vision": 3}).eval()
    assert model.fusion_shape == (17, 4)
    with torch.no_grad():
        out = model(make_batch(n=4, dims={"text": 12, "vision": 4}))
    t = out["fused"].view(4, 17, 4)
    torch.testing.assert_close(t[:, :16, :3], out["features"]["text"][:, :, None]
                               * out["features"]["vision"][:, None, :])


# --- LMF: low rank -------------------------------------------------------------------------------

def test_lmf_rank_and_factor_shapes():
    model = build("lmf", rank=3)
    assert isinstance(model, LMF) and model.rank == 3
    assert {m: tuple(f.shape) for m, f in model.factors.items()} == {
        "text": (3, 17, 16), "audio": (3, 5, 16), "vision": (3, 5, 16)}
    assert model.rank_weights.shape == (3,)
    n1 = sum(p.numel() for p in build("lmf", rank=1).parameters())
    n5 = sum(p.numel() for p in build("lmf", rank=5).parameters())
    assert n5 - n1 == 4 * (17 + 5 + 5) * 16 + 4  # factors and rank weights grow with the rank


def test_lmf_equals_tfn_contraction_with_the_reconstructed_full_weight():
    model = build("lmf", rank=3, dropout=0.0).double().eval()
    batch = {k: v.double() if v.is_floating_point() else v for k, v in make_batch(n=8).items()}
    with torch.no_grad():
        out = model(batch)
        z = {m: torch.cat([v, torch.ones(8, 1, dtype=v.dtype)], 1) for m, v in out["features"].items()}
        Z = torch.einsum("bi,bj,bk->bijk", z["text"], z["audio"], z["vision"])  # TFN's tensor
        f = model.factors
        W = torch.einsum("r,rio,rjo,rko->ijko", model.rank_weights, f["text"], f["audio"], f["vision"])
        assert W.shape == (17, 5, 5, 16)
        explicit = torch.einsum("bijk,ijko->bo", Z, W) + model.fusion_bias
    torch.testing.assert_close(out["fused"], explicit, rtol=1e-10, atol=1e-10)


# --- MulT: crossmodal attention direction and masks -----------------------------------------------

def test_mult_attention_direction_shape_and_masks():
    steps = {"text": 6, "audio": 9, "vision": 7}  # MulT needs no alignment
    batch = make_batch(n=5, steps=steps)
    model = build("mult", heads=4, layers=2).eval()
    assert isinstance(model, MulT)
    with torch.no_grad():
        weights = model.attention_weights(batch, target="text", source="audio")
    assert len(weights) == 2
    for w in weights:
        assert w.shape == (5, 4, 6, 9)  # (B, heads, L_target, L_source): queries from the target
        for b in range(5):
            n = int(batch["audio_len"][b])
            assert torch.all(w[b, :, :, n:] == 0)  # padded source positions get no weight
            torch.testing.assert_close(w[b].sum(-1), torch.ones(4, 6))


def test_mult_crossmodal_block_reads_the_source_as_keys_never_the_target():
    model = build("mult").eval()
    block = model.crossmodal["audio_to_text"]
    g = torch.Generator().manual_seed(0)
    tgt, src = torch.randn(3, 6, model.d, generator=g), torch.randn(3, 8, model.d, generator=g)
    t_len, s_len = torch.tensor([6, 6, 6]), torch.tensor([8, 5, 3])
    with torch.no_grad():
        base, _ = block(tgt, t_len, src, s_len)
        src2 = src.clone()
        src2[:, 1] += torch.randn(3, model.d, generator=g)  # a valid position of every source
        changed, _ = block(tgt, t_len, src2, s_len)
        assert (changed - base).abs().amax(dim=(1, 2)).min() > 1e-3  # the source drives the stream
        src3 = src.clone()
        src3[1, 5:] += torch.randn(3, model.d, generator=g)  # only padding of sample 1
        torch.testing.assert_close(block(tgt, t_len, src3, s_len)[0], base)
        tgt2 = tgt.clone()
        tgt2[:, 2] += torch.randn(3, model.d, generator=g)  # one target position
        moved, _ = block(tgt2, t_len, src, s_len)
    diff = (moved - base).abs().amax(dim=(0, 2))
    assert diff[2] > 1e-3 and torch.all(diff[torch.arange(6) != 2] == 0)  # target: queries only


def test_mult_source_changes_the_target_stream_in_the_full_model():
    batch = make_batch(n=4)
    model = build("mult").eval()
    with torch.no_grad():
        x, lens = model.project(batch)
        base = model.target_stream(x, lens, "text")
        noise = torch.randn(batch["vision"].shape, generator=torch.Generator().manual_seed(5))
        batch2 = dict(batch, vision=batch["vision"] + noise * (batch["vision"] != 0))
        x2, lens2 = model.project(batch2)
        assert torch.equal(x2["text"], x["text"])
        assert not torch.allclose(model.target_stream(x2, lens2, "text"), base)
