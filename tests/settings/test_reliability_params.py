"""Settings that would make a switch inert or a run meaningless are refused at load time with the
key, the value and why; the ones a user may want are warned about (pipeline/config_checks.py)."""
import logging

import pytest
import yaml

from pipeline import config_checks
from pipeline.settings import config_from_dict, load_config
from pipeline.errors import ConfigError
from tests.helpers import ROOT

ALL_PASE = {"variants": ["pase", "pase-no_sgm", "late_fusion"]}


@pytest.mark.parametrize("raw, fragments", [
    # SGM can never start, so pase == pase-no_sgm
    ({**ALL_PASE, "train": {"epochs": 8}, "sgm": {"switch": "epoch", "start_epoch": 9}},
     ["sgm.start_epoch: 9", "train.epochs: 8", "never start", "'pase'", "pase-no_sgm"]),
    ({**ALL_PASE, "train": {"epochs": 3}, "sgm": {"switch": "epoch", "start_epoch": 4}},
     ["sgm.start_epoch: 4", "train.epochs: 3"]),  # the default start under a short run
    ({**ALL_PASE, "train": {"epochs": 1}, "sgm": {"switch": "epoch", "start_epoch": 1}},
     ["sgm.start_epoch: 1", "train.epochs: 1", "train.epochs >= 2"]),
    ({**ALL_PASE, "train": {"epochs": 8}, "sgm": {"switch": "plateau", "patience": 7}},
     ["sgm.patience: 7", "train.epochs: 8", "epoch 9 at the earliest"]),
    # empty balancer windows
    ({"ogm": {"start_epoch": 3, "end_epoch": 2}}, ["ogm.end_epoch: 2", "ogm.start_epoch 3", "empty"]),
    ({"mmpareto": {"start_epoch": 5, "end_epoch": 1}}, ["mmpareto.end_epoch: 1", "empty"]),
    ({"cp": {"start": 0.5, "end": 0.5}}, ["cp.end: 0.5", "cp.start 0.5", "empty"]),
    # windows past the last epoch, for the variant that uses them
    ({"variants": ["pase-ogm_ge"], "train": {"epochs": 5}, "ogm": {"start_epoch": 6}},
     ["ogm.start_epoch: 6", "train.epochs: 5", "'pase-ogm_ge'"]),
    ({"variants": ["pase-mmpareto"], "train": {"epochs": 5}, "mmpareto": {"start_epoch": 7}},
     ["mmpareto.start_epoch: 7", "'pase-mmpareto'"]),
    # meaningless runs
    ({"train": {"lr": 0}}, ["train.lr: 0.0", "never change", "train.lr > 0"]),
    ({"seeds": [0, -1]}, ["seeds[1]: -1", "out of range", "4294967295"]),
    ({"seeds": [2**32]}, ["seeds[0]: 4294967296", "out of range"]),
    ({"datasets": []}, ["datasets: []", "at least one"]),
    ({"variants": []}, ["variants: []", "at least one"]),
    ({"datasets": ["mosi", "mosi"]}, ["datasets", "repeated entries"]),
    ({"variants": ["pase", "late_fusion", "pase"]}, ["variants", "repeated entries"]),
])
def test_inert_or_meaningless_settings_are_refused(raw, fragments):
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    for f in fragments:
        assert f in str(err.value), (f, str(err.value))


@pytest.mark.parametrize("raw", [
    # the settings above, where no variant of the run set uses them (effective per-variant config)
    {"variants": ["pase-no_sgm", "late_fusion"], "train": {"epochs": 2}, "sgm": {"switch": "epoch", "start_epoch": 4}},
    {"variants": ["pase", "late_fusion"], "train": {"epochs": 2}, "sgm": {"enabled": False, "start_epoch": 4}},
    {"variants": ["pase"], "train": {"epochs": 5}, "ogm": {"start_epoch": 6}},
    {"variants": ["pase"], "train": {"epochs": 4}, "sgm": {"switch": "epoch", "start_epoch": 2}},
    {"seeds": [0, 2**32 - 1]},
])
def test_settings_that_take_effect_pass(raw):
    config_from_dict(raw)


def test_the_default_params_and_the_paper_profile_pass():
    cfg = load_config(ROOT / "params.yaml")
    assert cfg.train.epochs == 8 and cfg.sgm.start_epoch == 4
    assert config_checks.warnings(cfg) == []
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    config_from_dict({**raw, "profile": "paper"})


def test_settings_a_user_may_want_are_warned_about(caplog):
    config_checks._logged.clear()
    raw = {**ALL_PASE, "train": {"epochs": 4}, "sgm": {"switch": "epoch", "start_epoch": 4},
           "loss": {"mu": 0}}
    with caplog.at_level(logging.WARNING, logger="pipeline.config_checks"):
        cfg = config_from_dict(raw)
        config_from_dict(raw)  # logged once per process, not at every load
    found = config_checks.warnings(cfg)
    assert len(found) == 2
    assert "in 'pase' SGM (phase 2) acts on the last epoch only" in found[0]
    assert "loss.mu: 0" in found[1]
    assert caplog.text.count("params: sgm.start_epoch: 4 with train.epochs: 4") == 1
