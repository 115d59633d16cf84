"""Every baseline variant through the real trainer: same data, seeds, selection and metrics."""
import json

import h5py
import numpy as np
import pytest

from pipeline import paths, train

from pipeline import train_stage
from pipeline.errors import ConfigError

SEQUENCE_BASELINES = ["late_fusion", "ef_lstm", "tfn", "lmf", "mult", "self_mm", "cpsl", "pase-ogm_ge",
                      "pase-mmpareto"]


@pytest.mark.parametrize("variant", SEQUENCE_BASELINES)
def test_variant_trains_through_the_trainer(tiny_project, variant):
    cfg = tiny_project({"train": {"epochs": 2}})
    (res,) = train_stage.train_variant(cfg, "mosi", variant)
    assert np.isfinite(res["test"]["mae"]) and res["params"] > 0
    hist = json.loads((paths.seed_dir("mosi", variant, 0) / "history.json").read_text())
    assert len(hist) == 2 and all(np.isfinite(r["loss_task"]) for r in hist)
    if variant == "pase-ogm_ge":
        assert "ogm_coeff_text" in hist[0] and "loss_aux" in hist[0]
        z = np.load(paths.seed_dir("mosi", variant, 0) / "probe_features.npz")  # diagnostics
        assert {"train/text", "test/audio", "train/label"} <= set(z.files)
        assert len(z["train/text"]) == len(z["train/label"]) and z["test/audio"].shape[1] > 1
    if variant == "pase-mmpareto":
        assert "mmpareto_cos_text" in hist[0] and "loss_aux_text" in hist[0]
    if variant == "cpsl":
        assert "loss_sl" in hist[0] and "cp_coef" in hist[0] and "cp_ratio" in hist[0]


def test_mag_bert_runs_on_the_bert_path(tiny_project):
    cfg = tiny_project({"text": {"finetune": True, "max_tokens": 16}, "train": {"epochs": 1},
                        "variants": ["mag_bert"]})
    (res,) = train_stage.train_variant(cfg, "mosi", "mag_bert")
    assert np.isfinite(res["test"]["mae"])


def test_mag_bert_needs_finetuning(tiny_project):
    cfg = tiny_project()
    with pytest.raises(ConfigError, match="text.finetune: true"):
        train_stage.train_variant(cfg, "mosi", "mag_bert")


def test_pase_finetunes_bert_when_asked(tiny_project):
    cfg = tiny_project({"text": {"finetune": True, "max_tokens": 16}, "train": {"epochs": 1},
                        "sgm": {"enabled": False}})  # one epoch: SGM could not act

    (res,) = train_stage.train_variant(cfg, "mosi", "pase")
    assert res["params"] > 100_000  # the tiny BERT's weights are part of the model


@pytest.mark.slow
def test_every_baseline_beats_a_constant_predictor(tiny_project):
    # the redundant generator: this checks that every baseline learns a signal at all (on the
    # complementary default, MulT at 6 epochs on 128 samples does not beat the constant)
    cfg = tiny_project({"synthetic": {"scale": 0.1, "kind": "redundant"}, "text": {"encoder": "minilm"},
                        "train": {"epochs": 6, "lr": 0.003, "batch_size": 32}})
    with h5py.File(paths.aligned_store("mosi")) as f:
        constant = float(np.mean(np.abs(f["test/label"][:] - np.median(f["train/label"][:]))))
    for variant in SEQUENCE_BASELINES:
        (res,) = train_stage.train_variant(cfg, "mosi", variant)
        assert res["test"]["mae"] < constant, (variant, res["test"]["mae"], constant)


def test_self_mm_on_iemocap_is_marked_not_applicable(tiny_project):
    cfg = tiny_project({"datasets": ["iemocap"], "synthetic": {"scale": 0.05}}, datasets=("iemocap",))
    (res,) = train_stage.train_variant(cfg, "iemocap", "self_mm")
    assert res["status"] == "not applicable" and "classification" in res["reason"]
    saved = json.loads((paths.seed_dir("iemocap", "self_mm", 0) / "metrics.json").read_text())
    assert saved["status"] == "not applicable"
