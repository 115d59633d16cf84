"""Dress rehearsal of the paper profile, on CPU: the command a user runs on a GPU,
`dvc exp run -S profile=paper`, plus only the profile's named size overrides (a tiny random BERT,
2 epochs, 2 seeds; the inputs are tiny real-format files), through every stage to the report.

Sources in their real formats (builders from tests/test_pickles.py): an MMSA aligned pickle for
MOSI, an MMSA unaligned pickle for MOSEI, MulT's IEMOCAP pickle (GloVe text: no raw text, so the
no-raw-text rule applies). The scratch params.yaml configures those sources and the variant list
(which experiments run is not a profile setting): pase (fine-tuned BERT, frozen source text on
IEMOCAP), tfn (its own MMSA/TFN row, frozen BERT vectors), self_mm (per-part learning rates; n/a
on IEMOCAP) and mag_bert (n/a on IEMOCAP: nothing to tokenise), so every train stage starts a
process: the whole matrix through dvc would take ~8 min on 2 cores. The second test trains every
variant on every dataset in-process under the same profile, so no method escapes the rehearsal.
"""
import json
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import dump, make_repo, make_user_dirs, mmsa_data, mult_data, ROOT, run, sha

pytestmark = pytest.mark.slow
VARIANTS = ["pase", "tfn", "self_mm", "mag_bert"]
SIZE = ["-S", "paper.epochs=2", "-S", "paper.text_encoder=tiny-random-bert", "-S", "seeds=[0,1]"]


def real_format_params(work: Path, variants) -> dict:
    """The shipped params.yaml, with the three sources pointed at real-format pickles."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    make_user_dirs(work)  # users' files live under data/user/<ds>/, which DVC hashes
    user = Path("data") / "user"
    files = {"mosi": ("mmsa", user / "mosi" / "aligned_50.pkl", mmsa_data()),
             "mosei": ("mmsa", user / "mosei" / "unaligned_50.pkl", mmsa_data(aligned=False, da=74, dv=35)),
             "iemocap": ("mult", user / "iemocap" / "iemocap_data.pkl", mult_data("iemocap")[0])}
    for ds, (source, rel, data) in files.items():
        path = dump(work / rel, data)
        raw["data"][ds].update(source=source, path=str(rel), sha256=sha(path))
    raw["variants"] = list(variants)
    raw["train"]["device"] = "cpu"  # the explicit choice the preflight asks for without a GPU
    return raw


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    work = tmp_path_factory.mktemp("rehearsal")
    make_repo(work, params=real_format_params(work, VARIANTS))
    started = time.perf_counter()
    exp = run(["dvc", "exp", "run", "-S", "profile=paper", *SIZE], work)
    print(f"\npaper-profile rehearsal through dvc: {time.perf_counter() - started:.0f} s")
    return work, exp


def test_every_stage_runs_to_a_report_that_says_paper_profile(rehearsal):
    work, exp = rehearsal
    for stage in ("download@mosi", "download@mosei", "download@iemocap", "align@mosei",
                  "embed@iemocap", "train@mosi-pase", "train@mosei-tfn", "train@iemocap-pase",
                  "train@mosei-self_mm", "train@mosi-mag_bert", "figures", "report"):
        assert f"Running stage '{stage}'" in exp.stdout, stage
    readme = (work / "reports" / "README.md").read_text()
    assert "Profile: paper" in readme and "The paper profile" in readme
    assert "paper.epochs=2" in readme and "paper.text_encoder=tiny-random-bert" in readme
    assert readme.count("iemocap: the source has no raw text") >= 2  # settings and Table 2's notes
    assert "| tfn | mosei | 0.005 | 128 | 0.4 | 128 | none | 8 | 2 | frozen |" in readme
    metrics = json.loads((work / "reports" / "metrics.json").read_text())
    assert not any(metrics[ds]["synthetic"] for ds in ("mosi", "mosei", "iemocap"))
    assert "acc2_non0" in metrics["mosi"]["pase"]
    detail = json.loads((work / "reports" / "metrics_detail.json").read_text())
    assert detail["mosi"]["pase"]["summary"]["seeds"] == 2


def test_each_run_records_what_ran(rehearsal):
    work, _ = rehearsal
    runs = work / "data" / "runs"

    def m(ds, v, seed=1):
        return json.loads((runs / ds / v / f"seed{seed}" / "metrics.json").read_text())

    pase = m("mosi", "pase")
    s = pase["settings"]
    assert s["profile"] == "paper" and s["text"]["finetune"] and s["text"]["encoder"] == "tiny-random-bert"
    assert (s["train"]["lr"], s["train"]["batch_size"], s["train"]["hidden"], s["train"]["epochs"]) == (1e-5, 64, 328, 2)
    tfn = m("mosei", "tfn")["settings"]
    assert (tfn["train"]["lr"], tfn["train"]["batch_size"], tfn["text"]["finetune"]) == (5e-3, 128, False)
    assert tfn["model_args"]["sizes"] == {"text": 128, "audio": 32, "vision": 32}
    assert m("mosi", "self_mm")["settings"]["train"]["lr_parts"]["text"] == 5e-5
    iem = m("iemocap", "pase")
    assert not iem["settings"]["text"]["finetune"] and "no raw text" in iem["notes"][0]
    assert m("iemocap", "mag_bert")["status"] == "not applicable"


def test_every_variant_trains_at_its_own_settings_on_every_dataset(tmp_path, monkeypatch):
    """In-process (no process start per stage): the stages' functions on the same sources, the
    same profile and size overrides, one seed, every variant of the matrix and MAG-BERT."""
    import torch

    from pipeline import train

    from pipeline import train_stage
    from pipeline.settings import load_config
    from pipeline.stages import align, download, embed
    from pipeline.variants import VARIANTS as ALL

    monkeypatch.chdir(tmp_path)
    raw = real_format_params(tmp_path, list(ALL))
    raw.update(profile="paper", seeds=[0])
    raw["paper"].update(epochs=1, text_encoder="tiny-random-bert")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(tmp_path / "params.yaml")
    torch.set_num_threads(1)
    for ds in cfg.datasets:
        download(cfg, ds), align(cfg, ds), embed(cfg, ds)
        for v in cfg.variants:
            (r,) = train_stage.train_variant(cfg, ds, v)
            if r.get("status") == "not applicable":
                assert (ds, v) in {("iemocap", "self_mm"), ("iemocap", "mag_bert")}, (ds, v, r)
                continue
            model = cfg.model if v == "pase" else ALL[v]["model"]
            assert r["settings"]["model"] == model and r["settings"]["profile"] == "paper"
            assert r["test"] and all(x == x for x in r["test"].values()), (ds, v)  # no NaN
