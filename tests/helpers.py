"""What several test modules share: plain functions and constants (fixtures live in conftest.py).
No test module imports another test module; each imports what it shares from here. Imports of the
pipeline, torch, transformers and mmsdk are inside the functions that need them, so that
collecting any test module stays cheap."""
from __future__ import annotations

import copy
import hashlib
import http.server
import json
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from tests.csd_fixtures import quiet

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# tiny params.yaml and a fresh checkout's folders

TINY_PARAMS = {
    "datasets": ["mosi"],
    "seeds": [0],
    "variants": ["pase", "late_fusion"],
    "synthetic": {"scale": 0.02},
    "data": {d: {"synthetic_scale": None} for d in ("mosi", "mosei", "iemocap")},
    "text": {"encoder": "tiny-random-bert", "max_tokens": 16},
    # workers 1: tests patch train functions in-process; tests/train/test_workers.py runs seeds in parallel
    "train": {"epochs": 3, "batch_size": 16, "hidden": 16, "device": "cpu", "workers": 1},
    "sgm": {"start_epoch": 2},  # within the 3 epochs: SGM acts (config_checks refuses otherwise)
}


def documentation() -> str:
    """The README and every reference page under docs/, as one text (what a reader can find)."""
    return "\n".join(f.read_text() for f in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


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


# ---------------------------------------------------------------------------------------------
# real `dvc` in a scratch git copy


def run(cmd, cwd, check=True):
    env = dict(os.environ, DVC_NO_ANALYTICS="1", HF_HUB_OFFLINE="1", PIPELINE_LOG="WARNING")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    return p


def make_repo(work, overrides=None, params: dict | None = None):
    """A scratch git + DVC copy of the repository in `work`, committed, with tiny params and
    `overrides` (or, with `params`, exactly that params.yaml)."""
    work.mkdir(parents=True, exist_ok=True)
    for name in ("pipeline", "dvc.yaml", ".dvcignore", ".gitignore"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, work / name)
    make_user_dirs(work)
    if params is None:
        write_params(work / "params.yaml", overrides)
    else:
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], work)
    run(["git", "config", "user.email", "ci@example.com"], work)
    run(["git", "config", "user.name", "ci"], work)
    run(["dvc", "init", "-q"], work)
    run(["git", "add", "-A"], work)
    run(["git", "commit", "-qm", "scratch copy"], work)
    return work


def snapshot(work: Path) -> dict[str, str]:
    out = {}
    for root in ("data/runs", "reports"):
        for f in sorted((work / root).rglob("*")):
            rel = f.relative_to(work).as_posix()
            if (f.is_file() and "/live/" not in rel and f.name != "timing.json"
                    and not f.name.startswith("efficiency.") and rel != "reports/README.md"):
                out[rel] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def env(**extra):
    e = dict(os.environ, DVC_NO_ANALYTICS="1", HF_HUB_OFFLINE="1", **extra)
    e["PATH"] = str(Path(sys.executable).parent) + os.pathsep + e.get("PATH", "")
    return e


# ---------------------------------------------------------------------------------------------
# MMSA and MulT pickles with exactly the documented keys

SIZES = {"train": 5, "valid": 3, "test": 4}
L = 6


def mmsa_split(n: int, rng, *, aligned: bool, da=5, dv=20, split="train") -> dict:
    la, lv = (L, L) if aligned else (9, 7)
    mask_len = rng.integers(2, L + 1, size=n)
    bert = np.zeros((n, 3, L))
    for i, k in enumerate(mask_len):
        bert[i, 0, :k] = rng.integers(100, 2000, size=k)
        bert[i, 1, :k] = 1
    audio = rng.standard_normal((n, la, da)).astype(np.float32)
    vision = rng.standard_normal((n, lv, dv)).astype(np.float32)
    if aligned:  # rows at token positions: zero beyond the attention mask, as MMSA's files
        beyond = np.arange(L)[None, :] >= mask_len[:, None]
        audio[beyond], vision[beyond] = 0, 0
    audio[0, 0, :2] = -np.inf  # COVAREP's log energy of silence
    d = {
        "raw_text": np.array([f"utterance {i}" for i in range(n)]),
        "id": np.array([f"{split}vid{i}$_${i}" for i in range(n)]),  # ids are unique across splits
        "text": rng.standard_normal((n, L, 768)).astype(np.float32),
        "text_bert": bert,
        "audio": audio,
        "vision": vision,
        "regression_labels": rng.uniform(-3, 3, size=n).astype(np.float32),
    }
    d["regression_labels"][:2] = [-1.5, 1.5]  # both signs in every split (scorable)
    if not aligned:
        d["audio_lengths"] = rng.integers(1, la + 1, size=n)
        d["vision_lengths"] = rng.integers(1, lv + 1, size=n)
    return d


def mmsa_data(aligned=True, **kw) -> dict:
    rng = np.random.default_rng(0)
    return {s: mmsa_split(n, rng, aligned=aligned, split=s, **kw) for s, n in SIZES.items()}


def padded(rng, n, length, dim):
    """Front-padded like MulT: the last `k_i` steps hold (nonzero) features."""
    a = np.zeros((n, length, dim), dtype=np.float32)
    lens = rng.integers(1, length + 1, size=n)
    for i, k in enumerate(lens):
        a[i, length - k:] = rng.uniform(0.5, 1.0, size=(k, dim))
    return a, lens


def mult_data(dataset="mosi", sizes=SIZES, aligned=False) -> tuple[dict, dict]:
    """A MulT pickle (aligned: one number of steps for all three, as iemocap_data.pkl; else text 6,
    audio 8, vision 7 steps, as a *_noalign.pkl) and the true lengths of each split's modalities."""
    la, lv = (L, L) if aligned else (8, 7)
    rng = np.random.default_rng(1)
    da, dv = (5, 20) if dataset == "mosi" else (74, 35)
    data, lens = {}, {}
    for split, n in sizes.items():
        text, lt = padded(rng, n, L, 300)
        audio, la_ = padded(rng, n, la, da)
        vision, lv_ = padded(rng, n, lv, dv)
        audio[0, -1, 0] = -np.inf
        vision[0, -1, 1] = np.nan
        d = {"text": text, "audio": audio, "vision": vision}
        if dataset == "iemocap":
            pos = rng.integers(0, 2, size=(n, 4))
            pos[0], pos[1] = 0, 1  # both classes of every emotion in every split (scorable)
            d["labels"] = np.eye(2, dtype=np.float32)[pos]  # (N, 4, 2) one-hot
            lens[split] = {"pos": pos}
        else:
            d["labels"] = rng.uniform(-3, 3, size=(n, 1, 1)).astype(np.float32)
            d["labels"][:2, 0, 0] = [-1.5, 1.5]  # both signs in every split (scorable)
            d["id"] = np.array([[f"{split}v{i}".encode(), b"0.0", b"1.5"] for i in range(n)])
            lens[split] = {}
        lens[split].update(text=lt, audio=la_, vision=lv_)
        data[split] = d
    return data, lens


def dump(path, obj):
    path.write_bytes(pickle.dumps(obj))
    return path


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def user_file(ds, name, data):
    """A pickle where users keep theirs: data/user/<ds>/ (the cwd is the project)."""
    from pipeline import paths

    folder = paths.user_dir(ds)
    folder.mkdir(parents=True, exist_ok=True)
    return dump(folder / name, data)


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


# ---------------------------------------------------------------------------------------------
# mmsdk's reference pipeline, the standard CMU tutorial recipe

MODS = ("COVAREP", "FACET")


def avg(intervals, features):
    """The tutorial's collapse function: mean of numeric features, the token itself for words."""
    try:
        return np.average(features, axis=0)
    except Exception:  # noqa: BLE001
        return features


def mmsdk_pipeline(paths: dict, monkeypatch) -> dict[str, dict]:
    """segment id -> {sequence name: (intervals, features) or None where mmsdk has no entry}."""
    import mmsdk.mmdatasdk as md  # the reference implementation

    with quiet():
        ds = md.mmdataset({name: str(paths[name]) for name in ("words", *MODS)})
        ds.align("words", collapse_functions=[avg])
        # mmsdk's impute indexes dict_keys ([0]), which fails on Python 3: run it with list keys
        with monkeypatch.context() as m:
            m.setattr(md.computational_sequence, "keys", lambda self: list(self.data.keys()))
            ds.impute("words")
        ds.add_computational_sequences({"labels": str(paths["labels"])}, destination=None)
        ds.align("labels")
    out = {}
    for key in ds["labels"].keys():
        out[key] = {}
        for name in ("labels", "words", *MODS):
            e = ds[name].data.get(key)
            out[key][name] = None if e is None else (e["intervals"][()], e["features"][()])
    return out


def reference_utterances(ref: dict, folds: dict, drop=("sp", "")) -> dict:
    """The tutorial's post-processing of `ref`, with our documented choices: drop silence word rows
    and the modality rows of those words, match modality rows to words by containment of their
    (clipped) interval in the word row's, zero-fill a word without a row, non-finite -> 0."""
    split_of = {v: s for s, vids in folds.items() for v in vids}
    out = {s: {"ids": [], "words": [], "COVAREP": [], "FACET": [], "labels": [],
               "nonfinite": dict.fromkeys(MODS, 0)} for s in folds}
    for key, seqs in ref.items():
        vid = key.split("[")[0]
        if vid not in split_of or seqs["words"] is None:
            continue
        w_iv, w_tok = seqs["words"]
        tokens = [t.decode() for t in w_tok[:, 0]]
        keep = [i for i, t in enumerate(tokens) if t.strip() not in drop]
        if not keep:
            continue
        o = out[split_of[vid]]
        for name in MODS:
            rows = np.zeros((len(keep), o_dim(ref, name)))
            if seqs[name] is not None:
                iv, feat = seqs[name]
                for r, i in enumerate(keep):
                    inside = np.flatnonzero((iv[:, 0] >= w_iv[i, 0] - 1e-9)
                                            & (iv[:, 1] <= w_iv[i, 1] + 1e-9))
                    assert len(inside) <= 1
                    if len(inside):
                        rows[r] = feat[inside[0]]
            o["nonfinite"][name] += int(np.count_nonzero(~np.isfinite(rows)))
            o[name].append(np.where(np.isfinite(rows), rows, 0))
        o["ids"].append(key)
        o["words"].append([tokens[i] for i in keep])
        o["labels"].append(float(seqs["labels"][1][0, 0]))
    return out


def o_dim(ref: dict, name: str) -> int:
    return next(s[name][1].shape[1] for s in ref.values() if s[name] is not None)


# ---------------------------------------------------------------------------------------------
# an HTTP server on 127.0.0.1 (the `serve` fixture in conftest.py)


class FileHandler(http.server.BaseHTTPRequestHandler):
    """Serves files under `root`; subclasses set the behaviour flags below."""

    root: Path
    requests: list  # (path, Range header or None), one per request
    support_range = True
    drop_after: int | None = None  # send this many body bytes, then close the connection
    drops_left = 10**9  # how many responses are cut short

    def do_GET(self):
        cls = type(self)
        rng = self.headers.get("Range")
        cls.requests.append((self.path, rng))
        path = cls.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if rng and cls.support_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cls.drop_after is not None and cls.drops_left > 0:
            cls.drops_left -= 1
            self.wfile.write(body[: cls.drop_after])
            self.wfile.flush()
            self.close_connection = True  # the client sees fewer bytes than Content-Length
            return
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output quiet
        pass


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------------------------
# fake run directories for the report

SEEDS = [0, 1]
# quality of each fake variant: noise scale of its predictions (lower is better)
NOISE = {"pase": 0.6, "pase-no_sgm": 1.0, "pase-sum": 0.8, "pase-T": 0.9, "pase-A": 2.0,
         "pase-TA": 0.7, "mult": 1.1, "self_mm": 1.2}
N_TEST = {"mosi": 150, "mosei": 150, "iemocap": 120}


def _write_run(ds, v, seed, rng, synthetic, override=None):
    from pipeline.data.schema import IEMOCAP_EMOTIONS
    from pipeline.metrics import iemocap_metrics, regression_metrics

    d = Path("data/runs") / ds / v / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    if v == "self_mm" and ds == "iemocap":
        (d / "metrics.json").write_text(json.dumps(
            {"dataset": ds, "variant": v, "seed": seed, "status": "not applicable",
             "reason": "Self-MM generates unimodal regression labels; IEMOCAP is classification"}))
        return
    n = N_TEST[ds]
    ids = [f"{ds}-test-{i:05d}" for i in range(n)]
    lab_rng = np.random.default_rng(7)  # the same test set for every run
    if ds == "iemocap":
        labels = np.eye(4, dtype=int)[lab_rng.integers(0, 4, n)]
        scores = np.round((2 * labels - 1) * 1.0 + rng.normal(0, NOISE.get(v, 1.0), (n, 4)), 6)
        test = iemocap_metrics(scores, labels)
        rows = ["id," + ",".join(f"{e}_score" for e in IEMOCAP_EMOTIONS) + ","
                + ",".join(f"{e}_label" for e in IEMOCAP_EMOTIONS)]
        rows += [",".join([i] + [f"{s:.6f}" for s in sc] + [str(x) for x in lb])
                 for i, sc, lb in zip(ids[::-1], scores[::-1], labels[::-1])]  # order differs: ids align
    else:
        labels = np.round(lab_rng.uniform(-3, 3, n) * 3) / 3
        preds = np.round(labels + rng.normal(0, NOISE.get(v, 1.0), n), 6)
        test = regression_metrics(preds, labels)
        rows = ["id,prediction,label"] + [f"{i},{p:.6f},{y:.6f}" for i, p, y in zip(ids, preds, labels)]
    test.update(override or {})
    (d / "predictions.csv").write_text("\n".join(rows) + "\n")
    (d / "metrics.json").write_text(json.dumps(
        {"dataset": ds, "variant": v, "seed": seed, "synthetic": synthetic, "model": v,
         "best_epoch": 3, "epochs": 5, "phase2_epoch": 4, "valid": {}, "test": test,
         "params": 1000 + len(v), "text_encoder": "minilm"}))
    (d / "timing.json").write_text(json.dumps({"train_seconds_this_process": 10.0 + seed,
                                               "device": "cpu"}))


# ---------------------------------------------------------------------------------------------
# models and training


def tiny_bert(seed=0):
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    return BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, vocab_size=30522))


def die_after_epoch(monkeypatch, epoch, seed=None):
    from pipeline import train

    real = train._save_checkpoint

    def save_then_die(path, model, optim, state):
        real(path, model, optim, state)
        if state["epoch"] == epoch and (seed is None or f"seed{seed}-" in str(path)):
            raise KeyboardInterrupt(f"killed after epoch {epoch}")

    monkeypatch.setattr(train, "_save_checkpoint", save_then_die)
    return real


def project(tmp_path, monkeypatch, contents, name="unaligned_50.pkl", source="mmsa", ds="mosi", **dcfg):
    """A project in `tmp_path` (the cwd) whose `ds` is the pickle `contents` at data/user/<ds>/."""
    from pipeline.settings import load_config
    monkeypatch.chdir(tmp_path)
    pkl = user_file(ds, name, contents)
    extra = dcfg.pop("data", {})
    write_params(tmp_path / "params.yaml", {"datasets": [ds], "data": {**extra, ds: {
        "source": source, "path": str(pkl), "allow_unverified_pickle": True, **dcfg}}})
    return load_config("params.yaml"), pkl
