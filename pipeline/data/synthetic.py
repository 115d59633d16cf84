"""Synthetic data with known per-modality signal: the embedded default that runs anywhere.

Shaped like the real dataset it stands for (the paper's split sizes times `synthetic.scale`,
word-level sequences, COVAREP-/FACET-sized audio and vision features), so every stage after it
runs the real code. Each utterance has a latent target:
- MOSI / MOSEI: a sentiment score z in [-3, 3] (the label is z rounded to thirds, so some labels
  are exactly 0 and the non0 metrics have something to drop);
- IEMOCAP: one of four emotions (neutral, happy, sad, angry).

Two kinds (`synthetic.kind`):
- complementary (default): each modality carries its own part of the label, which the others
  lack, so a model must use all three to reach the best score, and a model that lets text win the
  joint training under-uses audio and vision (the competition balancing methods address).
  MOSI/MOSEI: z = c_text + c_audio + c_vision, independent Gaussian components whose variances
  are the shares `synthetic.share` of a total sd of 1.5 (label: z clipped to [-3, 3], rounded to
  thirds). IEMOCAP: the four emotions as (valence, arousal) signs (neutral +-, happy ++, sad --,
  angry -+); text's latent is (2v, 0.7a) (valence clear, arousal at 0.35 of the margin),
  audio's is 2a (arousal only), vision's (2v, 2a) (both, at its low snr), so text alone confuses
  happy/neutral and angry/sad and lands well below saturation.
  `oracle_scores` gives the best achievable score of each modality set from these latents.
- redundant (the previous generator): every modality sees a noisy copy of the same latent z (the
  score, or the emotion's one-hot code times 2); text strongest. No modality adds information
  the others lack beyond noise averaging.
Each modality m sees its latent through a noisy copy s_m = z_m + e_m with
Var(z_m) / Var(e_m) = synthetic.snr.<m>. An SNR of 0 makes the modality carry nothing: s_m is
then drawn independently of z.
- text: real words. Sentiment words from a small lexicon are chosen by s_text (the word whose
  intensity is nearest), mixed with neutral filler words, so the real text encoder must read them;
- audio / vision: per word, s_m along a fixed random direction plus unit Gaussian noise per
  feature, so averaging over words recovers s_m.
  Audio and vision are learnable but slower than text: the signal is spread over the words
  under unit per-feature noise, while text's is one lexicon word an encoder maps directly.
Everything made from this data is labelled synthetic (store attribute `synthetic`, report titles).
"""
from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np

from pipeline.config import SyntheticConfig
from pipeline.data.schema import IEMOCAP_EMOTIONS, PAPER_SPLIT_SIZES, SPLITS, Utterances
from pipeline.data.store import STR, atomic_path
from pipeline.errors import DataError

# Sentiment words and their intensity on the [-3, 3] scale.
LEXICON = {
    -3.0: ["horrible", "terrible", "awful", "disgusting", "worst"],
    -2.0: ["bad", "boring", "poor", "annoying", "dull"],
    -1.0: ["weak", "messy", "slow", "forgettable", "bland"],
    0.0: ["okay", "average", "ordinary", "standard", "typical"],
    1.0: ["decent", "nice", "pleasant", "solid", "fun"],
    2.0: ["good", "great", "enjoyable", "clever", "funny"],
    3.0: ["amazing", "excellent", "brilliant", "wonderful", "perfect"],
}
EMOTION_WORDS = {
    "neutral": ["okay", "fine", "sure", "alright", "normal"],
    "happy": ["glad", "delighted", "cheerful", "thrilled", "joyful"],
    "sad": ["lonely", "miserable", "gloomy", "heartbroken", "tearful"],
    "angry": ["furious", "outraged", "irritated", "livid", "hostile"],
}
FILLER = ["the", "movie", "was", "i", "think", "it", "really", "and", "um", "so", "plot", "actor",
          "story", "just", "you", "know", "that", "scene", "kind", "of", "film", "this", "ending"]


def split_sizes(dataset: str, scale: float) -> dict[str, int]:
    return {s: max(8, int(round(n * scale))) for s, n in PAPER_SPLIT_SIZES[dataset].items()}


def _noisy_copy(z: np.ndarray, snr: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """(s, noise sd): s = z + e with Var(z)/Var(e) = snr, the variance taken over all of z's
    entries (a weaker column of z stays weaker); independent of z when snr == 0."""
    sd = float(z.std()) + 1e-8
    if snr <= 0:
        return rng.normal(0.0, 1.0, z.shape) * sd, math.inf
    noise = sd / np.sqrt(snr)
    return z + rng.normal(0.0, 1.0, z.shape) * noise, noise


def generate(dataset: str, cfg: SyntheticConfig, scale: float | None = None) -> dict[str, Utterances]:
    """All three splits of a synthetic dataset; deterministic in (dataset, cfg, scale).
    `scale` (a dataset's own `synthetic_scale`) overrides `cfg.scale`."""
    return generate_with_latent(dataset, cfg, scale)[0]


def generate_with_latent(dataset: str, cfg: SyntheticConfig, scale: float | None = None):
    """(splits, latent): latent[split] = {"obs": {m: (N, k_m) utterance-level observation s_m},
    "mean": {m: (C, k_m) class means} (IEMOCAP) , "noise_sd": {m: float}, "signal_var": {m: float}}
    -- what the oracle needs."""
    if dataset not in PAPER_SPLIT_SIZES:
        raise DataError(f"synthetic: unknown dataset {dataset!r}")
    # One stream per dataset, so changing one dataset's settings never changes another's data.
    rng = np.random.default_rng([cfg.seed, sorted(PAPER_SPLIT_SIZES).index(dataset)])
    dims = {"audio": cfg.audio_dim, "vision": cfg.vision_dim}
    iemocap = dataset == "iemocap"
    complementary = cfg.kind == "complementary"
    if complementary:
        k = {"audio": 1, "vision": 2} if iemocap else {"audio": 1, "vision": 1}
    else:
        k = {m: len(IEMOCAP_EMOTIONS) if iemocap else 1 for m in dims}
    # Fixed random directions that carry the latent in each feature space.
    directions = {m: np.linalg.qr(rng.normal(size=(d, d)))[0][:, :k[m]].T for m, d in dims.items()}

    out, latent = {}, {}
    for split, n in split_sizes(dataset, cfg.scale if scale is None else scale).items():
        if complementary:
            z, labels, means = _complementary_latent(n, iemocap, cfg, rng)
        elif iemocap:
            cls = rng.integers(0, len(IEMOCAP_EMOTIONS), n)
            c = np.eye(len(IEMOCAP_EMOTIONS))[cls] * 2.0
            z, labels, means = {m: c for m in MODALITIES}, np.eye(4, dtype=np.int64)[cls], None
        else:
            y = rng.uniform(-3, 3, n)
            labels = np.clip(np.round(y * 3) / 3, -3, 3).astype(np.float32)
            z, means = {m: y[:, None] for m in MODALITIES}, None
        lengths = rng.integers(6, 21, n)
        obs, noise_sd = {}, {}
        obs["text"], noise_sd["text"] = _noisy_copy(z["text"], cfg.snr.text, rng)
        if complementary and not iemocap:  # the lexicon's scale: +-3 at 3 sd of the component
            obs_words = obs["text"] / (z["text"].std() + 1e-8)
        else:
            obs_words = obs["text"]
        words = [_utterance(obs_words[i], lengths[i], iemocap, rng) for i in range(n)]
        feats = {}
        for m, d in dims.items():
            obs[m], noise_sd[m] = _noisy_copy(z[m], getattr(cfg.snr, m), rng)
            feats[m] = [(np.repeat(obs[m][i][None], lengths[i], 0) @ directions[m]
                         + rng.normal(0.0, 1.0, (lengths[i], d))).astype(np.float32)
                        for i in range(n)]
        out[split] = Utterances(ids=[f"synthetic-{dataset}-{split}-{i:05d}" for i in range(n)],
                                words=words, audio=feats["audio"], vision=feats["vision"],
                                labels=labels)
        latent[split] = {"obs": obs, "noise_sd": noise_sd, "means": means,
                         "signal_var": {m: float(z[m].var()) for m in MODALITIES},
                         "snr": {m: float(getattr(cfg.snr, m)) for m in MODALITIES}}
    return out, latent


MODALITIES = ("text", "audio", "vision")
ORACLE_FILE = "oracle.json"  # beside synthetic.h5 in data/raw/<dataset>/ (download stage)
TOTAL_SD = 1.5  # sd of the summed latent score: most of it inside [-3, 3]
# IEMOCAP's emotions as (valence, arousal) signs: text reads valence well, arousal at 0.35 of
# the margin; audio reads arousal only; vision both, weakly (its snr).
VALENCE_AROUSAL = {"neutral": (1, -1), "happy": (1, 1), "sad": (-1, -1), "angry": (-1, 1)}


def _complementary_latent(n: int, iemocap: bool, cfg: SyntheticConfig, rng: np.random.Generator):
    """Per-modality latent components {m: (n, k_m)}, labels, and IEMOCAP's class means."""
    if iemocap:
        cls = rng.integers(0, len(IEMOCAP_EMOTIONS), n)
        va = np.array([VALENCE_AROUSAL[e] for e in IEMOCAP_EMOTIONS], dtype=np.float64)  # (4, 2)
        means = {"text": 2.0 * va * np.array([1.0, 0.35]), "audio": 2.0 * va[:, 1:],
                 "vision": 2.0 * va}
        z = {m: mu[cls] for m, mu in means.items()}
        return z, np.eye(len(IEMOCAP_EMOTIONS), dtype=np.int64)[cls], means
    share = {m: getattr(cfg.share, m) for m in MODALITIES}
    total = sum(share.values())
    z = {m: rng.normal(0.0, TOTAL_SD * np.sqrt(share[m] / total), (n, 1)) for m in MODALITIES}
    y = np.clip(sum(z.values())[:, 0], -3, 3)
    return z, np.clip(np.round(y * 3) / 3, -3, 3).astype(np.float32), None


def _utterance(s: np.ndarray, length: int, iemocap: bool, rng: np.random.Generator) -> list[str]:
    n_sent = int(rng.integers(1, 4))
    if iemocap and len(s) == 2:  # complementary: the (valence, arousal) signs pick the emotion
        signs = (1 if s[0] >= 0 else -1, 1 if s[1] >= 0 else -1)
        pool = EMOTION_WORDS[next(e for e, va in VALENCE_AROUSAL.items() if va == signs)]
    elif iemocap:
        # The emotion word follows the arg-max of the noisy emotion code.
        pool = EMOTION_WORDS[IEMOCAP_EMOTIONS[int(np.argmax(s))]]
    else:
        keys = np.array(sorted(LEXICON))
        pool = LEXICON[float(keys[np.argmin(np.abs(keys - np.clip(s[0], -3, 3)))])]
    words = list(rng.choice(FILLER, size=length - n_sent))
    for w in rng.choice(pool, size=n_sent):
        words.insert(int(rng.integers(0, len(words) + 1)), str(w))
    return [str(w) for w in words]


def oracle_scores(dataset: str, cfg: SyntheticConfig, scale: float | None = None,
                  split: str = "test", generated=None) -> dict[str, dict[str, float]]:
    """The best achievable score of every modality set on `split`, from the latent variables
    (complementary kind only): the Bayes prediction from the utterance-level observations s_m of
    the modalities in the set -- before the words' quantisation and the per-word feature noise,
    so no model can beat it. Regression: Σ_m E[c_m | s_m] = s_m · snr_m / (1 + snr_m) (Gaussian
    components; the posterior mean is also the L1-optimal median), scored by MMSA's metrics.
    IEMOCAP: the class posterior under equal priors and Gaussian noise, per-emotion present when
    its posterior exceeds 1/2, WA from its arg-max. Keys: "T", "A", "V", "TA", "TV", "AV", "TAV".
    `generated`: `generate_with_latent`'s result for the same arguments (saves generating twice)."""
    from pipeline.metrics import iemocap_metrics, regression_metrics
    if cfg.kind != "complementary":
        raise ValueError("oracle_scores: only the complementary generator has a closed-form oracle")
    splits, latent = generated if generated is not None else generate_with_latent(dataset, cfg, scale)
    lat, labels = latent[split], splits[split].labels
    letters = {"T": "text", "A": "audio", "V": "vision"}
    out = {}
    for key in ("T", "A", "V", "TA", "TV", "AV", "TAV"):
        mods = [letters[c] for c in key if lat["snr"][letters[c]] > 0]
        if dataset == "iemocap":
            loglik = np.zeros((len(labels), len(IEMOCAP_EMOTIONS)))
            for m in mods:
                d = lat["obs"][m][:, None, :] - lat["means"][m][None]
                loglik += -(d ** 2).sum(-1) / (2 * lat["noise_sd"][m] ** 2)
            post = np.exp(loglik - loglik.max(1, keepdims=True))
            post /= post.sum(1, keepdims=True)
            logits = np.stack([1 - post, post], axis=2)  # (N, 4, 2): argmax = posterior > 1/2
            out[key] = iemocap_metrics(logits, labels)
        else:
            pred = np.zeros(len(labels))
            for m in mods:
                snr = lat["snr"][m]
                pred += lat["obs"][m][:, 0] * snr / (1 + snr)
            out[key] = regression_metrics(np.clip(pred, -3, 3), labels)
    return out


def save_raw(path: Path, splits: dict[str, Utterances], attrs: dict) -> None:
    """Word-level (ragged) synthetic data: rows of all utterances concatenated, with offsets."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        for split in SPLITS:
            u, g = splits[split], f.create_group(split)
            offsets = np.concatenate([[0], np.cumsum([len(a) for a in u.audio])])
            g["offsets"] = offsets
            g["audio"] = np.concatenate(u.audio)
            g["vision"] = np.concatenate(u.vision)
            g.create_dataset("words", data=np.array(sum(u.words, []), dtype=object), dtype=STR)
            g.create_dataset("id", data=np.array(u.ids, dtype=object), dtype=STR)
            g["label"] = u.labels


def load_raw(path: Path) -> dict[str, Utterances]:
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {e}") from None
    out = {}
    with f:
        for split in SPLITS:
            if split not in f:
                raise DataError(f"{path}: split {split!r} missing")
            g = f[split]
            off = g["offsets"][:]
            words = [w.decode() if isinstance(w, bytes) else w for w in g["words"][:]]
            audio, vision = g["audio"][:], g["vision"][:]
            cut = lambda a: [a[off[i]:off[i + 1]] for i in range(len(off) - 1)]  # noqa: E731
            out[split] = Utterances(
                ids=[x.decode() if isinstance(x, bytes) else x for x in g["id"][:]],
                words=cut(np.array(words, dtype=object)), audio=cut(audio), vision=cut(vision),
                labels=g["label"][:])
            out[split].words = [list(w) for w in out[split].words]
    return out
