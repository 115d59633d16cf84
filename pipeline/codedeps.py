"""Each stage's code deps in dvc.yaml, derived from what its command imports.

A stage's code is every project module that `python -m pipeline <cmd>` runs for it: __init__.py and
__main__.py, the imports of main()'s `args.stage == "<cmd>"` branch and those outside any stage
branch, then, transitively, every `import` / `from` of those modules, wherever it sits (this
project imports inside functions, so a module counts as a whole), every package __init__ on the
way, and the commands a module starts as `-m pipeline <cmd>` (ahead.py starts the pool). Only
modules under pipeline/ count; `if TYPE_CHECKING:` blocks never run, so they do not.

`python -m pipeline codedeps` prints how dvc.yaml differs; `--write` rewrites its code deps (the
deps under pipeline/), keeping every other line. resume.py keys checkpoints by the train stage's
list (stage_files("train")), so that key and dvc.yaml cannot drift apart.
"""
from __future__ import annotations

import ast
import functools
import re
import shlex
from pathlib import Path

from pipeline.errors import PipelineError

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "pipeline"

# Modules a stage runs that are not its deps, by command; each must still be in its closure (their
# imports are followed: what they run for the stage counts).
EXCLUDED = {
    "train": {
        "pipeline/ahead.py": "only schedules the seeds: outputs are byte-identical with or without "
                             "the look-ahead pool (tests/e2e/test_ahead_dvc.py)",
        "pipeline/ahead_pool.py": "the look-ahead pool process (ahead.py): the same reason",
    },
}


class CodeDepsError(PipelineError):
    """The imports cannot be followed, or dvc.yaml's code deps differ from them."""


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _stage_of(test: ast.expr) -> str | None:
    """The name in a test `args.stage == "<name>"` (a branch of __main__.main), else None."""
    if (isinstance(test, ast.Compare) and isinstance(test.left, ast.Attribute)
            and test.left.attr == "stage" and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)
            and isinstance(test.comparators[0], ast.Constant) and isinstance(test.comparators[0].value, str)):
        return test.comparators[0].value
    return None


class _Imports(ast.NodeVisitor):
    """Project modules imported and commands started, per `args.stage == ...` branch (None: none)."""

    def __init__(self, module: str, is_package: bool, where: str):
        self.package = module if is_package else module.rpartition(".")[0]
        self.where = where
        self.branch: str | None = None
        self.branches: set[str] = set()
        # (module, whether it must exist): `from m import x` may import a module m.x or a name x
        self.imports: dict[str | None, set[tuple[str, bool]]] = {}
        self.spawns: dict[str | None, set[str]] = {}

    def _add(self, names, table=None):
        (table if table is not None else self.imports).setdefault(self.branch, set()).update(names)

    def visit_If(self, node: ast.If):
        if _is_type_checking(node.test):
            for n in node.orelse:
                self.visit(n)
            return
        stage = _stage_of(node.test)
        if stage:
            self.branches.add(stage)
        self.visit(node.test)
        outer = self.branch
        self.branch = stage or outer
        for n in node.body:
            self.visit(n)
        self.branch = outer
        for n in node.orelse:
            self.visit(n)

    def visit_Import(self, node: ast.Import):
        self._add((a.name, True) for a in node.names if _ours(a.name))

    def visit_ImportFrom(self, node: ast.ImportFrom):
        if node.level:
            parts = self.package.split(".")
            if node.level - 1 >= len(parts):
                raise CodeDepsError(f"{self.where}:{node.lineno}: a relative import above the package")
            base = ".".join(parts[:len(parts) - (node.level - 1)])
            base = f"{base}.{node.module}" if node.module else base
        else:
            base = node.module or ""
        if _ours(base):  # `from pipeline import paths` may name a module: _closure tells
            self._add([(base, True)] + [(f"{base}.{a.name}", False) for a in node.names if a.name != "*"])

    def visit_Call(self, node: ast.Call):
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name == "iter_modules":  # a package that discovers its modules (a registry) runs them all
            self._add([(f"{self.package}.*", True)])
        if name in ("import_module", "__import__") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                if _ours(arg.value):
                    self._add([(arg.value, True)])
            else:  # a name built at run time: followed only if its fixed start is another package's
                lead = arg.values[0] if isinstance(arg, ast.JoinedStr) and arg.values else None
                text = lead.value if isinstance(lead, ast.Constant) and isinstance(lead.value, str) else ""
                if "." not in text or _ours(text.split(".")[0]):
                    raise CodeDepsError(f"{self.where}:{node.lineno}: a dynamic import codedeps cannot "
                                        f"follow; import the module by name")
        self.generic_visit(node)

    def _sequence(self, node):
        items = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
        for i in range(len(items) - 2):
            if items[i] == "-m" and items[i + 1] == PACKAGE and isinstance(items[i + 2], str):
                self._add([items[i + 2]], self.spawns)
        self.generic_visit(node)

    visit_List = visit_Tuple = _sequence


def _ours(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def _file_of(module: str, root: Path) -> Path | None:
    base = root.joinpath(*module.split("."))
    for f in (base / "__init__.py", base.with_suffix(".py")):
        if f.is_file():
            return f
    return None


def _scan(path: Path, module: str) -> _Imports:
    st = path.stat()  # parsed once per file version: resume.code_hashes asks in every train process
    return _parse(path, module, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=None)
def _parse(path: Path, module: str, mtime_ns: int, size: int) -> _Imports:
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as e:
        raise CodeDepsError(f"{path}: cannot be parsed ({e})") from e
    v = _Imports(module, path.name == "__init__.py", str(path))
    v.visit(tree)
    return v


def _closure(commands: list[str], root: Path) -> set[str]:
    """The files (relative, posix) that the commands run, excluding nothing."""
    main = _scan(root / PACKAGE / "__main__.py", f"{PACKAGE}.__main__")
    files = {f"{PACKAGE}/__init__.py", f"{PACKAGE}/__main__.py"}
    todo, seen, started = [], set(), set()

    def start(cmd: str, why: str):
        if cmd in started:
            return
        if cmd not in main.branches:
            raise CodeDepsError(f"{why}: {PACKAGE}/__main__.py has no `args.stage == {cmd!r}` branch")
        started.add(cmd)
        todo.extend(main.imports.get(cmd, set()) | main.imports.get(None, set()))
        for c in main.spawns.get(cmd, set()) | main.spawns.get(None, set()):
            start(c, f"{PACKAGE}/__main__.py")

    for cmd in commands:
        start(cmd, f"`python -m {PACKAGE} {cmd}`")
    while todo:
        module, required = todo.pop()
        if module in seen:
            continue
        if module.endswith(".*"):  # every module of the package
            package = root.joinpath(*module[:-2].split("."))
            todo.extend((f"{module[:-2]}.{f.stem}", True) for f in sorted(package.glob("*.py"))
                        if f.name != "__init__.py")
            seen.add(module)
            continue
        f = _file_of(module, root)
        if f is None:
            if not required:
                continue  # `from pkg import name`: a name defined in pkg, not a module
            raise CodeDepsError(f"the import of {module} names no file under {root / PACKAGE}")
        seen.add(module)
        parts = module.split(".")
        for i in range(1, len(parts)):  # the packages on the way run their __init__
            todo.append((".".join(parts[:i]), True))
        files.add(f.relative_to(root).as_posix())
        scan = _scan(f, module)
        todo.extend(m for names in scan.imports.values() for m in names)
        for cmd in set().union(*scan.spawns.values()):
            start(cmd, f.relative_to(root).as_posix())
    return files


def stage_files(cmd: str, root: Path = ROOT) -> list[str]:
    """The code files of `python -m pipeline <cmd>`, without EXCLUDED's, sorted."""
    files = _closure([cmd], root.resolve())
    excluded = EXCLUDED.get(cmd, {})
    stale = sorted(set(excluded) - files)
    if stale:
        raise CodeDepsError(f"codedeps.EXCLUDED[{cmd!r}] names {', '.join(stale)}, which "
                            f"`python -m {PACKAGE} {cmd}` does not run: remove the entry")
    return sorted(files - set(excluded))


def as_deps(files: list[str], root: Path = ROOT) -> list[str]:
    """dvc.yaml's form of a file list: a folder where every file in it is listed, else the files."""
    wanted = set(files)

    def present(d: Path) -> list[str]:
        return sorted(f.relative_to(root).as_posix() for f in d.rglob("*")
                      if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc")

    def cover(d: Path) -> list[str]:
        if set(present(d)) <= wanted:
            return [d.relative_to(root).as_posix()]
        out = [f.relative_to(root).as_posix() for f in sorted(d.iterdir()) if f.is_file()
               and f.relative_to(root).as_posix() in wanted]
        for sub in sorted(p for p in d.iterdir() if p.is_dir() and p.name != "__pycache__"):
            if wanted & set(present(sub)):
                out += cover(sub)
        return out

    return sorted(cover(root / PACKAGE))


def _command_of(name: str, stage: dict) -> str:
    cmd = (stage.get("do") or stage).get("cmd", "")
    words = shlex.split(cmd) if isinstance(cmd, str) else []
    for i in range(len(words) - 2):
        if words[i] == "-m" and words[i + 1] == PACKAGE:
            return words[i + 2]
    raise CodeDepsError(f"dvc.yaml stage {name}: its cmd {cmd!r} is not `python -m {PACKAGE} <cmd>`, "
                        f"so its code deps cannot be derived")


def _is_code(dep: str) -> bool:
    return dep == PACKAGE or dep.startswith(PACKAGE + "/")


def derived(dvc_yaml: Path, root: Path = ROOT) -> dict[str, list[str]]:
    """Each dvc.yaml stage's code deps, as its command's imports give them."""
    import yaml
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return {name: as_deps(stage_files(_command_of(name, s), root), root) for name, s in stages.items()}


def differences(dvc_yaml: Path, root: Path = ROOT) -> list[str]:
    """One line per stage whose code deps in dvc.yaml differ from the derived ones."""
    import yaml
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    out = []
    for name, want in derived(dvc_yaml, root).items():
        have = [d for d in (stages[name].get("do") or stages[name]).get("deps", []) if _is_code(d)]
        if sorted(have) == want:
            continue
        wanted, had = _files(want, root), _files(have, root)
        missing, extra = sorted(wanted - had), sorted(had - wanted)
        out.append(f"{name}: " + ("; ".join(
            p for p in (missing and "missing " + ", ".join(missing),
                        extra and "not imported " + ", ".join(extra)) if p)
            or f"the same files, written {', '.join(sorted(have))} instead of {', '.join(want)}"))
    return out


def _files(deps: list[str], root: Path) -> set[str]:
    out = set()
    for d in deps:
        p = root / d
        out |= {f.relative_to(root).as_posix() for f in p.rglob("*") if f.is_file() and
                "__pycache__" not in f.parts and f.suffix != ".pyc"} if p.is_dir() else {d}
    return out


def rewrite(text: str, deps: dict[str, list[str]]) -> str:
    """dvc.yaml's text with each stage's code deps replaced by deps[stage], in their place (after
    the other deps where it had none); every other line is kept, and so is a kept dep's line."""
    lines = text.splitlines(keepends=True)
    out, i, stage = [], 0, None

    def width(s: str) -> int:
        return len(s) - len(s.lstrip(" "))

    while i < len(lines):
        line = lines[i]
        header = re.match(r"  ([^\s#:]+):\s*(#.*)?$", line)  # a stage (under `stages:`)
        if header:
            stage = header.group(1)
        if stage in deps and line.strip() == "deps:":
            out.append(line)
            indent, block = width(line), []
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")
                                      or (width(lines[i]) > indent and lines[i].lstrip().startswith("- "))):
                block.append(lines[i])
                i += 1
            out += _rewrite_block(block, deps[stage], indent + 2)
            continue
        out.append(line)
        i += 1
    return "".join(out)


def _rewrite_block(block: list[str], want: list[str], indent: int) -> list[str]:
    def dep(line: str) -> str | None:
        s = line.strip()
        return s[2:].split("#")[0].strip() if s.startswith("- ") else None

    kept = {dep(l): l for l in block if dep(l) and _is_code(dep(l))}
    first = next((n for n, l in enumerate(block) if dep(l) and _is_code(dep(l))), None)
    if first is None:  # after the last dep, before trailing blank lines
        first = max((n + 1 for n, l in enumerate(block) if dep(l)), default=0)
    rest = [l for l in block if not (dep(l) and _is_code(dep(l)))]
    new = [kept.get(d, " " * indent + f"- {d}\n") for d in want]
    return rest[:first] + new + rest[first:]


def main(write: bool = False, dvc_yaml: Path = Path("dvc.yaml")) -> int:
    """Print how dvc.yaml's code deps differ from the derived ones (exit 1), or rewrite them."""
    if not dvc_yaml.is_file():
        raise CodeDepsError(f"{dvc_yaml.resolve()} not found: run this in the repository's root")
    diff = differences(dvc_yaml)
    print("\n".join(diff) if diff else f"{dvc_yaml}: every stage's code deps are its imports")
    if not (write and diff):
        return 1 if diff else 0
    dvc_yaml.write_text(rewrite(dvc_yaml.read_text(), derived(dvc_yaml)))
    left = differences(dvc_yaml)
    if left:  # e.g. deps written as a flow list `[a, b]`, which rewrite does not edit
        raise CodeDepsError(f"{dvc_yaml}: could not rewrite the code deps of " +
                            ", ".join(d.split(":")[0] for d in left) + ": write them as a block list")
    print(f"{dvc_yaml}: code deps rewritten")
    return 0
