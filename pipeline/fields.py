"""How a setting declares its bounds: `bounded(lo, hi, default=...)` for a dataclass field, which
pipeline/config.py checks (an out-of-range value stops the run naming the key and the range).
Here, not in config.py, so that the balancers can declare their sections without importing it."""
from __future__ import annotations

from dataclasses import field


def bounded(lo=None, hi=None, **kw):
    return field(metadata={"min": lo, "max": hi}, **kw)
