"""benchmarks/bench_cpu_real.py's projection of the cpu-real matrix, checked by hand (the
timings themselves live in reports/bench_cpu_real.json, never in a test)."""
import sys

import pytest

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT))

from benchmarks.bench_cpu_real import VARIANTS, project, seed_seconds  # noqa: E402

MOSI = {"train": 1284, "valid": 229, "test": 686}


def measured(**epoch_seconds):
    runs = {v: {"train_epoch_seconds": epoch_seconds.get(v, 1.0), "forward_ms_per_utterance": 0.0,
                "probe_features": True} for v in VARIANTS}
    runs["pase"]["forward_ms_per_utterance"] = 1.0
    return {"sizes": {"train": 100, "valid": 10, "test": 20},
            "data_stages_seconds": {"embed": 13.0}, "runs": runs}


def test_a_seed_by_hand():
    run = {"train_epoch_seconds": 10.0, "forward_ms_per_utterance": 1.0, "probe_features": True,
           "n_train": 100}
    # 4 epochs x 10 s x 1284 / 100 utterances + 1 ms x (4 validations x 229 + test 686 + probes
    # of train 1284 and test 686)
    assert seed_seconds(run, MOSI) == pytest.approx(513.6 + 3.572)
    assert seed_seconds({**run, "probe_features": False}, MOSI) == pytest.approx(513.6 + 1.602)


def test_the_matrix_by_hand():
    out = project(measured(pase=10.0, **{"pase-AV": 2.0}), workers=2)
    mosi, iem = out["mosi"], out["iemocap"]
    pase = 513.6 + 3.572
    assert mosi["seed_seconds_per_variant"]["pase-T"] == round(pase, 1)  # pase's representative
    assert mosi["seed_seconds_per_variant"]["pase-A"] == round(4 * 2.0 * 12.84, 1)
    # 14 PaSE variants with text (pase-cggm among them), CP+SL and Self-MM fine-tune MiniLM on
    # MOSI; nothing on IEMOCAP
    assert mosi["fine_tuned_variants"] == 16 and "tfn" not in mosi["fine_tuned"]
    assert iem["fine_tuned_variants"] == 0 and "self_mm" not in iem["seed_seconds_per_variant"]
    # IEMOCAP has no raw text: PaSE there is PaSE without text x 1.5 (2717 training utterances)
    assert iem["seed_seconds_per_variant"]["pase"] == round(1.5 * 4 * 2.0 * 27.17, 1)
    per = mosi["seed_seconds_per_variant"]
    assert mosi["variants"] == 24 == len(per)
    # five seeds on two processes: three rounds; CPU time: five seeds
    assert mosi["train_wall_hours"] == pytest.approx(3 * sum(per.values()) / 3600, abs=0.01)
    assert mosi["train_cpu_hours"] == pytest.approx(5 * sum(per.values()) / 3600, abs=0.01)
    assert mosi["embed_minutes"] == round(13.0 / 130 * 2199 / 60, 1)
