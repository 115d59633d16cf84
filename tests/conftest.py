import copy
import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# Models load from disk only; nothing in the tests may reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_PARAMS = {
    "datasets": ["mosi"],
    "seeds": [0],
    "variants": ["pase", "late_fusion"],
    "synthetic": {"scale": 0.02},
    "data": {d: {"synthetic_scale": None} for d in ("mosi", "mosei", "iemocap")},
    "text": {"encoder": "tiny-random-bert", "max_tokens": 16},
    # workers 1: tests patch train functions in-process; tests/test_workers.py runs seeds in parallel
    "train": {"epochs": 3, "batch_size": 16, "hidden": 16, "device": "cpu", "workers": 1},
    "sgm": {"start_epoch": 2},  # within the 3 epochs: SGM acts (config_checks refuses otherwise)
}


def merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write_params(path, overrides=None):
    """The repository's params.yaml (DVC wants every declared key present) with the tiny
    settings above and then `overrides` merged in."""
    params = merge(merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY_PARAMS),
                   overrides or {})
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def make_user_dirs(work):
    """data/user/<dataset>/ as a fresh checkout has it (a .gitkeep each): the download stages
    depend on these folders, where users keep their own files."""
    for ds in ("mosi", "mosei", "iemocap"):
        d = Path(work) / "data" / "user" / ds
        d.mkdir(parents=True, exist_ok=True)
        (d / ".gitkeep").touch()
    (Path(work) / "data" / "user" / ".gitignore").write_bytes((ROOT / "data/user/.gitignore").read_bytes())


@pytest.fixture
def one_thread():
    """Tiny models: one torch thread is fastest, and two threads on a busy 2-core machine can be
    many times slower than one. Modules opt in with `pytestmark = usefixtures("one_thread")`."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_project(tmp_path, monkeypatch):
    """A working directory with a tiny params.yaml whose data stages have run for mosi."""
    from pipeline.settings import load_config
    from pipeline.stages import align, download, embed

    monkeypatch.chdir(tmp_path)

    def make(overrides=None, datasets=("mosi",)):
        write_params(tmp_path / "params.yaml", overrides)
        cfg = load_config(tmp_path / "params.yaml")
        for ds in datasets:
            download(cfg, ds)
            align(cfg, ds)
            embed(cfg, ds)
        return cfg

    return make
