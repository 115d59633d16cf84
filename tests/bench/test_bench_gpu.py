"""benchmarks/bench_gpu.py's projection of the paper matrix, checked by hand on small cases
(the timings themselves live in reports/bench_gpu.json, never in a test)."""
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


def test_concurrent_seeds_projection_by_hand():
    """Seeds concurrent on one GPU: serial hours / k, never below the FLOP-bound floor."""
    from benchmarks.bench_gpu import concurrent, one_pase_training
    cfg = paper_config(tiny=True)  # 200 epochs, 5 seeds
    cells = [("mosi", "pase", "pase"), ("mosi", "tfn", "tfn")]
    measured = {"pase": (1e-3, 0.0), "tfn": (1e-3, 0.0)}  # 1284 s serial each (as above)
    floor = {"pase": (1e-4, 0.0), "tfn": (5e-4, 0.0)}     # 128.4 s and 642 s
    # a 10 GiB card: pase (peak 2000 MiB + 500 context) fits 3 (9216 // 2500), tfn (100 + 500) all 5
    out = concurrent(cfg, cells, measured, floor, {"pase": 2000.0, "tfn": 100.0}, 10 * 1024.0)
    assert out["concurrent_seeds_per_method"] == {"pase": 3, "tfn": 5}
    # pase: max(1284 / 3, 128.4) = 428 s; tfn: max(1284 / 5, 642) = 642 s (the floor)
    assert out["gpu_hours"] == round((428 + 642) / 3600, 1)
    assert concurrent(cfg, cells, None, floor, {}, 1e6)["gpu_hours"] == round((128.4 + 642) / 3600, 1)
    # one PaSE training on MOSEI: 200 epochs * 16326 train samples * 1 ms
    assert one_pase_training(cfg, {"pase": (1e-3, 0.0)}) == round(200 * 16326e-3 / 3600, 2)
