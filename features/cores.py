"""How many cores a job should use: the ones free when it starts, unless told.

LightGBM's OpenMP threads spin while they wait for each other; beside another CPU-bound job
on a small machine, a fit that takes every core ran many times slower than one that takes
the cores left free. So jobs measure what is free (the idle share of the machine's CPU time
over a tenth of a second) and size their LightGBM and DuckDB threads to it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PROC_STAT = Path("/proc/stat")


def usable_cores() -> int:
    """The cores this process may run on, capped by ``OMP_NUM_THREADS`` when it is set."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores = cores or os.cpu_count() or 1
    cap = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, min(cores, int(cap))) if cap.isdigit() and int(cap) > 0 else cores


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of the whole machine, or None where /proc/stat is missing."""
    try:
        fields = [int(v) for v in PROC_STAT.read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields)


def free_cores(sample_seconds: float = 0.1) -> int:
    """The usable cores no other work is using now (at least 1)."""
    usable = usable_cores()
    before = _cpu_times()
    if before is None or usable == 1:
        return usable
    time.sleep(sample_seconds)
    after = _cpu_times()
    if after is None or after[1] <= before[1]:
        return usable
    idle_share = (after[0] - before[0]) / (after[1] - before[1])
    idle = round(idle_share * (os.cpu_count() or usable))
    return max(1, min(usable, idle))


def job_threads(requested: int) -> int:
    """``requested`` threads, or with 0 the cores free now."""
    return requested if requested > 0 else free_cores()
