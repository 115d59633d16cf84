"""Each run's effective config (pipeline/effective.py): which runs a README switch changes, and
that training reads nothing outside it."""
import json

import pytest

from pipeline import effective
from pipeline.balancers import VARIANTS as BALANCER_VARIANTS
from pipeline.variants import DEFAULT_MATRIX as DEFAULT_VARIANTS
from pipeline.settings import config_from_dict
from pipeline.effective import ReadGuard, UnreadParameter, guarded, read_by
from pipeline.profiles import variant_config
from tests.helpers import TINY_PARAMS, merge

PASE_SGM = ["pase", "pase-no_pcl", "pase-no_cal", "pase-no_pgf", "pase-sum", "pase-concat",
            "pase-attention", "pase-T", "pase-A", "pase-V", "pase-AV", "pase-TA", "pase-TV"]
# with each other balancer's variant on PaSE's backbone (each balancer's SPEC declares it)
PASE_ALL = PASE_SGM + ["pase-no_sgm", *BALANCER_VARIANTS]
EVERY = list(DEFAULT_VARIANTS)

# README switch -> the default variants whose training it changes (written out by hand from what
# each model and balancer reads; a wrong dependency in read_by breaks one of these lines)
EXPECTED = {
    "sgm.enabled=false": PASE_SGM,
    "sgm.rho=0.9": PASE_ALL,
    "sgm.start_epoch=3": EVERY,        # the phase switch is in every run's history
    "sgm.patience=4": [],              # read only under sgm.switch: plateau
    "ogm.alpha=0.3": ["pase-ogm_ge"],
    "mmpareto.gamma=1.5": ["pase-mmpareto"],
    "cp.alpha=0.7": ["cpsl"],
    "pcl.enabled=false": [v for v in PASE_ALL if v != "pase-no_pcl"],
    "cal.reg=0.05": PASE_ALL,
    "pgf.enabled=false": [v for v in PASE_ALL if v != "pase-no_pgf"],
    "fusion.type=attention": [v for v in PASE_ALL if v not in ("pase-sum", "pase-concat", "pase-attention")],
    "loss.mu=0.5": PASE_ALL,
    "modalities=[text,audio]": [v for v in EVERY if v not in ("pase-T", "pase-A", "pase-V", "pase-AV",
                                                              "pase-TA", "pase-TV")],
    "train.lr=0.004": EVERY,
    "train.workers=1": [],             # schedules seeds only (byte-identical outputs)
    "train.ahead=false": [],           # so does the look-ahead pool (tests/e2e/test_ahead_dvc.py)
    "synthetic.snr.audio=0.5": [],     # acts through the data files, which the stage hashes
    "seeds=[0,1]": EVERY,
}


def _set(raw: dict, switch: str) -> dict:
    key, value = switch.split("=")
    import yaml
    node = {}
    cur = node
    parts = key.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = yaml.safe_load(value.replace(",", ", "))
    return merge(raw, node)


def _changed(raw: dict, switch: str) -> list[str]:
    before, after = config_from_dict(raw), config_from_dict(_set(raw, switch))
    return [v for v in EVERY if effective.dumps(effective.effective(before, "mosi", v))
            != effective.dumps(effective.effective(after, "mosi", v))]


@pytest.mark.parametrize("switch", list(EXPECTED))
def test_each_switch_changes_only_the_runs_that_read_it(switch):
    import yaml
    from tests.helpers import ROOT
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert sorted(_changed(raw, switch)) == sorted(EXPECTED[switch])


def test_guard_stops_a_read_outside_the_effective_config():
    cfg = variant_config(config_from_dict(merge({}, TINY_PARAMS)), "late_fusion", "mosi")
    g = guarded(cfg, read_by(cfg))
    assert isinstance(g.ogm, ReadGuard) and g.train is cfg.train
    with pytest.raises(UnreadParameter, match="ogm.alpha"):
        g.ogm.alpha
    with pytest.raises(UnreadParameter, match="sgm.rho"):
        g.sgm.rho  # late fusion logs no Shapley values: rho is not its parameter
    assert g.sgm.switch == cfg.sgm.switch
    pase = variant_config(config_from_dict(merge({}, TINY_PARAMS)), "pase", "mosi")
    gp = guarded(pase, read_by(pase))
    assert gp.pcl is pase.pcl and gp.sgm.enabled is True and gp.sgm.rho == pase.sgm.rho


def test_configure_writes_one_file_a_run_and_keeps_unchanged_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config_from_dict(merge({}, TINY_PARAMS))
    files = effective.configure(cfg)
    assert sorted(f.as_posix() for f in files) == ["data/configs/mosi/late_fusion.json",
                                                   "data/configs/mosi/pase.json"]
    lf = json.loads(files[1].read_text())
    assert "pcl" not in lf and "ogm" not in lf and "workers" not in lf["train"]
    mtime = files[0].stat().st_mtime_ns
    effective.configure(cfg)
    assert files[0].stat().st_mtime_ns == mtime
    # the train command refuses a file that no longer matches params.yaml
    files[0].write_text(files[0].read_text().replace('"mu": 0.1', '"mu": 0.2'))
    with pytest.raises(Exception, match="differs from the effective config"):
        effective.check_file(variant_config(cfg, "pase", "mosi"), "mosi", "pase")
