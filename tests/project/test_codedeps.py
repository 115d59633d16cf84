"""Each stage's code deps in dvc.yaml are the modules its command imports (pipeline/codedeps.py)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import codedeps
from pipeline.__main__ import main as cli
from pipeline.codedeps import CodeDepsError
from tests.helpers import ROOT

DVC_YAML = ROOT / "dvc.yaml"
STAGES = yaml.safe_load(DVC_YAML.read_text())["stages"]
COMMANDS = sorted({codedeps._command_of(n, s) for n, s in STAGES.items()})


def test_every_stage_code_deps_are_its_imports():
    diff = codedeps.differences(DVC_YAML)
    assert not diff, ("dvc.yaml's code deps differ; run `python -m pipeline codedeps --write`:\n"
                      + "\n".join(diff))
    embed = STAGES["embed"]["do"]["deps"]  # embed_store decides tokenisation and word ids
    assert "pipeline/stages.py" in embed and "pipeline/features" in embed


def test_the_cli_checks_and_writes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert cli(["codedeps"]) == 0
    stale = tmp_path / "dvc.yaml"
    stale.write_text(DVC_YAML.read_text().replace("        - pipeline/stages.py\n", "", 1))
    assert codedeps.main(dvc_yaml=stale) == 1
    assert "download: missing pipeline/stages.py" in capsys.readouterr().out
    assert codedeps.main(write=True, dvc_yaml=stale) == 0
    assert stale.read_text() == DVC_YAML.read_text()


def test_rewrite_restores_the_derived_lists_and_keeps_every_other_line():
    text = DVC_YAML.read_text()
    want = codedeps.derived(DVC_YAML)
    emptied = {"report": [], "embed": ["pipeline/features/text.py"],
               "train": list(reversed(want["train"])) + ["pipeline/ahead.py"]}
    mangled = codedeps.rewrite(text, emptied)
    assert mangled != text
    after = yaml.safe_load(mangled)["stages"]
    assert [d for d in after["report"]["deps"] if d.startswith("pipeline")] == []
    embed = [d for d in after["embed"]["do"]["deps"] if d.startswith("pipeline")]
    assert embed == ["pipeline/features/text.py"]
    assert after["train"]["deps"][:3] == STAGES["train"]["deps"][:3]  # the data deps stay first
    assert codedeps.rewrite(mangled, want) == text  # comments, data deps, other sections: as they were
    assert codedeps.rewrite(text, want) == text


def test_same_files_written_otherwise_is_a_difference(tmp_path):
    models = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "pipeline/models").rglob("*.py"))
    f = tmp_path / "dvc.yaml"
    f.write_text(DVC_YAML.read_text().replace(
        "      - pipeline/models\n", "".join(f"      - {m}\n" for m in models)))
    diff = codedeps.differences(f)
    assert len(diff) == 1 and diff[0].startswith("train: the same files, written ")


@pytest.fixture
def tree(tmp_path):
    """A copy of the package to edit: codedeps reads only the files."""
    shutil.copytree(ROOT / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _entries(cmd: str, root: Path) -> list[str]:
    """The modules main()'s branch for cmd imports by name (its handlers' modules)."""
    scan = codedeps._scan(root / "pipeline/__main__.py", "pipeline.__main__")
    files = (codedeps._file_of(m, root) for m, required in scan.imports[cmd] if required)
    return sorted({f.relative_to(root).as_posix() for f in files if f and f.name != "__init__.py"})


def _add_import(root: Path, entry: str, style: str, n: int) -> set[str]:
    """Append a function importing a new module (or package) to entry; the files it adds."""
    name, pkg = f"zz_new{n}", f"zz_pkg{n}"
    (root / f"pipeline/{name}.py").write_text('"""new"""\n')
    line = {"import": f"import pipeline.{name}",
            "from": f"from pipeline import {name}",
            "relative": f"from {'.' * entry.count('/')} import {name}",  # pipeline/report/x.py: ..
            "subpackage": f"from pipeline.{pkg}.mod import THING"}[style]
    with open(root / entry, "a") as f:  # inside a function: this project imports lazily
        f.write(f"\n\ndef _zz_added{n}():\n    {line}\n    return 1\n")
    if style != "subpackage":
        return {f"pipeline/{name}.py"}
    (root / f"pipeline/{pkg}").mkdir()  # a new package, reached through a relative import
    (root / f"pipeline/{pkg}/__init__.py").write_text("")
    (root / f"pipeline/{pkg}/mod.py").write_text("def f():\n    from .leaf import THING\n")
    (root / f"pipeline/{pkg}/leaf.py").write_text("THING = 1\n")
    return {f"pipeline/{pkg}/__init__.py", f"pipeline/{pkg}/mod.py", f"pipeline/{pkg}/leaf.py"}


@pytest.mark.parametrize("style", ["import", "from", "relative", "subpackage"])
@pytest.mark.parametrize("cmd", COMMANDS)
def test_an_import_added_to_a_stage_entry_module_joins_every_stage_that_runs_it(tree, cmd, style):
    before = {c: set(codedeps.stage_files(c, tree)) for c in COMMANDS}
    entries = _entries(cmd, tree)
    assert entries and set(entries) <= before[cmd]
    for n, entry in enumerate(entries):
        new = _add_import(tree, entry, style, n)
        for c in COMMANDS:
            after = set(codedeps.stage_files(c, tree))
            assert after == before[c] | (new if entry in before[c] else set()), (c, entry)
            before[c] = after
        if style == "subpackage":
            assert f"pipeline/zz_pkg{n}" in codedeps.as_deps(codedeps.stage_files(cmd, tree), tree)


def test_excluded_modules_are_left_out_but_followed(tree):
    assert {"pipeline/ahead.py", "pipeline/ahead_pool.py"} <= codedeps._closure(["train"], ROOT)
    assert set(codedeps.EXCLUDED["train"]) == {"pipeline/ahead.py", "pipeline/ahead_pool.py"}
    assert not set(codedeps.EXCLUDED["train"]) & set(codedeps.stage_files("train"))
    # the pool is started as `-m pipeline pool` (ahead.py), not imported: what it imports still counts
    (tree / "pipeline/zz_new.py").write_text("")
    with open(tree / "pipeline/ahead_pool.py", "a") as f:
        f.write("\n\ndef _zz():\n    from pipeline import zz_new\n")
    assert "pipeline/zz_new.py" in codedeps.stage_files("train", tree)


def test_a_stale_exclusion_is_an_error(monkeypatch):
    monkeypatch.setitem(codedeps.EXCLUDED, "figures", {"pipeline/ahead.py": "not run by figures"})
    with pytest.raises(CodeDepsError, match=r"EXCLUDED\['figures'\] names pipeline/ahead.py"):
        codedeps.stage_files("figures")


@pytest.mark.parametrize("code, message", [
    ("def f(x):\n    import importlib\n    return importlib.import_module(f'pipeline.{x}')\n",
     "a dynamic import codedeps cannot follow"),
    ("def f(x):\n    return __import__(x)\n", "a dynamic import codedeps cannot follow"),
    ("def f():\n    from pipeline.zz_missing import x\n", "the import of pipeline.zz_missing names no file"),
    ("from .... import x\n", "a relative import above the package"),
])
def test_imports_it_cannot_follow_are_errors(tree, code, message):
    (tree / "pipeline/report/figures.py").write_text(code)
    with pytest.raises(CodeDepsError, match=message):
        codedeps.stage_files("figures", tree)


def test_what_never_runs_or_is_not_ours_is_not_a_dep(tree):
    (tree / "pipeline/zz_new.py").write_text("")
    (tree / "pipeline/zz_dyn.py").write_text("")
    with open(tree / "pipeline/report/figures.py", "a") as f:
        f.write("\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pipeline import zz_new\n"
                "import importlib\nX = lambda: importlib.import_module(f'mmsdk.{1}')\n"
                "Y = lambda: importlib.import_module('json'), importlib.import_module('pipeline.zz_dyn')\n")
    files = codedeps.stage_files("figures", tree)
    assert "pipeline/zz_new.py" not in files and "pipeline/zz_dyn.py" in files


def test_deps_it_cannot_rewrite_are_an_error(tmp_path):
    f = tmp_path / "dvc.yaml"
    f.write_text("stages:\n  configure:\n    cmd: python -m pipeline configure\n"
                 "    deps: [pipeline/paths.py]\n")
    with pytest.raises(CodeDepsError, match="could not rewrite the code deps of configure"):
        codedeps.main(write=True, dvc_yaml=f)


def test_a_command_main_does_not_handle_is_an_error(tmp_path):
    with pytest.raises(CodeDepsError, match="has no `args.stage == 'nope'` branch"):
        codedeps.stage_files("nope")
    f = tmp_path / "dvc.yaml"
    f.write_text("stages:\n  other:\n    cmd: python tools/x.py\n    deps: [pipeline/paths.py]\n")
    with pytest.raises(CodeDepsError, match="stage other: its cmd 'python tools/x.py' is not"):
        codedeps.differences(f)


def test_deriving_imports_no_heavy_module():
    # resume.code_hashes runs in every train stage process, before it knows whether it trains
    code = (f"import sys\nfrom pipeline import codedeps\n[codedeps.stage_files(c) for c in {COMMANDS!r}]\n"
            "print(sorted(m for m in ('torch', 'numpy', 'yaml') if m in sys.modules))\n"
            "from pipeline import resume\nresume.code_hashes()\nprint('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "False"]
