"""Metrics must equal MMSA's metricsTop.py definitions; hand-checked cases for the edge rules."""
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from pipeline.metrics import iemocap_metrics, regression_metrics

# Labels exercise: an exact 0, half-to-even rounding at +-0.5 and +-2.5, clipping beyond +-3.
Y = np.array([0.0, 0.5, -0.5, 2.5, -2.5, 3.5, -4.0, 1.0])
P = np.array([0.1, 0.4, -0.6, 2.0, -3.0, 2.6, -3.0, -1.0])


def test_hand_checked_regression_metrics():
    m = regression_metrics(P, Y)
    assert m["mae"] == pytest.approx(5.2 / 8)
    # round(-0.5) = -0 (half to even) vs round(-0.6) = -1; round(-2.5) = -2 vs -3; 1 vs -1.
    assert m["acc7"] == pytest.approx(5 / 8)
    # clipped to [-2, 2]: only the -0.5/-0.6 pair and the 1/-1 pair differ.
    assert m["acc5"] == pytest.approx(6 / 8)
    assert m["acc2_has0"] == pytest.approx(7 / 8)  # y=0 counts as non-negative
    assert m["acc2_non0"] == pytest.approx(6 / 7)  # y=0 dropped
    # weighted F1, has0: class True (5 samples) F1 = 8/9, class False (3) F1 = 6/7.
    assert m["f1_has0"] == pytest.approx((5 * 8 / 9 + 3 * 6 / 7) / 8)
    assert m["corr"] == pytest.approx(np.corrcoef(P, Y)[0, 1])


def test_half_to_even_and_clipping_in_acc7():
    # np.round: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -2.5 -> -2; 7 -> clipped to 3.
    y = np.array([0.5, 1.5, 2.5, -2.5, 7.0])
    p = np.array([0.0, 2.0, 2.0, -2.0, 3.0])
    assert regression_metrics(p, y)["acc7"] == 1.0
    p_wrong = np.array([1.0, 1.0, 3.0, -3.0, 2.0])
    assert regression_metrics(p_wrong, y)["acc7"] == 0.0


def _mmsa_reference(p, y):
    """A transcription of MMSA's __eval_mosei_regression, to compare with on random data."""
    a7 = np.mean(np.round(np.clip(p, -3, 3)) == np.round(np.clip(y, -3, 3)))
    a5 = np.mean(np.round(np.clip(p, -2, 2)) == np.round(np.clip(y, -2, 2)))
    nz = np.array([i for i, e in enumerate(y) if e != 0])
    return {
        "mae": np.mean(np.abs(p - y)), "corr": np.corrcoef(p, y)[0][1], "acc7": a7, "acc5": a5,
        "acc2_non0": accuracy_score(p[nz] > 0, y[nz] > 0),
        "f1_non0": f1_score(y[nz] > 0, p[nz] > 0, average="weighted"),
        "acc2_has0": accuracy_score(p >= 0, y >= 0),
        "f1_has0": f1_score(y >= 0, p >= 0, average="weighted"),
    }


@pytest.mark.parametrize("seed", range(5))
def test_equals_mmsa_on_random_predictions(seed):
    rng = np.random.default_rng(seed)
    y = np.round(rng.uniform(-3, 3, 300) * 3) / 3  # thirds, so some labels are exactly 0
    p = y + rng.normal(0, 1, 300)
    ours, ref = regression_metrics(p, y), _mmsa_reference(p, y)
    for k, v in ref.items():
        assert round(ours[k], 4) == round(float(v), 4), k


def test_bad_predictions_are_refused():
    with pytest.raises(ValueError):
        regression_metrics([0.0, np.nan], [0.0, 1.0])
    with pytest.raises(ValueError):
        regression_metrics([0.0], [0.0, 1.0])


def test_iemocap_per_emotion_binary_metrics():
    y = np.eye(4, dtype=int)[[0, 1, 2, 3, 0, 1]]
    logits = np.zeros((6, 4, 2))
    logits[..., 0] = 1.0  # "absent" everywhere ...
    for i, k in enumerate([0, 1, 2, 3, 0, 2]):  # ... but present for one emotion per row
        logits[i, k] = [0.0, 2.0]
    m = iemocap_metrics(logits, y)
    # neutral: rows 0 and 4 right; happy: row 5 predicted absent but is happy -> 5/6.
    assert m["neutral_acc"] == 1.0
    assert m["happy_acc"] == pytest.approx(5 / 6)
    assert m["sad_acc"] == pytest.approx(5 / 6)  # row 5 predicted sad, is not
    assert m["happy_f1"] == pytest.approx(f1_score(y[:, 1], [0, 1, 0, 0, 0, 0], average="weighted"))
    assert m["wa"] == pytest.approx(5 / 6)  # 4-class arg-max accuracy
