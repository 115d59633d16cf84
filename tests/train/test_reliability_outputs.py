"""Outputs appear atomically, a killed stage's temporary files go at the next start, and the
figures and the report work for any non-empty subset of datasets and variants and small splits."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from pipeline import paths, train

from pipeline import train_stage
from pipeline.__main__ import main
from pipeline.data.store import atomic_path, remove_temp_files, write_atomic
from pipeline.report.figures import make_figures
from pipeline.report.summary import report

pytestmark = pytest.mark.usefixtures("one_thread")


def test_temp_files_of_a_killed_write_are_recognised_and_only_those(tmp_path):
    d = tmp_path / "data" / "embedded"
    d.mkdir(parents=True)
    ours = d / ".mosi.h5.k2j_4h5g.tmp"                # what atomic_path makes for mosi.h5
    kept = [d / ".mosei.h5.k2j4h5g1.tmp",              # another dataset's stage may be writing it
            d / "mosi.h5", d / ".mosi.h5.part",        # the output; a resumable download
            d / ".mosi.h5.toolongname.tmp"]
    for p in [ours, *kept]:
        p.write_bytes(b"x")
    assert remove_temp_files(d / "mosi.h5") == [ours]
    assert all(p.exists() for p in kept)
    nested = tmp_path / "reports" / "tables" / ".table1.md.abcdefgh.tmp"
    nested.parent.mkdir(parents=True)
    nested.write_bytes(b"")
    assert remove_temp_files(tmp_path / "reports" / "tables") == [nested]
    # the pattern matches what atomic_path really makes (removed under it: nothing to rename)
    with pytest.raises(FileNotFoundError), atomic_path(d / "other.h5") as tmp:
        assert remove_temp_files(d / "other.h5") == [tmp]


def test_a_write_killed_half_way_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "reports" / "metrics.json"
    write_atomic(target, '{"old": 1}\n')
    real = Path.write_bytes

    def half_then_killed(self, data):
        real(self, data[: len(data) // 2])
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(Path, "write_bytes", half_then_killed)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, json.dumps({"new": list(range(100))}))
    monkeypatch.undo()
    assert target.read_text() == '{"old": 1}\n'
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]


def _train_all(cfg):
    for ds in cfg.datasets:
        for v in cfg.variants:
            train_stage.train_variant(cfg, ds, v)


def test_only_late_fusion_figures_stage_and_report_still_work(tiny_project):
    cfg = tiny_project({"variants": ["late_fusion"]})
    _train_all(cfg)
    for stale in ("figures/fig3_tsne.png", "plots/gates.csv"):  # committed copies from a fuller run
        write_atomic(paths.REPORTS / stale, "old")
    leftover = paths.REPORTS / "tables" / ".table1.md.abcd1234.tmp"  # from a killed report
    write_atomic(leftover, "half")
    assert main(["figures"]) == 0 and main(["report"]) == 0
    assert not leftover.exists()
    assert (paths.REPORTS / "figures").is_dir() and not any((paths.REPORTS / "figures").iterdir())
    skipped = json.loads((paths.REPORTS / "plots" / "skipped.json").read_text())
    assert set(skipped) == {"fig1_modality_gain", "fig3_tsne", "fig4_gates", "fig5_shapley",
                            "fig_diagnostics"}
    assert not (paths.REPORTS / "plots" / "gates.csv").exists()
    readme = (paths.REPORTS / "README.md").read_text()
    assert "Figure 3: t-SNE of the fused test representations: not drawn for this run set — " \
           "no fused_test.npy of pase on mosi, seed 0." in readme
    assert "acc2_non0" in json.loads((paths.REPORTS / "metrics.json").read_text())["mosi"]["late_fusion"]
    assert json.loads((paths.REPORTS / "metrics_detail.json").read_text())["mosi"]["late_fusion"]["summary"]["seeds"] == 1


def test_small_test_splits_draw_or_skip_each_figure_with_a_note(tiny_project):
    """14 test utterances and 64-d fused vectors (PCA to 50 components cannot run on 14 points);
    then 8 utterances, too few for a t-SNE panel. Also: a warned setting reaches the report."""
    over = {"variants": ["pase", "pase-T", "pase-TA"], "train": {"epochs": 2, "hidden": 64},
            "sgm": {"start_epoch": 2}}
    cfg = tiny_project(over)
    _train_all(cfg)
    assert len(np.load(paths.seed_dir("mosi", "pase", 0) / "fused_test.npy")) == 14
    assert np.load(paths.seed_dir("mosi", "pase", 0) / "fused_test.npy").shape[1] > 50
    made = make_figures(cfg)
    assert {"fig1_modality_gain", "fig3_tsne", "fig4_gates", "fig5_shapley"} <= set(made)

    cfg = tiny_project({**over, "synthetic": {"scale": 0.001}})  # 8 utterances a split
    _train_all(cfg)
    made = make_figures(cfg)
    assert "fig3_tsne" not in made and {"fig1_modality_gain", "fig4_gates", "fig5_shapley"} <= set(made)
    report(cfg, cfg.variants, n_boot=20)
    readme = (paths.REPORTS / "README.md").read_text()
    assert "t-SNE needs at least 10 test utterances" in readme
    assert "**WARNING** (params): sgm.start_epoch: 2 with train.epochs: 2" in readme


def test_iemocap_only(tiny_project):
    cfg = tiny_project({"datasets": ["iemocap"], "variants": ["pase"], "train": {"epochs": 2},
                        "sgm": {"start_epoch": 2}}, datasets=("iemocap",))
    _train_all(cfg)
    made = make_figures(cfg)
    assert {"fig4_gates", "fig5_shapley"} <= set(made) and "fig3_tsne" not in made
    report(cfg, cfg.variants, n_boot=20)
    assert "needs MOSI or MOSEI in datasets" in (paths.REPORTS / "README.md").read_text()
    assert os.path.exists(paths.REPORTS / "tables" / "table2.md")
