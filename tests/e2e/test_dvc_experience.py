"""DVC's own views of the results, as a researcher uses them, in a scratch git copy after a small
run: `dvc metrics show`, `dvc exp show --only-changed` and `dvc metrics diff` for the SGM
ablation (the README's commands), and `dvc plots show` listing every per-epoch curve."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import make_repo, run

pytestmark = pytest.mark.slow
SCREEN = 200  # columns: one terminal screen


def width(text: str) -> int:
    return max(len(l.rstrip()) for l in text.splitlines())


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    """Baseline committed, then `dvc exp run -S sgm.enabled=false` (results in the workspace)."""
    work = make_repo(tmp_path_factory.mktemp("exp"), {
        "datasets": ["mosi"], "seeds": [0, 1], "variants": ["pase", "late_fusion"],
        "train": {"epochs": 2}, "sgm": {"start_epoch": 2},
        # the redundant generator learns within 2 epochs, so phase 2 (epoch 2) is the selected
        # epoch and SGM shows; at a tenth of MOSI (128 training rows, 8 steps an epoch) it moves
        # PaSE's mean metrics beyond DVC's display precision (at 0.02, 2 steps: MAE by 2e-5)
        "synthetic": {"kind": "redundant", "scale": 0.1}})
    env_log = {"PIPELINE_LOG": "INFO"}
    first = subprocess_log(["dvc", "repro"], work, env_log)
    run(["git", "add", "-A"], work)
    run(["git", "commit", "-qm", "baseline"], work)
    run(["dvc", "exp", "run", "-S", "sgm.enabled=false"], work)
    return work, first


def subprocess_log(cmd, cwd, extra):
    """`run`, with the pipeline's INFO log kept (the test reads it)."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1", HF_HUB_OFFLINE="1", **extra)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout + p.stderr


def test_redirected_log_has_epoch_lines_and_no_progress_bar_noise(ablation):
    _, log = ablation
    assert "\r" not in log
    assert len(re.findall(r"mosi/pase seed \d: epoch \d/2, phase", log)) == 4  # 2 seeds x 2 epochs
    assert "embed mosi: train split" in log


def test_metrics_show_is_the_compact_headline(ablation):
    work, _ = ablation
    shown = run(["dvc", "metrics", "show"], work).stdout
    header = shown.splitlines()[0].split()
    assert header[0] == "Path" and "reports/metrics.json" in shown
    # per dataset: PaSE's headline metrics (means) and its lead over the best other method run
    # (no pase-no_sgm here, so no vs_no_sgm); nothing per seed, no std, no other variant
    want = {f"mosi.pase.{m}" for m in ("acc2_non0", "f1_non0", "mae")} | {"mosi.synthetic",
                                                                         "mosi.vs_best_other"}
    assert set(header[1:]) == want
    detail = json.loads((work / "reports" / "metrics_detail.json").read_text())
    assert set(detail["mosi"]["pase"]["seeds"]) == {"0", "1"}


def test_exp_show_only_changed_fits_a_screen(ablation):
    work, _ = ablation
    # the README's command: what moved and the switch, without the dependency/output hash columns
    shown = run(["dvc", "exp", "show", "--only-changed", "--drop", "Created|data/|reports/"], work).stdout
    assert width(shown) <= SCREEN, shown
    assert "sgm.enabled" in shown and "mosi.pase." in shown
    assert "late_fusion" not in shown  # SGM is not part of late fusion: its numbers did not move
    rows = {l.split()[0]: l for l in shown.splitlines() if l.strip().startswith(("workspace", "master"))}
    assert "False" in rows["workspace"] and "True" in rows["master"]
    # the README's narrower view: the headline model's numbers beside the switch
    keep = run(["dvc", "exp", "show", "--drop", ".*", "--keep",
                r"Experiment|sgm\.enabled|^mosi\.pase\."], work).stdout
    assert width(keep) <= SCREEN
    assert re.findall(r"mosi\.pase\.\w+", keep) == [f"mosi.pase.{m}" for m in
                                                     ("acc2_non0", "f1_non0", "mae")]


def test_metrics_diff_lists_changed_headline_metrics_only(ablation):
    work, _ = ablation
    diff = run(["dvc", "metrics", "diff"], work).stdout
    lines = diff.splitlines()
    assert lines[0].split() == ["Path", "Metric", "HEAD", "workspace", "Change"]
    assert len(lines) > 1 and width(diff) <= SCREEN
    # PaSE's numbers and its lead over late fusion moved; late fusion's own are not in the headline
    assert all(re.search(r"\smosi\.(pase\.|vs_best_other)", l) for l in lines[1:])


def test_plots_show_lists_every_curve_titled_by_dataset_variant_seed(ablation):
    work, _ = ablation
    shown = json.loads(run(["dvc", "plots", "show", "--json"], work, check=False).stdout)["data"]
    for v, seed, metric in [("pase", 0, "valid_acc2_non0"), ("pase", 1, "shapley_text"),
                            ("pase", 1, "loss_task"), ("late_fusion", 0, "valid_mae")]:
        path = f"data/curves/mosi/{v}/seed{seed}/plots/metrics/{metric}.tsv"
        (plot,) = shown[path]
        assert plot["type"] == "vega" and plot["content"]["title"]["text"] == path
        values = plot["content"]["data"]["values"]
        assert [int(p["step"]) for p in values] == [1, 2]  # x = epoch
    # Fig. 5: one plot per dataset and variant, each titled by its file; no t-SNE scatter
    assert shown["reports/plots/shapley/mosi_pase.csv"][0]["content"]["title"]["text"] == \
        "reports/plots/shapley/mosi_pase.csv"
    assert not any("tsne" in k and not k.endswith(".png") for k in shown)
