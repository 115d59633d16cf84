"""`python -m pipeline explain --dataset D --variant V [--json]`: what one run will do.

It resolves the run exactly as its train stage does (`train_stage.run_config`: profile, variant,
the method's row, the text rule), builds the model from the dataset's stores (input sizes, task,
training-set size; the weights are not loaded: the architecture is enough, on torch's meta
device) and prints:
- the settings the configure stage writes for the run (data/configs/<D>/<V>.json);
- the text path: fine-tuned or frozen, which encoder, pooling, lengths, and why, where a profile
  rule, the method's row or the source decided it;
- every optimiser group (`train.param_groups`, the groups training builds): its parameters by
  name prefix, their count, lr, weight decay, whether they train, and which balancer scales it;
- how many seed processes the stage runs at once, and why (pipeline/gpu_fit.py).
It needs only the aligned and embedded stores, never a training step. The README's table of the
groups per profile is made by this command, and tests/settings/test_rates.py checks every profile x
source kind x variant against the rule stated in `train.param_groups`.
"""
from __future__ import annotations

import json

from pipeline import effective, paths
from pipeline.config import Config
from pipeline.errors import PipelineError


def _text_path(cfg: Config, vcfg: Config, dataset: str, notes: tuple[str, ...]) -> dict:
    from pipeline.data.store import read_attrs
    embedded = read_attrs(paths.text_features(dataset))
    out = {"used": "text" in vcfg.modalities, "finetune": vcfg.text.finetune,
           "encoder": vcfg.text.encoder if vcfg.text.finetune else embedded.get("encoder"),
           "pooling": vcfg.text.pooling if vcfg.text.finetune else "word vectors (frozen)",
           "seq_len": cfg.data.seq_len, "max_tokens": vcfg.text.max_tokens if vcfg.text.finetune else None,
           "embedded_store": {k: embedded.get(k) for k in ("encoder", "dim", "seq_len") if k in embedded}}
    why = []
    if cfg.profile in ("paper", "cpu-real"):
        from pipeline.method_settings import SETTINGS
        tunes = SETTINGS[vcfg.model]["finetune_bert"]
        why.append(f"profile {cfg.profile}: {vcfg.model}'s row (pipeline/method_settings.py) "
                   f"{'fine-tunes' if tunes else 'keeps frozen'} its text encoder")
    why += list(notes)
    out["why"] = why or ["params.yaml: text.finetune " + str(vcfg.text.finetune).lower()]
    return out


def _prefixes(names: list[str], mine: set[str], every: list[str]) -> list[str]:
    """The shortest module prefixes that cover exactly `names` among all parameter names."""
    out = set()
    for n in names:
        parts = n.split(".")
        best = n
        for i in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:i]) + "."
            if all(o in mine for o in every if o.startswith(prefix)):
                best = prefix + "*"
            else:
                break
        out.add(best)
    return sorted(out)


def optimiser_groups(model, vcfg: Config, task: str) -> list[dict]:
    """The groups `train.param_groups` builds for this run, described (plus frozen parameters)."""
    from pipeline import train
    tcfg = vcfg.train
    balancer = train.build_balancer(vcfg, task)
    named = list(model.named_parameters())
    every = [n for n, _ in named]
    name_of = {id(p): n for n, p in named}
    rows = []
    for g in train.param_groups(model, tcfg.lr, tcfg.weight_decay, tcfg.lr_parts,
                                tcfg.weight_decay_parts):
        names = [name_of[id(p)] for p in g["params"]]
        rows.append({"group": g["name"], "params": _prefixes(names, set(names), every),
                     "count": sum(p.numel() for p in g["params"]), "lr": g["lr"],
                     "weight_decay": g["weight_decay"], "trainable": True,
                     "scaled_by": balancer.name if balancer.scales(g["modality"]) else None})
    frozen = [n for n, p in named if not p.requires_grad]
    if frozen:
        rows.append({"group": "(frozen)", "params": _prefixes(frozen, set(frozen), every),
                     "count": sum(p.numel() for n, p in named if not p.requires_grad), "lr": None,
                     "weight_decay": None, "trainable": False, "scaled_by": None})
    return rows


def _architecture_bert(vcfg: Config):
    """The fine-tuned encoder's architecture, randomly initialised on the meta device: the groups
    do not need the weights (and bert-base-uncased may not be on this machine)."""
    from pipeline.report.params import bert_architecture
    bert_cfg = bert_architecture(vcfg.text.encoder)
    from transformers import BertModel
    return lambda _cfg: BertModel(bert_cfg)


def explain(cfg: Config, dataset: str, variant: str) -> dict:
    """Everything the report of one run needs, as plain data (the --json output)."""
    from pipeline.data.store import read_attrs
    from pipeline.train_stage import run_config
    for f in (paths.aligned_store(dataset), paths.text_features(dataset)):
        if not f.exists():
            raise PipelineError(f"{f}: not found; explain reads the aligned and embedded stores "
                                f"(`dvc repro embed@{dataset}` makes both)")
    settings = effective.effective(cfg, dataset, variant)  # what configure writes
    vcfg, notes, reason = run_config(cfg, dataset, variant)
    out = {"dataset": dataset, "variant": variant, "profile": cfg.profile, "model": vcfg.model,
           "balancer": vcfg.balancer, "settings": settings,
           "text": _text_path(cfg, vcfg, dataset, notes), "not_applicable": reason}
    if reason:
        return out
    import torch
    from pipeline import train
    from pipeline.data.store import StoreDataset
    attrs = read_attrs(paths.aligned_store(dataset))
    data = StoreDataset(paths.aligned_store(dataset), "train", text_file=paths.text_features(dataset),
                        modalities=tuple(vcfg.modalities))
    dims = {m: data.dims[m] for m in vcfg.modalities}
    factory = _architecture_bert(vcfg) if vcfg.text.finetune else train.load_bert
    from pipeline.errors import ConfigError
    try:
        with torch.device("meta"):
            model = train.build_model(vcfg, dims, attrs["task"], bert_factory=factory,
                                      n_train=len(data))
    except ConfigError as e:  # e.g. MAG-BERT with frozen text: the train stage stops the same way
        out["not_applicable"] = str(e)
        return out
    out["inputs"] = {"dims": dims, "task": attrs["task"], "n_train": len(data)}
    out["groups"] = optimiser_groups(model, vcfg, attrs["task"])
    from pipeline.gpu_fit import seeds_at_once  # what the stage decides (on a GPU: a short probe)
    from pipeline.profiles import variant_config
    n, why = seeds_at_once(variant_config(cfg, variant, dataset), dataset, variant)
    out["seeds_at_once"] = {"n": min(n, len(vcfg.seeds)), "why": why}
    return out


def _fmt(v) -> str:
    return "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


GROUP_COLUMNS = ("text.backbone", "text", "audio", "vision", "shared")
MARKDOWN_HEAD = ("| profile | variant | " + " | ".join(GROUP_COLUMNS) + " | scaled by the balancer |\n"
                 "|---|---|" + "---|" * (len(GROUP_COLUMNS) + 1))


def markdown_row(info: dict) -> str:
    """The run's groups as one row of the README's table: each group's lr (and weight decay where
    it is not 0), "-" where the model has no such group; the parameters are in `explain`."""
    if info["not_applicable"]:
        return f"| {info['profile']} | {info['variant']} | n/a: {info['not_applicable']} |" + \
            " |" * len(GROUP_COLUMNS)
    groups = {g["group"]: g for g in info["groups"]}
    cells = [("-" if c not in groups else _fmt(groups[c]["lr"]) + (
        f", wd {_fmt(groups[c]['weight_decay'])}" if groups[c]["weight_decay"] else ""))
        for c in GROUP_COLUMNS]
    scaled = sorted({g["scaled_by"] for g in info["groups"] if g["scaled_by"]})
    by = ", ".join(f"{b}: " + ", ".join(g["group"] for g in info["groups"] if g["scaled_by"] == b)
                   for b in scaled) or "-"
    return f"| {info['profile']} | {info['variant']} | " + " | ".join(cells) + f" | {by} |"


def render(info: dict) -> str:
    t = info["text"]
    lines = [f"{info['dataset']}/{info['variant']}: model {info['model']}, balancer "
             f"{info['balancer']}, profile {info['profile']}"]
    if info["not_applicable"]:
        return "\n".join(lines + [f"not applicable: {info['not_applicable']}"])
    lines += ["", "text path:" + ("" if t["used"] else " (text is not among this run's modalities)"),
              f"  {'fine-tuned' if t['finetune'] else 'frozen'} {t['encoder']}, pooling "
              f"{t['pooling']}, seq_len {t['seq_len']}"
              + (f", max_tokens {t['max_tokens']}" if t["max_tokens"] else ""),
              *(f"  why: {w}" for w in t["why"]),
              "", f"inputs: {info['inputs']['dims']}, task {info['inputs']['task']}, "
              f"{info['inputs']['n_train']} training utterances",
              f"seeds at once: {info['seeds_at_once']['n']} ({info['seeds_at_once']['why']})",
              "", "optimiser groups:"]
    head = ("group", "params", "count", "lr", "wd", "trains", "scaled by")
    rows = [(g["group"], ", ".join(g["params"]), f"{g['count']:,}", _fmt(g["lr"]),
             _fmt(g["weight_decay"]), "yes" if g["trainable"] else "no", _fmt(g["scaled_by"]))
            for g in info["groups"]]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    lines += ["", "settings (data/configs/{}/{}.json):".format(info["dataset"], info["variant"]),
              json.dumps(info["settings"], indent=1, sort_keys=True)]
    return "\n".join(lines)
