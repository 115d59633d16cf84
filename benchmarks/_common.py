"""What the benchmarks share: running a measurement in a fresh process, and describing the machine."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path


def run_child(script: str, kind: str, spec: dict) -> dict:
    """Run `script --child kind` in a fresh Python process (so its memory figures are its own),
    feeding `spec` as JSON on stdin; the child prints its result as JSON on its last line."""
    proc = subprocess.run([sys.executable, script, "--child", kind], input=json.dumps(spec),
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{kind} run failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine(**versions: str) -> dict:
    """CPU model, usable cores, platform, Python, load, and the given package versions."""
    cpuinfo = Path("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")), "") if cpuinfo.exists() else ""
    return {"cpu": model or platform.processor(), "cpus_usable": len(os.sched_getaffinity(0)),
            "platform": platform.platform(), "python": platform.python_version(), **versions,
            "load_average_at_start": list(os.getloadavg())}


def pool_usage(work: Path) -> tuple[float, float]:
    """(CPU seconds, peak MiB of one process) of the look-ahead pool of the `dvc repro` that just
    ended in `work` (pipeline/ahead_pool.py writes usage.json; the pool is no child of DVC's, so
    getrusage of DVC's children misses it); (0, 0) when no pool ran. The file is removed once read,
    so the next measurement cannot count it again."""
    import time
    pool = work / "data" / "checkpoints" / "pool"
    deadline = time.time() + 30
    while (pool / "pool.json").exists() and time.time() < deadline:
        time.sleep(0.1)  # the pool stops within its poll after DVC has ended
    usage = pool / "usage.json"
    if not usage.exists():
        return 0.0, 0.0
    u = json.loads(usage.read_text())
    usage.unlink()
    return u["cpu_seconds"], max(u["peak_rss_mib_pool"], u["peak_rss_mib_seed_process"])
