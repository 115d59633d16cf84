"""pipeline/report/figures.py on fake run directories: every PNG is drawn, the plot data hold the
numbers the fake runs imply, synthetic runs are labelled, and missing runs skip cleanly."""
from __future__ import annotations

import json
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.settings import config_from_dict
from pipeline.report.fig_common import sentiment_classes
from pipeline.report.figures import make_figures

EMOTIONS = ("neutral", "happy", "sad", "angry")
MODS = ("text", "audio", "vision")
VARIANT_MODS = {"pase-T": ["text"], "pase-TA": ["text", "audio"], "pase-TV": ["text", "vision"]}
# test F1 (non0 / mean F1) of the fake runs; seed k adds 0.01 * k to it
BASE_F1 = {"pase-T": 0.70, "pase-TA": 0.72, "pase-TV": 0.71, "pase": 0.75, "pase-no_sgm": 0.73,
           "self_mm": 0.71, "late_fusion": 0.69}
# mean PGF gate per emotion (rows) and modality (text, audio, vision) of the fake IEMOCAP runs
GATE_MEANS = np.array([[0.70, 0.40, 0.30], [0.55, 0.60, 0.45], [0.75, 0.35, 0.50], [0.50, 0.65, 0.40]])
PHASE2 = {0: 6, 1: 8}  # first phase-2 epoch per seed (others: 7)


def _f1(variant: str, seed: int, noise: float = 0.0) -> float:
    jitter = noise * np.random.default_rng(zlib.crc32(f"{variant}/{seed}".encode())).standard_normal()
    return BASE_F1[variant] + 0.01 * seed + jitter


def _history(ds: str, variant: str, seed: int, mods, epochs: int, rng) -> list[dict]:
    sgm = variant != "pase-no_sgm"
    switch = PHASE2.get(seed, 7)
    out = []
    for e in range(1, epochs + 1):
        phase = 2 if e >= switch else 1
        late = max(0, e - switch + 1) / epochs
        psi = {"text": 0.30 - (0.15 * late if sgm else 0.0), "audio": 0.10 + (0.08 * late if sgm else 0.0),
               "vision": 0.05 + (0.07 * late if sgm else 0.0)}
        rec = {"epoch": e, "phase": phase, "loss_task": 1.0 / e}
        rec.update({f"shapley_{m}": psi[m] + 0.005 * rng.standard_normal() for m in mods})
        if phase == 2 and sgm:
            rec.update({f"phi_{m}": 0.9 for m in mods})
        acc = 0.55 + 0.3 * (1 - np.exp(-e / 4)) + (0.04 * late if sgm else 0.0)
        if ds == "iemocap":
            rec.update(valid_wa=acc, valid_mean_f1=acc - 0.02)
        else:
            rec.update(valid_acc2_non0=acc, valid_mae=1.5 - acc)
        out.append(rec)
    return out


def make_fake_runs(root: Path, datasets=("mosi", "iemocap"), variants=tuple(BASE_F1), seeds=(0, 1),
                   n_test=None, epochs=14, hidden=32, synthetic=True, f1_noise=0.0) -> None:
    """data/runs/<ds>/<variant>/seed<k>/ as pipeline/train.py writes them (plausible values);
    `f1_noise` adds seed-to-seed scatter to the test F1s (0: the exact values of BASE_F1)."""
    n_test = n_test or {"mosi": 150, "mosei": 150, "iemocap": 160}
    for ds in datasets:
        for variant in variants:
            for seed in seeds:
                rng = np.random.default_rng(zlib.crc32(f"{ds}/{variant}/{seed}".encode()))
                d = root / "data" / "runs" / ds / variant / f"seed{seed}"
                d.mkdir(parents=True, exist_ok=True)
                if variant == "self_mm" and ds == "iemocap":
                    (d / "metrics.json").write_text(json.dumps({"status": "not applicable"}))
                    continue
                mods = VARIANT_MODS.get(variant, list(MODS))
                n = n_test[ds]
                data_rng = np.random.default_rng(7 + seed)  # same test set for every variant
                f1 = _f1(variant, seed, f1_noise)
                if ds == "iemocap":
                    emo = np.arange(n) % 4
                    data_rng.shuffle(emo)
                    labels = np.eye(4, dtype=int)[emo]
                    scores = 3 * (2 * labels - 1) + rng.standard_normal((n, 4))
                    pred = pd.DataFrame({"id": [f"iemocap-{i:04d}" for i in range(n)],
                                         **{f"{e}_score": scores[:, i] for i, e in enumerate(EMOTIONS)},
                                         **{f"{e}_label": labels[:, i] for i, e in enumerate(EMOTIONS)}})
                    test = {**{f"{e}_f1": f1 + 0.01 * i for i, e in enumerate(EMOTIONS)},
                            "wa": f1 - 0.05}
                    test["mean_f1"] = float(np.mean([test[f"{e}_f1"] for e in EMOTIONS]))
                    cls = emo
                else:
                    y = np.round(data_rng.uniform(-3, 3, n) * 3) / 3
                    pred = pd.DataFrame({"id": [f"{ds}-{i:04d}" for i in range(n)],
                                         "prediction": y + 0.5 * rng.standard_normal(n), "label": y})
                    test = {"mae": 0.8, "corr": 0.7, "acc7": 0.4, "acc5": 0.45, "acc2_has0": f1,
                            "acc2_non0": f1 + 0.01, "f1_has0": f1 - 0.01, "f1_non0": f1}
                    cls = sentiment_classes(y)
                pred.to_csv(d / "predictions.csv", index=False)
                (d / "metrics.json").write_text(json.dumps(
                    {"dataset": ds, "variant": variant, "seed": seed, "synthetic": synthetic,
                     "modalities": mods, "test": test}, indent=1))
                if variant == "late_fusion":
                    continue  # a baseline without a fused representation
                (d / "history.json").write_text(json.dumps(
                    _history(ds, variant, seed, mods, epochs, rng)) if variant.startswith("pase") else "[]")
                spread = 1.0 if variant == "pase" else 1.6  # overlapping classes, PaSE less so
                centers = rng.standard_normal((cls.max() + 1, hidden)) * 0.5
                np.save(d / "fused_test.npy",
                        (centers[cls] + spread * rng.standard_normal((n, hidden))).astype(np.float32))
                if variant.startswith("pase") and len(mods) == 3:
                    if ds == "iemocap":
                        g = GATE_MEANS[cls] + 0.05 * rng.standard_normal((n, 3))
                    else:
                        g = 0.5 + 0.1 * (cls[:, None] - 1) * np.array([1, -0.5, 0.2]) \
                            + 0.05 * rng.standard_normal((n, 3))
                    order = [1, 2, 0]  # stored in a non-canonical modality order on purpose
                    meta = json.loads((d / "metrics.json").read_text())
                    meta["modalities"] = [MODS[i] for i in order]
                    (d / "metrics.json").write_text(json.dumps(meta))
                    np.save(d / "gate_mean_test.npy", g[:, order].astype(np.float32))


def _cfg(datasets=("mosi", "iemocap"), variants=tuple(BASE_F1), seeds=(0, 1)):
    return config_from_dict({"datasets": list(datasets), "variants": list(variants),
                             "seeds": list(seeds)})


def _png_title(path: Path) -> str:
    with Image.open(path) as im:
        return im.text.get("Title", "")


def _png_ok(path: Path) -> None:
    blob = path.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n", path
    w, h = struct.unpack(">II", blob[16:24])
    assert 400 <= w <= 6000 and 300 <= h <= 4000, (path, w, h)
    assert 10_000 < len(blob) < 5_000_000, (path, len(blob))


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    root = tmp_path_factory.mktemp("figs")
    make_fake_runs(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        made = make_figures(_cfg())
    return root, made


def test_all_figures_are_drawn(full):
    root, made = full
    for name in ("fig1_modality_gain", "fig3_tsne", "fig4_gates", "fig5_shapley"):
        p = root / "reports" / "figures" / f"{name}.png"
        assert made[name] == Path("reports/figures") / f"{name}.png"
        _png_ok(p)
        assert "SYNTHETIC DATA" in _png_title(p), name
    for name in ("modality_gain", "gates"):
        assert (root / made[name]).is_file()
    for name in ("tsne", "shapley"):
        assert (root / made[name]).is_dir()


def test_modality_gain_is_the_difference_of_f1s(full):
    root, made = full
    df = pd.read_csv(root / made["modality_gain"])
    assert {"dataset", "metric", "combination", "label", "gain_pp", "gain_std_pp", "n_seeds",
            "synthetic"} <= set(df.columns)
    row = df[(df.dataset == "mosi") & (df.combination == "+A")].iloc[0]
    gains = [(_f1("pase-TA", s) - _f1("pase-T", s)) * 100 for s in (0, 1)]
    assert row.gain_pp == pytest.approx(np.mean(gains), abs=1e-4)  # 2.0 pp
    assert row.gain_std_pp == pytest.approx(0.0, abs=1e-4)
    assert row.n_seeds == 2 and row.metric == "f1_non0" and row.synthetic
    va = df[(df.dataset == "mosi") & (df.combination == "+VA")].iloc[0]
    assert va.gain_pp == pytest.approx(5.0, abs=1e-4)
    ie = df[df.dataset == "iemocap"].set_index(["metric", "combination"])
    assert ie.loc[("mean_f1", "+V"), "gain_pp"] == pytest.approx(1.0, abs=1e-4)
    assert ie.loc[("wa", "+VA"), "gain_pp"] == pytest.approx(5.0, abs=1e-4)
    assert len(df) == 3 * 3  # mosi f1 + iemocap mean F1 and WA, three combinations each


def test_tsne_panels_and_classes(full):
    root, made = full
    files = sorted(p.name for p in (root / made["tsne"]).iterdir())
    # late_fusion saved no fused vectors; self_mm did; PaSE is always the last panel
    assert files == ["mosi_pase.csv", "mosi_self_mm.csv"]
    df = pd.read_csv(root / made["tsne"] / "mosi_pase.csv")
    assert {"dataset", "variant", "seed", "id", "tsne_x", "tsne_y", "label", "sentiment",
            "synthetic"} <= set(df.columns)
    assert len(df) == 150 and (df.seed == 0).all() and np.isfinite(df[["tsne_x", "tsne_y"]]).all().all()
    expected = np.array(["Negative", "Neutral", "Positive"])[sentiment_classes(df.label)]
    assert (df.sentiment.to_numpy() == expected).all()
    assert set(df.sentiment[df.label > 0.5]) == {"Positive"}
    assert set(df.sentiment[df.label.abs() <= 0.5]) == {"Neutral"}


def test_sentiment_rule_is_prototype_classes():
    torch = pytest.importorskip("torch")
    from pipeline.models.pase import prototype_classes
    y = np.array([-3, -0.51, -0.5, 0, 0.5, 0.51, 2.9])
    ref = prototype_classes(torch.tensor(y), "regression", 0.5).numpy()
    assert (sentiment_classes(y) == ref).all()


def test_gates_per_emotion(full):
    root, made = full
    df = pd.read_csv(root / made["gates"])
    assert {"dataset", "group", "modality", "gate_mean", "gate_std", "n_samples", "n_seeds",
            "synthetic"} <= set(df.columns)
    assert (df.dataset == "iemocap").all() and len(df) == 12
    expected = {}
    for seed in (0, 1):  # recompute from the fake files (columns are stored audio, vision, text)
        d = root / "data/runs/iemocap/pase" / f"seed{seed}"
        g = np.load(d / "gate_mean_test.npy")
        mods = json.loads((d / "metrics.json").read_text())["modalities"]
        emo = pd.read_csv(d / "predictions.csv")[[f"{e}_label" for e in EMOTIONS]].to_numpy().argmax(1)
        for i, e in enumerate(EMOTIONS):
            for j, m in enumerate(mods):
                expected.setdefault((e.capitalize(), m), []).append(g[emo == i, j].mean())
    for r in df.itertuples():
        assert r.gate_mean == pytest.approx(np.mean(expected[(r.group, r.modality)]), abs=1e-5)
    text = df[df.modality == "text"].set_index("group").gate_mean
    assert text["Sad"] == pytest.approx(0.75, abs=0.03)  # GATE_MEANS, within the noise


def test_shapley_shares_and_phase_marker(full):
    root, made = full
    files = sorted(p.name for p in (root / made["shapley"]).iterdir())
    assert files == ["iemocap_pase-no_sgm.csv", "iemocap_pase.csv", "mosi_pase-no_sgm.csv", "mosi_pase.csv"]
    df = pd.read_csv(root / made["shapley"] / "mosi_pase.csv")
    assert {"dataset", "variant", "sgm", "epoch", "share_text", "share_audio", "share_vision",
            "valid_score", "valid_metric", "phase2_epoch", "n_seeds", "synthetic"} <= set(df.columns)
    assert list(df.epoch) == list(range(1, 15))
    shares = df[["share_text", "share_audio", "share_vision"]].sum(axis=1)
    assert np.allclose(shares, 1.0, atol=1e-5)
    assert (df.phase2_epoch == 7).all()  # mean of 6 and 8
    assert (df.valid_metric == "acc2_non0").all() and (df.n_seeds == 2).all()
    # SGM lowers the text share at the end (as the fake histories say)
    off = pd.read_csv(root / made["shapley"] / "mosi_pase-no_sgm.csv")
    assert df.share_text.iloc[-1] < off.share_text.iloc[-1]
    ie = pd.read_csv(root / made["shapley"] / "iemocap_pase.csv")
    assert (ie.valid_metric == "wa").all()
    h = [json.loads((root / f"data/runs/iemocap/pase/seed{s}/history.json").read_text()) for s in (0, 1)]
    assert ie.valid_score.iloc[0] == pytest.approx((h[0][0]["valid_wa"] + h[1][0]["valid_wa"]) / 2, abs=1e-5)


def test_missing_variants_skip_cleanly(tmp_path, monkeypatch, caplog):
    make_fake_runs(tmp_path, datasets=("mosi",), variants=("pase",), seeds=(0,), synthetic=False)
    monkeypatch.chdir(tmp_path)
    stale = tmp_path / "reports/figures/fig1_modality_gain.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    with caplog.at_level(logging.INFO, logger="pipeline.report.figures"):
        made = make_figures(_cfg(datasets=("mosi",), variants=("pase",), seeds=(0,)))
    assert "fig1_modality_gain" not in made and not stale.exists()
    assert "skipping fig1_modality_gain" in caplog.text
    assert {"fig3_tsne", "fig4_gates", "fig5_shapley"} <= set(made)
    for name in ("fig3_tsne", "fig4_gates", "fig5_shapley"):
        title = _png_title(tmp_path / made[name])
        assert title and "SYNTHETIC" not in title  # real-data runs: no synthetic label
    # IEMOCAP is not in the run set: Figure 4 falls back to MOSI's sentiment classes, and says so
    assert "IEMOCAP not in the run set" in _png_title(tmp_path / made["fig4_gates"])
    gates = pd.read_csv(tmp_path / made["gates"])
    assert set(gates.group) == {"Negative", "Neutral", "Positive"} and (gates.dataset == "mosi").all()
    assert sorted(p.name for p in (tmp_path / made["shapley"]).iterdir()) == ["mosi_pase.csv"]
    assert "drawing PaSE with SGM only" in caplog.text


def test_runs_not_in_the_params_are_not_read(tmp_path, monkeypatch, caplog):
    make_fake_runs(tmp_path, datasets=("mosi",), variants=("pase", "pase-T"), seeds=(0,))
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="pipeline.report.figures"):
        made = make_figures(_cfg(datasets=("mosi",), variants=("late_fusion",), seeds=(0,)))
    assert made == {}
    assert caplog.text.count("skipping") == 5  # the four paper figures and the diagnostics
    assert not (tmp_path / "reports/figures").exists() or not any((tmp_path / "reports/figures").iterdir())


def test_output_is_deterministic(tmp_path, monkeypatch):
    make_fake_runs(tmp_path, datasets=("mosi",), variants=("pase", "pase-T", "pase-TA"), seeds=(0,),
                   n_test={"mosi": 80})
    monkeypatch.chdir(tmp_path)
    cfg = _cfg(datasets=("mosi",), variants=("pase", "pase-T", "pase-TA"), seeds=(0,))
    first = make_figures(cfg, out_dir=Path("a"))
    second = make_figures(cfg, out_dir=Path("b"))
    assert set(first) == set(second)
    for name, p in first.items():
        files = sorted(p.rglob("*.csv")) if p.is_dir() else [p]
        for f in files:
            assert f.read_bytes() == (second[name] / f.relative_to(p) if p.is_dir()
                                      else second[name]).read_bytes(), f
