"""What a researcher sees: one log line per training epoch off a terminal (no progress bars)."""
import logging

import pytest

from pipeline import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_one_log_line_per_epoch_off_a_terminal(tiny_project, caplog):
    cfg = tiny_project({"train": {"epochs": 3}})
    with caplog.at_level(logging.INFO, logger="pipeline.train"):
        train.train_variant(cfg, "mosi", "late_fusion")
    lines = [r.getMessage() for r in caplog.records if "validation score" in r.getMessage()]
    assert [l.split(": epoch ")[1].split(",")[0] for l in lines] == ["1/3", "2/3", "3/3"]
    assert all(l.startswith("mosi/late_fusion seed 0: epoch") for l in lines)
