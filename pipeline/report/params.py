"""Parameter counts of a variant's model, without data or pretrained weights."""
from __future__ import annotations

from pipeline.config import Config, as_dict
from pipeline.settings import config_from_dict
from pipeline.variants import METHODS

# One variant per model: `python -m pipeline count` with no --variant counts each method.
METHOD_VARIANTS = METHODS


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


def bert_architecture(encoder: str):
    """The transformers config of a text encoder, without its weights: from the local cache, or
    BERT-base's (BertConfig()'s default) where bert-base-uncased is not on this machine."""
    from transformers import AutoConfig, BertConfig
    from pipeline.features.text import _minilm_dir, load_text_encoder
    if encoder == "minilm":
        return AutoConfig.from_pretrained(str(_minilm_dir()), local_files_only=True)
    try:
        return AutoConfig.from_pretrained(encoder, local_files_only=True)
    except Exception:  # not cached
        return BertConfig() if encoder == "bert-base-uncased" else \
            load_text_encoder(encoder).model.config


def published_count(variant: str) -> tuple[int, str] | None:
    """The paper's printed count for a variant, with its source, where the paper gives one."""
    from pipeline.report.paper import EFFICIENCY, EFFICIENCY_SOURCE
    for r in EFFICIENCY:
        if r.variant == variant:
            return r.params, EFFICIENCY_SOURCE
    return None


def count_variant(cfg: Config, variant: str, profile: str | None, dims: str | None, task: str,
                  dataset: str | None = "mosei") -> int:
    import torch
    from pipeline import train
    from pipeline.profiles import variant_config

    if profile and profile != cfg.profile:
        # Count under the other profile: its own values, not this file's (no conflict check).
        raw = as_dict(cfg)
        raw["profile"] = profile
        raw["paper"], raw["cpu_real"] = {}, {}
        from pipeline.profiles import CPU_PROFILE, PROFILES, _merge
        raw = _merge(raw, CPU_PROFILE if profile == "cpu" else PROFILES[profile])
        cfg = config_from_dict(raw, resolved=True)
    vcfg = variant_config(cfg, variant, dataset)
    dims = dims or default_dims(vcfg)
    sizes = {k: int(v) for k, v in (kv.split("=") for kv in dims.split(","))}
    sizes = {m: sizes[m] for m in vcfg.modalities}
    bert_factory = train.load_bert
    if vcfg.text.finetune:
        # The architecture of the configured encoder, randomly initialised: the count does not
        # need the weights (and bert-base-uncased may not be on this machine).
        from transformers import BertModel
        bert_cfg = bert_architecture(vcfg.text.encoder)

        def bert_factory(_):
            return BertModel(bert_cfg)
    with torch.device("meta"):  # no memory for the weights
        model = train.build_model(vcfg, sizes, task, bert_factory=bert_factory, n_train=1)
    return sum(p.numel() for p in model.parameters())


def count_lines(cfg: Config, variants, profile, dims, task, dataset) -> list[str]:
    """One line per variant: our count, and the paper's where it prints one."""
    from pipeline.errors import PipelineError
    lines = []
    for v in variants:
        try:
            n = count_variant(cfg, v, profile, dims, task, dataset)
        except PipelineError as e:  # e.g. MAG-BERT without a fine-tuned BERT (cpu profile)
            lines.append(f"{v:<12} {'n/a':>14}   ({e})")
            continue
        pub = published_count(v) if (profile or cfg.profile) == "paper" else None
        lines.append(f"{v:<12} {n:>14,}" + (f"   published {pub[0]:,} ({pub[1]})" if pub else ""))
    return lines
