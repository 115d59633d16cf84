"""Which files belong together: each stage's checks that its inputs were made from each other and
under the settings it is asked for now.

Each stage checks its own output (pipeline/data/checks.py, the stores' content digests). Under
`dvc repro` DVC also keeps the files in step, but a stage run directly (`python -m pipeline align`,
`embed`, `train`) meets whatever is on disk: a raw folder downloaded under other settings, a store
of another dataset copied in, text embedded from an older aligned store or with another encoder.
Each stage records what it was made from and with what (source.json, the stores' attributes), and
the next one compares that record with its other inputs and with params.yaml. A refusal names the
file, what it records, what was asked for, and the stage to rerun.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline import paths
from pipeline.config import Config, as_dict
from pipeline.data.schema import PAPER_SPLIT_SIZES, SPLITS
from pipeline.errors import DataError

TASKS = {"mosi": "regression", "mosei": "regression", "iemocap": "classification"}


def _rerun(stage: str, dataset: str) -> str:
    return (f"re-run the {stage} stage (`dvc repro {stage}@{dataset}`, or "
            f"`python -m pipeline {stage} --dataset {dataset}`)")


def _older(path: Path, key: str, stage: str, dataset: str) -> DataError:
    return DataError(f"{path}: records no {key!r} (written by an older version of the {stage} "
                     f"stage); {_rerun(stage, dataset)}")


def _plain(x):
    """As JSON gives it back (what the records hold): lists for tuples, str keys."""
    return json.loads(json.dumps(x))


def _differences(recorded, wanted, prefix: str) -> list[str]:
    """Dotted keys whose values differ, as 'key: recorded R, params.yaml W'."""
    if isinstance(recorded, dict) and isinstance(wanted, dict):
        out = []
        for k in sorted(set(recorded) | set(wanted)):
            out += _differences(recorded.get(k), wanted.get(k), f"{prefix}.{k}")
        return out
    return [] if recorded == wanted else [f"{prefix}: {json.dumps(recorded)} in the file, "
                                          f"{json.dumps(wanted)} in params.yaml"]


# ------------------------------------------------------------------------- align's input

def raw_folder(cfg: Config, dataset: str, info: dict, marker: Path) -> None:
    """data/raw/<dataset>/source.json was written by the download stage of this dataset, under
    the data.<dataset> (and synthetic) settings params.yaml gives now."""
    dcfg = cfg.dataset(dataset)
    if info.get("dataset") != dataset:
        raise DataError(f"{marker}: records the download of dataset {info.get('dataset')!r}, not "
                        f"{dataset!r} (a raw folder copied from another dataset?); "
                        f"{_rerun('download', dataset)}")
    diffs = []
    if dcfg.source == "synthetic":
        if "synthetic_scale" not in info:
            raise _older(marker, "synthetic_scale", "download", dataset)
        diffs = _differences(info.get("params"), _plain(as_dict(cfg.synthetic)), "synthetic")
        diffs += _differences(info["synthetic_scale"], dcfg.synthetic_scale,
                              f"data.{dataset}.synthetic_scale")
    elif dcfg.source == "cmu" and dcfg.path:
        folder = os.path.abspath(Path(dcfg.path).expanduser())
        read = list(info.get("local", {}).values())
        if not read or not all(Path(os.path.abspath(p)).is_relative_to(folder) for p in read):
            diffs = [f"data.{dataset}.path: {', '.join(read) or 'the CMU server'} read by the "
                     f"download stage, the folder {dcfg.path} in params.yaml"]
    elif dcfg.source == "cmu":
        if "local" in info or info.get("base_url") != dcfg.cmu_base_url:
            diffs = [f"data.{dataset}.cmu_base_url: {info.get('base_url') or 'a local folder'} "
                     f"read by the download stage, {dcfg.cmu_base_url} in params.yaml"]
    elif dcfg.path is not None and str(Path(dcfg.path).expanduser()) not in info.get("files", {}):
        diffs = [f"data.{dataset}.path: {', '.join(info.get('files', {})) or 'nothing'} read by "
                 f"the download stage, {dcfg.path} in params.yaml"]
    if diffs:
        raise DataError(f"{marker}: the raw folder was made under other settings than params.yaml "
                        f"gives now ({'; '.join(diffs)}); {_rerun('download', dataset)}")


NEAR = 0.1  # published copies of one dataset differ by a few samples; datasets by far more


def check_split_sizes(path: Path, dataset: str, sizes: dict[str, int]) -> None:
    """A pickle of another dataset given as this one (MOSI's and MOSEI's share a layout): split
    sizes within NEAR of another dataset's published ones and not of this one's. Sizes far from
    every dataset's (a subset, a test file) only get the reader's warning."""
    def off(ref: dict) -> float:
        return max(abs(sizes[s] - ref[s]) / ref[s] for s in SPLITS)
    if off(PAPER_SPLIT_SIZES[dataset]) <= NEAR:
        return
    for other, ref in PAPER_SPLIT_SIZES.items():
        if other != dataset and off(ref) <= NEAR:
            raise DataError(f"{path}: split sizes {sizes} are {other}'s ({ref}), not {dataset}'s "
                            f"({PAPER_SPLIT_SIZES[dataset]}): a {other} file given for {dataset}? "
                            f"Give it as data.{other}.path, or give {dataset}'s file")


# --------------------------------------------------------------- embed's and train's input

def aligned_params(cfg: Config, dataset: str) -> dict:
    """The settings an aligned store is made under, as the align stage records them."""
    params = as_dict(cfg.dataset(dataset))
    if params["source"] == "synthetic":
        params["synthetic"] = as_dict(cfg.synthetic)
    return params


def check_aligned(cfg: Config, dataset: str, store: Path, attrs: dict) -> None:
    """The aligned store is this dataset's, made under the data settings of params.yaml."""
    if attrs.get("dataset") != dataset:
        raise DataError(f"{store}: holds dataset {attrs.get('dataset')!r} (its 'dataset' attribute), "
                        f"not {dataset!r} (a store of another dataset copied or linked here?); "
                        f"{_rerun('align', dataset)}")
    if attrs.get("task") != TASKS[dataset]:
        raise DataError(f"{store}: its 'task' attribute is {attrs.get('task')!r}, but {dataset} is "
                        f"a {TASKS[dataset]} dataset; {_rerun('align', dataset)}")
    for key in ("params", "max_empty_fraction"):
        if key not in attrs:
            raise _older(store, key, "align", dataset)
    wanted = _plain(aligned_params(cfg, dataset))
    diffs = _differences({k: v for k, v in attrs["params"].items() if k != "synthetic"},
                         {k: v for k, v in wanted.items() if k != "synthetic"}, f"data.{dataset}")
    diffs += _differences(attrs["params"].get("synthetic"), wanted.get("synthetic"), "synthetic")
    diffs += _differences(attrs["max_empty_fraction"], cfg.data.max_empty_fraction,
                          "data.max_empty_fraction")
    if "seq_len" in attrs:  # word-level sources: cut and padded at data.seq_len words
        diffs += _differences(attrs["seq_len"], cfg.data.seq_len, "data.seq_len")
    if diffs:
        raise DataError(f"{store}: made under other settings than params.yaml gives now "
                        f"({'; '.join(diffs)}); {_rerun('align', dataset)}")
    # the raw folder, where there is one (prepared features pulled from a DVC remote come without)
    marker = paths.raw_dir(dataset) / "source.json"
    if marker.is_file():
        now = json.loads(marker.read_text()).get("files", {})
        if "inputs_sha256" not in attrs:
            raise _older(store, "inputs_sha256", "align", dataset)
        if attrs["inputs_sha256"] != now:
            raise DataError(f"{store}: was aligned from {_files(attrs['inputs_sha256'])}, but "
                            f"{marker} records {_files(now)} (downloaded again since); "
                            f"{_rerun('align', dataset)}")


def _files(files: dict) -> str:
    return ", ".join(f"{name} (sha256 {digest[:12]}...)" for name, digest in files.items()) or "no file"


def check_embedded(cfg: Config, dataset: str, store: Path, text_file: Path, attrs: dict,
                   text_attrs: dict) -> None:
    """The text features were embedded from this very aligned store, at data.seq_len words."""
    if text_attrs.get("dataset") != dataset:
        raise DataError(f"{text_file}: holds dataset {text_attrs.get('dataset')!r} (its 'dataset' "
                        f"attribute), not {dataset!r}; {_rerun('embed', dataset)}")
    for key in ("store_content_sha256", "text_settings", "max_empty_fraction"):
        if key not in text_attrs:
            raise _older(text_file, key, "embed", dataset)
    made_from, store_digest = text_attrs["store_content_sha256"], attrs.get("content_sha256")
    if made_from != store_digest:
        raise DataError(f"{text_file}: was embedded from an aligned store with content "
                        f"{str(made_from)[:16]}..., but {store} holds {str(store_digest)[:16]}... "
                        f"(aligned again since, or copied from elsewhere); {_rerun('embed', dataset)}")
    seq_len = text_attrs["text_settings"]["seq_len"]
    if seq_len is not None and seq_len != cfg.data.seq_len:
        raise DataError(f"{text_file}: text embedded at data.seq_len = {seq_len} words, params.yaml "
                        f"says {cfg.data.seq_len}; {_rerun('embed', dataset)}")
    # its emptiness check (a store aligned again under another fraction has the same content)
    if text_attrs["max_empty_fraction"] != cfg.data.max_empty_fraction:
        raise DataError(f"{text_file}: its text was checked under data.max_empty_fraction = "
                        f"{text_attrs['max_empty_fraction']:g}, params.yaml says "
                        f"{cfg.data.max_empty_fraction:g}; {_rerun('embed', dataset)}")


def check_text_settings(vcfg: Config, dataset: str, variant: str, text_file: Path,
                        text_attrs: dict) -> None:
    """The text a run of `variant` (its config `vcfg`, before the no-raw-text rule) reads was
    made with its text settings: the encoder of frozen vectors, or the token ids (tokenizer,
    text.max_tokens) of a fine-tuned encoder."""
    if "text" not in vcfg.modalities:
        return
    made = text_attrs["text_settings"]
    t, wrong = vcfg.text, []
    if t.finetune:
        if made["tokenizer"] is None:
            if made["raw_text"]:
                wrong = [f"it holds no token ids (embedded with text.finetune: false) and "
                         f"{variant} fine-tunes {t.encoder} (text.finetune: true)"]
        else:
            if made["tokenizer"] != t.encoder:
                wrong.append(f"token ids of {made['tokenizer']}, text.encoder is {t.encoder}")
            if made["max_tokens"] != t.max_tokens:
                wrong.append(f"token ids cut at text.max_tokens = {made['max_tokens']}, params.yaml "
                             f"says {t.max_tokens}")
    elif made["encoder"] is not None and made["encoder"] != t.encoder:
        wrong = [f"frozen vectors of {made['encoder']}, text.encoder is {t.encoder}"]
    if wrong:
        raise DataError(f"{text_file}: does not hold the text {dataset}/{variant} reads "
                        f"({'; '.join(wrong)}); {_rerun('embed', dataset)}")
