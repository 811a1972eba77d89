"""Thread count for training and evaluation that cannot oversubscribe the machine.

torch's default is one intra-op thread per core, whatever else runs: on a busy 2-core machine
two training threads ran ~10x slower per epoch than one (measured for issue 15; every
oversubscribed thread spins). The default here is the number of cores this process may use
(``os.sched_getaffinity``) minus the current one-minute load of other processes, at least one;
a configured number wins.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import torch

__all__ = ["choose_threads", "apply_threads"]


def available_cpus() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover  (not Linux)
        return os.cpu_count() or 1


def choose_threads(requested: Optional[int] = None) -> Tuple[int, str]:
    """``(threads, reason)``: ``requested`` if given (>= 1), else free cores by the load average."""
    cpus = available_cpus()
    if requested is not None:
        requested = int(requested)
        if requested < 1:
            raise ValueError(f"threads must be >= 1, got {requested}")
        return requested, f"set in the configuration ({cpus} cores available)"
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover
        load = 0.0
    free = max(1, min(cpus, int(cpus - load + 0.5)))
    return free, f"{cpus} cores, load {load:.1f}: {free} free (set training.threads to choose)"


def apply_threads(requested: Optional[int] = None) -> Tuple[int, str]:
    """Set torch's intra-op threads (and numba's, when loaded) by :func:`choose_threads`."""
    threads, reason = choose_threads(requested)
    torch.set_num_threads(threads)
    return threads, reason
