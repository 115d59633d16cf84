"""`python -m pipeline predict`: score a run's kept models on data of your choice.

    python -m pipeline predict --run mosi/pase --data data/aligned/mosei.h5
    python -m pipeline predict --run mosi/pase --data aligned_50.pkl --source mmsa \
        --data-dataset mosei --sha256 <sha256 of the file>

The train stage keeps each seed's selected (best-validation) model in its run folder
(data/runs/<dataset>/<variant>/seed<k>/model.pt, a DVC output) with its effective config, input
sizes, task, the fingerprint of the data it was trained on and how its text was embedded
(run_outputs.save_model). Here every seed's model is rebuilt from that config and predicts one split
(default: test) of the given data: an HDF5 store written by the align stage, or an MMSA / MulT
pickle (read only with its sha256 or `--allow-unverified-pickle`, as in the pipeline).

Which models: the seed folders of the run that belong to it, i.e. whose seed is among the run's
`seeds` (params.yaml, as the train stage reads it) and whose parameters and fingerprint are the
run's; another folder (a seed left from other settings) is skipped with a warning naming it.

The text is embedded as in training: by the model's encoder at the recorded number of words (the
embed stage's data.seq_len, which the run's guarded config does not hold), or, for a model trained
on a source's own text features, only from that same source (its recorded sha256, or the same
store content), whatever the file is called: features of unknown origin are refused. A
fine-tuned encoder reads token ids, so any data with raw text will do. On the training store the
inputs, hence the predictions, are those of training (a WARNING says so if the re-embedded text
differs from the recorded digest).

Written under `--out` (default predictions/<dataset>-<variant>_on_<data name>-<sha256[:10]>/, so
two files of one name never share a folder): seed<k>/predictions.csv and seed<k>/metrics.json,
and metrics.json with the mean and sample std over seeds. Labels are read only after the
predictions exist.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import torch

from pipeline import paths, run_outputs, train
from pipeline.config import Config, as_dict
from pipeline.settings import config_from_dict, load_config
from pipeline.data.download import sha256_file
from pipeline.data.store import StoreDataset, atomic_path, open_store, read_attrs, write_store
from pipeline.errors import ConfigError, DataError

log = logging.getLogger(__name__)
SAVED_KEYS = ("config", "dims", "task", "seed", "n_train", "fingerprint", "inputs", "embedding",
              "state_dict")
STORE_ATTRS = ("dataset", "task", "source", "features", "dims", "alignment")


def load_model(f: Path) -> dict:
    """One model.pt, or a DataError naming it (truncated, corrupt, older format)."""
    try:
        saved = torch.load(f, map_location="cpu", weights_only=True)  # tensors and plain data only
    except Exception as e:  # torch raises many types for a damaged zip or pickle
        raise DataError(f"{f}: not a readable model file (truncated or corrupt?): {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}; restore it (`dvc checkout`) or "
                        "retrain the run") from None
    if not isinstance(saved, dict) or saved.get("format") != run_outputs.MODEL_FORMAT:
        got = saved.get("format") if isinstance(saved, dict) else type(saved).__name__
        raise DataError(f"{f}: model file format {got!r}, this pipeline reads "
                        f"{run_outputs.MODEL_FORMAT}; retrain the run")
    missing = [k for k in SAVED_KEYS if k not in saved]
    if missing:
        raise DataError(f"{f}: model file lacks {missing}; retrain the run")
    return {**saved, "file": f}


def _run_params(config: dict) -> dict:
    from pipeline.resume import NOT_A_RUN_PARAMETER
    return {k: v for k, v in config.items() if k not in NOT_A_RUN_PARAMETER}


def kept_models(cfg: Config, dataset: str, variant: str) -> tuple[list[dict], list[str]]:
    """The saved models that belong to the run, in seed order, and a line for each seed folder
    skipped: the run is what the train stage would train from `cfg` (train_stage.run_config)."""
    from pipeline.train_stage import run_config
    run = paths.run_dir(dataset, variant)
    vcfg, _, reason = run_config(cfg, dataset, variant)
    if reason:
        raise DataError(f"{dataset}/{variant} is not applicable ({reason}): it has no model")
    want = json.loads(json.dumps(as_dict(vcfg)))
    folders = sorted((d for d in run.glob("seed*") if re.fullmatch(r"seed\d+", d.name)),
                     key=lambda d: int(d.name[4:]))
    models, skipped = [], []
    for d in folders:
        seed, f = int(d.name[4:]), d / "model.pt"
        if seed not in want["seeds"]:
            skipped.append(f"{d}: seed {seed} is not among the run's seeds {want['seeds']} "
                           "(params.yaml); left from other settings")
            continue
        if not f.is_file():
            continue  # reported below as a missing seed
        saved = load_model(f)
        if saved["seed"] != seed:
            raise DataError(f"{f}: holds seed {saved['seed']}, not {seed}; retrain the run")
        ours, theirs = _run_params(want), _run_params(saved["config"])
        if ours != theirs:
            keys = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
            skipped.append(f"{d}: trained with other settings than params.yaml gives the run "
                           f"now (differs in: {', '.join(keys)})")
            continue
        models.append(saved)
    for line in skipped:
        log.warning("predict %s/%s: skipping %s", dataset, variant, line)
    have = {m["seed"] for m in models}
    if not models:
        why = f" (skipped: {'; '.join(skipped)})" if skipped else ""
        raise DataError(f"{run}: no kept model of the run (seed<k>/model.pt){why}; train the run "
                        f"first (dvc repro train@{dataset}-{variant})")
    lacking = [s for s in want["seeds"] if s not in have]
    if lacking:
        raise DataError(f"{run}: seed(s) {lacking} of the run have no kept model (seed<k>/model.pt); "
                        f"train the run (dvc repro train@{dataset}-{variant})")
    prints = {m["seed"]: m["fingerprint"].rsplit("-", 1)[-1] for m in models}
    if len(set(prints.values())) > 1:
        raise DataError(f"{run}: its seeds were trained under different code or inputs "
                        f"(fingerprints {prints}); retrain the run (dvc repro train@{dataset}-{variant})")
    return models, skipped


def _read_store_attrs(store: Path) -> dict:
    """An aligned store's attributes; the embed stage's output (easily taken for it) is refused."""
    attrs = read_attrs(store)
    if "encoder" in attrs and "store_sha256" in attrs:
        raise DataError(f"{store}: text features written by the embed stage, not a store of the "
                        "align stage; give the aligned store (e.g. data/aligned/<dataset>.h5)")
    missing = [k for k in STORE_ATTRS if k not in attrs]
    if missing:
        raise DataError(f"{store}: not a store of the align stage (attributes {missing} missing)")
    return attrs


def prepare_data(data: Path, work: Path, cfg: Config, saved: dict, *, source: str | None,
                 data_dataset: str | None, sha256: str | None, allow_unverified: bool,
                 digest: str) -> tuple[Path, Path]:
    """(store, text features) for `data` (sha256 `digest`), the text embedded as the model's was."""
    if data.suffix in (".h5", ".hdf5"):
        store = data
        _read_store_attrs(store)
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
            "inputs_sha256": {str(data): digest}, "params": {}})
    else:
        raise DataError(f"{data}: expected an HDF5 store (.h5) written by the align stage or an "
                        "MMSA / MulT pickle (.pkl)")
    from pipeline.stages import embed_store
    rec = saved["embedding"]
    ecfg = cfg  # the embed stage's data.seq_len, recorded: the saved config's `data` is empty
    if rec["seq_len"] is not None:
        ecfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, seq_len=rec["seq_len"]))
    text = embed_store(ecfg, store, work / "text_features.h5")
    check_text(data, store, text, cfg, rec)
    return store, text


def check_text(data: Path, store: Path, text: Path, cfg: Config, rec: dict) -> None:
    """The text of `data` (embedded into `text`) is the kind the model read, by recorded content."""
    if "text" not in cfg.modalities:
        return
    got = read_attrs(text)
    with open_store(text) as f:
        shape = f["train/text"].shape
        bert = f["train/text_bert"].shape[-1] if "text_bert" in f["train"] else None
    if cfg.text.finetune:  # the model tokenises the words itself: any raw text will do
        if bert is None:
            raise DataError(f"{data}: has no raw text, and the model fine-tunes {cfg.text.encoder} "
                            "on the words (text.finetune: true)")
        if bert != rec["max_tokens"]:
            raise DataError(f"{data}: tokenised to {bert} tokens, the model to {rec['max_tokens']}")
        return
    want = rec["encoder"]
    if rec["encoded"]:
        if got.get("encoder") != want:  # embed_store kept the source's own features
            raise DataError(f"{data}: its text comes as {got.get('encoder')!r} but the model was "
                            f"trained on text from {want!r}: the data has no raw text, or its audio "
                            "and vision sit at BERT token positions (MMSA aligned); give data whose "
                            "words the encoder reads (an unaligned or word-level file, or its store)")
        if shape[1] != rec["seq_len"]:  # embed_store read rec's seq_len: a bug if not
            raise DataError(f"{text}: {shape[1]} words per utterance, the model read {rec['seq_len']}")
        return
    trained = rec["store_attrs"]
    ours = read_attrs(store)
    same_store = ours.get("content_sha256") == trained.get("content_sha256")
    sources = set((trained.get("inputs_sha256") or {}).values())
    same_source = bool(sources) and set((ours.get("inputs_sha256") or {}).values()) == sources
    if got.get("encoder") == cfg.text.encoder:
        raise DataError(f"{data}: its words are encoded by {cfg.text.encoder!r}, but the model read "
                        f"the source's own text features ({want}); give that source")
    if same_store or same_source:
        return
    digests = ", ".join(sorted(s[:16] for s in sources)) or "none recorded"
    raise DataError(f"{data}: the model read the source's own text features ({want}; source "
                    f"sha256 {digests}) and nothing records which encoder made them, so only "
                    f"that source's features can be read; this data's ({got.get('encoder')!r}) "
                    "come from a file with another sha256. Predict on that file (any name) or "
                    "its store, or train on raw text")


def _default_out(dataset: str, variant: str, data: Path, digest: str) -> Path:
    return Path("predictions") / f"{dataset}-{variant}_on_{data.stem}-{digest[:10]}"


def predict_run(run: str, data: Path, out: Path | None = None, split: str = "test", *,
                source: str | None = None, data_dataset: str | None = None,
                sha256: str | None = None, allow_unverified: bool = False,
                device: str = "auto", cfg: Config | None = None) -> dict:
    """Predict `split` of `data` with every kept model of `run` ("<dataset>/<variant>"); returns
    the summary written to <out>/metrics.json. `cfg`: the project's params (default params.yaml),
    which say which seeds and settings the run has."""
    from pipeline.report.summary import summarise

    try:
        dataset, variant = run.strip("/").split("/")
    except ValueError:
        raise ConfigError(f"--run {run!r}: expected <dataset>/<variant>, e.g. mosi/pase") from None
    data = Path(data)
    if not data.is_file():
        raise DataError(f"{data}: file not found (--data)")
    if out is not None:
        if Path(out).exists() and not Path(out).is_dir():
            raise ConfigError(f"--out {out}: an existing file; give a folder (new or one predict wrote)")
        if Path(out).resolve().is_relative_to((paths.DATA / "runs").resolve()):
            raise ConfigError(f"--out {out}: inside data/runs, where the train stage keeps its "
                              "outputs (predictions.csv, metrics.json); give another folder")
    models, skipped = kept_models(load_config() if cfg is None else cfg, dataset, variant)
    digest = sha256_file(data)
    out = Path(out) if out else _default_out(dataset, variant, data, digest)
    first = models[0]
    cfg = config_from_dict(first["config"])
    dev = train.resolve_device(device)
    store, text = prepare_data(data, out / "inputs", cfg, first, source=source,
                               data_dataset=data_dataset, sha256=sha256,
                               allow_unverified=allow_unverified, digest=digest)
    attrs = read_attrs(store)
    task = attrs.get("task", "regression")
    if task != first["task"]:
        raise DataError(f"{data}: a {task} dataset, but {run} was trained for {first['task']} "
                        "(MOSI/MOSEI sentiment scores and IEMOCAP emotions do not mix)")
    rec = first["embedding"]
    if (attrs.get("content_sha256") == rec["store_attrs"].get("content_sha256")
            and read_attrs(text).get("content_sha256") != rec["text_attrs"].get("content_sha256")):
        log.warning("%s: the training store, but its text re-embedded differs from what training "
                    "read (text features sha256 %s): the encoder's files or numerics changed; the "
                    "predictions will not be training's exactly", data,
                    str(rec["text_attrs"].get("content_sha256"))[:16])
    mods = tuple(cfg.modalities)
    extra = ("text_bert",) if cfg.text.finetune and "text" in mods else ()
    from pipeline.train import _has_text_key
    if extra and cfg.model == "mag_bert" and _has_text_key(text, "text_word_ids"):
        extra += ("text_word_ids",)  # as in training
    ds = StoreDataset(store, split, text_file=text, modalities=mods, extra=extra)
    for m in mods:
        if m == "text" and extra:
            continue  # a fine-tuned encoder reads token ids, not these features
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
        run_outputs.write_predictions(seed_out / "predictions.csv", ds, outputs, labels, saved["task"])
        record = {"run": run, "seed": saved["seed"], "model": str(saved["file"]),
                  "model_fingerprint": saved["fingerprint"], "trained_on": saved["inputs"],
                  "data": str(data), "data_sha256": digest, "split": split, "test": metrics}
        _write_json(seed_out / "metrics.json", record)
        results.append(record)
        log.info("predict %s seed %d on %s (%s): %s", run, saved["seed"], data, split,
                 ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    _remove_stale_seeds(out, {r["seed"] for r in results})
    summary = {"run": run, "data": str(data), "data_sha256": digest, "split": split,
               "seeds": [r["seed"] for r in results], "skipped": skipped,
               "metrics": summarise(results)}
    _write_json(out / "metrics.json", summary)
    return summary


def _remove_stale_seeds(out: Path, seeds: set[int]) -> None:
    """Seed folders an earlier predict wrote into `out` for seeds this one did not predict."""
    for d in out.glob("seed*"):
        if not re.fullmatch(r"seed\d+", d.name) or int(d.name[4:]) in seeds:
            continue
        try:
            record = json.loads((d / "metrics.json").read_text())
        except (OSError, ValueError):
            continue  # not predict's: left alone
        if isinstance(record, dict) and {"model_fingerprint", "data_sha256"} <= record.keys():
            log.warning("predict: removing %s, an earlier prediction of a seed not predicted now", d)
            shutil.rmtree(d)


def _write_json(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
