"""Parameter counts of a variant's model, without data or pretrained weights."""
from __future__ import annotations

from pipeline.config import Config, as_dict, config_from_dict
from pipeline.models.base import count_parameters
from pipeline.variants import variant_config


# Hidden sizes of the known text encoders (all-MiniLM-L6-v2: 384; BERT-base: 768); others are
# read from the encoder itself.
TEXT_DIMS = {"minilm": 384, "bert-base-uncased": 768}
AUDIO_DIM, VISION_DIM = 74, 35  # COVAREP, FACET 4.2


def default_dims(vcfg: Config) -> str:
    """The profile's own input sizes: its text encoder's width, COVAREP audio, FACET 4.2 vision."""
    text = TEXT_DIMS.get(vcfg.text.encoder)
    if text is None:
        from pipeline.features.text import load_text_encoder
        text = load_text_encoder(vcfg.text.encoder).dim
    return f"text={text},audio={AUDIO_DIM},vision={VISION_DIM}"


def count_variant(cfg: Config, variant: str, profile: str | None, dims: str | None, task: str) -> int:
    """Parameters of `variant`'s model; `dims` "text=384,audio=74,vision=35" (None: the profile's)."""
    import torch
    from pipeline import train

    if profile:
        cfg = config_from_dict({**as_dict(cfg), "profile": profile})
    vcfg = variant_config(cfg, variant)
    dims = dims or default_dims(vcfg)
    sizes = {k: int(v) for k, v in (kv.split("=") for kv in dims.split(","))}
    sizes = {m: sizes[m] for m in vcfg.modalities}
    bert_factory = train.load_bert
    if vcfg.text.finetune:
        # The architecture of the configured encoder, randomly initialised: the count does not
        # need the weights (and bert-base-uncased may not be on this machine).
        from transformers import AutoConfig, BertConfig, BertModel
        from pipeline.features.text import load_text_encoder
        try:
            bert_cfg = AutoConfig.from_pretrained(vcfg.text.encoder, local_files_only=True)
        except Exception:  # not cached: bert-base-uncased's architecture is BertConfig()'s default
            bert_cfg = BertConfig() if vcfg.text.encoder == "bert-base-uncased" else \
                load_text_encoder(vcfg.text.encoder).model.config
        def bert_factory(_):
            return BertModel(bert_cfg)
    with torch.device("meta"):  # no memory for the weights
        model = train.build_model(vcfg, sizes, task, bert_factory=bert_factory, n_train=1)
    return count_parameters(model)
