"""The paper profile's first stage checks what it needs and says what to do, before any work."""

import pytest
import yaml

from pipeline.settings import config_from_dict
from pipeline.errors import ConfigError
from pipeline.preflight import _weights_cached, check
from tests.helpers import ROOT


def cfg(profile="paper", device="auto", sources=("mmsa", "mmsa", "mult"), **paper):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["profile"] = profile
    raw["train"]["device"] = device
    for ds, src in zip(("mosi", "mosei", "iemocap"), sources):
        raw["data"][ds]["source"] = src
    raw["paper"].update(paper)
    return config_from_dict(raw)


def ok(_=None):
    return True


def no(_=None):
    return False


def test_cpu_profile_checks_nothing():
    assert check(cfg("cpu", sources=("synthetic",) * 3), gpu_visible=no, weights_cached=no) == []


def test_everything_in_place_passes_and_announces_the_no_raw_text_rule():
    notes = check(cfg(), gpu_visible=ok, weights_cached=ok)
    assert any("iemocap" in n and "frozen text features" in n for n in notes)


def test_missing_bert_weights_say_how_to_get_them():
    with pytest.raises(ConfigError, match=r"bert-base-uncased.*not in the local Hugging Face cache.*"
                                          r"paper\.text_encoder=tiny-random-bert"):
        check(cfg(), gpu_visible=ok, weights_cached=no)


def test_synthetic_data_needs_an_explicit_opt_in():
    with pytest.raises(ConfigError, match=r"data\.mosi\.source is 'synthetic'.*paper\.allow_synthetic=true"):
        check(cfg(sources=("synthetic", "mmsa", "mult")), gpu_visible=ok, weights_cached=ok)
    notes = check(cfg(sources=("synthetic", "mmsa", "mult"), allow_synthetic=True),
                  gpu_visible=ok, weights_cached=ok)
    assert any("SYNTHETIC" in n for n in notes)


def test_no_gpu_needs_an_explicit_device():
    with pytest.raises(ConfigError, match=r"'auto' but torch sees no GPU.*-S train\.device=cpu"):
        check(cfg(), gpu_visible=no, weights_cached=ok)
    check(cfg(device="cpu"), gpu_visible=no, weights_cached=ok)  # on purpose
    check(cfg(device="cuda"), gpu_visible=no, weights_cached=ok)  # trains elsewhere (GPU CI)
    check(cfg(), gpu_visible=ok, weights_cached=ok)


def test_every_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as e:
        check(cfg(sources=("synthetic",) * 3), gpu_visible=no, weights_cached=no)
    assert str(e.value).count("\n  - ") == 3


def test_the_cache_lookup_is_real_and_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache: bert-base is not there
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    assert not _weights_cached("bert-base-uncased")
    assert _weights_cached("tiny-random-bert")


def test_the_download_stage_runs_the_check_before_writing(tmp_path, monkeypatch):
    from pipeline import preflight
    from pipeline.stages import download
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(preflight, "_gpu_visible", no)
    c = cfg(sources=("synthetic",) * 3, allow_synthetic=True, text_encoder="tiny-random-bert")
    with pytest.raises(ConfigError, match="no GPU"):
        download(c, "mosi")
    assert not (tmp_path / "data").exists()
