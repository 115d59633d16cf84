"""benchmarks/bench_gpu.py's projection of the paper matrix, checked by hand on small cases
(the timings themselves live in reports/gpu_check.json, never in a test; the concurrent-seeds
projection is tests/bench/test_gpu_check.py's)."""
import sys

import yaml

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT))

from benchmarks.bench_gpu import matrix, paper_config, project  # noqa: E402


def test_the_matrix_is_every_variant_on_every_dataset_but_the_na_cells():
    cfg = paper_config(tiny=True)
    cells = matrix(cfg)
    n_variants = len(yaml.safe_load((ROOT / "params.yaml").read_text())["variants"]) + 1  # + MAG-BERT
    assert len(cells) == 3 * n_variants - 2  # Self-MM and MAG-BERT do not run on IEMOCAP
    assert ("iemocap", "self_mm", "self_mm") not in cells and ("mosi", "pase-T", "pase") in cells
    assert ("mosei", "tfn", "tfn") in cells and ("mosi", "pase-ogm_ge", "pase") in cells


def test_projection_by_hand():
    cfg = paper_config(tiny=True)  # 200 epochs, 5 seeds
    cells = [("mosi", "pase", "pase"), ("iemocap", "tfn", "tfn")]
    per_sample = {"pase": (1e-3, 0.0), "tfn": (0.0, 2e-3)}
    # mosi pase: 5 seeds * 200 epochs * 1284 train * 1 ms = 1284 s
    # iemocap tfn: 5 seeds * (200 * 798 valid + 938 test) * 2 ms = 1605.38 s
    out = project(cfg, cells, per_sample)
    assert out["by_dataset"] == {"mosi": round(1284 / 3600, 1), "iemocap": round(1605.38 / 3600, 1)}
    assert out["gpu_hours"] == round((1284 + 1605.38) / 3600, 1)


def test_one_pase_training_by_hand():
    from benchmarks.bench_gpu import one_pase_training
    cfg = paper_config(tiny=True)  # 200 epochs, 5 seeds
    # one PaSE training on MOSEI: 200 epochs * 16326 train samples * 1 ms
    assert one_pase_training(cfg, {"pase": (1e-3, 0.0)}) == round(200 * 16326e-3 / 3600, 2)
