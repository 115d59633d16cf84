"""Files that belong together (pipeline/data/belong.py): a stage run directly refuses inputs made
for another dataset, from other files or under other settings than it is asked for, and the text
emptiness check runs on what the model reads. Each case names the file, what it records and what
was asked, and writes nothing."""
import json
import logging
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline import paths, train_stage
from pipeline.settings import load_config
from pipeline.data.store import read_attrs
from pipeline.errors import DataError
from pipeline.stages import align, download, embed
from tests.helpers import mmsa_data, mmsa_split, project, user_file, write_params

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = {"variants": ["late_fusion"], "train": {"epochs": 1}}


def refused(call, *patterns) -> str:
    with pytest.raises(DataError) as e:
        call()
    for p in patterns:
        assert re.search(p, str(e.value)), (p, str(e.value))
    return str(e.value)


def reload(overrides):
    write_params(Path("params.yaml"), overrides)
    return load_config("params.yaml")


# --- emptiness on what the model reads -------------------------------------------------------------

def test_embed_refuses_text_that_empty_raw_text_leaves_empty(tmp_path, monkeypatch):
    raw = mmsa_data(aligned=False)
    raw["train"]["raw_text"][:3] = ""  # 3 of 5: the attention mask (what align counts) is full
    cfg, _ = project(tmp_path, monkeypatch, raw)
    download(cfg, "mosi")
    align(cfg, "mosi")
    assert read_attrs(paths.aligned_store("mosi"))["ingest"]["empty"]["train"]["text"] == 0
    refused(lambda: embed(cfg, "mosi"), re.escape(
        "data/embedded/mosi.h5 (text of data/aligned/mosi.h5): split 'train': 'text_len' is 0 "
        "for 3 of 5 utterances (60.0%): the text modality is empty there, more than "
        "data.max_empty_fraction = 0.1"), "'raw_text' is empty there")
    assert not paths.text_features("mosi").exists()  # nothing half-written


def test_embed_warns_below_the_fraction_and_records_the_counts(tmp_path, monkeypatch, caplog):
    raw = mmsa_data(aligned=False)
    raw["train"]["raw_text"][:1] = ""
    cfg, _ = project(tmp_path, monkeypatch, raw, data={"max_empty_fraction": 0.5})
    download(cfg, "mosi"), align(cfg, "mosi")
    with caplog.at_level(logging.WARNING):
        embed(cfg, "mosi")
    assert "split 'train': 'text_len' is 0 for 1 of 5 utterances (20.0%)" in caplog.text
    assert read_attrs(paths.text_features("mosi"))["empty"]["train"] == {"text_len": 1}


def test_embed_refuses_empty_token_ids_beside_the_sources_own_vectors(tmp_path, monkeypatch):
    raw = mmsa_data(aligned=True)  # frozen text: the file's BERT vectors; fine-tuned: raw_text
    raw["valid"]["raw_text"][:2] = ""
    _, pkl = project(tmp_path, monkeypatch, raw, name="aligned_50.pkl")
    cfg = reload({"datasets": ["mosi"], "text": {"finetune": True}, "data": {"mosi": {
        "source": "mmsa", "path": str(pkl), "allow_unverified_pickle": True}}})
    download(cfg, "mosi"), align(cfg, "mosi")
    refused(lambda: embed(cfg, "mosi"), re.escape(
        "split 'valid': 'text_bert[:, 1] (attention mask)' is 0 for 2 of 3 utterances"))
    assert not paths.text_features("mosi").exists()


# --- align: the raw folder -------------------------------------------------------------------------

def test_align_refuses_a_raw_folder_of_another_dataset(tiny_project):
    cfg = tiny_project(datasets=())
    download(cfg, "mosei")
    shutil.copytree(paths.raw_dir("mosei"), paths.raw_dir("mosi"))
    refused(lambda: align(cfg, "mosi"), re.escape(
        "data/raw/mosi/source.json: records the download of dataset 'mosei', not 'mosi'"),
        re.escape("dvc repro download@mosi"))
    assert not paths.aligned_store("mosi").exists()


@pytest.mark.parametrize("change, says", [
    ({"synthetic": {"snr": {"text": 1.0}}},
     "synthetic.snr.text: 2.0 in the file, 1.0 in params.yaml"),
    ({"data": {"mosi": {"synthetic_scale": 0.03}}},
     "data.mosi.synthetic_scale: null in the file, 0.03 in params.yaml"),
])
def test_align_refuses_a_raw_folder_made_under_other_settings(tiny_project, change, says):
    tiny_project(datasets=())
    download(load_config("params.yaml"), "mosi")
    cfg = reload(change)
    refused(lambda: align(cfg, "mosi"), re.escape(
        "data/raw/mosi/source.json: the raw folder was made under other settings"), re.escape(says))
    assert not paths.aligned_store("mosi").exists()


def test_align_refuses_a_synthetic_file_replaced_after_download(tiny_project):
    tiny_project(datasets=())
    cfg = load_config("params.yaml")
    download(cfg, "mosi"), download(cfg, "mosei")
    shutil.copy(paths.raw_dir("mosei") / "synthetic.h5", paths.raw_dir("mosi") / "synthetic.h5")
    refused(lambda: align(cfg, "mosi"), re.escape(
        "data/raw/mosi/synthetic.h5: changed since the download stage hashed it"))


def test_align_refuses_a_pickle_path_changed_since_download(tmp_path, monkeypatch):
    cfg, pkl = project(tmp_path, monkeypatch, mmsa_data(aligned=False))
    download(cfg, "mosi")
    other = user_file("mosi", "other.pkl", mmsa_data(aligned=False, da=7))
    cfg = reload({"datasets": ["mosi"], "data": {"mosi": {
        "source": "mmsa", "path": str(other), "allow_unverified_pickle": True}}})
    refused(lambda: align(cfg, "mosi"), re.escape(
        f"data.mosi.path: {pkl} read by the download stage, {other} in params.yaml"))
    assert not paths.aligned_store("mosi").exists()


# --- embed and train: the aligned store ------------------------------------------------------------

def test_a_store_of_another_dataset_is_refused(tiny_project):
    cfg = tiny_project(FAST, datasets=("mosi", "mosei"))
    shutil.copy(paths.aligned_store("mosei"), paths.aligned_store("mosi"))
    says = re.escape("data/aligned/mosi.h5: holds dataset 'mosei' (its 'dataset' attribute), not 'mosi'")
    before = paths.text_features("mosi").read_bytes()
    refused(lambda: embed(cfg, "mosi"), says)
    assert paths.text_features("mosi").read_bytes() == before
    shutil.copy(paths.text_features("mosei"), paths.text_features("mosi"))  # both copied
    refused(lambda: train_stage.train_variant(cfg, "mosi", "late_fusion"), says)
    assert not any(paths.run_dir("mosi", "late_fusion").iterdir())


def test_a_store_whose_task_is_not_the_datasets_is_refused(tiny_project):
    cfg = tiny_project(FAST)
    with h5py.File(paths.aligned_store("mosi"), "r+") as f:  # attributes: outside the digest
        f.attrs["task"] = "classification"
    refused(lambda: train_stage.train_variant(cfg, "mosi", "late_fusion"), re.escape(
        "data/aligned/mosi.h5: its 'task' attribute is 'classification', but mosi is a "
        "regression dataset"))


@pytest.mark.parametrize("change, says", [
    ({"data": {"seq_len": 8}}, "data.seq_len: 50 in the file, 8 in params.yaml"),
    ({"data": {"max_empty_fraction": 0.3}}, "data.max_empty_fraction: 0.1 in the file, 0.3 in"),
    ({"data": {"mosi": {"synthetic_scale": 0.03}}}, "data.mosi.synthetic_scale: null in the file"),
    ({"synthetic": {"seed": 7}}, "synthetic.seed: 1234 in the file, 7 in params.yaml"),
])
def test_embed_and_train_refuse_a_store_made_under_other_settings(tiny_project, change, says):
    tiny_project(FAST)
    cfg = reload({**FAST, **change})
    for stage in (lambda: embed(cfg, "mosi"),
                  lambda: train_stage.train_variant(cfg, "mosi", "late_fusion")):
        refused(stage, re.escape("data/aligned/mosi.h5: made under other settings than params.yaml "
                                 "gives now"), re.escape(says), re.escape("dvc repro align@mosi"))


# --- train: the text features ----------------------------------------------------------------------

def test_train_refuses_text_embedded_from_another_aligned_store(tiny_project):
    tiny_project(FAST)
    cfg = reload({**FAST, "synthetic": {"seed": 99}})
    download(cfg, "mosi"), align(cfg, "mosi")  # aligned again; the old text features stay
    refused(lambda: train_stage.train_variant(cfg, "mosi", "late_fusion"), re.escape(
        "data/embedded/mosi.h5: was embedded from an aligned store with content"),
        re.escape("dvc repro embed@mosi"))


@pytest.mark.parametrize("change, says", [
    ({"text": {"encoder": "minilm"}}, "frozen vectors of tiny-random-bert, text.encoder is minilm"),
    ({"text": {"finetune": True, "max_tokens": 24}},
     "token ids cut at text.max_tokens = 16, params.yaml says 24"),
])
def test_train_refuses_text_made_with_other_text_settings(tiny_project, change, says):
    tiny_project(FAST)
    cfg = reload({**FAST, **change})
    refused(lambda: train_stage.train_variant(cfg, "mosi", "late_fusion"), re.escape(
        "data/embedded/mosi.h5: does not hold the text mosi/late_fusion reads"), re.escape(says))


def test_train_refuses_missing_token_ids_of_a_source_with_raw_text(tmp_path, monkeypatch):
    # MMSA's aligned file: embedded under text.finetune: false, the file's own vectors and no
    # token ids; a fine-tuning run must not be told "the source has no raw text"
    cfg, _ = project(tmp_path, monkeypatch, mmsa_data(aligned=True), name="aligned_50.pkl")
    download(cfg, "mosi"), align(cfg, "mosi"), embed(cfg, "mosi")
    cfg = reload({"datasets": ["mosi"], "text": {"finetune": True}, "data": {"mosi": {
        "source": "mmsa", "path": cfg.data.mosi.path, "allow_unverified_pickle": True}}})
    refused(lambda: train_stage.train_variant(cfg, "mosi", "late_fusion"), re.escape(
        "it holds no token ids (embedded with text.finetune: false) and late_fusion fine-tunes "
        "tiny-random-bert"))


def test_train_refuses_text_embedded_under_other_seq_len(tmp_path, monkeypatch):
    # an unaligned pickle: the store has no word length, the text is encoded at data.seq_len words
    cfg, pkl = project(tmp_path, monkeypatch, mmsa_data(aligned=False), data={"seq_len": 4})
    download(cfg, "mosi"), align(cfg, "mosi"), embed(cfg, "mosi")
    cfg = reload({"datasets": ["mosi"], "data": {"seq_len": 6, "mosi": {
        "source": "mmsa", "path": str(pkl), "allow_unverified_pickle": True}}})
    refused(lambda: train_stage.train_variant(cfg, "mosi", "late_fusion"), re.escape(
        "data/embedded/mosi.h5: text embedded at data.seq_len = 4 words, params.yaml says 6"))


# --- train: the seeds ------------------------------------------------------------------------------

def test_train_leaves_only_the_seeds_asked_for(tiny_project, caplog):
    tiny_project({**FAST, "seeds": [0, 1]})
    train_stage.train_variant(load_config("params.yaml"), "mosi", "late_fusion")
    assert (paths.seed_dir("mosi", "late_fusion", 1) / "model.pt").exists()
    run, curves = paths.run_dir("mosi", "late_fusion"), paths.curves_dir("mosi", "late_fusion", 0).parent
    shutil.copytree(run / "seed0", run / "seed0-copy")  # predict reads every seed*/model.pt
    cfg = reload({**FAST, "seeds": [0]})
    with caplog.at_level(logging.WARNING):
        train_stage.train_variant(cfg, "mosi", "late_fusion")
    assert sorted(p.name for p in run.iterdir()) == ["seed0"]
    assert sorted(p.name for p in curves.iterdir()) == ["seed0"]
    assert (f"mosi/late_fusion: removed the folders of seeds not in `seeds` [0]: "
            f"{run / 'seed0-copy'}, {run / 'seed1'}, {curves / 'seed1'}") in caplog.text


def test_a_not_applicable_seed_keeps_no_model_of_an_earlier_run(tiny_project):
    cfg = tiny_project({"datasets": ["iemocap"], "variants": ["self_mm"]}, datasets=("iemocap",))
    seed = paths.seed_dir("iemocap", "self_mm", 0)
    seed.mkdir(parents=True)
    (seed / "model.pt").write_bytes(b"an earlier run's model")
    (r,) = train_stage.train_variant(cfg, "iemocap", "self_mm")
    assert r["status"] == "not applicable"
    assert sorted(p.name for p in seed.iterdir()) == ["metrics.json"]


@pytest.mark.parametrize("recorded, settings, says", [
    ({"base_url": "http://mirror.example"}, {},
     "data.mosi.cmu_base_url: http://mirror.example read by the download stage, "
     "http://immortal.multicomp.cs.cmu.edu in params.yaml"),
    ({"local": {"words": "data/user/mosi/old/CMU_MOSI_TimestampedWords.csd"}},
     {"path": "data/user/mosi/new"},
     "data.mosi.path: data/user/mosi/old/CMU_MOSI_TimestampedWords.csd read by the download "
     "stage, the folder data/user/mosi/new in params.yaml"),
])
def test_align_refuses_cmu_files_from_another_place(tmp_path, monkeypatch, recorded, settings, says):
    monkeypatch.chdir(tmp_path)
    cfg = reload({"datasets": ["mosi"], "data": {"mosi": {"source": "cmu", **settings}}})
    paths.raw_dir("mosi").mkdir(parents=True)
    (paths.raw_dir("mosi") / "source.json").write_text(json.dumps(
        {"dataset": "mosi", "source": "cmu", "synthetic": False, "files": {}, **recorded}))
    refused(lambda: align(cfg, "mosi"), re.escape(says), re.escape("dvc repro download@mosi"))


def test_align_refuses_a_pickle_of_another_dataset(tmp_path, monkeypatch):
    # MOSI's published split sizes, given as MOSEI (the two share MMSA's layout); small features
    sizes = {"train": 1284, "valid": 229, "test": 686}
    rng = np.random.default_rng(0)
    raw = {s: mmsa_split(n, rng, aligned=False, split=s) for s, n in sizes.items()}
    for s, n in sizes.items():
        raw[s]["text"] = raw[s]["text"][:, :, :4]
    cfg, pkl = project(tmp_path, monkeypatch, raw, ds="mosei")
    download(cfg, "mosei")
    refused(lambda: align(cfg, "mosei"), re.escape(
        f"{pkl}: split sizes {sizes} are mosi's ({sizes}), not mosei's"),
        re.escape("Give it as data.mosi.path"))
    assert not paths.aligned_store("mosei").exists()


def test_embed_and_train_refuse_a_store_aligned_before_the_last_download(tmp_path, monkeypatch):
    cfg, pkl = project(tmp_path, monkeypatch, mmsa_data(aligned=False))
    download(cfg, "mosi"), align(cfg, "mosi"), embed(cfg, "mosi")
    user_file("mosi", pkl.name, mmsa_data(aligned=False, da=7))  # another file, same path
    download(cfg, "mosi")
    for stage in (lambda: embed(cfg, "mosi"),
                  lambda: train_stage.train_variant(cfg, "mosi", "late_fusion")):
        refused(stage, rf"data/aligned/mosi\.h5: was aligned from {pkl} \(sha256 [0-9a-f]{{12}}\.\.\.\), "
                rf"but data/raw/mosi/source\.json records {pkl} \(sha256 [0-9a-f]{{12}}\.\.\.\) "
                r"\(downloaded again since\)", re.escape("dvc repro align@mosi"))


def test_train_refuses_text_checked_under_another_empty_fraction(tiny_project):
    tiny_project(FAST)
    cfg = reload({**FAST, "data": {"max_empty_fraction": 0.3}})
    align(cfg, "mosi")  # the same arrays (the same content digest), checked under 0.3
    refused(lambda: train_stage.train_variant(cfg, "mosi", "late_fusion"), re.escape(
        "data/embedded/mosi.h5: its text was checked under data.max_empty_fraction = 0.1, "
        "params.yaml says 0.3"))


@pytest.mark.parametrize("change", [{"synthetic": {"kind": "redundant"}},
                                    {"data": {"mosi": {"source": "mmsa"}}}])
def test_download_leaves_no_oracle_of_an_earlier_download(tmp_path, monkeypatch, change):
    monkeypatch.chdir(tmp_path)
    download(reload({}), "mosi")  # complementary synthetic data: the report reads its oracle
    assert (paths.raw_dir("mosi") / "oracle.json").exists()
    if "data" in change:
        pkl = user_file("mosi", "unaligned_50.pkl", mmsa_data(aligned=False))
        change = {"data": {"mosi": {"source": "mmsa", "path": str(pkl),
                                    "allow_unverified_pickle": True}}}
    download(reload(change), "mosi")
    assert sorted(p.name for p in paths.raw_dir("mosi").iterdir()) == (
        ["source.json", "synthetic.h5"] if "synthetic" in change else ["source.json"])
