"""Users' files through real `dvc`: MMSA's aligned pickle (MOSI), MMSA's unaligned pickle (MOSEI)
and MulT's IEMOCAP pickle run end to end with `dvc repro`; replacing one file in place makes
`dvc status` list that dataset's data stages (and only those) and `dvc repro` rebuilds them.

Runs in a scratch git copy of the repository with tiny parameters (marked slow; CI runs it)."""
import hashlib
import json

import pytest

from pipeline.data.store import read_attrs
from tests.helpers import dump, make_repo, mmsa_data, mult_data, run

pytestmark = pytest.mark.slow

FILES = {"mosi": "aligned_50.pkl", "mosei": "unaligned_50.pkl", "iemocap": "iemocap_data.pkl"}


def test_user_pickles_are_tracked_by_dvc(tmp_path):
    data = {ds: {"source": "mult" if ds == "iemocap" else "mmsa", "path": f"data/user/{ds}/{name}",
                 "allow_unverified_pickle": True} for ds, name in FILES.items()}
    work = make_repo(tmp_path / "repo", {"datasets": list(FILES), "variants": ["pase", "mult"],
                                         "seeds": [0], "train": {"epochs": 2}, "data": data})
    user = {ds: work / "data" / "user" / ds / name for ds, name in FILES.items()}
    dump(user["mosi"], mmsa_data(aligned=True))
    dump(user["mosei"], mmsa_data(aligned=False, da=74, dv=35))
    dump(user["iemocap"], mult_data("iemocap", aligned=True)[0])

    run(["dvc", "repro"], work)
    aligned = {ds: read_attrs(work / "data" / "aligned" / f"{ds}.h5") for ds in FILES}
    assert {ds: a["alignment"] for ds, a in aligned.items()} == {"mosi": "token", "mosei": "none", "iemocap": "word"}
    assert aligned["mosei"]["lengths"] == {"text": 6, "audio": 9, "vision": 7}  # each its own
    for ds in FILES:
        m = json.loads((work / "data" / "runs" / ds / "mult" / "seed0" / "metrics.json").read_text())
        assert m.get("status") != "failed" and "test" in m, (ds, m)
    assert "up to date" in run(["dvc", "status"], work).stdout

    # replace MOSI's pickle in place: same name, same params, other contents
    dump(user["mosi"], mmsa_data(aligned=True, da=7))
    status = run(["dvc", "status"], work).stdout
    assert "download@mosi" in status and "data/user/mosi" in status
    assert "download@mosei" not in status and "download@iemocap" not in status
    out = run(["dvc", "repro"], work).stdout
    for stage in ("download@mosi", "align@mosi", "embed@mosi"):
        assert f"Running stage '{stage}'" in out, out[-3000:]
    assert "Running stage 'align@mosei'" not in out
    new = read_attrs(work / "data" / "aligned" / "mosi.h5")
    digest = hashlib.sha256(user["mosi"].read_bytes()).hexdigest()
    assert new["inputs_sha256"] == {"data/user/mosi/aligned_50.pkl": digest}
    assert new["dims"]["audio"] == 7 and new["features"]["audio"] == "MMSA aligned_50.pkl audio 7-d"

    # sharing it through DVC: `dvc add` puts aligned_50.pkl.dvc beside it, which reruns only the
    # download stage (it hashes the folder); its output is unchanged, so nothing after it reruns
    run(["dvc", "add", "-q", "data/user/mosi/aligned_50.pkl"], work)
    out = run(["dvc", "repro"], work).stdout
    assert "Running stage 'download@mosi'" in out and "Running stage 'align@mosi'" not in out, out[-3000:]
    assert "up to date" in run(["dvc", "status"], work).stdout
