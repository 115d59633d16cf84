"""Synthetic data: the real split sizes (scaled), determinism, and the per-modality signal."""
import numpy as np
import pytest

from pipeline.config import SnrConfig, SyntheticConfig
from pipeline.data.synthetic import (LEXICON, generate, generate_with_latent, load_raw, oracle_scores,
                                    save_raw, split_sizes)


def pooled(feats):
    return np.stack([f.mean(0) for f in feats])


def r2_linear(train_x, train_y, test_x, test_y):
    """Validation R^2 of least squares: how much of the label a modality carries."""
    X = np.c_[train_x, np.ones(len(train_x))]
    w = np.linalg.lstsq(X, train_y, rcond=None)[0]
    pred = np.c_[test_x, np.ones(len(test_x))] @ w
    return 1 - np.mean((pred - test_y) ** 2) / np.var(test_y)


def test_split_sizes_follow_the_paper():
    assert split_sizes("mosi", 1.0) == {"train": 1284, "valid": 229, "test": 686}
    assert split_sizes("mosei", 1.0) == {"train": 16326, "valid": 1861, "test": 4659}
    assert split_sizes("iemocap", 0.5) == {"train": 1358, "valid": 399, "test": 469}


def test_deterministic_and_shaped():
    cfg = SyntheticConfig(scale=0.05)
    a, b = generate("mosi", cfg), generate("mosi", cfg)
    for s in a:
        assert a[s].words == b[s].words
        np.testing.assert_array_equal(a[s].audio[3], b[s].audio[3])
        assert a[s].audio[0].shape[1] == 74 and a[s].vision[0].shape[1] == 35
        assert len(a[s].words[0]) == len(a[s].audio[0]) == len(a[s].vision[0])
        assert a[s].ids[0].startswith("synthetic-mosi")
    labels = a["train"].labels
    assert labels.min() >= -3 and labels.max() <= 3 and (labels == 0).any()
    other = generate("mosi", SyntheticConfig(scale=0.05, seed=7))
    assert other["train"].words != a["train"].words


def test_modalities_carry_signal_in_snr_order():
    cfg = SyntheticConfig(scale=0.5, kind="redundant", snr=SnrConfig(text=4.0, audio=1.0, vision=0.0))
    d = generate("mosi", cfg)
    y_tr, y_va = d["train"].labels, d["valid"].labels
    r2 = {m: r2_linear(pooled(getattr(d["train"], m)), y_tr, pooled(getattr(d["valid"], m)), y_va)
          for m in ("audio", "vision")}
    # text: the sentiment word's lexicon intensity predicts the label
    inten = {w: k for k, ws in LEXICON.items() for w in ws}
    def text_score(split):
        return np.array([[np.mean([inten[w] for w in ws if w in inten])] for ws in d[split].words])
    r2["text"] = r2_linear(text_score("train"), y_tr, text_score("valid"), y_va)
    assert r2["text"] > r2["audio"] > 0.3
    assert abs(r2["vision"]) < 0.1  # SNR 0: vision carries nothing


def test_iemocap_labels_and_signal():
    d = generate("iemocap", SyntheticConfig(scale=0.3, kind="redundant"))
    y = d["train"].labels
    assert y.shape[1] == 4 and (y.sum(1) == 1).all()
    X = pooled(d["train"].audio)
    means = np.stack([X[y[:, k] == 1].mean(0) for k in range(4)])
    Xv, yv = pooled(d["valid"].audio), d["valid"].labels.argmax(1)
    nearest = np.argmin(((Xv[:, None] - means[None]) ** 2).sum(-1), 1)
    assert np.mean(nearest == yv) > 0.5  # chance is 0.25


def test_raw_round_trip(tmp_path):
    d = generate("mosi", SyntheticConfig(scale=0.02))
    save_raw(tmp_path / "s.h5", d, {"synthetic": True})
    back = load_raw(tmp_path / "s.h5")
    for s in d:
        assert back[s].ids == d[s].ids and back[s].words == d[s].words
        np.testing.assert_array_equal(back[s].vision[-1], d[s].vision[-1])
        np.testing.assert_array_equal(back[s].labels, d[s].labels)


def test_unknown_dataset():
    from pipeline.errors import DataError
    with pytest.raises(DataError, match="unknown dataset"):
        generate("sims", SyntheticConfig())


# ---- the complementary default: each modality its own part of the label, and the oracle

def test_complementary_modalities_carry_what_the_others_lack():
    cfg = SyntheticConfig(scale=0.5)
    assert cfg.kind == "complementary"
    d, lat = generate_with_latent("mosi", cfg)
    obs = lat["train"]["obs"]
    # audio's pooled features follow its own component, not text's
    a = pooled(d["train"].audio)
    w = np.linalg.lstsq(np.c_[a, np.ones(len(a))], obs["audio"][:, 0], rcond=None)[0]
    proj = np.c_[a, np.ones(len(a))] @ w
    assert np.corrcoef(proj, obs["audio"][:, 0])[0, 1] > 0.8
    assert abs(np.corrcoef(proj, obs["text"][:, 0])[0, 1]) < 0.15
    # every modality adds to the best achievable score: complementary, not copies
    o = oracle_scores("mosi", cfg)
    assert o["TAV"]["mae"] < min(o["TA"]["mae"], o["TV"]["mae"]) < o["T"]["mae"] < o["A"]["mae"]
    assert o["TAV"]["corr"] > o["TA"]["corr"] > o["T"]["corr"]


def test_iemocap_text_alone_is_far_from_saturation():
    cfg = SyntheticConfig(scale=0.5)
    o = oracle_scores("iemocap", cfg)
    assert 0.6 < o["T"]["wa"] < 0.8  # text reads valence, barely arousal
    assert o["TA"]["wa"] > o["T"]["wa"] + 0.1 and o["TAV"]["wa"] >= o["TA"]["wa"] - 0.01
    d = generate("iemocap", cfg)
    words = {w for ws in d["train"].words for w in ws}
    assert words & {"glad", "furious", "lonely", "okay"}  # real emotion words for the text encoder
    with pytest.raises(ValueError, match="complementary"):
        oracle_scores("mosi", SyntheticConfig(scale=0.05, kind="redundant"))
