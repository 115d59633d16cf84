"""The data stages: download -> align -> embed. Each reads params.yaml through `Config` and
writes one DVC output atomically. Training and reporting live in train.py and report/."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import h5py
import numpy as np

from pipeline import paths
from pipeline.config import Config, as_dict
from pipeline.data import belong, checks, synthetic
from pipeline.data.download import sha256_file
from pipeline.data.schema import SPLITS, pad_utterances
from pipeline.data.store import (atomic_path, content_digest, open_store, read_attrs, read_strings,
                                  write_atomic, write_store)
from pipeline.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FEATURE_NAMES = {
    "mosi": {"audio": "COVAREP (74-d)", "vision": "FACET 4.1 (47-d)"},
    "mosei": {"audio": "COVAREP (74-d)", "vision": "FACET 4.2 (35-d)"},
    "iemocap": {"audio": "COVAREP (74-d)", "vision": "FACET (35-d)"},
}
SOURCE_FILE = "source.json"  # written last by `download`: the raw folder is complete




# ------------------------------------------------------------------ download

def download(cfg: Config, dataset: str) -> Path:
    """Bring a dataset's raw inputs into data/raw/<dataset>/ and record where they came from.

    A user's file (pickle, folder of .csd files) stays under data/user/<dataset>/, which DVC
    hashes as a dependency of this stage; source.json records its sha256, so `align` reruns
    when it changes and refuses a file that changed after this stage."""
    from pipeline.preflight import check
    check(cfg)  # the paper profile's needs (weights, real data, GPU), before any work
    dcfg = cfg.dataset(dataset)
    out = paths.raw_dir(dataset)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / SOURCE_FILE
    marker.unlink(missing_ok=True)
    # what an earlier download under other settings left (a direct run; DVC deletes the folder
    # first): the report would read its oracle beside runs on other data
    for name in ("synthetic.h5", synthetic.ORACLE_FILE):
        if (out / name).exists():
            (out / name).unlink()
            log.info("download %s: removed %s of an earlier download", dataset, out / name)
    info = {"dataset": dataset, "source": dcfg.source, "synthetic": dcfg.source == "synthetic"}
    if dcfg.source == "synthetic":
        generated = synthetic.generate_with_latent(dataset, cfg.synthetic, dcfg.synthetic_scale)
        splits = generated[0]
        target = out / "synthetic.h5"
        synthetic.save_raw(target, splits, {"dataset": dataset, "synthetic": True,
                                            "params": json.dumps(as_dict(cfg.synthetic))})
        info["files"] = {target.name: sha256_file(target)}
        info["params"] = as_dict(cfg.synthetic)
        info["synthetic_scale"] = dcfg.synthetic_scale  # align checks both against params.yaml
        if cfg.synthetic.kind == "complementary":  # the best achievable scores, for the report
            oracle = synthetic.oracle_scores(dataset, cfg.synthetic, dcfg.synthetic_scale,
                                             generated=generated)
            with atomic_path(out / synthetic.ORACLE_FILE) as tmp:
                tmp.write_text(json.dumps(oracle, indent=1))
    elif dcfg.source == "cmu" and dcfg.path:
        from pipeline.data.download import check_csd, local_cmu_files
        folder = user_path(dataset, dcfg, folder=True)
        files = local_cmu_files(dataset, folder)
        for p in files.values():
            check_csd(p, delete=False)
        info["local"] = {k: str(p) for k, p in files.items()}
        info["files"] = {str(p): sha256_file(p) for p in files.values()}
    elif dcfg.source == "cmu":
        from pipeline.data.download import download_cmu
        files = download_cmu(dataset, dcfg.cmu_base_url, out)
        info["files"] = {str(Path(p).relative_to(out)): sha256_file(p) for p in files.values()}
        info["base_url"] = dcfg.cmu_base_url
    else:  # mmsa / mult pickles stay where the user keeps them; align reads them after checks
        path = user_path(dataset, dcfg)
        info["files"] = {str(path): sha256_file(path)}
        if dcfg.sha256 and info["files"][str(path)] != dcfg.sha256.lower():
            raise DataError(f"{path}: sha256 {info['files'][str(path)]} does not match "
                            f"data.{dataset}.sha256 = {dcfg.sha256}")
    write_atomic(marker, json.dumps(info, indent=2, sort_keys=True) + "\n")
    log.info("download %s: %s source ready in %s", dataset, dcfg.source, out)
    return out


def user_path(dataset: str, dcfg, folder: bool = False) -> Path:
    """data.<dataset>.path, checked: it exists and lies under data/user/<dataset>/ (the folder
    dvc.yaml lists as a dependency: a file elsewhere could change without DVC noticing)."""
    from pipeline.data.pickles import IEMOCAP_HELP
    if dataset == "iemocap" and (not dcfg.path or not Path(dcfg.path).expanduser().is_file()):
        raise DataError(f"{dcfg.path or 'data.iemocap.path is empty'}: IEMOCAP file not found "
                        f"(`data.iemocap.path`). {IEMOCAP_HELP}")
    if not dcfg.path:
        raise DataError(f"data.{dataset}.path: the {dcfg.source!r} source needs the path of your "
                        f"pickle (e.g. MMSA's aligned_50.pkl or MulT's mosi_data.pkl)")
    path = Path(dcfg.path).expanduser()
    root = paths.user_dir(dataset)
    if not Path(os.path.abspath(path)).is_relative_to(os.path.abspath(root)):
        raise DataError(
            f"{path}: data.{dataset}.path must lie under {root}/, the folder DVC hashes, so that "
            f"replacing the file reruns the data stages. Put it there: `mkdir -p {root} && ln -s "
            f"{os.path.abspath(path)} {root}/` (or cp, or `dvc import-url` / `dvc add`, docs/data.md "
            f"\"Your real data\") and set data.{dataset}.path: {root / path.name}")
    if folder and not path.is_dir():
        raise DataError(f"{path}: not a folder (data.{dataset}.path: the cmu source reads a folder "
                        "of .csd files)")
    if not folder and not path.is_file():
        raise DataError(f"{path}: file not found (data.{dataset}.path)")
    return path


def _verify_inputs(info: dict, raw: Path) -> None:
    """The files `download` hashed (it records them in source.json) are still those: the user's,
    and the generated synthetic.h5 (small; a direct run can meet one copied from elsewhere). The
    CMU server's files inside data/raw are DVC's own output, and gigabytes."""
    if info["source"] == "cmu" and "local" not in info:
        return
    for name, digest in info.get("files", {}).items():
        p = raw / name if info["source"] == "synthetic" else Path(name)
        if not p.is_file():
            raise DataError(f"{p}: input recorded by the download stage is gone; run `dvc repro`")
        if sha256_file(p) != digest:
            raise DataError(f"{p}: changed since the download stage hashed it; run `dvc repro` "
                            "(it reruns the data stages)")


# --------------------------------------------------------------------- align

def align(cfg: Config, dataset: str) -> Path:
    """Raw inputs -> the HDF5 store, every modality at its own length, after the ingest checks
    (pipeline/data/checks.py): nothing is written when one refuses."""
    dcfg = cfg.dataset(dataset)
    raw = paths.raw_dir(dataset)
    marker = raw / SOURCE_FILE
    if not marker.exists():
        raise DataError(f"{marker}: missing; run the download stage first (dvc repro download@{dataset})")
    info = json.loads(marker.read_text())
    if info["source"] != dcfg.source:
        raise DataError(f"{raw}: holds the {info['source']!r} source but data.{dataset}.source is "
                        f"{dcfg.source!r}; re-run the download stage")
    belong.raw_folder(cfg, dataset, info, marker)  # this dataset's, under today's settings
    _verify_inputs(info, raw)
    task = "classification" if dataset == "iemocap" else "regression"
    max_len = as_dict(dcfg.max_len)
    declared = {m: d for m, d in as_dict(dcfg.dims).items() if d is not None}
    if dcfg.source in ("synthetic", "cmu"):  # word-level: one length, data.seq_len words
        if any(v is not None for v in max_len.values()):
            raise ConfigError(f"data.{dataset}.max_len: applies to pickles; the {dcfg.source!r} "
                              "source is word-aligned and cut at data.seq_len words")
        L = cfg.data.seq_len
        if dcfg.source == "synthetic":
            source_name = str(raw / "synthetic.h5")
            utts = synthetic.load_raw(raw / "synthetic.h5")
        else:
            from pipeline.data.align import align_cmu
            from pipeline.data.download import cmu_files, cmu_folds
            files = ({k: Path(p) for k, p in info["local"].items()} if "local" in info
                     else {k: raw / rel for k, rel in cmu_files(dataset).items()})
            source_name = str(Path(files["COVAREP"]).parent if "local" in info else raw)
            utts = align_cmu(files, cmu_folds(dataset))
        dims = _dims(utts["train"])
        for m, d in declared.items():
            if m in dims and dims[m] != d:
                where = files["COVAREP" if m == "audio" else "FACET"] if dcfg.source == "cmu" else source_name
                raise DataError(f"{where}: split 'train': key '{m}' has {dims[m]} features but "
                                f"data.{dataset}.dims.{m} declares {d}")
        cuts = {s: {m: int(sum(len(x) > L for x in getattr(u, m))) for m in ("audio", "vision")}
                for s, u in utts.items()}
        padded = {s: pad_utterances(u, L, _dims(u), s) for s, u in utts.items()}
        alignment = "word"
        names = FEATURE_NAMES[dataset]
        features = {m: (f"synthetic {n}-like" if dcfg.source == "synthetic" else
                        f"CMU {names[m].split(' (')[0]} ({dims[m]}-d)") for m, n in names.items()}
    else:
        path = user_path(dataset, dcfg)
        source_name = str(path)
        padded, cuts, dims, alignment, features = pickle_splits(dataset, dcfg, path, max_len, declared)
    lengths = {m: getattr(padded["train"], m).shape[1] for m in ("text", "audio", "vision")
               if getattr(padded["train"], m) is not None}
    cut_total = {m: sum(c.get(m, 0) for c in cuts.values()) for m in lengths}
    log.log(logging.WARNING if any(cut_total.values()) else logging.INFO,
            "align %s: steps kept per modality %s; utterances cut by a length parameter: %s",
            dataset, lengths, cut_total)
    ingest = checks.check_splits(source_name, padded, task, cfg.data.max_empty_fraction)
    attrs = {
        "dataset": dataset, "source": dcfg.source, "synthetic": dcfg.source == "synthetic",
        "task": task, "features": features, "dims": dims, "alignment": alignment,
        "lengths": lengths, "cut": cuts, "ingest": ingest, "inputs_sha256": info.get("files", {}),
        "params": belong.aligned_params(cfg, dataset),  # embed and train compare with params.yaml
        "max_empty_fraction": cfg.data.max_empty_fraction,
    }
    if alignment == "word" and dcfg.source in ("synthetic", "cmu"):
        attrs["seq_len"] = cfg.data.seq_len
    out = write_store(paths.aligned_store(dataset), padded, attrs)
    log.info("align %s: %s", dataset, ", ".join(f"{s} {len(padded[s])}" for s in SPLITS))
    return out


def pickle_splits(dataset: str, dcfg, path: Path, max_len: dict, declared: dict):
    """A user's MMSA / MulT pickle (dcfg: source, sha256, allow_unverified_pickle) ->
    (padded splits, cuts per split, feature sizes, alignment, feature names). Cuts only where
    `max_len` asks. Also used by `predict`."""
    from pipeline.data import pickles
    if dataset == "iemocap":
        padded = pickles.load_iemocap(path, dcfg.sha256, dcfg.allow_unverified_pickle, declared)
    elif dcfg.source == "mmsa":
        padded = pickles.load_mmsa(path, dataset, dcfg.sha256, dcfg.allow_unverified_pickle, declared)
    else:
        padded = pickles.load_mult(path, dataset, dcfg.sha256, dcfg.allow_unverified_pickle, declared)
    belong.check_split_sizes(path, dataset, {s: len(p) for s, p in padded.items()})
    aligned = pickles.is_aligned(padded)
    limits = {v for v in max_len.values() if v is not None}
    if aligned and limits:
        if len(limits) > 1:
            raise ConfigError(f"data.{dataset}.max_len: {max_len} cuts the modalities of an "
                              f"aligned file ({path.name}) differently; give one value (or null)")
        max_len = {m: limits.pop() for m in max_len}
    mult = dataset == "iemocap" or dcfg.source != "mmsa"  # load_iemocap reads a MulT file
    # MulT pads at the front (pickles.py), so its cut keeps the last steps
    cuts = {s: checks.cut(p, max_len, front_padded=mult) for s, p in padded.items()}
    dims = pickles.found_dims(padded)
    alignment = ("token" if dcfg.source == "mmsa" else "word") if aligned else "none"
    kind = {"token": "aligned", "word": "aligned", "none": "unaligned"}[alignment]
    label = {"mmsa": "MMSA", "mult": "MulT"}[dcfg.source]
    features = {m: f"{label} {path.name} {m} {d}-d" for m, d in dims.items()}
    if "text" in features:
        features["text"] += (" (BERT, token-level)" if dcfg.source == "mmsa" else " (GloVe)")
    log.info("%s: %s %s file, feature sizes %s", dataset, label, kind, dims)
    return padded, cuts, dims, alignment, features


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


# --------------------------------------------------------------------- embed

def embed(cfg: Config, dataset: str) -> Path:
    """Text features once per dataset and encoder: word-level vectors from the frozen encoder
    (the CPU default's input) and token ids (the GPU profile fine-tunes from these).

    Two sources bring their own text features instead: MulT's pickles (GloVe, no raw text) and
    MMSA's aligned files, whose audio and vision rows sit at BERT token positions: re-encoding
    the words would give the text another length than audio and vision, so the file's own
    token-level BERT features are the frozen text input (docs/data.md, "Your real data")."""
    store = paths.aligned_store(dataset)
    belong.check_aligned(cfg, dataset, store, read_attrs(store))
    return embed_store(cfg, store, paths.text_features(dataset))


def embed_store(cfg: Config, store: Path, out: Path) -> Path:
    """`embed` for any store (`predict` embeds data of its own with the model's encoder)."""
    attrs = read_attrs(store)
    dataset = attrs.get("dataset", Path(store).stem)
    words = {s: [t.split() for t in read_strings(store, s, "raw_text")] for s in SPLITS}
    have_words = all(words.values())
    own = not have_words or attrs.get("alignment") == "token"
    L = cfg.data.seq_len
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["dataset"] = dataset
        f.attrs["synthetic"] = bool(attrs.get("synthetic"))
        f.attrs["store_sha256"] = sha256_file(store)
        # train checks that the aligned store it reads is this one (verify_store checks the digest)
        f.attrs["store_content_sha256"] = attrs.get("content_sha256", "")
        enc = None
        if have_words and (not own or cfg.text.finetune):
            from pipeline.features.text import (encode_words, load_text_encoder, tokenize_for_finetuning,
                                                tokenize_with_word_ids)
            enc = load_text_encoder(cfg.text.encoder)
        if own:
            with open_store(store) as src:
                if "text" not in src["train"]:
                    raise DataError(f"{store}: neither raw text nor text features; cannot embed")
                for s in SPLITS:
                    g = f.create_group(s)
                    g["text"], g["text_len"] = src[s]["text"][:], src[s]["text_len"][:]
                    if enc is not None:
                        g["text_bert"] = tokenize_for_finetuning(enc, words[s], cfg.text.max_tokens)
                f.attrs["encoder"] = f"source features: {attrs['features'].get('text', 'text')}"
                f.attrs["dim"] = src["train"]["text"].shape[-1]
            why = ("the source has no raw text" if not have_words else "its audio and vision are at "
                   f"BERT token positions, so text.encoder={cfg.text.encoder} is not used for the frozen text input")
            log.warning("embed %s: using the source's own text features (%s)", dataset, why)
            frozen, seq_len = None, None
        else:
            n_cut = 0
            for s in SPLITS:
                g = f.create_group(s)
                n_cut += sum(len(w) > L for w in words[s])
                feats, lens = encode_words(enc, words[s], L, batch_size=cfg.text.batch_size)
                g.create_dataset("text", data=feats)  # contiguous: batches are one read (store.py)
                g["text_len"] = lens
                # word ids: each token's word, so MAG-BERT puts a word's audio/vision row on its tokens
                g["text_bert"], g["text_word_ids"] = tokenize_with_word_ids(enc, words[s], cfg.text.max_tokens)
                log.info("embed %s: %s split, %d utterances encoded", dataset, s, len(words[s]))
            f.attrs["encoder"] = cfg.text.encoder
            f.attrs["dim"] = enc.dim
            f.attrs["cut"] = n_cut
            log.log(logging.WARNING if n_cut else logging.INFO,
                    "embed %s: %d utterance(s) longer than data.seq_len = %d words were cut", dataset, n_cut, L)
            frozen, seq_len = cfg.text.encoder, L
        # what the text was made with: train compares it with the run's text settings
        tokens = enc is not None
        f.attrs["text_settings"] = json.dumps({
            "encoder": frozen, "seq_len": seq_len, "raw_text": have_words,
            "tokenizer": cfg.text.encoder if tokens else None,
            "max_tokens": cfg.text.max_tokens if tokens else None})
        # emptiness on what the model reads (align counted the source's lengths, not these)
        f.attrs["max_empty_fraction"] = cfg.data.max_empty_fraction
        f.attrs["empty"] = json.dumps(_check_text_read(
            f, f"{out} (text of {store})", cfg.data.max_empty_fraction,
            f"{store}'s 'raw_text' is empty there: check the source file's raw text", own))
        f.attrs["content_sha256"] = content_digest(f)
    log.info("embed %s: %s -> %s", dataset, cfg.text.encoder, out)
    return out


MASK_KEY = "text_bert[:, 1] (attention mask)"
SPECIAL_TOKENS = 2  # [CLS] and [SEP]: an utterance with no more than these has no words


def _check_text_read(f, source: str, max_fraction: float, hint: str,
                    token_ids_apart: bool) -> dict[str, dict[str, int]]:
    """data.max_empty_fraction on the text the model reads, in an embedded file `f` (open h5py):
    the frozen vectors' lengths and, when they do not come from the same words
    (`token_ids_apart`: the source's own vectors), the token ids a fine-tuned encoder reads.
    Returns the empty counts per split and key."""
    counts = {}
    for s in SPLITS:
        g, counts[s] = f[s], {}
        n = len(g["text_len"])
        empty = {"text_len": int(np.count_nonzero(g["text_len"][:] == 0))}
        if token_ids_apart and "text_bert" in g:
            mask = g["text_bert"][:, 1, :].sum(axis=1)
            empty[MASK_KEY] = int(np.count_nonzero(mask <= SPECIAL_TOKENS))
        for key, k in empty.items():
            own_lengths = token_ids_apart and key == "text_len"  # the source's, not the words'
            checks.check_empty_count(source, s, "text", key, k, n, max_fraction,
                                     "check the file's lengths" if own_lengths else hint)
            counts[s][key] = k
    return counts
