"""Where every stage reads and writes; dvc.yaml uses the same paths."""
from __future__ import annotations

from pathlib import Path

DATA = Path("data")
REPORTS = Path("reports")


def user_dir(dataset: str) -> Path:
    """Where a user's own files for a dataset live (pickle, .csd folder): a DVC dependency."""
    return DATA / "user" / dataset


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


def stage_outputs(stage: str, dataset: str | None = None, variant: str | None = None) -> list[Path]:
    """What a stage writes (its dvc.yaml outs, and the train stage's checkpoints), for removing a
    killed run's temporary files at the next start."""
    if stage == "download":
        return [raw_dir(dataset)]
    if stage == "align":
        return [aligned_store(dataset)]
    if stage == "embed":
        return [text_features(dataset)]
    if stage == "train":
        # not its checkpoint folders: the look-ahead pool may be writing them (pipeline/ahead.py);
        # a seed the stage trains itself clears its folder first (resume.seed_folder)
        return [run_dir(dataset, variant)]
    if stage == "figures":
        return [REPORTS / "figures", REPORTS / "plots"]
    if stage == "report":
        return [REPORTS / n for n in ("metrics.json", "README.md", "summary.md", "tables")]
    return []
