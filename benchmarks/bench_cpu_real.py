"""The cpu-real profile's CPU budget (issue 18): per-seed wall time of representative variants on
synthetic data of MOSI's real split sizes, projected to the whole matrix of MOSI, MOSEI, IEMOCAP.

    python benchmarks/bench_cpu_real.py OUT.json [--scale 1.0] [--epochs 1]
                                       [--variants pase cpsl tfn mult pase-AV]

What runs: the pipeline's own stages, in-process, in a scratch folder: params.yaml as shipped with
`profile: cpu-real`, `cpu_real.allow_synthetic: true` (the profile refuses synthetic data
otherwise) and `cpu_real.synthetic_scale: --scale` (1.0: MOSI's 1284 / 229 / 686 utterances);
download, align and embed (timed), then one seed of each variant with `train.num_threads: 1`,
one torch thread per process as the pipeline runs its seeds. To stay short, a seed trains
`--epochs` epochs (`cpu_real.epochs`) instead of the profile's 4; every forward-only pass
(validation each epoch, test, the probe features of train and test) is timed on its own, so

    seed (4 epochs) = 4 x (measured train epoch) + forward passes of 4 validations, the test and
    the probes, each at the measured seconds per utterance.

The projection scales these by each dataset's utterances (train for an epoch, the split for a
forward pass; the synthetic utterances have 6-20 words, MOSI's length) and counts the matrix of
params.yaml's `variants` under the profile: which variants fine-tune MiniLM (text among their
modalities and their method's row `finetune_bert`), which keep frozen vectors. A variant costs
what it measured; the variants not measured cost their representative's: `pase` for the other
fine-tuned PaSE variants (ablations, fusions, T/TA/TV: the encoder dominates), `pase-AV` for PaSE
without text. CP+SL's penalty acts in the first half of the run (cp.end 0.5) with extra backward
passes, so CP+SL is measured over 2 epochs (one with, one without: the profile's 2 of 4). SGM's
phase 2 (epochs 3-4) is not in a 1-epoch measurement; it costs 1.01x a phase-1 step
(benchmarks/bench_sgm.py), within the noise here. IEMOCAP's real source (MulT's pickle) has no raw
text, so every IEMOCAP run keeps frozen text features (pipeline/profiles.py, `text_rule`): a
PaSE-backbone or CP+SL run there costs PaSE without text x 1.5 (three encoders instead of two);
Self-MM does not apply to it. Wall time: the stages one after another, the five seeds of a stage
on `--workers` processes (ceil(5 / workers) rounds of one seed each), each process one thread.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROFILE_EPOCHS = 4
VARIANTS = ("pase", "pase-ogm_ge", "pase-mmpareto", "self_mm", "cpsl", "pase-AV", "late_fusion",
            "ef_lstm", "tfn", "lmf", "mult")


def cost(v: str, vcfg, raw_text: bool, seconds: dict) -> tuple[float, str]:
    """One seed of variant `v` (its config `vcfg`) from the measured `seconds` per variant, and
    what it was taken from."""
    text = "text" in vcfg.modalities
    if text and not raw_text and vcfg.model in ("pase", "cpsl"):
        return 1.5 * seconds["pase-AV"], "pase-AV x 1.5 (frozen text)"
    if v in seconds:
        return seconds[v], v
    if vcfg.model == "pase":
        rep = "pase" if text else "pase-AV"
        return seconds[rep], rep
    raise KeyError(f"no measurement for {v!r}: add it to --variants")


def measure(args) -> dict:
    import torch
    import yaml

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from pipeline import paths, train
    from pipeline import train_stage
    from pipeline.settings import load_config
    from pipeline.stages import align, download, embed
    from pipeline.variants import VARIANTS as VARIANTS_CFG

    def config(epochs: int):
        raw = yaml.safe_load((REPO / "params.yaml").read_text())
        raw.update(profile="cpu-real", datasets=["mosi"], seeds=[0], variants=list(args.variants))
        raw["cpu_real"].update(allow_synthetic=True, epochs=epochs,
                               synthetic_scale=None if args.scale == 1.0 else args.scale)
        raw["train"].update(device="cpu", num_threads=1, workers=1)
        Path("params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        return load_config("params.yaml")

    cfg = config(args.epochs)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    download(cfg, "mosi"), align(cfg, "mosi")
    t1 = time.perf_counter()
    embed(cfg, "mosi")
    t2 = time.perf_counter()
    from pipeline.data.store import StoreDataset
    sizes = {s: len(StoreDataset(paths.aligned_store("mosi"), s, text_file=paths.text_features("mosi"),
                                 modalities=("audio",))) for s in ("train", "valid", "test")}

    calls = []  # (split, utterances, seconds) of every forward-only pass
    real_predict = train.predict

    def timed_predict(model, data, *a, **kw):
        t = time.perf_counter()
        out = real_predict(model, data, *a, **kw)
        calls.append((data.split, len(data), time.perf_counter() - t))
        return out

    train.predict = timed_predict
    runs = {}
    try:
        for v in args.variants:
            # CP+SL's penalty: the first half of the run (see the module's docstring)
            epochs = max(args.epochs, 2) if VARIANTS_CFG[v].get("balancer") == "cp" else args.epochs
            vcfg = config(epochs) if epochs != args.epochs else cfg
            calls.clear()
            t = time.perf_counter()
            (r,) = train_stage.train_variant(vcfg, "mosi", v)
            seed_s = time.perf_counter() - t
            fwd_s = sum(c[2] for c in calls)
            fwd_n = sum(c[1] for c in calls)
            probe = any(c[0] == "train" for c in calls)
            epoch_s = (seed_s - fwd_s) / epochs
            runs[v] = {"seed_seconds_measured": round(seed_s, 2), "epochs_measured": epochs,
                       "train_epoch_seconds": round(epoch_s, 2),
                       "forward_ms_per_utterance": round(1e3 * fwd_s / fwd_n, 3),
                       "probe_features": probe, "params": r["params"],
                       "finetunes_text": bool(r["settings"]["text"]["finetune"]
                                              and "text" in r["settings"]["modalities"])}
    finally:
        train.predict = real_predict
    return {"sizes": sizes, "data_stages_seconds": {"download_align": round(t1 - t0, 2),
                                                    "embed": round(t2 - t1, 2)},
            "runs": runs}


def seed_seconds(run: dict, n: dict, epochs: int = PROFILE_EPOCHS) -> float:
    """One seed of `epochs` epochs on splits of sizes `n`, from a measured run (see the module)."""
    per_utt = run["forward_ms_per_utterance"] / 1e3
    fwd = epochs * n["valid"] + n["test"] + ((n["train"] + n["test"]) if run["probe_features"] else 0)
    return epochs * run["train_epoch_seconds"] * n["train"] / run["n_train"] + per_utt * fwd


def project(measured: dict, workers: int) -> dict:
    from pipeline.settings import config_from_dict
    from pipeline.data.schema import PAPER_SPLIT_SIZES
    from pipeline.variants import not_applicable
    from pipeline.profiles import variant_config
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["profile"] = "cpu-real"
    cfg = config_from_dict(raw)
    runs = {k: {**r, "n_train": measured["sizes"]["train"]} for k, r in measured["runs"].items()}
    n_utt_measured = sum(measured["sizes"].values())
    embed_per_utt = measured["data_stages_seconds"]["embed"] / n_utt_measured
    out = {}
    for ds, n in PAPER_SPLIT_SIZES.items():
        raw_text = ds != "iemocap"  # IEMOCAP's real source, MulT's pickle, has no raw text
        task = "classification" if ds == "iemocap" else "regression"
        seconds = {v: seed_seconds(r, n) for v, r in runs.items()}
        per_variant, source, tuned = {}, {}, []
        for v in cfg.variants:
            if not_applicable(v, task):
                continue
            vcfg = variant_config(cfg, v, ds)
            per_variant[v], source[v] = cost(v, vcfg, raw_text, seconds)
            if raw_text and vcfg.text.finetune and "text" in vcfg.modalities:
                tuned.append(v)
        seeds = len(cfg.seeds)
        cpu = seeds * sum(per_variant.values())
        wall = math.ceil(seeds / workers) * sum(per_variant.values())
        embed = embed_per_utt * sum(n.values())
        out[ds] = {"splits": n, "raw_text": raw_text, "variants": len(per_variant),
                   "fine_tuned_variants": len(tuned), "fine_tuned": tuned,
                   "seed_seconds_per_variant": {v: round(s, 1) for v, s in per_variant.items()},
                   "seed_seconds_taken_from": source,
                   "seeds": seeds, "workers": workers,
                   "train_cpu_hours": round(cpu / 3600, 2),
                   "train_wall_hours": round(wall / 3600, 2),
                   "embed_minutes": round(embed / 60, 1)}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of MOSI's real split sizes")
    ap.add_argument("--epochs", type=int, default=1, help="epochs measured per seed (profile: 4)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--workers", type=int, default=2, help="seed processes at once (the cores)")
    args = ap.parse_args(argv)
    missing = {"pase", "pase-AV"} - set(args.variants)
    if missing:
        ap.error(f"--variants must include the representatives {sorted(missing)}")
    out = args.out.resolve()
    started = machine()
    with tempfile.TemporaryDirectory(prefix="bench_cpu_real_") as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            measured = measure(args)
        finally:
            os.chdir(cwd)
    result = {"benchmark": "cpu_real_budget", "machine": started,
              "load_average_at_end": list(os.getloadavg()),
              "command": "python benchmarks/bench_cpu_real.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "scale": args.scale, "torch_threads_per_process": 1, "measured_on": "synthetic MOSI",
              **measured, "projected_profile_epochs": PROFILE_EPOCHS,
              "projection": project(measured, args.workers)}
    out.write_text(json.dumps(result, indent=2) + "\n")
    for ds, p in result["projection"].items():
        print(f"{ds}: {p['variants']} variants ({p['fine_tuned_variants']} fine-tune MiniLM) x "
              f"{p['seeds']} seeds: {p['train_wall_hours']} h wall on {p['workers']} cores "
              f"({p['train_cpu_hours']} CPU h), embed {p['embed_minutes']} min")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
