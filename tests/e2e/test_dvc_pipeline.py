"""End to end through real `dvc`: repro, nothing-to-do, experiments and parameter typos.

Runs in a scratch git copy of the repository with tiny parameters (marked slow; CI runs it)."""
import json
import sys

import pytest

from tests.helpers import ROOT, make_repo, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    work = make_repo(tmp_path_factory.mktemp("repo"),
                     {"datasets": ["mosi", "iemocap"], "seeds": [0, 1], "train": {"epochs": 2},
                      "sgm": {"start_epoch": 2}})
    first = run(["dvc", "repro"], work)
    return work, first


def test_repro_runs_every_stage_and_reports(repo):
    work, first = repo
    for stage in ("download@mosi", "align@iemocap", "embed@mosi", "train@mosi-late_fusion",
                  "train@iemocap-late_fusion", "report"):
        assert f"Running stage '{stage}'" in first.stdout
    metrics = json.loads((work / "reports" / "metrics.json").read_text())
    detail = json.loads((work / "reports" / "metrics_detail.json").read_text())
    assert metrics["mosi"]["synthetic"] and detail["mosi"]["late_fusion"]["summary"]["seeds"] == 2
    assert "wa" in metrics["iemocap"]["pase"] and "vs_best_other" in metrics["iemocap"]  # late fusion
    summary = (work / "reports" / "summary.md").read_text()
    assert "SYNTHETIC" in summary.splitlines()[0]
    shown = run(["dvc", "metrics", "show"], work).stdout
    assert "reports/metrics.json" in shown and "mosi.pase.mae" in shown and "mosi.vs_best_other" in shown


def test_second_repro_has_nothing_to_do(repo):
    work, _ = repo
    again = run(["dvc", "repro"], work)
    assert "Running stage" not in again.stdout
    assert "up to date" in run(["dvc", "status"], work).stdout.lower()


def test_training_parameter_reruns_training_only(repo):
    work, _ = repo
    run(["git", "add", "-A"], work)
    run(["git", "commit", "-qm", "after repro"], work)
    exp = run(["dvc", "exp", "run", "-S", "train.epochs=3"], work)
    ran = [l for l in exp.stdout.splitlines() if l.startswith("Running stage")]
    assert ran and all(any(s in l for s in ("train@", "report", "figures", "configure"))
                       for l in ran), ran
    assert not any(s in exp.stdout for s in ("Running stage 'embed", "Running stage 'align",
                                             "Running stage 'download"))
    shown = json.loads(run(["dvc", "exp", "show", "--json"], work).stdout)
    assert shown  # baseline and the experiment are listed


SWITCHES = ["sgm.enabled=false", "pcl.enabled=false", "cal.enabled=false", "pgf.enabled=false",
            "fusion.type=attention", "modalities=[text,audio]", "loss.mu=0.5", "pcl.tau=0.5",
            "sgm.rho=0.9"]


def test_each_method_switch_reruns_training_and_changes_pase(repo):
    """`dvc exp run -S <switch>` reruns train and report only, and PaSE's metrics move."""
    work, _ = repo
    base = json.loads((work / "reports" / "metrics.json").read_text())["mosi"]["pase"]
    changed = []
    for switch in SWITCHES:
        exp = run(["dvc", "exp", "run", "-S", switch], work)
        ran = [line for line in exp.stdout.splitlines() if line.startswith("Running stage")]
        assert ran and all("train@" in r or r.endswith(("'report':", "'figures':", "'configure':"))
                           for r in ran), (switch, ran)
        new = json.loads((work / "reports" / "metrics.json").read_text())["mosi"]["pase"]
        changed.append(new != base)
        run(["git", "checkout", "--", "params.yaml"], work)
        run(["dvc", "checkout", "-q"], work, check=False)
    assert all(changed), dict(zip(SWITCHES, changed))
    shown = run(["dvc", "exp", "show", "--csv"], work).stdout
    assert shown.count("\n") >= len(SWITCHES)


def test_text_features_are_not_recomputed_for_a_training_change(repo):
    """Issue: text features computed once per dataset and encoder (DVC's own status says so)."""
    work, _ = repo
    params = (work / "params.yaml").read_text()
    try:
        (work / "params.yaml").write_text(params.replace("lr: 0.003", "lr: 0.004"))
        status = run(["dvc", "status", "--json"], work).stdout
        stale = json.loads(status)
        assert "configure" in stale  # which train stages it reruns: tests/e2e/test_dvc_effective.py
        assert not any(k.startswith(("embed@", "align@", "download@")) for k in stale), stale
    finally:
        (work / "params.yaml").write_text(params)


def test_misspelt_or_bad_parameter_stops_with_the_key(repo):
    work, _ = repo
    # DVC itself refuses to set a key params.yaml does not have ...
    bad = run(["dvc", "exp", "run", "-S", "train.epocs=3"], work, check=False)
    assert bad.returncode != 0 and "train.epocs" in bad.stderr
    # ... and when forced to add it (`+key`), our validation stops the stage, naming key and allowed keys.
    forced = run(["dvc", "exp", "run", "-S", "+train.epocs=3"], work, check=False)
    out = forced.stdout + forced.stderr
    assert forced.returncode != 0 and "train.epocs: unknown parameter" in out and "epochs" in out
    run(["git", "checkout", "--", "params.yaml"], work)  # a failed experiment leaves its params
    ablation = run(["dvc", "exp", "run", "-S", "+sgm.enabeld=false"], work, check=False)
    out = ablation.stdout + ablation.stderr
    assert ablation.returncode != 0 and "sgm.enabeld: unknown parameter" in out and "enabled" in out
    run(["git", "checkout", "--", "params.yaml"], work)
    value = run(["dvc", "exp", "run", "-S", "train.device=tpu"], work, check=False)
    out = value.stdout + value.stderr
    assert value.returncode != 0 and "train.device: 'tpu' is not allowed" in out and "'cuda'" in out
    run(["git", "checkout", "--", "params.yaml"], work)


@pytest.mark.parametrize("stage", ["download", "align", "embed", "train", "report"])
def test_every_stage_has_cli_help(stage):
    p = run([sys.executable, "-m", "pipeline", stage, "--help"], ROOT)
    assert "usage: python -m pipeline " + stage in p.stdout
