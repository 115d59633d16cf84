"""The GitHub workflows: valid against GitHub's schema, and every project command they run exists.

Checked offline, in seconds: the YAML against the workflow schema that check-jsonschema vendors;
each `run:` script's `python -m pipeline ...` (the subcommand and its options), `dvc ...` (the
options, through DVC's own argument parser; the stage targets, expanded over every shard the plan
job produces, against the stages that dvc.yaml defines for those lists; each `-S key` against
params.yaml) and `bash <script>` (exists, executable). The plan job's script itself is run.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests.helpers import ROOT

TESTS_WF = ROOT / ".github" / "workflows" / "tests.yml"
PAPER_WF = ROOT / ".github" / "workflows" / "paper-tables.yml"
PAPER_MATRIX = ROOT / ".github" / "paper-matrix.json"
WORKFLOWS = (TESTS_WF, PAPER_WF)

EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}", re.S)
PLACEHOLDER = re.compile(r"__EXPR(\d+)__")
HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")
OPERATOR = set("();<>|&")
# dvc commands whose positional arguments are stage targets
DVC_TARGET_COMMANDS = (("exp", "run"), ("repro",), ("push",), ("pull",), ("fetch",))
QUIET_DVC = {"DVC_NO_ANALYTICS": "1", "DVC_NO_UPDATER": "1"}


def load(path: Path) -> dict:
    wf = yaml.safe_load(path.read_text())
    if True in wf:  # YAML 1.1 reads the key `on` as a boolean
        wf["on"] = wf.pop(True)
    return wf


def run_steps(wf: dict):
    """(job id, job, step, script) for every `run:` step."""
    for job_id, job in wf["jobs"].items():
        for step in job.get("steps", []):
            if "run" in step:
                yield job_id, job, step, step["run"]


def commands(script: str) -> tuple[list[list[str]], list[str]]:
    """The simple commands of a shell script as word lists, and the `${{ }}` expressions they
    contain (replaced in the words by __EXPR<i>__). Continuation lines are joined and heredoc
    bodies dropped; words are split the way the shell does, at spaces and operators."""
    exprs: list[str] = []

    def hide(m):
        exprs.append(m.group(1))
        return f"__EXPR{len(exprs) - 1}__"

    text = EXPR.sub(hide, script).replace("\\\n", " ")
    lines, heredoc_end = [], None
    for line in text.splitlines():
        if heredoc_end is not None:
            if line.strip() == heredoc_end:
                heredoc_end = None
            continue
        m = HEREDOC.search(line)
        if m:
            heredoc_end = m.group(2)
        lines.append(line)
    assert heredoc_end is None, f"unterminated heredoc in:\n{script}"
    out: list[list[str]] = []
    for line in lines:
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        try:
            words = list(lex)
        except ValueError as e:
            raise AssertionError(f"cannot split {line!r}: {e}") from None
        current: list[str] = []
        for w in words:
            if set(w) <= OPERATOR:
                out.append(current)
                current = []
            else:
                current.append(w)
        out.append(current)
    return [c for c in out if c], exprs


def find(words: list[str], *head: str) -> list[str] | None:
    """The words after `head` if the command contains it, else None."""
    for i in range(len(words) - len(head) + 1):
        if tuple(words[i:i + len(head)]) == head:
            return words[i + len(head):]
    return None


def pipeline_args(words):
    for py in ("python", "python3"):
        args = find(words, py, "-m", "pipeline")
        if args is not None:
            return args
    return None


def matrix_combos(job: dict, plan: dict) -> list[dict]:
    """Every matrix combination a job runs, resolving `fromJSON(needs.plan.outputs.X)`."""
    def resolve(value):
        if isinstance(value, str):
            m = EXPR.fullmatch(value.strip())
            ref = m and re.fullmatch(r"fromJSON\(needs\.plan\.outputs\.(\w+)\)", m.group(1))
            assert ref, f"cannot resolve the matrix value {value!r}"
            return json.loads(plan[ref.group(1)])
        return value

    matrix = job.get("strategy", {}).get("matrix")
    if matrix is None:
        return [{}]
    matrix = dict(resolve(matrix))
    include = matrix.pop("include", [])
    keys = list(matrix)
    combos = [dict(zip(keys, vals)) for vals in itertools.product(*(resolve(matrix[k]) for k in keys))]
    return (combos if keys else []) + list(include)


def expand(word: str, exprs: list[str], combos: list[dict]) -> set[str]:
    """A word with its `${{ matrix.K }}` expressions replaced, for every matrix combination."""
    names = [exprs[int(i)] for i in PLACEHOLDER.findall(word)]
    for e in names:
        assert re.fullmatch(r"matrix\.\w+", e), f"{word!r}: only ${{{{ matrix.* }}}} can be checked here, not {e!r}"
    return {PLACEHOLDER.sub(lambda m: str(combo[exprs[int(m.group(1))].split(".", 1)[1]]), word)
            for combo in combos}


def dvc_parse(args: list[str]):
    from dvc.cli.parser import get_main_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return get_main_parser().parse_args(args)
    except (SystemExit, Exception) as e:  # argparse exits; DVC's parser raises DvcParserError
        raise AssertionError(f"`dvc {' '.join(args)}` does not parse: {err.getvalue().strip() or e!r}") from None


def param_exists(params: dict, key: str) -> bool:
    node = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def run_plan(out: Path, **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run the plan job's script as the runner would, with `env` standing for its inputs."""
    step = next(s for s in load(PAPER_WF)["jobs"]["plan"]["steps"] if s.get("id") == "compute")
    out.write_text("")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("IN_", "VAR_", "GITHUB_", "EVENT"))}
    base.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                GITHUB_OUTPUT=str(out), EVENT="workflow_dispatch")
    r = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=ROOT, env={**base, **env},
                       capture_output=True, text=True, timeout=120)
    outputs = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    return r, outputs


@pytest.fixture(scope="module")
def plan(tmp_path_factory) -> dict:
    """The plan job's outputs for a run with every input left at its default."""
    r, outputs = run_plan(tmp_path_factory.mktemp("plan") / "out", IN_RUNNER="cml")
    assert r.returncode == 0, r.stdout + r.stderr
    return outputs


@pytest.fixture(scope="module")
def stages(plan, tmp_path_factory) -> set[str]:
    """The stage names dvc.yaml defines when the -S values the jobs pass select the plan's lists."""
    d = tmp_path_factory.mktemp("stages")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["datasets"] = json.loads(plan["datasets"])
    params["variants"] = json.loads(plan["variants"])
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(ROOT / "dvc.yaml", d / "dvc.yaml")
    env = {**os.environ, **QUIET_DVC}
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run(dvc + ["init", "--no-scm", "-q"], cwd=d, env=env, check=True, timeout=60)
    r = subprocess.run(dvc + ["stage", "list", "--all", "--name-only"], cwd=d, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return set(r.stdout.split())


# --- (a) the schema -------------------------------------------------------------------------

def test_workflows_validate_against_the_github_workflow_schema():
    r = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                        "vendor.github-workflows", *map(str, WORKFLOWS)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# --- (b) every command exists ---------------------------------------------------------------

def test_every_command_the_workflows_run_exists(plan, stages):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    checked = {"pipeline": set(), "dvc": set(), "bash": set()}
    for path in WORKFLOWS:
        for job_id, job, step, script in run_steps(load(path)):
            where = f"{path.name}: {job_id}: {step.get('name', script[:40])!r}"
            cmds, exprs = commands(script)
            combos = matrix_combos(job, plan)
            raw = EXPR.sub("", script)
            found = {"pipeline": 0, "dvc": 0}
            for words in cmds:
                args = pipeline_args(words)
                if args is not None:
                    found["pipeline"] += 1
                    assert args and not args[0].startswith(("-", "$")), f"{where}: no subcommand: {words}"
                    literal = not any("$" in a or PLACEHOLDER.search(a) for a in args)
                    checked["pipeline"].add(tuple(args if literal else args[:1]))
                args = find(words, "dvc")
                if args is not None and words[0] != "echo":
                    found["dvc"] += 1
                    for combo in combos:
                        concrete = [next(iter(expand(a, exprs, [combo]))) if PLACEHOLDER.search(a) else a
                                    for a in args]
                        ns = dvc_parse(concrete)
                        if not any(tuple(concrete[:len(c)]) == c for c in DVC_TARGET_COMMANDS):
                            continue
                        for target in ns.targets or []:
                            assert target in stages, (f"{where}: `dvc {' '.join(concrete)}`: no stage "
                                                      f"{target!r} in dvc.yaml (for the plan's lists)")
                            checked["dvc"].add(target)
                        for kv in getattr(ns, "set_param", None) or []:
                            key = kv.split("=", 1)[0].split(":")[-1]
                            assert not key.startswith(("+", "~")), f"{where}: -S {kv!r} adds or removes a key"
                            assert param_exists(params, key), f"{where}: -S {kv!r}: params.yaml has no {key!r}"
                args = find(words, "bash")
                if args and not args[0].startswith("-"):
                    script_path = ROOT / args[0]
                    assert script_path.is_file(), f"{where}: `bash {args[0]}`: no such file"
                    assert os.access(script_path, os.X_OK) and script_path.stat().st_mode & stat.S_IXUSR, \
                        f"{where}: {args[0]} is not executable"
                    checked["bash"].add(args[0])
            # nothing hides from the parser above (command substitution, odd quoting, ...)
            assert found["pipeline"] == len(re.findall(r"\bpython3? -m pipeline\b", raw)), where
            assert found["dvc"] >= len(re.findall(r"(?<![\w\"'-])dvc (?:exp run|repro|push|pull)\b", raw)), where

    for args in sorted(checked["pipeline"]):
        r = subprocess.run([sys.executable, "-m", "pipeline", *args, "--help"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"`python -m pipeline {' '.join(args)}`: {r.stderr}"
    # what the workflows are for: the test command, every shard, the prepared data, the report
    assert checked["bash"] == {".ci/run"}
    shards = json.loads(plan["matrix"])["include"]
    assert {f"train@{s['dataset']}-{s['variant']}" for s in shards} <= checked["dvc"]
    assert {f"embed@{d}" for d in json.loads(plan["datasets"])} | {"report"} <= checked["dvc"]


def test_every_job_sets_the_same_params():
    """The run-cache keys of the jobs match only when every `dvc exp run` sets the same values."""
    sets = {}
    for job_id, job, step, script in run_steps(load(PAPER_WF)):
        cmds, _ = commands(script)
        for words in cmds:
            args = find(words, "dvc", "exp", "run")
            if args is not None:
                ns = dvc_parse(["exp", "run", *args])
                sets[job_id] = sorted(ns.set_param or [])
    assert set(sets) == {"prepare", "train", "report"}
    assert len({tuple(v) for v in sets.values()}) == 1, sets
    keys = {kv.split("=", 1)[0] for kv in sets["train"]}
    assert {"profile", "datasets", "variants", "seeds"} <= keys


# --- the plan job ---------------------------------------------------------------------------

def test_plan_defaults_are_the_paper_matrix(plan):
    from pipeline.__main__ import DATASETS
    from pipeline.variants import VARIANTS

    from pipeline.report import builder, paper

    spec = json.loads(PAPER_MATRIX.read_text())
    variants = list(VARIANTS)  # every declared variant, in their order
    assert set(spec["datasets"]) == set(DATASETS)
    assert set(variants) <= set(VARIANTS)
    # every variant a paper table of the report shows, and nothing else
    shown = ({r.variant for r in paper.TABLE1.rows + paper.TABLE2.rows if r.variant}
             | set(builder.BASELINES + builder.TABLE3_VARIANTS + builder.EXTRA_TABLE3 + builder.TABLE4_VARIANTS))
    assert set(variants) == shown
    assert json.loads(plan["datasets"]) == spec["datasets"]
    assert json.loads(plan["variants"]) == variants
    assert json.loads(plan["seeds"]) == spec["seeds"]
    assert json.loads(plan["matrix"]) == {"include": [{"dataset": d, "variant": v}
                                                      for d in spec["datasets"] for v in variants]}
    assert plan["profile"] == "paper" and plan["enabled"] == "true" and plan["runner"] == "cml"
    assert json.loads(plan["runs_on"]) == ["self-hosted", "cml-gpu"]
    assert json.loads(plan["slots"]) == list(range(1, int(plan["max_parallel"]) + 1))


def test_plan_outputs_are_what_the_jobs_read(plan):
    wf = load(PAPER_WF)
    declared = set(wf["jobs"]["plan"]["outputs"])
    assert declared == set(plan), "plan: job outputs and the outputs its script writes differ"
    text = PAPER_WF.read_text()
    read = set(re.findall(r"needs\.plan\.outputs\.(\w+)", text))
    assert read <= declared, f"jobs read plan outputs it does not have: {read - declared}"
    for key in set(re.findall(r"fromJSON\(needs\.plan\.outputs\.(\w+)\)", text)):
        json.loads(plan[key])  # what fromJSON() would fail on
    assert json.loads(plan["cpu_runs_on"]) == "ubuntu-latest"


def test_plan_inputs(tmp_path):
    r, out = run_plan(tmp_path / "out", IN_RUNNER="self-hosted", IN_DATASETS="mosi, iemocap",
                      IN_VARIANTS='["pase", "tfn", "pase"]', IN_SEEDS="0,1", IN_PROFILE="cpu",
                      IN_MAX_PARALLEL="50", VAR_CPU_RUNNER='["self-hosted", "gpu"]')
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(out["cpu_runs_on"]) == ["self-hosted", "gpu"]
    assert json.loads(out["runs_on"]) == ["self-hosted", "gpu"]
    assert json.loads(out["matrix"])["include"] == [
        {"dataset": d, "variant": v} for d in ("mosi", "iemocap") for v in ("pase", "tfn")]
    assert json.loads(out["seeds"]) == [0, 1] and out["profile"] == "cpu"
    assert out["max_parallel"] == "4"  # never more machines than shards
    for bad in ({"IN_VARIANTS": "pase,nope"}, {"IN_DATASETS": "mosi,sst2"}, {"IN_SEEDS": "[0, x]"},
                {"IN_RUNNER": "laptop"}, {"IN_DATASETS": "[mosi"}):
        r, _ = run_plan(tmp_path / "out", **bad)
        assert r.returncode != 0 and "::error" in r.stdout, bad


def test_schedule_runs_only_once_a_runner_is_chosen(tmp_path):
    r, out = run_plan(tmp_path / "out", EVENT="schedule")
    assert r.returncode == 0 and out["enabled"] == "false" and out["runner"] == ""
    r, out = run_plan(tmp_path / "out", EVENT="schedule", VAR_RUNNER="self-hosted")
    assert r.returncode == 0 and out["enabled"] == "true" and out["runner"] == "self-hosted"


# --- shape of the two workflows -------------------------------------------------------------

def test_cpu_workflow_runs_ci_script_on_python_311():
    wf = load(TESTS_WF)
    assert {"push", "pull_request"} <= set(wf["on"])
    (job,) = wf["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    assert any(s.get("with", {}).get("python-version") == "3.11" for s in job["steps"])
    assert [s["run"] for s in job["steps"] if "run" in s] == ["bash .ci/run"]


def test_gpu_workflow_shape():
    wf = load(PAPER_WF)
    on, jobs = wf["on"], wf["jobs"]
    assert not {"push", "pull_request", "pull_request_target"} & set(on), "never on every push"
    assert on["schedule"] and {"datasets", "variants", "seeds", "runner"} <= set(on["workflow_dispatch"]["inputs"])
    assert on["workflow_dispatch"]["inputs"]["runner"]["options"] == ["cml", "self-hosted"]
    assert wf["permissions"] == {"contents": "read"}
    assert jobs["report"]["permissions"]["pull-requests"] == "write"
    assert all("timeout-minutes" in j for j in jobs.values())
    assert "needs.plan.outputs.runner == 'cml'" in jobs["launch"]["if"]
    assert "needs.launch.result == 'skipped'" in jobs["train"]["if"]
    assert jobs["train"]["runs-on"] == "${{ fromJSON(needs.plan.outputs.runs_on) }}"
    launch = " ".join(s["run"] for s in jobs["launch"]["steps"] if "run" in s)
    assert "cml runner launch" in launch and "--labels=cml-gpu" in launch
    report = " ".join(s["run"] for s in jobs["report"]["steps"] if "run" in s)
    assert "$GITHUB_STEP_SUMMARY" in report and "cml comment" in report
    assert any(s.get("uses", "").startswith("actions/upload-artifact") for s in jobs["report"]["steps"])
    for job_id in ("prepare", "train"):
        pushes = [s["run"] for s in jobs[job_id]["steps"] if "dvc push" in s.get("run", "")]
        assert pushes and all("--run-cache" in p for p in pushes), job_id


# --- the CML launcher ---------------------------------------------------------------------

# AWS single-GPU instance types whose GPU computes in bf16 (Ampere or newer): A10G (g5), L4 (g6),
# L40S (g6e), A100 40 GB (p4d is 8 GPUs: not here).
SINGLE_GPU_BF16 = {"g5.xlarge", "g5.2xlarge", "g5.4xlarge", "g6.xlarge", "g6.2xlarge", "g6.4xlarge",
                   "g6e.xlarge", "g6e.2xlarge"}


def test_terraform_is_set_up_before_cml_launches_a_runner():
    steps = load(PAPER_WF)["jobs"]["launch"]["steps"]
    launch = next(i for i, s in enumerate(steps) if "cml runner launch" in s.get("run", ""))
    setup = [i for i, s in enumerate(steps) if s.get("uses", "").startswith("hashicorp/setup-terraform@")]
    assert setup and setup[0] < launch, "terraform must be installed before `cml runner launch`"
    assert steps[setup[0]].get("with", {}).get("terraform_wrapper") is False
    assert "terraform version" in steps[launch]["run"]


def test_default_cloud_machine_is_one_gpu_with_bf16():
    step = next(s for s in load(PAPER_WF)["jobs"]["launch"]["steps"] if "cml runner launch" in s.get("run", ""))
    env = step["env"]
    default_type = re.search(r"\|\|\s*'([^']+)'", env["TYPE"]).group(1)
    assert default_type in SINGLE_GPU_BF16, default_type
    assert "||" not in env["GPU"], "no default GPU flag: the native type brings its GPU"
    assert '[ -z "$GPU" ] || gpu_flag=' in step["run"]


def test_every_paper_run_names_its_training_device():
    """The paper profile's first-stage check needs an explicit device on the CPU jobs."""
    for job_id, job, step, script in run_steps(load(PAPER_WF)):
        if "dvc exp run" in script:
            assert '-S "train.device=cuda"' in script, job_id


def test_every_paper_run_sets_the_scheduling_explicitly():
    """A shard trains its own stage only: no look-ahead pool (train.ahead) on its GPU, whatever
    params.yaml's default."""
    runs = 0
    for job_id, job, step, script in run_steps(load(PAPER_WF)):
        cmds, _ = commands(script)
        for words in cmds:
            args = find(words, "dvc", "exp", "run")
            if args is not None:
                runs += 1
                ns = dvc_parse(["exp", "run", *args])
                assert "train.ahead=false" in (ns.set_param or []), job_id
    assert runs == 3
