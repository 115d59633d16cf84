"""Where every stage reads and writes; dvc.yaml uses the same paths."""
from __future__ import annotations

from pathlib import Path

DATA = Path("data")
REPORTS = Path("reports")


def raw_dir(dataset: str) -> Path:
    return DATA / "raw" / dataset


def aligned_store(dataset: str) -> Path:
    return DATA / "aligned" / f"{dataset}.h5"


def text_features(dataset: str) -> Path:
    return DATA / "embedded" / f"{dataset}.h5"


def run_dir(dataset: str, variant: str) -> Path:
    return DATA / "runs" / dataset / variant


def seed_dir(dataset: str, variant: str, seed: int) -> Path:
    return run_dir(dataset, variant) / f"seed{seed}"


def curves_dir(dataset: str, variant: str, seed: int) -> Path:
    # Per-epoch dvclive curves: a DVC `plots` output of the train stage of their own, beside the
    # run folder (a plots directory must hold nothing but plot files).
    return DATA / "curves" / dataset / variant / f"seed{seed}"


def checkpoint_dir(dataset: str, variant: str, seed: int, key: str) -> Path:
    # Outside DVC's outputs (DVC deletes those before a stage runs), keyed by the run's inputs so
    # a resumed run never picks up a checkpoint made under other parameters.
    return DATA / "checkpoints" / f"{dataset}-{variant}-seed{seed}-{key}"
