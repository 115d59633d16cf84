"""The data stages: download -> align -> embed. Each reads params.yaml through `Config` and
writes one DVC output atomically. Training and reporting live in train.py and report/."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np

from pipeline import paths
from pipeline.config import Config, as_dict
from pipeline.data import synthetic
from pipeline.data.download import sha256_file
from pipeline.data.schema import SPLITS, pad_utterances
from pipeline.data.store import atomic_path, open_store, read_attrs, read_strings, write_store
from pipeline.errors import DataError

log = logging.getLogger(__name__)

FEATURE_NAMES = {
    "mosi": {"audio": "COVAREP (74-d)", "vision": "FACET 4.1 (47-d)"},
    "mosei": {"audio": "COVAREP (74-d)", "vision": "FACET 4.2 (35-d)"},
    "iemocap": {"audio": "COVAREP (74-d)", "vision": "FACET (35-d)"},
}
SOURCE_FILE = "source.json"  # written last by `download`: the raw folder is complete




# ------------------------------------------------------------------ download

def download(cfg: Config, dataset: str) -> Path:
    """Bring a dataset's raw inputs into data/raw/<dataset>/ and record where they came from."""
    from pipeline.preflight import check
    check(cfg)  # the paper profile's needs (weights, real data, GPU), before any work
    dcfg = cfg.dataset(dataset)
    out = paths.raw_dir(dataset)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / SOURCE_FILE
    marker.unlink(missing_ok=True)
    info = {"dataset": dataset, "source": dcfg.source, "synthetic": dcfg.source == "synthetic"}
    if dcfg.source == "synthetic":
        splits = synthetic.generate(dataset, cfg.synthetic, dcfg.synthetic_scale)
        target = out / "synthetic.h5"
        synthetic.save_raw(target, splits, {"dataset": dataset, "synthetic": True,
                                            "params": json.dumps(as_dict(cfg.synthetic))})
        info["files"] = {target.name: sha256_file(target)}
        info["params"] = as_dict(cfg.synthetic)
    elif dcfg.source == "cmu":
        from pipeline.data.download import download_cmu
        files = download_cmu(dataset, dcfg.cmu_base_url, out)
        info["files"] = {str(Path(p).relative_to(out)): sha256_file(p) for p in files.values()}
        info["base_url"] = dcfg.cmu_base_url
    else:  # mmsa / mult pickles stay where the user keeps them; align reads them after checks
        path = _user_pickle(dataset, dcfg)
        info["files"] = {str(path): sha256_file(path)}
        if dcfg.sha256 and info["files"][str(path)] != dcfg.sha256.lower():
            raise DataError(f"{path}: sha256 {info['files'][str(path)]} does not match "
                            f"data.{dataset}.sha256 = {dcfg.sha256}")
    marker.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    log.info("download %s: %s source ready in %s", dataset, dcfg.source, out)
    return out


def _user_pickle(dataset: str, dcfg) -> Path:
    from pipeline.data.pickles import IEMOCAP_HELP
    if dataset == "iemocap" and (not dcfg.path or not Path(dcfg.path).expanduser().is_file()):
        raise DataError(f"{dcfg.path or 'data.iemocap.path is empty'}: IEMOCAP file not found "
                        f"(`data.iemocap.path`). {IEMOCAP_HELP}")
    if not dcfg.path:
        raise DataError(f"data.{dataset}.path: the {dcfg.source!r} source needs the path of your "
                        f"pickle (e.g. MMSA's aligned_50.pkl or MulT's mosi_data.pkl)")
    path = Path(dcfg.path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: file not found (data.{dataset}.path)")
    return path


# --------------------------------------------------------------------- align

def align(cfg: Config, dataset: str) -> Path:
    """Raw inputs -> the HDF5 store: word-aligned, cut/padded to data.seq_len."""
    dcfg = cfg.dataset(dataset)
    raw = paths.raw_dir(dataset)
    marker = raw / SOURCE_FILE
    if not marker.exists():
        raise DataError(f"{marker}: missing; run the download stage first (dvc repro download@{dataset})")
    info = json.loads(marker.read_text())
    if info["source"] != dcfg.source:
        raise DataError(f"{raw}: holds the {info['source']!r} source but data.{dataset}.source is "
                        f"{dcfg.source!r}; re-run the download stage")
    L = cfg.data.seq_len
    task = "classification" if dataset == "iemocap" else "regression"
    if dcfg.source == "synthetic":
        utts = synthetic.load_raw(raw / "synthetic.h5")
        features = {m: f"synthetic {n}-like" for m, n in FEATURE_NAMES[dataset].items()}
        padded = {s: pad_utterances(u, L, _dims(u), s) for s, u in utts.items()}
    elif dcfg.source == "cmu":
        from pipeline.data.align import align_cmu
        from pipeline.data.download import cmu_files, cmu_folds
        files = {k: raw / rel for k, rel in cmu_files(dataset).items()}
        utts = align_cmu(files, cmu_folds(dataset))
        features = FEATURE_NAMES[dataset]
        padded = {s: pad_utterances(u, L, _dims(u), s) for s, u in utts.items()}
    else:
        from pipeline.data import pickles
        path = _user_pickle(dataset, dcfg)
        if dataset == "iemocap":
            padded = pickles.load_iemocap(dcfg.path, dcfg.sha256, dcfg.allow_unverified_pickle)
        elif dcfg.source == "mmsa":
            padded = pickles.load_mmsa(path, dataset, dcfg.sha256, dcfg.allow_unverified_pickle)
        else:
            padded = pickles.load_mult(path, dataset, dcfg.sha256, dcfg.allow_unverified_pickle)
        padded = {s: _cut(p, L, full_length=dcfg.source == "mult") for s, p in padded.items()}
        features = {"audio": f"{dcfg.source} pickle audio", "vision": f"{dcfg.source} pickle vision"}
        if padded["train"].text is not None:
            features["text"] = f"{dcfg.source} pickle text ({padded['train'].text.shape[-1]}-d)"
    attrs = {
        "dataset": dataset, "source": dcfg.source, "synthetic": dcfg.source == "synthetic",
        "task": task, "seq_len": L, "features": features, "inputs_sha256": info.get("files", {}),
        "params": as_dict(dcfg) | ({"synthetic": as_dict(cfg.synthetic)} if info["synthetic"] else {}),
    }
    out = write_store(paths.aligned_store(dataset), padded, attrs)
    log.info("align %s: %s", dataset, ", ".join(f"{s} {len(padded[s])}" for s in SPLITS))
    return out


def _dims(u) -> dict[str, int]:
    def dim(seqs):
        for s in seqs:
            if np.asarray(s).ndim == 2 and len(s):
                return np.asarray(s).shape[1]
        raise DataError("no utterance has any feature rows")
    d = {"audio": dim(u.audio), "vision": dim(u.vision)}
    if u.text is not None:
        d["text"] = dim(u.text)
    return d


def _cut(p, L: int, full_length: bool = False):
    """Pickles come padded to their own length (MMSA: 50); cut or pad them to data.seq_len.

    MulT pads at the front and keeps no lengths, and its models read every step: with
    `full_length` every length is L, so our masked encoders see what MulT's see."""
    def fit(a):
        if a is None or a.shape[1] == L:
            return a
        if a.shape[1] > L:
            return a[:, :L]
        return np.pad(a, [(0, 0), (0, L - a.shape[1]), (0, 0)])
    p.audio, p.vision, p.text = fit(p.audio), fit(p.vision), fit(p.text)
    if full_length:
        p.audio_len, p.vision_len = np.full(len(p.ids), L), np.full(len(p.ids), L)
        p.text_len = None if p.text is None else np.full(len(p.ids), L)
    p.audio_len = np.minimum(p.audio_len, L)
    p.vision_len = np.minimum(p.vision_len, L)
    if p.text_len is not None:
        p.text_len = np.minimum(p.text_len, L)
    return p


# --------------------------------------------------------------------- embed

def embed(cfg: Config, dataset: str) -> Path:
    """Text features once per dataset and encoder: word-level vectors from the frozen encoder
    (the CPU default's input) and token ids (the GPU profile fine-tunes from these)."""
    store = paths.aligned_store(dataset)
    attrs = read_attrs(store)
    out = paths.text_features(dataset)
    words = {s: [t.split() for t in read_strings(store, s, "raw_text")] for s in SPLITS}
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["dataset"] = dataset
        f.attrs["synthetic"] = bool(attrs.get("synthetic"))
        f.attrs["store_sha256"] = sha256_file(store)
        if not all(words.values()):
            # MulT's pickles carry GloVe vectors and no raw text: use the source's own features.
            with open_store(store) as src:
                if "text" not in src["train"]:
                    raise DataError(f"{store}: neither raw text nor text features; cannot embed")
                for s in SPLITS:
                    g = f.create_group(s)
                    g["text"], g["text_len"] = src[s]["text"][:], src[s]["text_len"][:]
                f.attrs["encoder"] = f"source features: {attrs['features'].get('text', 'text')}"
                f.attrs["dim"] = src["train"]["text"].shape[-1]
            log.warning("embed %s: the source has no raw text; using its own text features", dataset)
        else:
            from pipeline.features.text import encode_words, load_text_encoder, tokenize_for_finetuning
            enc = load_text_encoder(cfg.text.encoder)
            for s in SPLITS:
                g = f.create_group(s)
                feats, lens = encode_words(enc, words[s], cfg.data.seq_len, batch_size=cfg.text.batch_size)
                g.create_dataset("text", data=feats)  # contiguous: batches are one read (store.py)
                g["text_len"] = lens
                g["text_bert"] = tokenize_for_finetuning(enc, words[s], cfg.text.max_tokens)
            f.attrs["encoder"] = cfg.text.encoder
            f.attrs["dim"] = enc.dim
    log.info("embed %s: %s -> %s", dataset, cfg.text.encoder, out)
    return out

