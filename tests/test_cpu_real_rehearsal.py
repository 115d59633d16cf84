"""Rehearsal of the cpu-real profile, as the paper profile's (tests/test_paper_rehearsal.py): the
command a user with MMSA's or MulT's files runs, `dvc exp run -S profile=cpu-real`, plus only the
profile's named size overrides (a tiny random BERT for MiniLM, 2 epochs, 2 seeds; the inputs are
tiny real-format pickles), through every stage to the report.

MOSI comes from an MMSA aligned pickle (raw text: MiniLM's stand-in is fine-tuned from its
tokens), IEMOCAP from MulT's pickle (GloVe, no raw text: the frozen-text rule applies). Variants:
pase (fine-tuned), tfn (a frozen-text baseline) and self_mm (a fine-tuning baseline; n/a on
IEMOCAP). MOSEI is left out to keep the run short: the paper rehearsal covers its unaligned
pickle, and nothing in the profile depends on the dataset.
"""
import json
import time

import pytest

from tests.helpers import make_repo, real_format_params, run

pytestmark = pytest.mark.slow
VARIANTS = ["pase", "tfn", "self_mm"]
SIZE = ["-S", "cpu_real.epochs=2", "-S", "cpu_real.text_encoder=tiny-random-bert",
        "-S", "seeds=[0,1]"]


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    work = tmp_path_factory.mktemp("cpu_real")
    params = real_format_params(work, VARIANTS)
    params["datasets"] = ["mosi", "iemocap"]
    params["train"]["device"] = "auto"  # the profile needs no device setting: it is a CPU profile
    make_repo(work, params=params)
    started = time.perf_counter()
    exp = run(["dvc", "exp", "run", "-S", "profile=cpu-real", *SIZE], work)
    print(f"\ncpu-real rehearsal through dvc: {time.perf_counter() - started:.0f} s")
    return work, exp


def test_every_stage_runs_to_a_report_that_names_the_profile_and_encoder(rehearsal):
    work, exp = rehearsal
    for stage in ("download@mosi", "embed@mosi", "embed@iemocap", "configure", "train@mosi-pase",
                  "train@mosi-tfn", "train@mosi-self_mm", "train@iemocap-pase", "figures", "report"):
        assert f"Running stage '{stage}'" in exp.stdout, stage
    readme = (work / "reports" / "README.md").read_text()
    assert "Profile: cpu-real" in readme and "The cpu-real profile" in readme
    assert "Text encoder: tiny-random-bert, fine-tuned end to end by the methods whose row" in readme
    assert "cpu_real.epochs=2" in readme and "cpu_real.text_encoder=tiny-random-bert" in readme
    assert "iemocap: the source has no raw text" in readme
    assert "| tfn | mosi | 0.001 | 32 | 0.1 | 64 | none | none | 2 | frozen |" in readme
    assert "| pase | mosi | text backbone 3e-05, rest 0.001 | 32 | 0.1 | 64 | none | none | 2 | fine-tuned |" in readme
    t1 = (work / "reports" / "tables" / "table1.md").read_text()
    assert ("Produced by profile cpu-real (not the paper's setting); text: tiny-random-bert, "
            "fine-tuned end to end in pase, self_mm; frozen vectors of source features: MMSA") in t1
    t2 = (work / "reports" / "tables" / "table2.md").read_text()  # IEMOCAP: no raw text
    assert ("Produced by profile cpu-real (not the paper's setting); text: frozen vectors of "
            "source features: MulT") in t2
    # real data: the paper's numbers sit beside ours, in their own rows only
    assert "| PaSE | published | 86.40/88.32 |" in t1 and "| PaSE (pase) | rerun here |" in t1
    metrics = json.loads((work / "reports" / "metrics.json").read_text())
    assert not metrics["mosi"]["synthetic"] and "acc2_non0" in metrics["mosi"]["pase"]


def test_each_run_records_what_ran(rehearsal):
    work, _ = rehearsal

    def m(ds, v, seed=1):
        return json.loads((work / "data" / "runs" / ds / v / f"seed{seed}" / "metrics.json").read_text())

    s = m("mosi", "pase")["settings"]
    assert s["profile"] == "cpu-real" and s["text"]["finetune"] and s["text"]["pooling"] == "mean"
    assert s["text"]["encoder"] == "tiny-random-bert" and s["train"]["lr_parts"]["text"] == 3e-5
    assert (s["train"]["lr"], s["train"]["epochs"], s["train"]["batch_size"]) == (1e-3, 2, 32)
    tfn = m("mosi", "tfn")["settings"]
    assert not tfn["text"]["finetune"] and tfn["train"]["lr_parts"]["text"] is None
    assert m("mosi", "self_mm")["settings"]["text"]["finetune"]
    iem = m("iemocap", "pase")
    assert not iem["settings"]["text"]["finetune"] and "no raw text" in iem["notes"][0]
    assert m("iemocap", "self_mm")["status"] == "not applicable"
    # the fine-tuned encoder is in the kept model; the frozen baseline has none
    import torch
    state = torch.load(work / "data" / "runs" / "mosi" / "pase" / "seed0" / "model.pt")["state_dict"]
    assert any(k.startswith("encoders.text.bert.") for k in state)
    state = torch.load(work / "data" / "runs" / "mosi" / "tfn" / "seed0" / "model.pt")["state_dict"]
    assert not any(".bert." in k for k in state)
