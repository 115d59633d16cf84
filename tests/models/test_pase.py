"""PaSE: prototypes, the label-free forward, gradients through CAL, fusion variants, and the
behaviour on synthetic data with known per-modality signal."""
import json

import numpy as np
import pytest
import torch

from pipeline import paths, train

from pipeline import train_stage
from pipeline.models.pase import PaSE, prototype_classes

DIMS = {"text": 12, "audio": 5, "vision": 4}


def batch(n=32, L=6, seed=0, task="regression"):
    g = torch.Generator().manual_seed(seed)
    b = {m: torch.randn(n, L, d, generator=g) for m, d in DIMS.items()}
    for m in DIMS:
        b[f"{m}_len"] = torch.randint(1, L + 1, (n,), generator=g)
    if task == "regression":
        b["label"] = torch.linspace(-3, 3, n)
    else:
        b["label"] = torch.eye(4, dtype=torch.long)[torch.arange(n) % 4]
    b["index"] = torch.arange(n)
    return b


def model(**kw):
    torch.manual_seed(0)
    args = dict(hidden=16, dropout=0.0)
    args.update(kw)
    return PaSE(DIMS, 1, "regression", n_classes=3, **args)


def test_prototype_classes_rule():
    y = torch.tensor([-3.0, -0.6, -0.5, 0.0, 0.5, 0.51, 2.0])
    assert prototype_classes(y, "regression", 0.5).tolist() == [0, 0, 1, 1, 1, 2, 2]
    lab = torch.eye(4, dtype=torch.long)[[2, 0, 3]]
    assert prototype_classes(lab, "classification", 0.5).tolist() == [2, 0, 3]


def test_prototype_momentum_update():
    m = model(gamma=0.9)
    b = batch()
    cls = prototype_classes(b["label"], "regression", 0.5)
    out = m({k: v for k, v in b.items() if k != "label"})
    m.extra_losses(out, b, "regression", 0)
    first = m.prototypes.clone()
    for i, mod in enumerate(m.modalities):  # first sight: the batch centroid
        for k in range(3):
            torch.testing.assert_close(first[i, k], out["features"][mod][cls == k].mean(0).detach())
    b2 = batch(seed=1)
    out2 = m({k: v for k, v in b2.items() if k != "label"})
    m.extra_losses(out2, b2, "regression", 0)
    for i, mod in enumerate(m.modalities):  # then Eq. 2 with gamma
        for k in range(3):
            expect = 0.9 * first[i, k] + 0.1 * out2["features"][mod][cls == k].mean(0).detach()
            torch.testing.assert_close(m.prototypes[i, k], expect)


def test_forward_reads_no_label_and_is_per_sample():
    m = model()
    b = batch()
    m.train()
    out = m({k: v for k, v in b.items() if k != "label"})
    m.extra_losses(out, b, "regression", 0)  # prototypes exist now
    m.eval()
    inputs = {k: v for k, v in b.items() if k != "label"}
    with torch.no_grad():
        full = m(inputs)["pred"]
        # each prediction depends on its own inputs only, not on the batch around it
        alone = torch.cat([m({k: v[i:i + 1] for k, v in inputs.items()})["pred"] for i in range(5)])
    torch.testing.assert_close(full[:5], alone)


def test_cal_trains_the_encoders():
    m = model(pcl=False)
    b = batch()
    out = m({k: v for k, v in b.items() if k != "label"})
    terms = m.extra_losses(out, b, "regression", 0)
    out = m({k: v for k, v in b.items() if k != "label"})  # second step: prototypes seen
    terms = m.extra_losses(out, b, "regression", 0)
    assert set(terms) == {"cal"} and terms["cal"].item() > 0
    terms["cal"].backward()
    for mod in DIMS:
        grads = [p.grad for p in m.encoders[mod].parameters() if p.grad is not None]
        assert grads and sum(g.abs().sum() for g in grads) > 0, mod
    assert "intra" not in out and len(out["inter"]) == 3  # "- PCL": no intra-class loss at all


@pytest.mark.parametrize("kw", [dict(fusion="sum"), dict(fusion="concat"), dict(fusion="attention"),
                                dict(pgf=False), dict(pcl=False, cal=False)])
def test_variants_train(kw):
    m = model(**kw)
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    b = batch(64)
    losses = []
    for _ in range(40):
        out = m({k: v for k, v in b.items() if k != "label"})
        loss = torch.nn.functional.l1_loss(out["pred"].view(-1), b["label"])
        loss = loss + sum(m.extra_losses(out, b, "regression", 0).values(), torch.tensor(0.0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_single_modality_has_no_pairs():
    torch.manual_seed(0)
    m = PaSE({"text": 12}, 1, "regression", n_classes=3, hidden=8)
    b = batch()
    out = m({k: v for k, v in b.items() if k != "label"})
    terms = m.extra_losses(out, b, "regression", 0)
    assert out["inter"] == {} and set(terms) == {"pcl"}


# ------------------------------------------------------------------ behaviour through the trainer

def history(ds, variant, seed=0):
    return json.loads((paths.seed_dir(ds, variant, seed) / "history.json").read_text())


@pytest.mark.slow
def test_full_model_beats_text_only(tiny_project):
    # Text weakened so that audio and vision have something to add.
    cfg = tiny_project({"synthetic": {"scale": 0.25, "snr": {"text": 1.0, "audio": 1.0, "vision": 0.25}},
                        "text": {"encoder": "minilm"},
                        "train": {"epochs": 10, "lr": 0.003, "batch_size": 32},
                        "sgm": {"switch": "epoch", "start_epoch": 5}})
    (full,) = train_stage.train_variant(cfg, "mosi", "pase")
    (text,) = train_stage.train_variant(cfg, "mosi", "pase-T")
    assert full["test"]["mae"] < text["test"]["mae"]
    assert full["test"]["corr"] > text["test"]["corr"]
    h = history("mosi", "pase")
    assert full["phase2_epoch"] == 5 and h[4]["phase"] == 2 and h[3]["phase"] == 1
    assert "phi_text" in h[4] and "phi_text" not in h[3]  # SGM acts in phase 2 only
    assert "shapley_text" in h[0]  # contributions are logged in both phases (Figure 5)


@pytest.mark.slow
def test_shapley_values_follow_the_signal_and_sgm_damps_the_strong(tiny_project):
    # Half of MOSI's size: enough for clear margins (measured: psi 0.188 > 0.156 > 0.131). The
    # redundant generator: one latent, so the snr alone sets each modality's signal.
    cfg = tiny_project({"synthetic": {"scale": 0.5, "kind": "redundant",
                                      "snr": {"text": 4.0, "audio": 1.0, "vision": 0.0}},
                        "text": {"encoder": "minilm"},
                        "train": {"epochs": 8, "lr": 0.003, "batch_size": 32},
                        "sgm": {"switch": "epoch", "start_epoch": 3}})
    train_stage.train_variant(cfg, "mosi", "pase")
    phase2 = [r for r in history("mosi", "pase") if r["phase"] == 2]
    mean = {k: np.mean([r[k] for r in phase2]) for k in phase2[0] if k.startswith(("shapley_", "phi_"))}
    assert mean["shapley_text"] > mean["shapley_audio"] > mean["shapley_vision"]
    # the weak modality's effective step grows relative to the strong one's
    assert mean["phi_vision"] > mean["phi_audio"] > mean["phi_text"]
