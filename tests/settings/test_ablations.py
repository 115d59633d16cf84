"""Table 3: each ablation differs from `pase` in exactly the named component (config and loss
terms), and SGM's utility reads only the components present."""
import math

import pytest
import torch

from pipeline.balancers.sgm import SGM, subset_utility
from pipeline.config import as_dict
from pipeline.settings import config_from_dict
from pipeline.models import pase
from pipeline.profiles import variant_config

DIMS = {"text": 6, "audio": 4, "vision": 3}
TABLE3 = {"pase-no_pcl": {"pcl.enabled"}, "pase-no_cal": {"cal.enabled"},
          "pase-no_sgm": {"sgm.enabled"}, "pase-no_pgf": {"pgf.enabled"},
          "pase-sum": {"fusion.type"}, "pase-concat": {"fusion.type"},
          "pase-attention": {"fusion.type"}}
# loss terms and SGM inputs each variant has; "−" means removed relative to pase
PASE_TERMS = {"pcl", "cal"}
TERMS = {"pase-no_pcl": {"cal"}, "pase-no_cal": {"pcl"}}
SGM_READS = {"pase-no_pcl": {"inter"}, "pase-no_cal": {"intra"}}


def flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def batch(n=16, L=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = {m: torch.randn(n, L, d, generator=g) for m, d in DIMS.items()}
    b.update({f"{m}_len": torch.full((n,), L) for m in DIMS})
    b["label"] = torch.linspace(-3, 3, n)
    return b


def run(cfg):
    torch.manual_seed(0)
    model = pase.build(DIMS, 1, "regression", cfg)
    b = batch()
    out = model({k: v for k, v in b.items() if k != "label"})
    terms = model.extra_losses(out, b, "regression", 0)
    return model, out, terms


@pytest.fixture(scope="module")
def base():
    return config_from_dict({})


@pytest.mark.parametrize("variant", sorted(TABLE3))
def test_each_ablation_changes_exactly_its_component(base, variant):
    ref = flat(as_dict(variant_config(base, "pase")))
    cfg = variant_config(base, variant)
    diff = {k for k, v in flat(as_dict(cfg)).items() if ref.get(k) != v}
    assert diff == TABLE3[variant]
    _, out_ref, terms_ref = run(variant_config(base, "pase"))
    model, out, terms = run(cfg)
    assert set(terms_ref) == PASE_TERMS and set(terms) == TERMS.get(variant, PASE_TERMS)
    reads = {k for k in ("intra", "inter") if k in out}
    assert reads == SGM_READS.get(variant, {"intra", "inter"})
    # the named component is the only one: shared loss terms are equal where the fusion is equal
    if variant in ("pase-no_pcl", "pase-no_cal", "pase-no_sgm"):
        for k in terms:
            torch.testing.assert_close(terms[k], terms_ref[k])
        torch.testing.assert_close(out["pred"], out_ref["pred"])
    # alpha is a constant weighting everywhere it is used
    assert not out["alpha"].requires_grad


def test_sgm_utility_reads_only_present_components():
    intra = {"text": 0.5, "audio": 1.0}
    inter = {frozenset(("text", "audio")): 3.0}
    # - CAL: u(S) = (1 - rho) / (1 + mean intra), rho = 0.5
    only_intra = subset_utility(intra, None, 0.5)
    assert only_intra[frozenset(("text",))] == pytest.approx(0.5 / 1.5)
    assert only_intra[frozenset(("text", "audio"))] == pytest.approx(0.5 / 1.75)
    # - PCL: u(S) = rho / (1 + L_inter), singletons earn nothing
    only_inter = subset_utility(None, inter, 0.5, ["text", "audio"])
    assert only_inter[frozenset(("text",))] == 0.0
    assert only_inter[frozenset(("text", "audio"))] == pytest.approx(0.5 / 4.0)
    with pytest.raises(KeyError, match="nothing to read"):
        subset_utility(None, None, 0.5)
    # SGM on a "- PCL" step: symmetric pair-only utility -> equal contributions
    feats = {"text": torch.zeros(1), "audio": torch.zeros(1)}
    psi = SGM(rho=0.5).shapley({"inter": inter, "features": feats})
    assert psi["text"] == pytest.approx(psi["audio"]) and math.isclose(sum(psi.values()), 0.125)


@pytest.mark.parametrize("variant", ["pase", "self_mm", "cpsl"])
@pytest.mark.parametrize("kind", ["conv", "lstm"])
def test_models_on_shared_encoders_honour_train_encoder(variant, kind):
    from pipeline.models.encoders import SEQUENCE_ENCODERS
    from pipeline.train import build_model
    cfg = variant_config(config_from_dict({"train": {"encoder": kind}}), variant)
    model = build_model(cfg, DIMS, "regression", bert_factory=lambda c: None, n_train=16)
    for m in DIMS:
        found = [type(x) for x in model.modality_parameters() and model.encoders[m].modules()
                 if type(x) in SEQUENCE_ENCODERS.values()]
        assert found == [SEQUENCE_ENCODERS[kind]], (variant, m, found)
