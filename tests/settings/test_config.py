"""params.yaml validation: every bad value names the key, the value and what is allowed."""

import pytest
import yaml

from pipeline.config import Config

from pipeline.settings import config_from_dict, load_config
from pipeline.errors import ConfigError
from tests.helpers import ROOT


def test_repository_params_load():
    cfg = load_config(ROOT / "params.yaml")
    assert isinstance(cfg, Config)
    assert cfg.data.seq_len == 50
    assert cfg.text.encoder == "minilm"


def test_defaults_fill_missing_sections():
    cfg = config_from_dict({"train": {"epochs": 4}})
    assert cfg.train.epochs == 4 and cfg.train.batch_size == 32
    assert cfg.data.mosi.source == "synthetic"


@pytest.mark.parametrize("raw, fragments", [
    ({"train": {"epocs": 3}}, ["train.epocs", "unknown parameter", "epochs"]),
    ({"sgm": {"enabeld": False}}, ["sgm.enabeld", "unknown parameter", "enabled"]),
    ({"pcl": {"enabled": "no"}}, ["pcl.enabled", "'no'", "true/false"]),
    ({"fusion": {"type": "gated"}}, ["fusion.type", "'gated'", "'pgf'", "'attention'"]),
    ({"modalities": ["text", "video"]}, ["modalities[1]", "'video'", "'vision'"]),
    ({"trian": {}}, ["trian", "unknown parameter", "train"]),
    ({"data": {"mosi": {"source": "cmuu"}}}, ["data.mosi.source", "'cmuu'", "'synthetic'", "'cmu'", "'mmsa'"]),
    ({"train": {"epochs": "ten"}}, ["train.epochs", "'ten'", "integer"]),
    ({"train": {"epochs": 2.5}}, ["train.epochs", "2.5", "integer"]),
    ({"train": {"epochs": 0}}, ["train.epochs", "out of range", "1 <="]),
    ({"train": {"lr": "fast"}}, ["train.lr", "'fast'", "number"]),
    ({"train": {"device": "tpu"}}, ["train.device", "'tpu'", "'auto'", "'cpu'", "'cuda'"]),
    ({"datasets": ["mosi", "moseii"]}, ["datasets[1]", "'moseii'", "'mosei'"]),
    ({"datasets": "mosi"}, ["datasets", "list"]),
    ({"seeds": [0, 0]}, ["seeds", "repeated"]),
    ({"seeds": []}, ["seeds", "at least one"]),
    ({"data": {"mosi": {"allow_unverified_pickle": "yes"}}}, ["data.mosi.allow_unverified_pickle", "true/false"]),
    ({"synthetic": {"snr": {"text": -1}}}, ["synthetic.snr.text", "out of range"]),
    ({"synthetic": {"scale": 2}}, ["synthetic.scale", "out of range"]),
    ({"text": {"encoder": "bert"}}, ["text.encoder", "'bert'", "'minilm'", "'bert-base-uncased'"]),
    ({"data": {"iemocap": {"source": "cmu"}}}, ["data.iemocap.source", "'mult'"]),
    ({"train": 5}, ["train", "section"]),
])
def test_bad_values_name_key_value_and_allowed(raw, fragments):
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw)
    for frag in fragments:
        assert frag in str(e.value), (frag, str(e.value))


def test_bool_is_not_a_number():
    with pytest.raises(ConfigError, match="train.epochs"):
        config_from_dict({"train": {"epochs": True}})


def test_int_accepted_for_float():
    assert config_from_dict({"train": {"lr": 1}}).train.lr == 1.0


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "params.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="params.yaml: not valid YAML"):
        load_config(bad)
    bad.write_text(yaml.safe_dump({"train": {"epochs": -1}}))
    with pytest.raises(ConfigError, match=r"params.yaml: train.epochs"):
        load_config(bad)


def test_cli_prints_config_error_without_traceback(tmp_path, monkeypatch, capsys):
    from pipeline.__main__ import main
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"epocs": 3}}))
    monkeypatch.chdir(tmp_path)
    assert main(["download", "--dataset", "mosi"]) == 2
    err = capsys.readouterr().err
    assert "train.epocs" in err and "Traceback" not in err


def test_unknown_variant_and_model_named():
    with pytest.raises(ConfigError, match=r"variants\[1\]: 'pase-no_sgmm' is unknown.*pase-no_sgm"):
        config_from_dict({"variants": ["pase", "pase-no_sgmm"]})
    with pytest.raises(ConfigError, match="model: 'pse' is unknown; allowed: pase"):
        config_from_dict({"model": "pse"})


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def test_config_defaults_equal_params_yaml_for_every_key():
    """params.yaml is the source of defaults: config.py's fallback for a deleted key is the same."""
    from pipeline.config import as_dict
    params = _flat(yaml.safe_load((ROOT / "params.yaml").read_text()))
    defaults = _flat(as_dict(Config()))
    assert set(defaults) == set(params)
    differ = {k: (defaults[k], params[k]) for k in params if defaults[k] != params[k]
              or type(defaults[k]) is not type(params[k]) and not isinstance(params[k], (int, float))}
    assert not differ, differ
    # and a file holding only what it must change loads to the same config
    assert as_dict(config_from_dict({})) == as_dict(load_config(ROOT / "params.yaml"))
