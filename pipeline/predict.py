"""`python -m pipeline predict`: score a run's kept models on data of your choice.

    python -m pipeline predict --run mosi/pase --data data/aligned/mosei.h5
    python -m pipeline predict --run mosi/pase --data aligned_50.pkl --source mmsa \
        --data-dataset mosei --sha256 <sha256 of the file>

The train stage keeps each seed's selected (best-validation) model in its run folder
(data/runs/<dataset>/<variant>/seed<k>/model.pt, a DVC output) with its effective config, input
sizes, task and the fingerprint of the data it was trained on (train.save_model). Here every seed's
model is rebuilt from that config and predicts one split (default: test) of the given data: an
HDF5 store written by the align stage, or an MMSA / MulT pickle (read only with its sha256 or
`--allow-unverified-pickle`, as in the pipeline). The text is encoded with the encoder the model
was trained on. Written under `--out` (default predictions/<dataset>-<variant>_on_<data name>/):
seed<k>/predictions.csv and seed<k>/metrics.json, and metrics.json with the mean and sample std
over seeds. Labels are read only after the predictions exist.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import torch

from pipeline import paths, train
from pipeline.config import Config
from pipeline.settings import config_from_dict
from pipeline.data.download import sha256_file
from pipeline.data.store import StoreDataset, atomic_path, read_attrs, write_store
from pipeline.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def kept_models(dataset: str, variant: str) -> list[dict]:
    """The saved models of a run, one per seed, in seed order."""
    run = paths.run_dir(dataset, variant)
    files = sorted(run.glob("seed*/model.pt"), key=lambda f: int(re.sub(r"\D", "", f.parent.name)))
    if not files:
        raise DataError(f"{run}: no kept model (seed<k>/model.pt); train the run first "
                        f"(dvc repro train@{dataset}-{variant})")
    models = []
    for f in files:
        saved = torch.load(f, map_location="cpu", weights_only=True)  # tensors and plain data only
        if saved.get("format") != train.MODEL_FORMAT:
            raise DataError(f"{f}: model file format {saved.get('format')!r}, this pipeline reads "
                            f"{train.MODEL_FORMAT}; retrain the run")
        models.append({**saved, "file": f})
    return models


def prepare_data(data: Path, work: Path, cfg: Config, saved: dict, *, source: str | None,
                 data_dataset: str | None, sha256: str | None, allow_unverified: bool) -> tuple[Path, Path]:
    """(store, text features) for `data`, the text encoded as the model's was."""
    if not data.is_file():
        raise DataError(f"{data}: file not found (--data)")
    if data.suffix in (".h5", ".hdf5"):
        store = data
        read_attrs(store)  # a store written by the align stage, or a clear error
    elif data.suffix in (".pkl", ".pickle"):
        if source not in ("mmsa", "mult") or not data_dataset:
            raise ConfigError(f"{data}: a pickle needs --source (mmsa | mult) and --data-dataset "
                              "(mosi | mosei | iemocap: which dataset's layout it holds)")
        from pipeline.stages import pickle_splits
        dcfg = SimpleNamespace(source=source, path=str(data), sha256=sha256,
                               allow_unverified_pickle=allow_unverified)
        padded, cuts, dims, alignment, features = pickle_splits(
            data_dataset, dcfg, data, {"text": None, "audio": None, "vision": None}, {})
        store = write_store(work / "aligned.h5", padded, {
            "dataset": data_dataset, "source": source, "synthetic": False,
            "task": "classification" if data_dataset == "iemocap" else "regression",
            "features": features, "dims": dims, "alignment": alignment, "cut": cuts,
            "inputs_sha256": {str(data): sha256_file(data)}, "params": {}})
    else:
        raise DataError(f"{data}: expected an HDF5 store (.h5) written by the align stage or an "
                        "MMSA / MulT pickle (.pkl)")
    from pipeline.stages import embed_store
    text = embed_store(cfg, store, work / "text_features.h5")
    want, got = saved["inputs"].get("text_encoder"), read_attrs(text).get("encoder")
    if "text" in cfg.modalities and want != got:
        raise DataError(f"{data}: its text comes as {got!r} but the model was trained on text "
                        f"from {want!r}; give data with raw text (a store from the align stage)")
    return store, text


def predict_run(run: str, data: Path, out: Path | None = None, split: str = "test", *,
                source: str | None = None, data_dataset: str | None = None,
                sha256: str | None = None, allow_unverified: bool = False,
                device: str = "auto") -> dict:
    """Predict `split` of `data` with every kept model of `run` ("<dataset>/<variant>"); returns
    the summary written to <out>/metrics.json."""
    from pipeline.report.summary import summarise

    try:
        dataset, variant = run.strip("/").split("/")
    except ValueError:
        raise ConfigError(f"--run {run!r}: expected <dataset>/<variant>, e.g. mosi/pase") from None
    data = Path(data)
    out = Path(out) if out else Path("predictions") / f"{dataset}-{variant}_on_{data.stem}"
    models = kept_models(dataset, variant)
    first = models[0]
    cfg = config_from_dict(first["config"])
    dev = train.resolve_device(device)
    store, text = prepare_data(data, out / "inputs", cfg, first, source=source,
                               data_dataset=data_dataset, sha256=sha256,
                               allow_unverified=allow_unverified)
    task = read_attrs(store).get("task", "regression")
    if task != first["task"]:
        raise DataError(f"{data}: a {task} dataset, but {run} was trained for {first['task']} "
                        "(MOSI/MOSEI sentiment scores and IEMOCAP emotions do not mix)")
    mods = tuple(cfg.modalities)
    extra = ("text_bert",) if cfg.text.finetune and "text" in mods else ()
    from pipeline.train import _has_text_key
    if extra and cfg.model == "mag_bert" and _has_text_key(text, "text_word_ids"):
        extra += ("text_word_ids",)  # as in training
    ds = StoreDataset(store, split, text_file=text, modalities=mods, extra=extra)
    for m in mods:
        if ds.dims[m] != first["dims"][m]:
            raise DataError(f"{data}: {m} features are {ds.dims[m]}-d, the model was trained on "
                            f"{first['dims'][m]}-d ({first['inputs']['store']}); a variant without "
                            f"{m} (e.g. pase-T, pase-TA) can transfer")
    results = []
    for saved in models:
        cfg = config_from_dict(saved["config"])
        model = train.build_model(cfg, saved["dims"], saved["task"], n_train=saved["n_train"])
        model.load_state_dict(saved["state_dict"])
        model.to(dev)
        outputs = train.predict(model, ds, cfg.train.batch_size, dev)["pred"]
        labels = ds.labels()  # read once, after the predictions exist
        metrics = train.score(outputs, labels, saved["task"])
        seed_out = out / f"seed{saved['seed']}"
        seed_out.mkdir(parents=True, exist_ok=True)
        train._write_predictions(seed_out / "predictions.csv", ds, outputs, labels, saved["task"])
        record = {"run": run, "seed": saved["seed"], "model": str(saved["file"]),
                  "model_fingerprint": saved["fingerprint"], "trained_on": saved["inputs"],
                  "data": str(data), "data_sha256": sha256_file(data), "split": split,
                  "test": metrics}
        _write_json(seed_out / "metrics.json", record)
        results.append(record)
        log.info("predict %s seed %d on %s (%s): %s", run, saved["seed"], data, split,
                 ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    summary = {"run": run, "data": str(data), "data_sha256": results[0]["data_sha256"],
               "split": split, "seeds": [r["seed"] for r in results],
               "metrics": summarise(results)}
    _write_json(out / "metrics.json", summary)
    return summary


def _write_json(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
