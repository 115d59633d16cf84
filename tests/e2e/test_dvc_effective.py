"""Through real `dvc`: the training stages each README switch makes stale, and an experiment that
retrains only those (issue 17). A scratch git copy with one dataset, one seed and a variant of
each kind (marked slow; CI runs it)."""
import json

import pytest

from tests.helpers import make_repo, run, write_params

pytestmark = pytest.mark.slow

VARIANTS = ["pase", "pase-no_sgm", "pase-T", "pase-ogm_ge", "pase-mmpareto", "late_fusion", "tfn",
            "cpsl"]
BASE = {"datasets": ["mosi"], "seeds": [0], "variants": VARIANTS, "train": {"epochs": 2},
        "sgm": {"start_epoch": 2}}
# switch -> the train stages it makes stale (by hand, from what each model and balancer reads)
RERUNS = {
    "sgm.enabled=false": ["pase", "pase-T"],
    "sgm.rho=0.9": ["pase", "pase-T", "pase-no_sgm", "pase-ogm_ge", "pase-mmpareto"],
    "ogm.alpha=0.3": ["pase-ogm_ge"],
    "mmpareto.gamma=1.5": ["pase-mmpareto"],
    "cp.alpha=0.7": ["cpsl"],
    "pcl.enabled=false": ["pase", "pase-no_sgm", "pase-T", "pase-ogm_ge", "pase-mmpareto"],
    "train.lr=0.004": VARIANTS,
    "train.workers=1": [],
    "train.ahead=false": [],
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    work = make_repo(tmp_path_factory.mktemp("repo"), BASE)
    run(["dvc", "repro"], work)
    run(["git", "add", "-A"], work)
    run(["git", "commit", "-qm", "after repro"], work)
    return work


def _override(switch: str) -> dict:
    key, value = switch.split("=")
    node = out = {}
    *parents, leaf = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = json.loads(value) if value not in ("true", "false") else value == "true"
    return out


def test_each_switch_makes_only_its_runs_stale(repo):
    """After `configure` has run under the switch, `dvc status` lists exactly the train stages
    whose effective config changed (printed: the table the README quotes)."""
    found = {}
    try:
        for switch, expected in RERUNS.items():
            from tests.helpers import merge
            write_params(repo / "params.yaml", merge(BASE, _override(switch)))
            run(["dvc", "repro", "configure"], repo)
            stale = json.loads(run(["dvc", "status", "--json"], repo).stdout or "{}")
            found[switch] = sorted(k.split("-", 1)[1] for k in stale if k.startswith("train@"))
            assert found[switch] == sorted(expected), (switch, found[switch])
            assert not any(k.startswith(("embed@", "align@", "download@")) for k in stale), stale
    finally:
        print("\n".join(f"{s}: {', '.join(v) or '(none)'}" for s, v in found.items()))
        run(["git", "checkout", "--", "params.yaml", "dvc.lock"], repo)
        run(["dvc", "checkout", "-q"], repo, check=False)


def test_experiment_retrains_only_the_runs_it_changes(repo):
    exp = run(["dvc", "exp", "run", "-S", "ogm.alpha=0.3"], repo)
    ran = [l.split("'")[1] for l in exp.stdout.splitlines() if l.startswith("Running stage")]
    # configure may come from DVC's run cache (the status test ran it under the same params)
    assert sorted(set(ran) - {"configure"}) == ["figures", "report", "train@mosi-pase-ogm_ge"], ran
