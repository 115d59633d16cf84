"""The settings' schema: every parameter of params.yaml as a typed dataclass, and its validation.

Each section is a dataclass; `Literal[...]` fields list the allowed values and `field(metadata=
{"min": ..., "max": ...})` bounds numbers. `build_config` rejects unknown keys, wrong types and
values outside the allowed set with a `ConfigError` that names the dotted key, the bad value and
what is allowed: this is what a user sees after a typo in `dvc exp run -S key=value`.

This module imports nothing of the project above it: params.yaml becomes a run's config through
pipeline/settings.py (profile -> variant -> method row -> text rule -> checks -> read guard).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.balancers import NAMES, SPECS
from pipeline.errors import ConfigError
from pipeline.fields import bounded
from pipeline.variants import DEFAULT_MATRIX

CMU_SERVER = "http://immortal.multicomp.cs.cmu.edu"


_range = bounded
# Every balancer's declaration (pipeline/balancers/): the `balancer:` values and their sections
BalancerName = Literal[NAMES]


@dataclass
class PerModality:
    """One optional size per modality (null: take it from the source)."""

    text: int | None = _range(1, default=None)
    audio: int | None = _range(1, default=None)
    vision: int | None = _range(1, default=None)


@dataclass
class DatasetConfig:
    """Where one dataset comes from. `synthetic` runs anywhere; the others are real data."""

    source: Literal["synthetic", "cmu", "mmsa", "mult"] = "synthetic"
    # mmsa / mult: your pickle; cmu: a folder of .csd files (null: download from cmu_base_url).
    # Must lie under data/user/<dataset>/, the folder DVC hashes (docs/data.md, "Your real data").
    path: str | None = None
    sha256: str | None = None  # a pickle is read only when this matches ...
    allow_unverified_pickle: bool = False  # ... or when the user opts in explicitly
    cmu_base_url: str = CMU_SERVER  # tests point this at a server on 127.0.0.1
    synthetic_scale: float | None = _range(0.001, 1.0, default=None)  # overrides synthetic.scale
    # pickles: steps kept per modality (null: the file's own padded length, nothing is cut)
    max_len: PerModality = field(default_factory=PerModality)
    # expected feature sizes (null: whatever the file holds); a mismatch stops `align`
    dims: PerModality = field(default_factory=PerModality)


@dataclass
class ShareConfig:
    """Complementary kind, MOSI/MOSEI: each modality's share of the label's variance."""

    text: float = _range(0.0, default=0.5)
    audio: float = _range(0.0, default=0.3)
    vision: float = _range(0.0, default=0.2)


@dataclass
class SnrConfig:
    """Signal-to-noise ratio (signal variance / noise variance) of the latent score per modality."""

    text: float = _range(0.0, default=2.0)
    audio: float = _range(0.0, default=1.0)
    vision: float = _range(0.0, default=0.25)


@dataclass
class SyntheticConfig:
    """Synthetic data with known per-modality signal (see pipeline/data/synthetic.py)."""

    scale: float = _range(0.001, 1.0, default=1.0)  # fraction of the paper's split sizes
    seed: int = 1234
    kind: Literal["complementary", "redundant"] = "complementary"  # each modality its own part / copies
    share: ShareConfig = field(default_factory=lambda: ShareConfig())  # complementary MOSI/MOSEI
    snr: SnrConfig = field(default_factory=SnrConfig)
    audio_dim: int = _range(1, default=74)  # COVAREP-like
    vision_dim: int = _range(1, default=35)  # FACET 4.2-like


@dataclass
class DataConfig:
    # words per utterance for the word-level sources (synthetic, cmu) and for the text encoder
    # reading raw words (embed stage); pickles keep their own lengths (data.<ds>.max_len)
    seq_len: int = _range(1, 512, default=50)
    # align refuses a split where more than this fraction of utterances has an empty modality
    max_empty_fraction: float = _range(0.0, 1.0, default=0.1)
    mosi: DatasetConfig = field(default_factory=lambda: DatasetConfig(synthetic_scale=0.2))
    mosei: DatasetConfig = field(default_factory=lambda: DatasetConfig(synthetic_scale=0.02))
    iemocap: DatasetConfig = field(default_factory=lambda: DatasetConfig(synthetic_scale=0.1))


@dataclass
class TextConfig:
    encoder: Literal["minilm", "bert-base-uncased", "tiny-random-bert"] = "minilm"
    finetune: bool = False  # True: fine-tune the encoder end to end (GPU); False: frozen cached vectors
    # the fine-tuned encoder's utterance vector: its [CLS] state, or the mean over its tokens
    # (profile cpu-real: MiniLM is a mean-pooled sentence encoder). Inert with frozen vectors.
    pooling: Literal["cls", "mean"] = "cls"
    max_tokens: int = _range(8, 512, default=96)
    batch_size: int = _range(1, default=64)


@dataclass
class PartsConfig:
    """A value per optimizer part (None: the train section's own value). The parts are the
    optimizer's groups: each modality's encoder (text: BERT when it is fine-tuned) and "shared"
    (everything else), as Self-MM's separate learning rates for BERT, audio, video and the rest."""

    text: float | None = _range(0.0, default=None)
    audio: float | None = _range(0.0, default=None)
    vision: float | None = _range(0.0, default=None)
    shared: float | None = _range(0.0, default=None)


@dataclass
class TrainConfig:
    epochs: int = _range(1, default=8)
    batch_size: int = _range(1, default=32)
    lr: float = _range(0.0, default=0.003)
    weight_decay: float = _range(0.0, default=0.0)
    hidden: int = _range(1, default=64)
    encoder: Literal["lstm", "conv"] = "conv"  # PaSE's audio/vision/frozen-text sequence encoders
    dropout: float = _range(0.0, 0.99, default=0.1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True  # mixed precision (bfloat16 autocast) when training on a GPU; ignored on CPU
    num_threads: int = _range(0, default=1)  # torch CPU threads; 0 = torch's default
    # seeds trained at once, each in its own process (null: pipeline/train.py default_workers);
    # outputs are byte-identical for any value, so it is no dependency of a run (effective.py)
    workers: int | None = _range(1, default=None)
    # under `dvc repro`, one pool process trains the seeds of the next stages while DVC moves on
    # (pipeline/ahead.py); scheduling only, like workers: byte-identical outputs either way
    ahead: bool = True
    lr_parts: PartsConfig = field(default_factory=PartsConfig)  # per-part learning rates
    weight_decay_parts: PartsConfig = field(default_factory=PartsConfig)  # per-part weight decay
    grad_clip: float | None = _range(0.0, default=None)  # None: no clipping
    grad_clip_mode: Literal["norm", "value"] = "norm"  # clip_grad_norm_ | clip_grad_value_ (MMSA)
    early_stop: int | None = _range(1, default=None)  # stop after this many epochs without a
    #                                                   better validation score (None: never)


@dataclass
class PclConfig:
    """Intra-modality prototype calibration (Eq. 1-3)."""

    enabled: bool = True
    gamma: float = _range(0.0, 1.0, default=0.98)  # prototype momentum (Eq. 2)
    tau: float = _range(1e-4, default=0.1)  # temperature of Eq. 3 (not given in the paper)
    # MOSI/MOSEI scores -> prototype classes: negative / neutral / positive, neutral being the
    # scores that Acc-7 rounds to 0 (|y| <= 0.5), as the paper's Figure 3 groups them.
    neutral_band: float = _range(0.0, 3.0, default=0.5)


@dataclass
class CalConfig:
    """Cross-modal alignment by entropic optimal transport between prototypes (Eq. 4-9)."""

    enabled: bool = True
    reg: float = _range(1e-4, default=0.01)  # lambda of Eq. 5
    alpha: float = _range(0.0, default=0.1)  # consistency term, Eq. 7
    beta: float = _range(0.0, default=0.05)  # identity prior, Eq. 8
    n_iter: int = _range(1, default=30)


@dataclass
class PgfConfig:
    enabled: bool = True  # False: the gates of Eq. 12 are removed (Table 3, "- PGF")


@dataclass
class FusionConfig:
    # pgf: Eq. 12-13; sum / concat / attention: Table 3's replacements of PGF
    type: Literal["pgf", "sum", "concat", "attention"] = "pgf"


@dataclass
class LossConfig:
    mu: float = _range(0.0, default=0.1)  # weight of L_align in Eq. 15


@dataclass
class SgmConfig:
    """Dual-phase training: phase 2 applies Shapley-based gradient modulation (Eq. 18-21)."""

    enabled: bool = True
    rho: float = _range(0.0, 1.0, default=0.5)  # Eq. 19 (not given in the paper)
    switch: Literal["plateau", "epoch"] = "epoch"  # when phase 2 starts
    patience: int = _range(1, default=2)  # plateau: epochs without validation improvement
    start_epoch: int = _range(1, default=4)  # epoch: phase 2 from this epoch (supplementary: 20)


@dataclass
class PaperSizeConfig:
    """Size overrides of the paper profile: the only keys that change a `profile: paper` run
    without leaving the profile (a rehearsal on CPU, a short trial on a GPU). null: the profile's
    value. They are refused under any other profile, where they would be inert."""

    epochs: int | None = _range(1, default=None)  # instead of 200
    text_encoder: Literal["minilm", "bert-base-uncased", "tiny-random-bert"] | None = None
    synthetic_scale: float | None = _range(0.001, 1.0, default=None)  # with allow_synthetic
    allow_synthetic: bool = False  # opt in to synthetic data under the paper profile


@dataclass
class CpuRealSizeConfig(PaperSizeConfig):
    """The same size overrides for `profile: cpu-real` (its `cpu_real:` section), refused under
    any other profile. `allow_synthetic` opts in to synthetic data (the profile is for real data)."""


@dataclass
class _Settings:
    # cpu: params.yaml as written; paper / cpu-real: pipeline/profiles.py
    profile: Literal["cpu", "paper", "cpu-real"] = "cpu"
    datasets: list[Literal["mosi", "mosei", "iemocap"]] = field(
        default_factory=lambda: ["mosi", "mosei", "iemocap"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    variants: list[str] = field(default_factory=lambda: list(DEFAULT_MATRIX))  # pipeline/variants.py
    model: str = "pase"  # the headline method; variants (ablations, baselines) override it
    balancer: BalancerName = "sgm"  # gradient balancing part of the trainer (pipeline/balancers/)
    modalities: list[Literal["text", "audio", "vision"]] = field(
        default_factory=lambda: ["text", "audio", "vision"])
    data: DataConfig = field(default_factory=DataConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    text: TextConfig = field(default_factory=TextConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pcl: PclConfig = field(default_factory=PclConfig)
    cal: CalConfig = field(default_factory=CalConfig)
    pgf: PgfConfig = field(default_factory=PgfConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sgm: SgmConfig = field(default_factory=SgmConfig)
    paper: PaperSizeConfig = field(default_factory=PaperSizeConfig)
    cpu_real: CpuRealSizeConfig = field(default_factory=CpuRealSizeConfig)
    # Constructor arguments of the model; the paper profile fills them from the method's row of
    # pipeline/method_settings.py (recorded in every run's metrics.json)
    model_args: dict = field(default_factory=dict)

    def dataset(self, name: str) -> DatasetConfig:
        if name not in ("mosi", "mosei", "iemocap"):
            raise ConfigError(f"dataset {name!r} is unknown; allowed: mosi, mosei, iemocap")
        return getattr(self.data, name)


# The whole config: the sections above and each balancer's own (its SPEC's `section`, `params`).
Config = dataclasses.make_dataclass(
    "Config", [(s.section, s.params, field(default_factory=s.params))
               for s in SPECS.values() if s.section], bases=(_Settings,))
Config.__module__ = __name__  # pickled by name (seed processes spawned on a GPU)
Config.__doc__ = "Every setting of params.yaml, validated (pipeline/settings.py resolves it)."


# ---------------------------------------------------------------- validation

def _is_union(tp) -> bool:
    """`X | None` annotations: typing.Union or, from `from __future__` hints, types.UnionType."""
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list,):
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if _is_union(tp):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def _convert(value: Any, tp, key: str):
    """Check `value` against the annotation `tp`; return it converted (e.g. int -> float)."""
    origin = typing.get_origin(tp)
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a section (mapping) with keys "
                              f"{', '.join(f.name for f in dataclasses.fields(tp))}, got {value!r}")
        return _build(tp, value, key)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or isinstance(value, bool) != any(isinstance(a, bool) for a in allowed):
            raise ConfigError(f"{key}: {value!r} is not allowed; allowed values: "
                              + ", ".join(repr(a) for a in allowed))
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        (inner,) = typing.get_args(tp)
        out = [_convert(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        if len(set(map(repr, out))) != len(out):
            raise ConfigError(f"{key}: {value!r} has repeated entries")
        return out
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp} for {key}")


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)  # slow (evaluates every annotation): once per class


def _build(cls, raw: dict, prefix: str = ""):
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in raw:
        if k not in fields:
            where = f"{prefix}.{k}" if prefix else k
            raise ConfigError(f"{where}: unknown parameter; allowed keys"
                              f"{' under ' + prefix if prefix else ''}: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name not in raw:
            continue  # defaults fill what the file leaves out
        key = f"{prefix}.{name}" if prefix else name
        value = _convert(raw[name], hints[name], key)
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        if value is not None and (lo is not None and value < lo or hi is not None and value > hi):
            raise ConfigError(f"{key}: {value!r} is out of range; allowed: "
                              f"{lo if lo is not None else '-inf'} <= {key} <= {hi if hi is not None else 'inf'}")
        kwargs[name] = value
    return cls(**kwargs)


def build_config(raw: dict | None) -> Config:
    """A Config from plain data that already holds the values that run (params.yaml through its
    profile, or `as_dict` of a Config): types and ranges only. Whether the values make sense
    together is pipeline/config_checks.py's, after resolution (pipeline/settings.py)."""
    return _build(Config, raw or {})


def merge(base: dict, update: dict) -> dict:
    """`base` with `update` merged in, section by section (neither is changed)."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def as_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def fingerprint(*parts) -> str:
    """A short stable hash of config sections (dataclasses or plain data), for cache keys."""
    blob = json.dumps([as_dict(p) if dataclasses.is_dataclass(p) else p for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
