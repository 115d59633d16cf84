"""Small but real CMU-MOSI / CMU-MOSEI computational sequences, written with mmsdk itself.

`write_cmu_fixture(root)` writes words, COVAREP, FACET and label `.csd` files under `root` at the
same relative paths as on the CMU server (`CMU-MOSI/acoustic/CMU_MOSI_COVAREP.csd`, ...), so a
local HTTP server serving `root` stands in for http://immortal.multicomp.cs.cmu.edu. The videos
are real ids from mmsdk's standard folds (so split assignment works) plus one id in no fold, with
realistic timing: words about 2.5/s on a 10 ms forced-alignment grid (most videos) with "sp"
silences, small gaps and a few words shorter than mmsdk's epsilon; COVAREP frames at 100 Hz,
FACET at 30 Hz with runs of frames missing (face not found); labelled segments covering runs of
words with boundaries off the word edges, and now and then a zero-length segment.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

NO_FOLD_VIDEO = "zzNoFold_0000"  # in no standard fold of either dataset
VOCAB = ["i", "the", "movie", "was", "really", "good", "bad", "um", "and", "it", "plot", "acting",
         "not", "so", "funny", "boring", "liked", "but", "a", "great", "just", "kind", "of", "uh"]


@contextlib.contextmanager
def quiet():
    """mmsdk prints coloured <Status>/<Success> lines to stdout and tqdm bars to stderr on every
    call: swallow both."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def layout(dataset: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(sequence name -> mmsdk's standard URL, split -> standard fold video ids)."""
    if dataset == "mosi":
        from mmsdk.mmdatasdk.dataset.standard_datasets.CMU_MOSI import cmu_mosi as recipes
        from mmsdk.mmdatasdk.dataset.standard_datasets.CMU_MOSI import standard_folds as folds
        urls = {"words": recipes.raw["words"], "COVAREP": recipes.highlevel["COVAREP"],
                "FACET": recipes.highlevel["FACET 4.1"],
                "labels": recipes.labels["Opinion Segment Labels"]}
    elif dataset == "mosei":
        from mmsdk.mmdatasdk.dataset.standard_datasets.CMU_MOSEI import cmu_mosei as recipes
        from mmsdk.mmdatasdk.dataset.standard_datasets.CMU_MOSEI import standard_folds as folds
        urls = {"words": recipes.raw["words"], "COVAREP": recipes.highlevel["COVAREP"],
                "FACET": recipes.highlevel["FACET 4.2"], "labels": recipes.labels["Sentiment Labels"]}
    else:
        raise ValueError(f"dataset must be 'mosi' or 'mosei', got {dataset!r}")
    return urls, {"train": list(folds.standard_train_fold), "valid": list(folds.standard_valid_fold),
                  "test": list(folds.standard_test_fold)}


def write_csd(path: Path, root_name: str, data: dict, dataset: str = "mosi") -> None:
    """Write one computational sequence with mmsdk (`setData`, every metadata key, `deploy`)."""
    from mmsdk.mmdatasdk import computational_sequence
    from mmsdk.mmdatasdk.configurations.metadataconfigs import featuresetMetadataTemplate

    meta = {key: f"test fixture {key}" for key in featuresetMetadataTemplate}
    meta.update({"root name": root_name, "dataset name": f"CMU-{dataset.upper()}",
                 "alignment compatible": "True", "computational sequence version": "1.0"})
    path.parent.mkdir(parents=True, exist_ok=True)
    with quiet():
        seq = computational_sequence(root_name)
        seq.setData(data, root_name)
        seq.setMetadata(meta, root_name)
        seq.deploy(str(path))  # every key is set, so deploy never prompts via input()


def _video(rng: np.random.Generator, covarep_dim: int, facet_dim: int, nonfinite: bool,
           duration_range: tuple[float, float] = (4.0, 20.0)) -> dict:
    """One video's four sequences as {name: (intervals, features)}, and how many non-finite
    values it holds."""
    duration = rng.uniform(*duration_range)
    on_grid = rng.random() < 0.7  # forced aligners (P2FA) give times on a 10 ms grid

    # words: tokens, "sp" silences, small untokenised gaps, a few words shorter than epsilon
    starts, ends, tokens = [], [], []
    t = rng.uniform(0.0, 0.4)
    while t < duration - 0.3:
        u = rng.random()
        if u < 0.12:
            token, length = "sp", rng.uniform(0.1, 0.8)
        elif u < 0.15:
            token, length = str(rng.choice(VOCAB)), float(rng.choice([0.0, 0.0004]))
        else:
            token, length = str(rng.choice(VOCAB)), rng.uniform(0.12, 0.55)
        starts.append(t)
        ends.append(t + length)
        tokens.append(token)
        t += length + (rng.uniform(0.005, 0.08) if rng.random() < 0.25 else 0.0)
    w_iv = np.stack([starts, ends], axis=1)
    if on_grid:
        w_iv = np.round(w_iv, 2)
    words = np.array(tokens, dtype="S").reshape(-1, 1)

    # COVAREP: 10 ms frames over the whole video; F0 in Hz and a voiced flag among the features
    n = int(duration * 100)
    k = np.arange(n)
    c_iv = np.stack([k * 0.01, (k + 1) * 0.01], axis=1)
    c_feat = rng.normal(size=(n, covarep_dim)).astype(np.float32)
    c_feat[:, 0] = rng.uniform(80, 250, size=n)
    c_feat[:, 1] = rng.random(n) < 0.6
    n_bad = 0
    if nonfinite:
        rows = rng.choice(n, size=max(1, n // 50), replace=False)
        c_feat[rows, 2] = -np.inf  # log-energy of silent frames
        c_feat[rows[: len(rows) // 3], 5] = np.nan
        n_bad = len(rows) + len(rows) // 3

    # FACET: 30 Hz, with runs of frames missing where the face was not found
    m = int(duration * 30)
    k = np.arange(m)
    keep = np.ones(m, dtype=bool)
    for _ in range(rng.integers(0, 3)):
        a = rng.integers(0, m)
        keep[a:a + rng.integers(5, 45)] = False
    k = k[keep]
    f_iv = np.stack([k / 30.0, (k + 1) / 30.0], axis=1)
    f_feat = rng.normal(size=(len(k), facet_dim)).astype(np.float32)

    # labelled segments: runs of 4-14 words, boundaries off the word edges, labels in [-3, 3]
    seg, i = [], 0
    while i < len(tokens):
        j = min(i + int(rng.integers(4, 15)), len(tokens)) - 1
        s = max(0.0, w_iv[i, 0] + rng.uniform(-0.08, 0.05))
        e = max(s + 0.01, w_iv[j, 1] + rng.uniform(-0.05, 0.08))
        seg.append((s, e))
        i = j + 1 + (int(rng.integers(1, 3)) if rng.random() < 0.2 else 0)  # words between segments
    if rng.random() < 0.3:  # a zero-length segment: mmsdk skips it
        x = rng.uniform(0, duration)
        seg.insert(int(rng.integers(0, len(seg) + 1)), (x, x))
    l_iv = np.array(seg, dtype=np.float64)
    labels = np.clip(np.round(rng.uniform(-3, 3, size=(len(seg), 1)) * 5) / 5, -3, 3)
    # alternate the signs, so that every split of a few videos holds both (scorable: Acc-2)
    labels = np.maximum(np.abs(labels), 0.2) * np.where(np.arange(len(seg)) % 2, -1.0, 1.0)[:, None]

    return {"words": (w_iv, words), "COVAREP": (c_iv, c_feat), "FACET": (f_iv, f_feat),
            "labels": (l_iv, labels), "n_nonfinite": n_bad}


def write_cmu_fixture(root: Path, dataset: str = "mosi", n_videos_per_split=(3, 1, 1), seed: int = 0,
                      covarep_dim: int = 74, facet_dim: int | None = None, nonfinite: bool = False,
                      duration_range: tuple[float, float] = (4.0, 20.0)) -> dict:
    """Write words / COVAREP / FACET / labels .csd files for a few videos under `root`.

    facet_dim defaults to the real size: 47 (FACET 4.1, MOSI) or 35 (FACET 4.2, MOSEI).
    nonfinite=True puts -inf and NaN into some COVAREP frames. duration_range: seconds per video
    (the benchmark uses ~120 s, MOSI's scale). Returns what was written:
    dataset, root, paths / relpaths / urls (by sequence name: words, COVAREP, FACET, labels),
    folds (split -> the fixture's ids), no_fold (ids in no fold), videos, n_words, n_segments
    (per video, rows as written), n_nonfinite (values written), dims."""
    root = Path(root)
    urls, std_folds = layout(dataset)
    if facet_dim is None:
        facet_dim = 47 if dataset == "mosi" else 35
    rng = np.random.default_rng(seed)
    folds = {split: [str(v) for v in rng.choice(std_folds[split], size=n, replace=False)]
             for split, n in zip(("train", "valid", "test"), n_videos_per_split)}
    videos = [v for split in folds.values() for v in split] + [NO_FOLD_VIDEO]

    data: dict[str, dict] = {name: {} for name in urls}
    info = {"n_words": {}, "n_segments": {}, "n_nonfinite": 0}
    for vid in videos:
        seqs = _video(rng, covarep_dim, facet_dim, nonfinite, duration_range)
        info["n_nonfinite"] += seqs.pop("n_nonfinite")
        for name, (iv, feat) in seqs.items():
            data[name][vid] = {"intervals": iv, "features": feat}
        info["n_words"][vid] = len(seqs["words"][0])
        info["n_segments"][vid] = len(seqs["labels"][0])

    relpaths = {name: urlparse(url).path.lstrip("/") for name, url in urls.items()}
    paths = {name: root / rel for name, rel in relpaths.items()}
    mosi = dataset == "mosi"
    root_names = {"words": "words", "COVAREP": "COVAREP", "FACET": "FACET 4.1" if mosi else "FACET 4.2",
                  "labels": "Opinion Segment Labels" if mosi else "Sentiment Labels"}
    for name in urls:
        write_csd(paths[name], root_names[name], data[name], dataset)
    return {"dataset": dataset, "root": root, "paths": paths, "relpaths": relpaths, "urls": urls,
            "folds": folds, "no_fold": [NO_FOLD_VIDEO], "videos": videos,
            "dims": {"COVAREP": covarep_dim, "FACET": facet_dim}, **info}
