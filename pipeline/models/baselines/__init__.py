"""Baselines rerun in our trainer, one file a method (MMSA's layout).

`BASELINES[name](dims, out_dim, hidden=64, dropout=0.1, **kw)` builds a `MultimodalModel`:
- "ef_lstm": early-fusion LSTM (ef_lstm.py)
- "tfn":     Tensor Fusion Network, Zadeh et al. 2017 (tfn.py)
- "lmf":     Low-rank Multimodal Fusion, Liu et al. 2018 (lmf.py; `rank=`)
- "mult":    Multimodal Transformer, Tsai et al. 2019 (mult.py; needs >= 2 modalities)
- "self_mm": Self-MM, Yu et al. 2021 (self_mm.py; regression only)
- "mag_bert": MAG-BERT, Rahman et al. 2020 (mag_bert.py; needs the fine-tuned BERT path)
- "cpsl":    Conflict-aware Penalty + Statistical Loss (cpsl.py; CP is a trainer balancer)
"""
from __future__ import annotations

from pipeline.models.baselines import cpsl, ef_lstm, lmf, mag_bert, mult, self_mm, tfn

BASELINES = {
    "ef_lstm": ef_lstm.build,
    "tfn": tfn.build,
    "lmf": lmf.build,
    "mult": mult.build,
    "self_mm": self_mm.build,
    "mag_bert": mag_bert.build,
    "cpsl": cpsl.build,
}
# What a builder needs from the trainer beyond (dims, out_dim, hidden, dropout); "bert_if_finetuned":
# the BERT to fine-tune when text.finetune is on (Self-MM, as MMSA's use_finetune; CP+SL).
# "encoder": the sequence encoder kind of train.encoder, so that models built on the shared
# per-modality encoders (pipeline/models/encoders.py) use PaSE's on every profile. TFN, LMF,
# EF-LSTM and MulT keep their own published sub-networks: those are the methods compared.
NEEDS = {
    "self_mm": ("n_train", "bert_if_finetuned", "encoder"),
    "mag_bert": ("bert",),
    "cpsl": ("bert_if_finetuned", "encoder"),
}
