"""How many threads psfmatch's own loops may use."""

from __future__ import annotations

import os

__all__ = ["available_cores"]


def available_cores() -> int:
    """``$PSFMATCH_NUM_THREADS`` if set to a positive integer, else the cores this process may run on.

    Set ``PSFMATCH_NUM_THREADS=1`` when many exposures are processed in parallel processes.
    """
    env = os.environ.get("PSFMATCH_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)
