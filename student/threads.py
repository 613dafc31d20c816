"""How many torch threads an engine uses: from the cores this process may run on, and what
else runs beside it.

torch starts one thread per core it sees. A trainer beside a serving gateway on a small box
then fights the gateway (and itself) for every core: on 2 cores training ran about 10 times
slower than with one thread (BENCHMARKS.md). ``0`` in a ``threads`` setting means
:func:`auto_threads`: the cores available, less one for everything else, shared out.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""Environment variables the math libraries of a child process read their thread count from."""


def available_cores(cpu_max: Path = CPU_MAX) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU quota if any."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def auto_threads(requested: int, *, cores: int | None = None, share: int = 1) -> int:
    """``requested`` when it is above 0; else the available cores less one (left to the
    gateway's event loop and whatever else runs), divided among ``share`` engines that run at
    once, and at least 1."""
    if requested > 0:
        return requested
    cores = available_cores() if cores is None else cores
    return max(1, (cores - 1) // max(1, share))


def thread_environment(threads: int) -> dict[str, str]:
    """The variables that hold a child process's math libraries to ``threads``."""
    return {name: str(threads) for name in THREAD_VARIABLES}


def use_threads(threads: int) -> None:
    """Hold torch's intra-op pool in this process to ``threads`` (imports torch)."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
