#!/usr/bin/env bash
# The device check (docs/gpu.md, "Device check"): one command, sized for 8 minutes on one H100
# (no GPU has run it yet), no network needed.
# Writes reports/gpu_check.json (or the path given as the first argument); extra arguments go to
# benchmarks/gpu_check.py (--steps, --seed-steps, --methods). Without a GPU it stops with a message.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DVC_NO_ANALYTICS=1
PY=${PYTHON:-python}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv || true; fi
# stopped at 470 s rather than overrun a device session's 8 minutes (--steps, --seed-steps and
# --methods shorten it)
exec timeout 470 "$PY" benchmarks/gpu_check.py "$@"
