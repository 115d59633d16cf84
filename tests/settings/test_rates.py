"""What each run optimises at which rate: profile (cpu, cpu-real, paper with a tiny BERT) x
source kind (MMSA pickle with raw text / MulT pickle without) x every variant, read from
`pipeline explain` (what training builds: train.param_groups on the run's model), checked
against each profile's stated rule and each method's row of pipeline/method_settings.py:

- cpu: every group at train.lr, no backbone (frozen text vectors);
- cpu-real: the pretrained backbone of a method whose row fine-tunes text at 3e-5, every other
  group (the text encoder's new layers included) at 1e-3;
- paper: the backbone at the row's lr_parts.text, the text encoder's new layers and the shared
  part at lr_parts.shared, audio and vision at theirs, each falling back to the row's lr;
- a source without raw text has no backbone: its text encoder trains like the other new layers.
The README's table of groups is checked against the same command.
"""
import re
from pathlib import Path

import pytest
import yaml

from pipeline.method_settings import SETTINGS, row
from pipeline.variants import VARIANTS
from tests.helpers import dump, make_user_dirs, mmsa_data, mult_data, ROOT, sha

PROFILES = ("cpu", "cpu-real", "paper")
SOURCES = ("raw_text", "no_raw_text")
CPU_REAL_TEXT, CPU_REAL_REST = 3e-5, 1e-3


def _stores(work: Path, profile: str, source: str):
    """download, align and embed MOSI in `work` under the profile, from a real-format pickle."""
    from pipeline.settings import load_config
    from pipeline.stages import align, download, embed
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    make_user_dirs(work)
    rel = Path("data/user/mosi") / ("aligned_50.pkl" if source == "raw_text" else "mosi_data.pkl")
    path = dump(work / rel, mmsa_data() if source == "raw_text" else mult_data("mosi")[0])
    raw["data"]["mosi"].update(source="mmsa" if source == "raw_text" else "mult", path=str(rel),
                               sha256=sha(path))
    raw.update(profile=profile, datasets=["mosi"], variants=list(VARIANTS), seeds=[0])
    raw["train"]["device"] = "cpu"
    if profile == "cpu":
        raw["text"]["encoder"] = "tiny-random-bert"
    else:
        raw["paper" if profile == "paper" else "cpu_real"]["text_encoder"] = "tiny-random-bert"
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(work / "params.yaml")
    download(cfg, "mosi"), align(cfg, "mosi"), embed(cfg, "mosi")
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{(profile, source): {variant: explain's answer, or the error it raised}}."""
    import os

    from pipeline.errors import PipelineError
    from pipeline.explain import explain
    out, cwd = {}, os.getcwd()
    try:
        for profile in PROFILES:
            for source in SOURCES:
                work = tmp_path_factory.mktemp(f"{profile}-{source}")
                os.chdir(work)
                cfg = _stores(work, profile, source)
                answers = {}
                for v in VARIANTS:
                    try:
                        answers[v] = explain(cfg, "mosi", v)
                    except PipelineError as e:
                        answers[v] = e
                out[profile, source] = answers
    finally:
        os.chdir(cwd)
    return out


def expected(profile: str, variant: str, backbone: bool) -> dict[str, tuple[float, float]]:
    """{group: (lr, weight decay)} by the profile's stated rule and the method's row."""
    model = VARIANTS[variant]["model"]
    if profile == "cpu":
        lr = wd = None
        parts, wparts, lr, wd = {}, {}, 0.003, 0.0
    elif profile == "cpu-real":
        parts, wparts, lr, wd = {"text": CPU_REAL_TEXT}, {}, CPU_REAL_REST, 0.0
    else:
        r = row(model, "mosi")["train"]
        parts, wparts = r.get("lr_parts", {}), r.get("weight_decay_parts", {})
        lr, wd = r.get("lr", 1e-5), r.get("weight_decay", 0.0)

    def at(part):
        return (lr if parts.get(part) is None else parts[part],
                wd if wparts.get(part) is None else wparts[part])
    groups = {"text": at("shared"), "audio": at("audio"), "vision": at("vision"),
              "shared": at("shared")}
    if backbone:
        groups["text.backbone"] = at("text")
    return groups


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("profile", PROFILES)
def test_every_group_of_every_variant_trains_at_its_rule(runs, profile, source):
    for variant, info in runs[profile, source].items():
        model = VARIANTS[variant]["model"]
        tunes = profile != "cpu" and SETTINGS[model]["finetune_bert"] and source == "raw_text"
        assert not isinstance(info, Exception), (profile, source, variant, info)
        if info["not_applicable"]:
            # MAG-BERT adapts BERT's layers: nothing to adapt with frozen text
            assert model == "mag_bert" and not tunes, (profile, source, variant, info)
            continue
        groups = {g["group"]: g for g in info["groups"]}
        mods = info["settings"]["modalities"]
        backbone = tunes and "text" in mods
        if "text" in mods:  # (without text, text.finetune reads nothing)
            assert info["text"]["finetune"] == tunes, (profile, source, variant)
        want = expected(profile, variant, backbone)
        for name, g in groups.items():
            assert name in want, (profile, source, variant, name)
            assert (g["lr"], g["weight_decay"]) == pytest.approx(want[name]), \
                (profile, source, variant, name)
            assert g["trainable"] and g["count"] > 0
        # the backbone is exactly the pretrained encoder; nothing pretrained trains elsewhere
        assert ("text.backbone" in groups) == backbone, (profile, source, variant)
        for name, g in groups.items():
            is_bert = [p.endswith("bert.*") for p in g["params"]]
            assert all(is_bert) if name == "text.backbone" else not any(is_bert), (variant, g)
        for m in ("audio", "vision"):
            assert (m in groups) == (m in mods), (profile, source, variant, m)


@pytest.mark.parametrize("profile", PROFILES)
def test_balancers_scale_every_group_of_the_modalities_they_modulate(runs, profile):
    for variant, info in runs[profile, "raw_text"].items():
        if info["not_applicable"]:
            continue
        over = VARIANTS[variant]
        balancer = over.get("balancer", "sgm")
        if balancer == "sgm" and over.get("sgm", {}).get("enabled", True) is False:
            balancer = None
        for g in info["groups"]:
            if g["group"] == "shared" or balancer in (None, "none"):
                assert g["scaled_by"] is None, (profile, variant, g)
            elif balancer == "cp":  # cp.dominant: text, as shipped
                assert g["scaled_by"] == ("cp" if g["group"].startswith("text") else None)
            else:
                assert g["scaled_by"] == balancer, (profile, variant, g)


def test_a_source_without_raw_text_says_why_its_text_is_frozen(runs):
    info = runs["cpu-real", "no_raw_text"]["pase"]
    assert not info["text"]["finetune"]
    why = " ".join(info["text"]["why"])
    assert "no raw text" in why and "train.lr_parts.text 3e-05 not used" in why
    assert info["settings"]["train"]["lr_parts"]["text"] == CPU_REAL_TEXT  # what configure wrote


def test_the_readme_table_is_what_explain_prints(runs):
    """README, "Optimiser groups per profile": every row equals explain's on a source with raw
    text (the README's rows were made on the default synthetic MOSI store, which has raw text)."""
    from pipeline.explain import markdown_row
    readme = (ROOT / "README.md").read_text()
    table = [ln for ln in readme.splitlines() if re.match(r"\| (cpu|cpu-real|paper) \| ", ln)]
    assert table, "the README has no table of optimiser groups"
    variants = sorted({ln.split("|")[2].strip() for ln in table})
    assert variants == sorted(["pase", "cpsl", "self_mm", "mag_bert", "tfn"])
    made = [markdown_row(runs[p, "raw_text"][v]) for p in PROFILES
            for v in ("pase", "cpsl", "self_mm", "mag_bert", "tfn")]
    assert table == made


def test_a_frozen_text_setting_of_the_text_rate_is_refused(tmp_path):
    from pipeline.settings import load_config
    from pipeline.errors import ConfigError
    from tests.helpers import write_params
    write_params(tmp_path / "params.yaml", {"train": {"lr_parts": {"text": 1e-4}}})
    with pytest.raises(ConfigError, match=r"train\.lr_parts\.text: 0\.0001 with text\.finetune: "
                                          r"false.*would change nothing"):
        load_config(tmp_path / "params.yaml")


def test_a_balancer_scales_both_text_groups_and_resets_them():
    """SGM / OGM-GE scale a modality through scale_group_lr: the fine-tuned backbone and the text
    encoder's new layers are one modality, two rates."""
    import torch

    from pipeline.balancers.base import reset_group_lr, scale_group_lr
    from pipeline.config import PartsConfig
    from pipeline.features.text import load_text_encoder
    from pipeline.models.pase import PaSE
    from pipeline.train import param_groups
    model = PaSE({"text": 32, "audio": 4}, 1, "regression", 3, hidden=8,
                 bert=load_text_encoder("tiny-random-bert").model)
    opt = torch.optim.Adam(param_groups(model, 1e-3, 0.0, PartsConfig(text=3e-5)), lr=1e-3)
    scale_group_lr(opt, {"text": 0.5, "audio": 2.0})
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == pytest.approx({"text.backbone": 1.5e-5, "text": 5e-4, "audio": 2e-3,
                                 "shared": 1e-3})
    reset_group_lr(opt)
    assert {g["name"]: g["lr"] for g in opt.param_groups} == pytest.approx(
        {"text.backbone": 3e-5, "text": 1e-3, "audio": 1e-3, "shared": 1e-3})
