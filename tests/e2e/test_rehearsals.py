"""Dress rehearsals of the real-data profiles, on CPU, one test parametrised by profile: the command
a user runs, `dvc exp run -S profile=<profile>`, plus only the profile's named size overrides (a
tiny random BERT, 2 epochs, 2 seeds; the inputs are tiny real-format files), through every stage to
the report.

Sources in their real formats (builders in tests/helpers.py): an MMSA aligned pickle for MOSI, an
MMSA unaligned pickle for MOSEI, MulT's IEMOCAP pickle (GloVe text: no raw text, so the no-raw-text
rule applies). The scratch params.yaml configures those sources and the variant list (which
experiments run is not a profile setting), so every train stage starts a process: the whole matrix
through dvc would take ~8 min on 2 cores.

- paper (the command a user runs on a GPU): pase (fine-tuned BERT, frozen source text on IEMOCAP),
  tfn (its own MMSA/TFN row, frozen BERT vectors), self_mm (per-part learning rates; n/a on
  IEMOCAP) and mag_bert (n/a on IEMOCAP: nothing to tokenise).
- cpu-real (the command a user with MMSA's or MulT's files runs): MOSI (raw text: MiniLM's
  stand-in is fine-tuned from its tokens) and IEMOCAP (the frozen-text rule applies); pase
  (fine-tuned), tfn (a frozen-text baseline) and self_mm (a fine-tuning baseline; n/a on IEMOCAP).
  MOSEI is left out to keep the run short: the paper rehearsal covers its unaligned pickle, and
  nothing in the profile depends on the dataset.

The last test trains every variant on every dataset in-process under the paper profile, so no
method escapes the rehearsal.
"""
import json
import time

import pytest
import yaml

from tests.helpers import make_repo, real_format_params, run

pytestmark = pytest.mark.slow

# per profile: the scratch params.yaml (variants, datasets, device) and the size overrides
PROFILES = {
    "paper": {
        "variants": ["pase", "tfn", "self_mm", "mag_bert"],
        "datasets": None,  # the shipped three
        "device": "cpu",  # the explicit choice the preflight asks for without a GPU
        "size": ["-S", "paper.epochs=2", "-S", "paper.text_encoder=tiny-random-bert",
                 "-S", "seeds=[0,1]"],
    },
    "cpu-real": {
        "variants": ["pase", "tfn", "self_mm"],
        "datasets": ["mosi", "iemocap"],
        "device": "auto",  # the profile needs no device setting: it is a CPU profile
        "size": ["-S", "cpu_real.epochs=2", "-S", "cpu_real.text_encoder=tiny-random-bert",
                 "-S", "seeds=[0,1]"],
    },
}

# what each profile's rehearsal must show
EXPECTED = {
    "paper": {
        "stages": ("download@mosi", "download@mosei", "download@iemocap", "align@mosei",
                   "embed@iemocap", "train@mosi-pase", "train@mosei-tfn", "train@iemocap-pase",
                   "train@mosei-self_mm", "train@mosi-mag_bert", "figures", "report"),
        "section": "paper",  # its params section, as the size overrides name it
        "no_raw_text": 2,  # settings and Table 2's notes
        "tfn_row": "| tfn | mosei | 0.005 | 128 | 0.4 | 128 | none | 8 | 2 | frozen |",
        "real": ("mosi", "mosei", "iemocap"),  # metrics.json: not synthetic
        "na_on_iemocap": "mag_bert",
    },
    "cpu-real": {
        "stages": ("download@mosi", "embed@mosi", "embed@iemocap", "configure", "train@mosi-pase",
                   "train@mosi-tfn", "train@mosi-self_mm", "train@iemocap-pase", "figures", "report"),
        "section": "cpu_real",
        "no_raw_text": 1,
        "tfn_row": "| tfn | mosi | 0.001 | 32 | 0.1 | 64 | none | none | 2 | frozen |",
        "real": ("mosi",),
        "na_on_iemocap": "self_mm",
    },
}


@pytest.fixture(scope="module", params=list(PROFILES))
def rehearsal(request, tmp_path_factory):
    """(profile, scratch repository, the `dvc exp run` process) of one profile's rehearsal."""
    profile, p = request.param, PROFILES[request.param]
    work = tmp_path_factory.mktemp(profile.replace("-", "_"))
    params = real_format_params(work, p["variants"])
    if p["datasets"] is not None:
        params["datasets"] = p["datasets"]
    params["train"]["device"] = p["device"]
    make_repo(work, params=params)
    started = time.perf_counter()
    exp = run(["dvc", "exp", "run", "-S", f"profile={profile}", *p["size"]], work)
    print(f"\n{profile}-profile rehearsal through dvc: {time.perf_counter() - started:.0f} s")
    return profile, work, exp


def test_every_stage_runs_to_a_report_that_names_the_profile(rehearsal):
    profile, work, exp = rehearsal
    want = EXPECTED[profile]
    for stage in want["stages"]:
        assert f"Running stage '{stage}'" in exp.stdout, stage
    readme = (work / "reports" / "README.md").read_text()
    assert f"Profile: {profile}" in readme and f"The {profile} profile" in readme
    section = want["section"]
    assert f"{section}.epochs=2" in readme and f"{section}.text_encoder=tiny-random-bert" in readme
    assert readme.count("iemocap: the source has no raw text") >= want["no_raw_text"]
    assert want["tfn_row"] in readme
    metrics = json.loads((work / "reports" / "metrics.json").read_text())
    assert not any(metrics[ds]["synthetic"] for ds in want["real"])
    assert "acc2_non0" in metrics["mosi"]["pase"]
    if profile == "paper":
        detail = json.loads((work / "reports" / "metrics_detail.json").read_text())
        assert detail["mosi"]["pase"]["summary"]["seeds"] == 2
    if profile == "cpu-real":
        assert "Text encoder: tiny-random-bert, fine-tuned end to end by the methods whose row" in readme
        assert "| pase | mosi | text backbone 3e-05, rest 0.001 | 32 | 0.1 | 64 | none | none | 2 | fine-tuned |" in readme
        t1 = (work / "reports" / "tables" / "table1.md").read_text()
        assert ("Produced by profile cpu-real (not the paper's setting); text: tiny-random-bert, "
                "fine-tuned end to end in pase, self_mm; frozen vectors of source features: MMSA") in t1
        t2 = (work / "reports" / "tables" / "table2.md").read_text()  # IEMOCAP: no raw text
        assert ("Produced by profile cpu-real (not the paper's setting); text: frozen vectors of "
                "source features: MulT") in t2
        # real data: the paper's numbers sit beside ours, in their own rows only
        assert "| PaSE | published | 86.40/88.32 |" in t1 and "| PaSE (pase) | rerun here |" in t1


def test_each_run_records_what_ran(rehearsal):
    profile, work, _ = rehearsal
    runs = work / "data" / "runs"

    def m(ds, v, seed=1):
        return json.loads((runs / ds / v / f"seed{seed}" / "metrics.json").read_text())

    s = m("mosi", "pase")["settings"]
    assert s["profile"] == profile and s["text"]["finetune"] and s["text"]["encoder"] == "tiny-random-bert"
    iem = m("iemocap", "pase")
    assert not iem["settings"]["text"]["finetune"] and "no raw text" in iem["notes"][0]
    assert m("iemocap", EXPECTED[profile]["na_on_iemocap"])["status"] == "not applicable"
    if profile == "paper":
        assert (s["train"]["lr"], s["train"]["batch_size"], s["train"]["hidden"], s["train"]["epochs"]) == (1e-5, 64, 328, 2)
        tfn = m("mosei", "tfn")["settings"]
        assert (tfn["train"]["lr"], tfn["train"]["batch_size"], tfn["text"]["finetune"]) == (5e-3, 128, False)
        assert tfn["model_args"]["sizes"] == {"text": 128, "audio": 32, "vision": 32}
        assert m("mosi", "self_mm")["settings"]["train"]["lr_parts"]["text"] == 5e-5
    if profile == "cpu-real":
        assert s["text"]["pooling"] == "mean" and s["train"]["lr_parts"]["text"] == 3e-5
        assert (s["train"]["lr"], s["train"]["epochs"], s["train"]["batch_size"]) == (1e-3, 2, 32)
        tfn = m("mosi", "tfn")["settings"]
        assert not tfn["text"]["finetune"] and tfn["train"]["lr_parts"]["text"] is None
        assert m("mosi", "self_mm")["settings"]["text"]["finetune"]
        # the fine-tuned encoder is in the kept model; the frozen baseline has none
        import torch
        state = torch.load(runs / "mosi" / "pase" / "seed0" / "model.pt")["state_dict"]
        assert any(k.startswith("encoders.text.bert.") for k in state)
        state = torch.load(runs / "mosi" / "tfn" / "seed0" / "model.pt")["state_dict"]
        assert not any(".bert." in k for k in state)


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
