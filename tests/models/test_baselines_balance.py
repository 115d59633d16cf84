"""Self-MM, MAG-BERT and CP+SL (pipeline/models/baselines/): training, their mechanisms, label hygiene."""
import math

import pytest
import torch

from pipeline.balancers.cp import ConflictAwarePenalty
from pipeline.models.baselines import cpsl, mag_bert, self_mm
from tests.helpers import tiny_bert

DIMS = {"text": 12, "audio": 5, "vision": 4}
N, L = 64, 6


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def make_data(seed=0, n=N):
    """Aligned features with a label that is a function of them (text strongest, vision weakest)."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(3, L + 1, (n,), generator=g)
    mask = (torch.arange(L)[None, :] < lens[:, None]).float()[..., None]
    batch, score = {}, torch.zeros(n)
    for m, weight in (("text", 1.0), ("audio", 0.6), ("vision", 0.3)):
        x = torch.randn(n, L, DIMS[m], generator=g) * mask
        w = torch.randn(DIMS[m], generator=g) / math.sqrt(DIMS[m])
        score += weight * ((x.sum(1) / lens[:, None]) @ w) * 2
        batch[m], batch[f"{m}_len"] = x, lens.clone()
    batch["audio_len"][0] = 0  # one sample with no audio at all
    batch["audio"][0] = 0
    words = torch.randint(1000, 1020, (n, L), generator=g)  # a 20-word vocabulary
    ids = torch.zeros(n, L + 2, dtype=torch.long)
    for i in range(n):
        k = int(lens[i])
        ids[i, 0], ids[i, 1:k + 1], ids[i, k + 1] = 101, words[i, :k], 102
    batch["text_bert"] = torch.stack([ids, (ids > 0).long(), torch.zeros_like(ids)], 1)
    word_value = torch.randn(1020, generator=g)
    score += (word_value[words] * mask[..., 0]).sum(1) / lens * 0.8
    batch["label"] = (3 * torch.tanh(score)).float()
    batch["index"] = torch.arange(n)
    return batch


def take(batch, idx):
    return {k: v[idx] for k, v in batch.items()}


def no_label(batch):
    return {k: v for k, v in batch.items() if k != "label"}


def train(model, data, steps=48, bs=16, lr=3e-3, balancer=None, task="regression", seed=0):
    """Adam steps as the trainer does them; returns per-step {term: value} (epoch = 4 batches)."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history, infos = [], []
    model.train()
    for step in range(steps):
        epoch, k = divmod(step, N // bs)
        order = torch.randperm(N, generator=torch.Generator().manual_seed(epoch))
        batch = take(data, order[k * bs:(k + 1) * bs])
        out = model(no_label(batch))
        losses = {"task": cpsl.task_loss(out["pred"], batch["label"], task)}
        losses.update(model.extra_losses(out, batch, task, epoch))
        opt.zero_grad(set_to_none=True)
        if balancer is not None and balancer.active(epoch):  # as pipeline/train.py does
            balancer.backward(model, losses, epoch)
            infos.append(balancer.before_step(model, opt, out, batch, losses, epoch))
        else:
            sum(losses.values()).backward()
        opt.step()
        history.append({name: float(v.detach()) for name, v in losses.items()})
    return history, infos


def total(history, steps):
    return sum(sum(h.values()) for h in (history[s] for s in steps)) / len(steps)


def assert_falls(history, factor=0.6, window=4, start=0):
    first = total(history, range(start, start + window))
    last = total(history, range(len(history) - window, len(history)))
    assert last < factor * first, (first, last)


# ---- every model trains and never reads the label in forward ----

def build_models(n_train=N):
    return {
        "self_mm": self_mm.build(DIMS, 1, hidden=32, n_train=n_train),
        "mag_bert": mag_bert.build(DIMS, 1, hidden=32, bert=tiny_bert()),
        "cpsl": cpsl.build(DIMS, 1, hidden=32),
    }


@pytest.mark.parametrize("name", ["self_mm", "mag_bert", "cpsl"])
def test_loss_falls(name):
    torch.manual_seed(0)
    model = build_models()[name]
    balancer = ConflictAwarePenalty(start=0.0, end=1.0, epochs=100) if name == "cpsl" else None
    history, infos = train(model, make_data(), steps=96, lr=2e-3 if name == "mag_bert" else 3e-3,
                           balancer=balancer)
    assert all(math.isfinite(v) for h in history for v in h.values())
    if name == "self_mm":
        # The unimodal terms are 0 in the warm-up epoch (generated labels = y_m, weight tanh(0)) and
        # switch on in epoch 1, so the total is compared from epoch 2 on; the task term from step 0.
        assert all(h["selfmm_audio"] == 0 for h in history[:4]) and any(h["selfmm_audio"] > 0 for h in history[8:])
        assert_falls(history, start=8)
        assert_falls([{"task": h["task"]} for h in history])
    else:
        assert_falls(history)
    if name == "cpsl":
        assert len(infos) == len(history) and all(i["cp_dominant_text"] == 1.0 for i in infos)
        assert all(0.0 <= i["cp_coef"] <= 1.0 for i in infos)
        # on text's encoder the task gradient outgrows SL's (weight 0.1): CP penalises it
        assert any(i["cp_conflict"] == 1.0 and i["cp_coef"] < 1.0 for i in infos)


@pytest.mark.parametrize("name", ["self_mm", "mag_bert", "cpsl"])
def test_forward_never_reads_the_label(name):
    torch.manual_seed(0)
    model = build_models()[name]
    batch = no_label(take(make_data(), torch.arange(8)))
    for mode in (model.train, model.eval):
        mode()
        out = model(batch)
        assert out["pred"].shape == (8, 1) and torch.isfinite(out["pred"]).all()
    # eval predictions do not depend on any label the model was shown before
    a = model(batch)["pred"]
    model.train()
    other = take(make_data(seed=1), torch.arange(8))
    if name != "mag_bert":
        model.extra_losses(model(no_label(other)), other, "regression", 0)
    model.eval()
    if name == "self_mm":  # labels only change the ULGM buffers, never the prediction
        assert torch.equal(model(batch)["pred"], a)


# ---- Self-MM ----

def test_self_mm_rejects_iemocap_and_needs_n_train():
    with pytest.raises(ValueError, match="regression"):
        self_mm.build(DIMS, 8, n_train=10)
    with pytest.raises(ValueError, match="n_train"):
        self_mm.build(DIMS, 1)
    model = self_mm.build(DIMS, 1, n_train=10)
    out = model(no_label(take(make_data(), torch.arange(4))))
    with pytest.raises(ValueError, match="regression"):
        model.extra_losses(out, take(make_data(), torch.arange(4)), "iemocap", 0)


def test_self_mm_label_update_direction_and_storage():
    """Centres at +-e1 in both spaces; sample 0 (y_m = 2) has fused F at 0.5 e1. Its text feature at
    0.9 e1 is relatively closer to the positive centre than F: y_text > y_m. Its audio feature at
    0.1 e1 is less so: y_audio < y_m. Only sample 0's labels move."""
    model = self_mm.build(DIMS, 1, hidden=4, n_train=4)  # fused dim 4, unimodal dim 2
    y = torch.tensor([2.0, 1.0, -2.0, -1.0])
    model.init_labels(torch.arange(4), y)
    e1f, e1u = torch.tensor([1.0, 0, 0, 0]), torch.tensor([1.0, 0])
    sign = torch.tensor([1.0, 1.0, -1.0, -1.0])[:, None]
    model.update_bank(sign * e1f, {m: sign * e1u for m in DIMS}, torch.arange(4))
    assert torch.allclose(model.centre_pos[0, :4], e1f) and torch.allclose(model.centre_neg[1, :2], -e1u)

    fused = 0.5 * e1f[None]
    feats = {"text": 0.9 * e1u[None], "audio": 0.1 * e1u[None], "vision": 0.5 * e1u[None]}
    before = model.labels.clone()
    model.update_labels(fused, feats, torch.tensor([0]), epoch=1)
    got = model.unimodal_labels(torch.arange(4))
    assert got["text"][0] > 2.0 > got["audio"][0]
    assert torch.isclose(got["vision"][0], torch.tensor(2.0))  # same relative distance: unchanged
    # the paper's rule with momentum n = 2: 1/3 old + 2/3 new, new = clip(0.5 y a_s/a_m + 0.5 (y + a_s - a_m))
    a_m, a_t = (1.5 - 0.5) / 0.5, (1.9 - 0.1) / 0.1
    new_t = min(0.5 * 2 * a_t / a_m + 0.5 * (2 + a_t - a_m), 3.0)
    assert torch.isclose(got["text"][0], torch.tensor(2 / 3 + 2 / 3 * new_t))
    assert torch.equal(model.labels[:, 1:], before[:, 1:])  # per index: the others untouched
    assert torch.equal(model.labels[0], y)  # the multimodal label is never changed


def test_self_mm_labels_live_per_index_through_training():
    model = self_mm.build(DIMS, 1, hidden=16, n_train=N + 10)
    data = make_data()
    train(model, data, steps=24)
    assert model.seen[:N].all() and not model.seen[N:].any()
    assert torch.equal(model.labels[0, :N], data["label"])
    moved = (model.labels[1:, :N] - data["label"]).abs()
    assert (moved > 1e-4).float().mean() > 0.5  # most unimodal labels left the multimodal one
    assert (model.labels[1:].abs() <= 3.0).all()
    sd = model.state_dict()  # saved with the weights, so a resumed run continues them
    assert "labels" in sd and "bank_text" in sd
    with pytest.raises(IndexError, match="n_train"):
        model.init_labels(torch.tensor([N + 10]), torch.tensor([0.5]))


# ---- MAG-BERT ----

def test_mag_zero_nonverbal_leaves_bert_unchanged():
    torch.manual_seed(0)
    model = mag_bert.build(DIMS, 1, bert=tiny_bert()).eval()
    batch = no_label(take(make_data(), torch.arange(8)))
    for m in ("audio", "vision"):
        batch[m] = torch.zeros_like(batch[m])
    seq, pooled = model.encode(batch)
    tb = batch["text_bert"]
    ref = model.bert(input_ids=tb[:, 0], attention_mask=tb[:, 1], token_type_ids=tb[:, 2])
    assert torch.equal(seq, ref.last_hidden_state) and torch.equal(pooled, ref.pooler_output)
    z = torch.randn(8, 8, 32)
    zeros = {"audio": torch.zeros(8, 8, 5), "vision": torch.zeros(8, 8, 4)}
    assert torch.equal(model.mag.displacement(z, zeros), torch.zeros_like(z))
    # non-zero audio/vision do shift it, and the same holds at a deeper injection point
    full = no_label(take(make_data(), torch.arange(8)))
    assert not torch.allclose(model.encode(full)[1], pooled)
    deep = mag_bert.build(DIMS, 1, bert=tiny_bert(), inject_layer=2).eval()
    assert torch.equal(deep.encode(batch)[0], ref.last_hidden_state)
    assert not torch.allclose(deep.encode(full)[0], ref.last_hidden_state)


@pytest.mark.parametrize("beta", [0.05, 0.5, 1.0])
def test_mag_norm_cap(beta):
    torch.manual_seed(0)
    mag = mag_bert.MAG(16, {"audio": 5, "vision": 4}, beta=beta, dropout=0.0)
    z = torch.randn(4, 7, 16)
    big = {"audio": 100 * torch.randn(4, 7, 5), "vision": 100 * torch.randn(4, 7, 4)}
    shift = mag.displacement(z, big)
    ratio = shift.norm(dim=-1) / z.norm(dim=-1)
    assert (ratio <= beta * (1 + 1e-5)).all() and (ratio > 0.99 * beta).any()  # the cap binds
    small = {"audio": 1e-4 * torch.randn(4, 7, 5), "vision": 1e-4 * torch.randn(4, 7, 4)}
    h = torch.zeros_like(z)  # uncapped: alpha = 1
    for m, x in small.items():
        h = h + torch.relu(mag.gate[m](torch.cat([x, z], -1))) * mag.proj[m](x)
    assert torch.allclose(mag.displacement(z, small), h)
    # gradients stay finite through zero rows (padding)
    x = {"audio": torch.zeros(2, 3, 5, requires_grad=True), "vision": torch.zeros(2, 3, 4)}
    mag.displacement(torch.randn(2, 3, 16), x).sum().backward()
    assert torch.isfinite(x["audio"].grad).all()


def test_mag_token_mapping():
    x = torch.arange(1, 4).float().view(1, 3, 1)  # three words: rows 1, 2, 3
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    # rows already at token positions (MMSA aligned): token t takes row t, [CLS] included
    assert mag_bert.rows_to_tokens(x, mask).view(-1).tolist() == [1, 2, 3, 0, 0, 0]
    wid = torch.tensor([[-1, 0, 0, 1, 2, -1]])  # word 0 split in two sub-words
    assert mag_bert.rows_to_tokens(x, mask, wid).view(-1).tolist() == [0, 1, 1, 2, 3, 0]
    with pytest.raises(ValueError, match="bert="):
        mag_bert.build(DIMS, 1)


def test_mag_adds_row_t_to_token_t_on_an_mmsa_aligned_sample():
    """MMSA's aligned files hold audio/vision rows at BERT token positions, [CLS] included
    (pipeline/data/pickles.py), and its BERT_MAG adds row t to token t's embedding. A hand-built
    sample whose rows encode their own index must reach the MAG at the same index."""
    T = 8
    lens = torch.tensor([6, 8])  # attention-mask lengths ([CLS] ... [SEP]); rows past them are 0
    mask = (torch.arange(T)[None] < lens[:, None]).long()
    ids = torch.where(mask > 0, torch.randint(1000, 2000, (2, T)), torch.zeros(2, T, dtype=torch.long))
    ids[:, 0] = 101
    ids[0, 5], ids[1, 7] = 102, 102
    index = torch.arange(1, T + 1).float().view(1, T, 1)  # row t holds t + 1 (0 stays padding)
    batch = {"text_bert": torch.stack([ids, mask, torch.zeros_like(ids)], 1)}
    for m, d in (("audio", 5), ("vision", 4)):
        batch[m] = index.expand(2, T, d) * mask[..., None]
        batch[f"{m}_len"] = lens.clone()  # aligned: every modality has the mask's length
    want = index.expand(2, T, 1)[..., 0] * mask
    got = mag_bert.rows_to_tokens(batch["audio"], mask)[..., 0]
    assert got.tolist() == want.tolist()  # token t <- row t; row T - 1 is not dropped
    model = mag_bert.build({"text": 32, "audio": 5, "vision": 4}, 1, bert=tiny_bert()).eval()
    seen = {}
    real = model.mag.forward
    model.mag.forward = lambda z, nonverbal: seen.update(z=z, **nonverbal) or real(z, nonverbal)
    with torch.no_grad():
        model(batch)
    assert seen["z"].shape[:2] == (2, T)
    for m in ("audio", "vision"):
        assert (seen[m] == want[..., None]).all(), m


# ---- CP+SL ----

def test_statistical_loss_zero_iff_statistics_match_and_differentiable():
    y = torch.tensor([-1.0, 1.0, 2.0, 0.0, -2.0, 3.0])
    p = torch.tensor([1.0, -1.0, 0.0, 2.0, 3.0, -2.0], requires_grad=True)  # a permutation: same moments
    assert cpsl.statistical_loss(p, y).item() == 0.0
    q = torch.tensor([0.5, -0.5, 0.0, 1.0, 1.5, -1.0], requires_grad=True)  # same sign pattern, shrunk
    loss = cpsl.statistical_loss(q, y)
    assert loss.item() > 0
    loss.backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
    shifted = cpsl.statistical_loss(p.detach() + 0.5, y)
    assert math.isclose(shifted.item(), 0.25, rel_tol=1e-5)  # mean term only
    const = torch.zeros(6, requires_grad=True)  # constant predictions: finite gradient
    cpsl.statistical_loss(const, y).backward()
    assert torch.isfinite(const.grad).all()
    # IEMOCAP: P(present) per emotion vs the 0/1 labels
    logits, labels = torch.randn(6, 8, requires_grad=True), torch.randint(0, 2, (6, 4))
    sl = cpsl.statistical_loss(*cpsl.sl_inputs(logits, labels, "iemocap"))
    sl.backward()
    assert sl.item() > 0 and torch.isfinite(logits.grad).all()


def test_cpsl_auxiliary_heads_train_and_losses_are_named():
    torch.manual_seed(0)
    model = cpsl.build(DIMS, 1, hidden=32, sl_unimodal=0.5, recon_weight=0.1)
    history, _ = train(model, make_data(), steps=48)
    assert {"task", "aux_text", "aux_audio", "aux_vision", "sl", "sl_unimodal", "recon"} <= set(history[0])
    for m in DIMS:
        first = sum(h[f"aux_{m}"] for h in history[:4])
        last = sum(h[f"aux_{m}"] for h in history[-4:])
        assert last < 0.8 * first, (m, first, last)
    assert all(h["sl"] >= 0 for h in history)


def _backward(model, batch, task="regression"):
    out = model(no_label(batch))
    losses = {"task": cpsl.task_loss(out["pred"], batch["label"], task)}
    losses.update(model.extra_losses(out, batch, task, 0))
    model.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    return out, losses


def test_cpsl_iemocap_and_missing_modalities():
    torch.manual_seed(0)
    model = cpsl.build(DIMS, 8, hidden=16)
    batch = take(make_data(), torch.arange(8))
    batch["label"] = torch.randint(0, 2, (8, 4))
    out, losses = _backward(model, batch, task="iemocap")
    assert out["pred"].shape == (8, 8) and all(torch.isfinite(v) for v in losses.values())
    assert out["fusion_weights"][0, 1] == 0  # sample 0 has no audio: its fusion gate is 0
    text_only = cpsl.build({"text": 12}, 1, hidden=16)
    assert text_only(no_label(batch))["pred"].shape == (8, 1)
