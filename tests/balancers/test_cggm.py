"""CGGM (pipeline/balancers/cggm.py): hand-computed coefficients and direction term, what it does
to a real PaSE step, and the variant through the trainer, the tables and `explain`."""
import copy
import json

import pytest
import torch

from pipeline.balancers.cggm import CGGM, accuracy, coefficients, direction_term
from pipeline.models.pase import PaSE

pytestmark = pytest.mark.usefixtures("one_thread")


def test_coefficients_slow_the_modality_whose_classifier_improved_most():
    # d = (0.2, 0.1, 0.1), D = 0.4: coeff = 1 - d / D
    c = coefficients({"text": 0.6, "audio": 0.5, "vision": 0.5},
                     {"text": 0.4, "audio": 0.4, "vision": 0.4})
    assert c == pytest.approx({"text": 0.5, "audio": 0.75, "vision": 0.75}, rel=1e-6)
    # the first step (nothing before): d = acc
    assert coefficients({"text": 0.5, "audio": 0.25, "vision": 0.25}, {}) == pytest.approx(
        {"text": 0.5, "audio": 0.75, "vision": 0.75}, rel=1e-6)
    # the original's 1e-8 when the changes cancel: large and of either sign
    c = coefficients({"text": 0.6, "audio": 0.4, "vision": 0.5}, {"text": 0.5, "audio": 0.5, "vision": 0.5})
    assert c["text"] < -1e6 and c["audio"] > 1e6 and c["vision"] == pytest.approx(1.0)


def test_direction_term_by_hand():
    coeff = {"text": 0.5, "audio": 0.75, "vision": 0.75}
    cos = {"text": torch.tensor(1.0), "audio": torch.tensor(0.0), "vision": torch.tensor(-1.0)}
    # (|0.5| + |0.75| + |0.75| - (0.5 - 0.75)) / 3
    assert float(direction_term(coeff, cos)) == pytest.approx(0.75)


def test_accuracy_regression_sign_and_iemocap_per_emotion():
    assert accuracy(torch.tensor([[0.3], [-0.2], [0.1], [-0.4]]), torch.tensor([1.0, 0.0, -2.0, -1.0]),
                    "regression") == pytest.approx(0.75)  # a zero label counts as not positive
    logits = torch.zeros(2, 8)
    logits[0, 1] = 1.0  # sample 0, emotion 0: class 1
    label = torch.tensor([[1, 0, 0, 0], [1, 0, 0, 0]])
    assert accuracy(logits, label, "classification") == pytest.approx(7 / 8)


def _model():
    torch.manual_seed(0)
    return PaSE({"text": 6, "audio": 4, "vision": 3}, 1, "regression", 3, hidden=8, encoder="conv",
                aux_heads=True, aux_detach=True)


def _batch(n=12):
    g = torch.Generator().manual_seed(1)
    b = {m: torch.randn(n, 5, d, generator=g) for m, d in (("text", 6), ("audio", 4), ("vision", 3))}
    b.update({f"{m}_len": torch.full((n,), 5) for m in ("text", "audio", "vision")})
    b["label"] = torch.randn(n, generator=g)
    return b


def _step(model, bal, batch, epoch=0):
    from pipeline.models.base import task_loss
    torch.manual_seed(7)  # the same dropout masks in every call
    model.zero_grad(set_to_none=True)
    out = model({k: v for k, v in batch.items() if k != "label"})
    losses = {"task": task_loss(out["pred"], batch["label"], "regression"),
              **model.extra_losses(out, batch, "regression", epoch)}
    bal.backward(model, losses, epoch)
    return out, losses


def test_a_step_scales_each_encoder_by_its_coefficient_times_rho_and_nothing_else():
    model, batch = _model(), _batch()
    plain = copy.deepcopy(model)
    bal = CGGM(rho=1.3, lam=0.2)
    out, losses = _step(model, bal, batch)
    _step(plain, CGGM(rho=1.3, lam=0.2), batch)  # the same gradients, left unscaled
    info = bal.before_step(model, None, out, batch, losses, 0)
    acc = {m: accuracy(out["unimodal"][m], batch["label"], "regression") for m in model.modalities}
    coeff = coefficients(acc, {})
    assert {m: info[f"cggm_coeff_{m}"] for m in model.modalities} == pytest.approx(coeff)
    mods = model.modality_parameters()
    own = {id(p): m for m, ps in mods.items() for p in ps}
    for (name, p), q in zip(model.named_parameters(), plain.parameters()):
        if p.grad is None:
            continue
        factor = coeff[own[id(p)]] * 1.3 if id(p) in own else 1.0
        torch.testing.assert_close(p.grad, q.grad * factor, msg=name)


def test_the_direction_term_trains_the_fusion_output_layer_at_the_next_step_only():
    batch = _batch()
    grads = {}
    for lam in (0.0, 0.5):
        model = _model()
        bal = CGGM(rho=1.0, lam=lam)
        out, losses = _step(model, bal, batch)
        bal.before_step(model, None, out, batch, losses, 0)
        _step(model, bal, batch)  # same weights (no optimizer step): only L_gm differs
        grads[lam] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    changed = {n for n in grads[0.0] if not torch.allclose(grads[0.0][n], grads[0.5][n])}
    assert changed == {"head.2.weight"}  # the classifiers' side is detached, as the original's


def test_each_epoch_starts_afresh():
    model, batch = _model(), _batch()
    bal = CGGM()
    out, losses = _step(model, bal, batch, epoch=0)
    bal.before_step(model, None, out, batch, losses, 0)
    assert bal._l_gm is not None and bal._before
    bal.backward(model, {k: v.detach().requires_grad_() for k, v in losses.items()}, 1)
    assert bal._l_gm is None and bal._before == {}


def test_pase_cggm_trains_and_reaches_table3_the_diagnostics_and_explain(tmp_path, monkeypatch):
    from pipeline import train_stage
    from pipeline.explain import explain
    from pipeline.report import builder, diagnostics, formatting
    from pipeline.settings import load_config
    from pipeline.stages import align, download, embed
    from tests.helpers import write_params
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", {"variants": ["pase-cggm"]})
    cfg = load_config(tmp_path / "params.yaml")
    assert "pase-cggm" in load_config().variants  # in the default matrix
    download(cfg, "mosi"), align(cfg, "mosi"), embed(cfg, "mosi")
    (r,) = train_stage.train_variant(cfg, "mosi", "pase-cggm")
    assert r["settings"]["balancer"] == "cggm" and all(v == v for v in r["test"].values())
    history = json.loads((tmp_path / "data/runs/mosi/pase-cggm/seed0/history.json").read_text())
    assert all("cggm_coeff_text" in h and "cggm_lgm" in h for h in history)
    assert formatting.name("pase-cggm") == "CGGM instead of SGM" and "pase-cggm" in builder.EXTRA_TABLE3
    assert "pase-cggm" in diagnostics.DIAGNOSED
    groups = {g["group"]: g["scaled_by"] for g in explain(cfg, "mosi", "pase-cggm")["groups"]}
    assert groups == {"text": "cggm", "audio": "cggm", "vision": "cggm", "shared": None}


def test_a_cggm_switch_reruns_only_pase_cggm():
    import yaml

    from pipeline import effective
    from pipeline.settings import config_from_dict
    from tests.helpers import ROOT
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    before = config_from_dict(raw)
    after = config_from_dict({**raw, "cggm": {**raw["cggm"], "rho": 1.0}})
    changed = [v for v in before.variants if effective.effective(before, "mosi", v)
               != effective.effective(after, "mosi", v)]
    assert changed == ["pase-cggm"]
