"""The paper profile: explicit values beat it (or stop the run), size overrides change size only,
and every method runs at its own row of pipeline/method_settings.py."""
import json
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.profiles import CPU_PROFILE

from pipeline.config import as_dict

from pipeline.settings import config_from_dict, load_config
from pipeline.errors import ConfigError
from pipeline.method_settings import SETTINGS, row
from pipeline.variants import VARIANTS
from pipeline.profiles import variant_config
from tests.helpers import ROOT

SHIPPED = yaml.safe_load((ROOT / "params.yaml").read_text())


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def paper(**overrides):
    raw = json.loads(json.dumps(SHIPPED))  # deep copy
    raw["profile"] = "paper"
    for dotted, v in overrides.items():
        *head, leaf = dotted.split("__")
        d = raw
        for h in head:
            d = d.setdefault(h, {})
        d[leaf] = v
    return config_from_dict(raw)


def test_cpu_profile_table_is_what_params_yaml_holds():
    shipped = _flat(SHIPPED)
    for key, value in _flat(CPU_PROFILE).items():
        assert key in shipped, key
        assert shipped[key] == value, (key, shipped[key], value)


def test_paper_profile_over_the_shipped_file_fixes_the_papers_values():
    cfg = paper()
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.batch_size, cfg.train.hidden) == (1e-5, 200, 64, 328)
    assert cfg.text.encoder == "bert-base-uncased" and cfg.text.finetune
    assert (cfg.pcl.gamma, cfg.cal.reg, cfg.cal.alpha, cfg.cal.beta, cfg.loss.mu) == (0.98, 0.01, 0.1, 0.05, 0.1)
    assert cfg.sgm.switch == "plateau" and cfg.data.mosei.synthetic_scale is None


@pytest.mark.parametrize("key,value,hint", [
    ("train__lr", 0.5, "use profile: cpu"),
    ("train__epochs", 3, "paper.epochs"),
    ("text__encoder", "tiny-random-bert", "paper.text_encoder"),
    ("train__grad_clip", 1.0, "per method"),
])
def test_a_value_set_in_params_yaml_that_the_profile_fixes_stops_the_run(key, value, hint):
    with pytest.raises(ConfigError) as e:
        paper(**{key: value})
    msg = str(e.value)
    assert key.replace("__", ".") in msg and repr(value) in msg and hint in msg


def test_the_profiles_own_value_written_out_is_not_a_conflict():
    assert paper(train__lr=1e-5, train__epochs=200).train.lr == 1e-5


def test_size_overrides_change_size_and_nothing_else():
    base = as_dict(paper())
    small = as_dict(paper(paper__epochs=2, paper__text_encoder="tiny-random-bert"))
    diff = {k for k, v in _flat(small).items() if _flat(base)[k] != v}
    assert diff == {"paper.epochs", "paper.text_encoder", "train.epochs", "text.encoder"}
    assert _flat(small)["train.epochs"] == 2 and _flat(small)["text.encoder"] == "tiny-random-bert"


def test_size_overrides_are_refused_under_the_cpu_profile():
    raw = json.loads(json.dumps(SHIPPED))
    raw["paper"]["epochs"] = 2
    with pytest.raises(ConfigError, match=r"paper\.epochs.*profile is 'cpu'"):
        config_from_dict(raw)


def test_per_method_table_covers_every_variant_and_dataset():
    for variant, over in VARIANTS.items():
        assert over["model"] in SETTINGS, variant
        for ds in ("mosi", "mosei", "iemocap"):
            vcfg = variant_config(paper(), variant, ds)  # every row is a valid config
            assert vcfg.profile == "paper"
    for model, entry in SETTINGS.items():
        assert entry["source"], model


def test_each_baseline_runs_at_its_own_row_not_pases():
    cfg = paper()
    tfn = variant_config(cfg, "tfn", "mosei")
    assert (tfn.train.lr, tfn.train.batch_size, tfn.train.dropout, tfn.train.early_stop) == (5e-3, 128, 0.4, 8)
    assert tfn.model_args["sizes"] == {"text": 128, "audio": 32, "vision": 32} and not tfn.text.finetune
    mult = variant_config(cfg, "mult", "mosi")
    assert (mult.train.grad_clip, mult.train.grad_clip_mode, mult.model_args["d_model"]) == (0.6, "value", 50)
    smm = variant_config(cfg, "self_mm", "mosei")
    assert smm.text.finetune and (smm.train.lr_parts.text, smm.train.lr_parts.vision) == (5e-5, 1e-4)
    assert variant_config(cfg, "lmf", "iemocap").model_args["rank"] == row("lmf", "mosi")["model_args"]["rank"]
    # the ablations and balancers keep PaSE's row
    for v in ("pase-no_sgm", "pase-ogm_ge", "pase-T"):
        assert variant_config(cfg, v, "mosi").train.lr == 1e-5
    # the cpu profile ignores the table
    assert variant_config(load_config(ROOT / "params.yaml"), "tfn", "mosei").model_args == {}


def test_paper_profile_counts_land_near_the_published_sizes():
    from pipeline.report.params import count_variant
    cfg = load_config(ROOT / "params.yaml")
    dims = "text=768,audio=74,vision=35"
    pase = count_variant(cfg, "pase", "paper", dims, "regression")
    assert abs(pase - 114_795_953) / 114_795_953 < 0.01  # supplementary, Table 2
    tfn = count_variant(cfg, "tfn", "paper", dims, "regression")
    assert 17e6 < tfn < 20e6  # TFN paper sizes: 129 * 33 * 33 * 128 fusion weights ~ 18 M
    smm = count_variant(cfg, "self_mm", "paper", dims, "regression")
    assert 105e6 < smm < 125e6  # BERT-base + small heads (published: 121,835,723)


def test_param_groups_take_per_part_learning_rates_and_weight_decay():
    from pipeline.config import PartsConfig
    from pipeline.models.late_fusion import LateFusion
    from pipeline.train import param_groups
    model = LateFusion({"text": 8, "audio": 4, "vision": 3}, 1)
    groups = param_groups(model, 1e-3, 0.0, PartsConfig(audio=5e-3), PartsConfig(vision=0.01))
    by = {g["name"]: g for g in groups}
    assert (by["audio"]["lr"], by["audio"]["base_lr"], by["text"]["lr"]) == (5e-3, 5e-3, 1e-3)
    assert (by["vision"]["weight_decay"], by["text"]["weight_decay"]) == (0.01, 0.0)
    opt = torch.optim.Adam(groups, lr=1e-3)
    assert {g["name"]: g["lr"] for g in opt.param_groups}["audio"] == 5e-3


@pytest.mark.parametrize("mode", ["value", "norm"])
def test_gradient_clipping(mode):
    from pipeline.config import TrainConfig
    from pipeline.train import clip_gradients
    lin = torch.nn.Linear(4, 4)
    (lin(torch.full((2, 4), 100.0)).sum() * 100).backward()
    clip_gradients(lin, TrainConfig(grad_clip=0.5, grad_clip_mode=mode))
    grads = torch.cat([p.grad.flatten() for p in lin.parameters()])
    if mode == "value":
        assert grads.abs().max() <= 0.5 + 1e-6 and (grads.abs() == 0.5).any()
    else:
        assert abs(grads.norm().item() - 0.5) < 1e-4


def test_early_stop_ends_training_after_patience_epochs(tiny_project, one_thread):
    from pipeline import train
    from pipeline import train_stage
    cfg = tiny_project({"train": {"epochs": 6, "lr": 1e-30, "early_stop": 2}})
    (r,) = train_stage.train_variant(cfg, "mosi", "late_fusion")
    # lr 1e-30 (0 is refused): no weight moves in float32, so epoch 1 is the best and never beaten; epochs 2 and 3 make the patience of 2
    assert r["epochs_run"] == 3 and r["best_epoch"] == 1
    history = json.loads((Path("data/runs/mosi/late_fusion/seed0/history.json")).read_text())
    assert len(history) == 3


def test_a_source_without_raw_text_keeps_its_frozen_text_under_the_paper_profile(tmp_path, monkeypatch, one_thread):
    """Checked when the run starts: the run trains on the source's own text features and says so;
    MAG-BERT, which has nothing to fine-tune from, is not applicable."""
    from pipeline import train
    from pipeline.stages import align, download, embed
    from tests.helpers import mult_data, sha
    monkeypatch.chdir(tmp_path)
    from tests.helpers import user_file
    pkl = user_file("iemocap", "iemocap_data.pkl", mult_data("iemocap")[0])
    raw = json.loads(json.dumps(SHIPPED))
    raw.update(profile="paper", datasets=["iemocap"], seeds=[0])
    raw["data"]["iemocap"].update(source="mult", path=str(pkl), sha256=sha(pkl))
    raw["paper"].update(epochs=1, text_encoder="tiny-random-bert")
    raw["train"]["device"] = "cpu"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp_path / "params.yaml")
    download(cfg, "iemocap"), align(cfg, "iemocap"), embed(cfg, "iemocap")
    from pipeline import train_stage
    (r,) = train_stage.train_variant(cfg, "iemocap", "pase")
    assert r["settings"]["text"]["finetune"] is False and r["text_encoder"].startswith("source features")
    assert "no raw text" in r["notes"][0] and "frozen" in r["notes"][0]
    (na,) = train_stage.train_variant(cfg, "iemocap", "mag_bert")
    assert na["status"] == "not applicable" and "no raw text" in na["reason"]
