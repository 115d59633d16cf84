"""Imbalance diagnostics (pipeline/report/diagnostics.py): linear probes on saved encoder features."""
import json

import numpy as np
import pandas as pd
import pytest

from pipeline import paths
from pipeline.report import diagnostics as dg


def test_linear_probe_recovers_a_linear_signal_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8))
    y = 2.0 * x[:, 3] - x[:, 5] + 0.5
    xt = rng.normal(size=(200, 8))
    pred = dg.linear_probe(x, y, xt)[:, 0]
    np.testing.assert_allclose(pred, 2.0 * xt[:, 3] - xt[:, 5] + 0.5, atol=0.05)
    noise = dg.linear_probe(x, rng.normal(size=400), xt)[:, 0]
    assert abs(np.corrcoef(noise, 2.0 * xt[:, 3])[0, 1]) < 0.2


def _run(root, ds, variant, seed, feats_train, feats_test, y_train, y_test, test_metric=None):
    d = root / paths.seed_dir(ds, variant, seed)
    d.mkdir(parents=True)
    arrays = {f"train/{m}": v for m, v in feats_train.items()}
    arrays.update({f"test/{m}": v for m, v in feats_test.items()})
    arrays["train/label"] = y_train
    if feats_train:
        np.savez(d / "probe_features.npz", **arrays)
    pd.DataFrame({"id": [str(i) for i in range(len(y_test))], "prediction": 0.0,
                  "label": y_test}).to_csv(d / "predictions.csv", index=False)
    (d / "metrics.json").write_text(json.dumps({"seed": seed, "test": test_metric or {}}))


def test_collect_pairs_each_probe_with_the_unimodal_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(1)
    y, yt = rng.normal(size=300), rng.normal(size=100)
    # text's features carry the label, audio's do not: the audio probe is near 0
    train = {"text": np.c_[y, rng.normal(size=(300, 3))], "audio": rng.normal(size=(300, 4))}
    test = {"text": np.c_[yt, rng.normal(size=(100, 3))], "audio": rng.normal(size=(100, 4))}
    _run(tmp_path, "mosi", "pase-no_sgm", 0, train, test, y, yt)
    _run(tmp_path, "mosi", "pase-A", 0, {}, {}, y, yt, {"corr": 0.4})
    rows = dg.collect("mosi", ["pase-no_sgm", "pase"], [0, 1])
    by = {r["modality"]: r for r in rows}
    assert set(by) == {"text", "audio"} and all(r["variant"] == "pase-no_sgm" for r in rows)
    assert by["text"]["probe"] > 0.99 and abs(by["audio"]["probe"]) < 0.3
    assert by["audio"]["unimodal"] == pytest.approx(0.4) and by["text"]["unimodal"] is None
