"""What a researcher sees: one log line per training epoch off a terminal (no progress bars); a
README whose numbers are the code's; a citation of the pipeline and the papers as printed."""
import logging
import re
from pathlib import Path

import pytest
import yaml

from pipeline import train

from pipeline import train_stage
from tests.helpers import ROOT, documentation

pytestmark = pytest.mark.usefixtures("one_thread")


def test_one_log_line_per_epoch_off_a_terminal(tiny_project, caplog):
    cfg = tiny_project({"train": {"epochs": 3}})
    with caplog.at_level(logging.INFO, logger="pipeline.train"):
        train_stage.train_variant(cfg, "mosi", "late_fusion")
    lines = [r.getMessage() for r in caplog.records if "validation score" in r.getMessage()]
    assert [l.split(": epoch ")[1].split(",")[0] for l in lines] == ["1/3", "2/3", "3/3"]
    assert all(l.startswith("mosi/late_fusion seed 0: epoch") for l in lines)


PAPERS = Path("/work/shared/papers")
if not PAPERS.exists():
    PAPERS = ROOT / "shared" / "papers"


def test_readme_parameter_counts_are_what_count_prints():
    """Every count in the documentation's baseline table (CPU default) and in its paper-profile table is
    `python -m pipeline count`'s."""
    from pipeline.settings import load_config
    from pipeline.report.params import count_variant
    cfg = load_config(ROOT / "params.yaml")
    readme = documentation()  # the tables are in docs/baselines.md and docs/profiles.md
    cpu = re.findall(r"^\| `([\w-]+)` \| [^|]*[a-z][^|]* \| ([\d,]+)", readme, re.M)
    paper = re.findall(r"^\| `([\w-]+)` \| ([\d,]+) \|", readme, re.M)
    assert len(cpu) >= 10 and len(paper) >= 9
    for variant, n in cpu:
        if variant != "mag_bert":  # needs BERT-base: its count is the paper profile's
            assert count_variant(cfg, variant, None, None, "regression") == int(n.replace(",", "")), variant
    for variant, n in paper:
        assert count_variant(cfg, variant, "paper", None, "regression") == int(n.replace(",", "")), variant


def test_readme_states_python_and_the_cpu_torch_index():
    readme = (ROOT / "README.md").read_text()  # the newcomer's page says how to install
    assert "Python 3.11" in readme and "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu" in readme
    text = documentation()
    snr = yaml.safe_load((ROOT / "params.yaml").read_text())["synthetic"]["snr"]
    assert f"text {snr['text']:g} > audio {snr['audio']:g} > vision {snr['vision']:g}" in text


def _authors(line: str) -> list[str]:
    return [a.strip() for a in re.sub(r"\^\{[^}]*\}|[¹²³⁴*]", "", line).split(",")]


@pytest.mark.skipif(not (PAPERS / "pase-paper.txt").exists(), reason="the paper's text is not here")
def test_citation_cites_the_pipeline_and_the_papers_as_printed():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["authors"]
    assert cff["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
    for cited, fname in ((cff["preferred-citation"], "pase-paper.txt"),
                         (cff["references"][0], "cp-sl-abstract.txt")):
        lines = [l.strip() for l in (PAPERS / fname).read_text(encoding="utf-8").splitlines() if l.strip()]
        title = next(i for i, l in enumerate(lines) if cited["title"] == l)
        names = [f"{a['given-names']} {a['family-names']}" for a in cited["authors"]]
        assert names == _authors(lines[title + 1]), fname
