"""DVC's views of the default run fit a terminal: `dvc metrics show` of the committed headline
(reports/metrics.json, pipeline/report/summary.py `headline`) and `dvc exp show --only-changed`
after an SGM-off experiment, in a scratch git + DVC folder holding only the metrics (no training:
the experiment's numbers are the committed ones moved, as `-S sgm.enabled=false` moves them)."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.report.summary import headline
from tests.helpers import ROOT

WIDE = 400  # characters: the bound for `dvc metrics show`


def dvc(args, cwd, columns=1000):
    env = dict(os.environ, DVC_NO_ANALYTICS="1", COLUMNS=str(columns))
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def scratch(tmp_path):
    (tmp_path / "reports").mkdir()
    shutil.copy(ROOT / "reports" / "metrics.json", tmp_path / "reports" / "metrics.json")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text(  # the report stage's params and metric, as in dvc.yaml
        "stages:\n  report:\n    cmd: python -m pipeline report\n    params: [datasets, variants, "
        "seeds, sgm]\n    metrics:\n      - reports/metrics.json:\n          cache: false\n")
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "ci@example.com"],
                ["git", "config", "user.name", "ci"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "default run"]):
        dvc(cmd, tmp_path)
    return tmp_path


def test_committed_headline_is_the_detail_s():
    assert json.loads((ROOT / "reports" / "metrics.json").read_text()) == headline(
        json.loads((ROOT / "reports" / "metrics_detail.json").read_text()))


def test_metrics_show_of_the_default_run_is_one_row_under_400_characters(scratch):
    lines = dvc(["dvc", "metrics", "show"], scratch).splitlines()
    assert len(lines) == 2 and max(len(l) for l in lines) <= WIDE, lines  # it was 9,890
    for key in ("mosi.pase.acc2_non0", "mosei.vs_no_sgm", "iemocap.pase.wa", "iemocap.vs_best_other"):
        assert key in lines[0].split()


def test_exp_show_only_changed_after_sgm_off_is_the_headline_and_the_switch(scratch):
    params = (scratch / "params.yaml").read_text()
    (scratch / "params.yaml").write_text(re.sub(r"(?m)^(sgm:.*\n  enabled: )true", r"\1false", params))
    m = json.loads((scratch / "reports" / "metrics.json").read_text())
    for ds in m:  # SGM off: PaSE's numbers move, PaSE equals PaSE without SGM
        m[ds]["pase"] = {k: round(v - 0.0123, 4) for k, v in m[ds]["pase"].items()}
        m[ds]["vs_no_sgm"], m[ds]["vs_best_other"] = 0.0, round(m[ds]["vs_best_other"] - 0.0123, 4)
    (scratch / "reports" / "metrics.json").write_text(json.dumps(m, indent=2, sort_keys=True))
    # the README's command, no --keep
    shown = dvc(["dvc", "exp", "show", "--only-changed", "--drop", "Created|data/|reports/",
                 "--no-pager"], scratch)
    header = next(l for l in shown.splitlines() if "Experiment" in l).split()
    assert header[0] == "Experiment" and header[-1] == "sgm.enabled"
    assert len(header) == 1 + 3 * 5 - 1 + 1  # per dataset 5 headline numbers (IEMOCAP 4), the switch
    assert max(len(l.rstrip()) for l in shown.splitlines()) <= WIDE, shown


@pytest.mark.slow
def test_plots_show_skips_a_not_applicable_variant_without_a_warning(tmp_path):
    """A real `dvc repro` with a variant that does not apply (Self-MM on IEMOCAP): its declared
    curves folder is empty, and `dvc plots show` passes over it silently (stderr empty) while it
    lists PaSE's curves. (A non-plot file in a curves folder would make DVC warn that it "failed
    to load some plots": tests/train/test_train.py checks that a seed writes only .tsv files there.
    pase-T: Fig. 1's plot (reports/plots/modality_gain.csv) needs it, and a declared plot file
    that was not drawn would be a warning of its own.)"""
    from tests.helpers import make_repo, run
    work = make_repo(tmp_path / "repo", {"datasets": ["iemocap"], "seeds": [0],
                                         "variants": ["pase", "pase-T", "self_mm"], "train": {"epochs": 2},
                                         "sgm": {"start_epoch": 2}})
    run(["dvc", "repro"], work)
    na = work / "data" / "curves" / "iemocap" / "self_mm"
    assert na.is_dir() and not any(na.rglob("*"))
    shown = run(["dvc", "plots", "show", "--json"], work)
    assert shown.stderr == ""
    plotted = json.loads(shown.stdout)["data"]
    assert any(k.startswith("data/curves/iemocap/pase/seed0/") for k in plotted)
    assert not any(k.startswith("data/curves/iemocap/self_mm") for k in plotted)
    assert run(["dvc", "plots", "show"], work).stderr == ""
