"""Each method's own settings under the paper profile, as data: one row per model.

A row gives the keys of params.yaml's `train` section the method's source sets (learning rates,
per part where the method has several; batch size; dropout; width; weight decay; gradient
clipping; early stopping), the keyword arguments of its constructor (`model_args`), whether it
fine-tunes BERT, and where every value comes from. `pipeline.variants.variant_config` applies the
row of a variant's model, for its dataset, on top of the paper profile (pipeline/config.py,
PAPER_PROFILE); under `profile: cpu` the table is not used.

Sources:
- PaSE: the supplementary's "Implementation Details" (Adam, lr 1e-5, batch 64, 200 epochs) and
  Table 2 (114,795,953 parameters, which width 328 reproduces with BERT-base).
- Baselines: thuiar/MMSA `src/MMSA/config/config_regression.json`, cited per row as
  `<model>.datasetParams.<dataset>.<key>` (early stopping: `<model>.commonParams.early_stop`;
  MMSA clips with `clip_grad_value_`). MMSA has no IEMOCAP rows: IEMOCAP uses the MOSI row (the
  smaller of MMSA's two English datasets, closer to IEMOCAP's 2,717 training utterances).
- Every method trains at most the paper's 200 epochs (`epochs` is the profile's, so a size
  override changes it for all methods alike); the MMSA rows stop after 8 epochs without a better
  validation score, as MMSA does.
"""
from __future__ import annotations

MMSA = "MMSA config_regression.json"
IEMOCAP_FALLBACK = "mosi"  # MMSA has no IEMOCAP rows

# model -> {"finetune_bert", "source", "common": {...}, "<dataset>": {...}}, where a dataset's
# entry updates "common"; both hold {"train": {...}, "model_args": {...}}.
SETTINGS: dict[str, dict] = {
    "pase": {
        "finetune_bert": True,
        "source": "PaSE supplementary, Implementation Details (Adam, lr 1e-5, batch 64, 200 "
                  "epochs); width 328 and LSTM encoders reproduce Table 2's 114,795,953 parameters; "
                  "dropout 0.1 is not in the paper (the pipeline's default)",
        "common": {"train": {"lr": 1e-5, "batch_size": 64, "hidden": 328, "encoder": "lstm",
                             "dropout": 0.1}},
    },
    "cpsl": {
        "finetune_bert": True,
        "source": "CP+SL publishes no training settings (cp-sl-abstract.txt): it runs at PaSE's "
                  "(BERT-base fine-tuned, lr 1e-5, batch 64, 200 epochs), so the comparison "
                  "holds all but the method equal",
        "common": {"train": {"lr": 1e-5, "batch_size": 64, "hidden": 328, "encoder": "lstm",
                             "dropout": 0.1}},
    },
    "late_fusion": {
        "finetune_bert": False,
        "source": f"{MMSA} lf_dnn.datasetParams.<ds>: learning_rate, batch_size, weight_decay, "
                  "dropouts[0], hidden_dims[0]; lf_dnn.commonParams.early_stop (our late fusion "
                  "averages unimodal heads: LF-DNN's optimiser settings are the closest published)",
        "common": {"train": {"early_stop": 8}},
        "mosi": {"train": {"lr": 1e-3, "batch_size": 128, "weight_decay": 0.01, "dropout": 0.2,
                           "hidden": 128}},
        "mosei": {"train": {"lr": 2e-3, "batch_size": 64, "weight_decay": 1e-3, "dropout": 0.2,
                            "hidden": 128}},
    },
    "ef_lstm": {
        "finetune_bert": False,
        "source": f"{MMSA} ef_lstm.datasetParams.<ds>: hidden_dims, num_layers, dropout, "
                  "batch_size, learning_rate, weight_decay; ef_lstm.commonParams.early_stop",
        "common": {"train": {"early_stop": 8}},
        "mosi": {"train": {"hidden": 128, "dropout": 0.5, "batch_size": 32, "lr": 1e-3,
                           "weight_decay": 5e-3},
                 "model_args": {"num_layers": 4}},
        "mosei": {"train": {"hidden": 256, "dropout": 0.4, "batch_size": 128, "lr": 5e-3,
                            "weight_decay": 1e-4},
                  "model_args": {"num_layers": 2}},
    },
    "tfn": {
        "finetune_bert": False,
        "source": "sizes: Zadeh et al. 2017, TFN (h_t 128, h_a = h_v 32, post-fusion 128: ~18 M "
                  f"weights in the fusion layer); {MMSA} tfn.datasetParams.<ds>: dropouts[0], "
                  "batch_size, learning_rate; tfn.commonParams.early_stop",
        "common": {"train": {"early_stop": 8, "hidden": 128},
                   "model_args": {"sizes": {"text": 128, "audio": 32, "vision": 32},
                                  "post_fusion": 128}},
        "mosi": {"train": {"dropout": 0.3, "batch_size": 32, "lr": 1e-3}},
        "mosei": {"train": {"dropout": 0.4, "batch_size": 128, "lr": 5e-3}},
    },
    "lmf": {
        "finetune_bert": False,
        "source": f"{MMSA} lmf.datasetParams.<ds>: hidden_dims (text, audio, video), rank, "
                  "dropouts[0], batch_size, learning_rate (= factor_lr), weight_decay; "
                  "lmf.commonParams.early_stop",
        "common": {"train": {"early_stop": 8, "hidden": 128},
                   "model_args": {"sizes": {"text": 128, "audio": 16, "vision": 128}}},
        "mosi": {"train": {"dropout": 0.3, "batch_size": 64, "lr": 1e-3, "weight_decay": 5e-3},
                 "model_args": {"rank": 3}},
        "mosei": {"train": {"dropout": 0.2, "batch_size": 32, "lr": 1e-3, "weight_decay": 1e-3},
                  "model_args": {"rank": 4}},
    },
    "mult": {
        "finetune_bert": False,
        "source": f"{MMSA} mult.datasetParams.<ds>: dst_feature_dim_nheads (d_model, heads), "
                  "nlevels, conv1d_kernel_size_l, attn_dropout (our one dropout), batch_size, "
                  "learning_rate, weight_decay, grad_clip (clip_grad_value_); "
                  "mult.commonParams.early_stop",
        "common": {"train": {"early_stop": 8, "grad_clip": 0.6, "grad_clip_mode": "value"},
                   "model_args": {"layers": 4, "kernel_size": 5}},
        "mosi": {"train": {"dropout": 0.3, "batch_size": 16, "lr": 2e-3, "weight_decay": 5e-3,
                           "hidden": 100},
                 "model_args": {"d_model": 50, "heads": 10}},
        "mosei": {"train": {"dropout": 0.4, "batch_size": 4, "lr": 5e-4, "weight_decay": 1e-3,
                            "hidden": 60},
                  "model_args": {"d_model": 30, "heads": 6}},
    },
    "self_mm": {
        "finetune_bert": True,
        "source": f"{MMSA} self_mm.datasetParams.<ds>: batch_size, learning_rate_bert/audio/"
                  "video/other, weight_decay_bert/audio/video/other, post_fusion_dim (our width), "
                  "post_fusion_dropout, H; self_mm.commonParams.early_stop, use_finetune. The "
                  "text part is BERT alone; its output projection trains in 'other' (shared), "
                  "as in MMSA (train.param_groups); one width and one dropout for every branch "
                  "(self_mm.py)",
        "common": {"train": {"early_stop": 8, "hidden": 128, "lr": 1e-3},
                   "model_args": {"H": 3.0}},
        "mosi": {"train": {"batch_size": 16, "dropout": 0.1,
                           "lr_parts": {"text": 5e-5, "audio": 5e-3, "vision": 5e-3, "shared": 1e-3},
                           "weight_decay_parts": {"text": 1e-3, "audio": 1e-3, "vision": 1e-3,
                                                  "shared": 1e-3}}},
        "mosei": {"train": {"batch_size": 32, "dropout": 0.1,
                            "lr_parts": {"text": 5e-5, "audio": 5e-3, "vision": 1e-4, "shared": 1e-3},
                            "weight_decay_parts": {"text": 1e-3, "audio": 0.0, "vision": 0.0,
                                                   "shared": 0.01}}},
    },
    "mag_bert": {
        "finetune_bert": True,
        "source": f"{MMSA} bert_mag.datasetParams.<ds>: batch_size, learning_rate, beta_shift, "
                  "dropout_prob; bert_mag.commonParams.early_stop, weight_decay",
        "common": {"train": {"early_stop": 8, "weight_decay": 0.0, "batch_size": 32},
                   "model_args": {"beta": 1.0}},
        "mosi": {"train": {"lr": 2e-5, "dropout": 0.3}},
        "mosei": {"train": {"lr": 1e-5, "dropout": 0.2}},
    },
}

# The train keys a row may set; under the paper profile these belong to the profile.
TRAIN_KEYS = ("lr", "batch_size", "hidden", "encoder", "dropout", "weight_decay", "grad_clip",
              "grad_clip_mode", "early_stop", "lr_parts", "weight_decay_parts")


def _merge(base: dict, update: dict) -> dict:
    """Nested update for the train keys (lr_parts per part); constructor arguments are updated
    one key at a time, their values (e.g. TFN's `sizes`) replaced whole."""
    out = {"train": dict(base.get("train", {})), "model_args": dict(base.get("model_args", {}))}
    for k, v in update.get("train", {}).items():
        out["train"][k] = {**out["train"].get(k, {}), **v} if isinstance(v, dict) else v
    out["model_args"].update(update.get("model_args", {}))
    return out


def row(model: str, dataset: str | None) -> dict:
    """{"train": {...}, "model_args": {...}, "finetune_bert": bool, "source": str, "dataset_row":
    the dataset whose entry was used} for `model` on `dataset` (None: MOSEI, the count's sizes)."""
    if model not in SETTINGS:
        raise KeyError(f"no paper-profile settings for model {model!r} (pipeline/method_settings.py)")
    entry = SETTINGS[model]
    ds = dataset or "mosei"
    used = ds if ds in entry else (IEMOCAP_FALLBACK if ds == "iemocap" and IEMOCAP_FALLBACK in entry
                                   else None)
    merged = _merge({"train": {}, "model_args": {}}, entry.get("common", {}))
    if used:
        merged = _merge(merged, entry[used])
    unknown = set(merged["train"]) - set(TRAIN_KEYS)
    if unknown:
        raise KeyError(f"method_settings[{model!r}]: unknown train keys {sorted(unknown)}")
    return {**merged, "finetune_bert": entry["finetune_bert"], "source": entry["source"],
            "dataset_row": used}
