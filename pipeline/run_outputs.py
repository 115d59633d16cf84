"""What a finished seed writes to its run folder (a DVC output) besides metrics.json: the selected
model with what `python -m pipeline predict` needs to rebuild it (`save_model`), the test
predictions (`write_predictions`), the encoders' outputs for the report's probes
(`save_probe_features`), and the per-epoch curves (dvclive, `open_curves`)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.config import Config, as_dict
from pipeline.data.schema import IEMOCAP_EMOTIONS
from pipeline.data.store import StoreDataset, atomic_path, read_attrs, read_strings


MODEL_FORMAT = 2  # 2: with the `embedding` record that predict re-embeds by


def save_model(path: Path, model: nn.Module, cfg: Config, *, key: str, **meta) -> None:
    """Keep the selected (best-validation) model of a seed in its run folder, a DVC output, with
    what `python -m pipeline predict` needs to rebuild it: the effective config, the input sizes,
    the task and the fingerprint (`key`) and files of the inputs it was trained on, and how its
    text was embedded (`embedding_record`; the config's `data` section is guarded empty)."""
    config = json.loads(json.dumps(as_dict(cfg)))  # plain data (no ReadGuard) for weights_only
    inputs = meta["inputs"]
    embedding = embedding_record(cfg, Path(inputs["store"]), Path(inputs["text_features"]))
    # a file object, not the temporary path: torch names the zip's records after a path, which
    # would make two runs' model.pt differ by the random temporary name
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save({"format": MODEL_FORMAT, "config": config, "fingerprint": key, **meta,
                    "embedding": embedding,
                    "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, f)


def embedding_record(cfg: Config, store: Path, text: Path) -> dict:
    """How the text a model reads was made, from the files themselves: the encoder (`encoded`:
    cfg.text.encoder read the raw words, at `seq_len` words = the embed stage's data.seq_len; else
    the source's own features), the token length of `text_bert`, whether a word map exists, and
    the recorded attributes (digests included) of the text features and of the aligned store."""
    import h5py
    tattrs, sattrs = read_attrs(text), read_attrs(store)
    with h5py.File(text, "r") as f:
        g = f["train"]
        encoded = tattrs.get("encoder") == cfg.text.encoder  # else "source features: ..."
        record = {"encoder": tattrs.get("encoder"), "encoded": encoded,
                  "seq_len": int(g["text"].shape[1]) if encoded else None,
                  "max_tokens": int(g["text_bert"].shape[-1]) if "text_bert" in g else None,
                  "word_ids": "text_word_ids" in g, "text_attrs": tattrs,
                  "store_attrs": {k: sattrs.get(k) for k in (
                      "dataset", "source", "alignment", "features", "lengths", "seq_len",
                      "inputs_sha256", "content_sha256")}}
    return json.loads(json.dumps(record))  # plain data for weights_only


def write_predictions(path: Path, data: StoreDataset, outputs: np.ndarray, labels: np.ndarray, task: str):
    ids = read_strings(data.store, data.split, "id")
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        if task == "regression":
            w.writerow(["id", "prediction", "label"])
            for i, p, y in zip(ids, outputs.reshape(-1), labels):
                w.writerow([i, f"{p:.6f}", f"{y:.6f}"])
        else:
            logits = outputs.reshape(-1, len(IEMOCAP_EMOTIONS), 2)
            w.writerow(["id"] + [f"{e}_score" for e in IEMOCAP_EMOTIONS] + [f"{e}_label" for e in IEMOCAP_EMOTIONS])
            for i, lg, y in zip(ids, logits, labels):
                w.writerow([i] + [f"{s:.6f}" for s in lg[:, 1] - lg[:, 0]] + [int(v) for v in y])


def save_probe_features(path: Path, features: dict[str, dict[str, np.ndarray]],
                        train_labels: np.ndarray) -> None:
    """Each frozen encoder's output on train and test ({split: {"features_<m>": array}}), with
    the train labels, for the report's linear probes (pipeline/report/diagnostics.py)."""
    arrays = {f"{split}/{k[len('features_'):]}": v.astype(np.float32)
              for split, out in features.items() for k, v in out.items()}
    if not arrays:
        return
    arrays["train/label"] = np.asarray(train_labels)
    import zipfile
    # np.savez stamps each member with the current time; a fixed stamp keeps the file's bytes
    # the same for the same run (np.load reads it as any .npz)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        for key, value in arrays.items():
            with z.open(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w") as f:
                np.lib.format.write_array(f, np.ascontiguousarray(value), allow_pickle=False)


def open_curves(path: Path):
    """A dvclive logger writing one TSV per metric to `path`/plots/metrics/<name>.tsv (columns
    `step` = epoch and the value); dvc.yaml declares data/curves/<dataset>/<variant> as the train
    stage's `plots`, so `dvc plots show` lists every curve titled by its path (dataset, variant,
    seed, metric). dvclive writes no dvc.yaml of its own (the matrix stages would fight over it)
    and no summary metrics.json (the run folder's metrics.json is the summary; a JSON file inside
    the declared plots directory would be read as a plot)."""
    from dvclive import Live

    class Curves(Live):
        def _init_dvc(self):
            """dvclive opens the DVC repository here (git and DVC state: ~0.1 s a seed, and
            the import of dvc.repo once a process) for experiment names, dvc.yaml and saving
            experiments, none of which this logger does (save_dvc_exp=False, dvcyaml=None);
            the TSVs it writes are the same without it (tests/train/test_workers.py, test_experience)."""

    return Curves(dir=str(path), save_dvc_exp=False, dvcyaml=None, report=None)


def close_curves(live) -> None:
    live.end()
    Path(live.metrics_file).unlink(missing_ok=True)  # see open_curves


def log_epoch(live, record: dict) -> None:
    live.step = record["epoch"]  # x axis: the 1-based epoch, as in history.json
    for k, v in record.items():
        if k != "epoch":
            live.log_metric(k, v)
