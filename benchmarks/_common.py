"""Helpers shared by the benchmark scripts: device synchronisation and peak memory.

Peak memory is what a user has to provision: on CUDA the peak of PyTorch's allocator
(``torch.cuda.max_memory_allocated``, reset before each measured size); on the CPU the
process's peak resident set size (``ru_maxrss``) minus the resident size after imports.
``ru_maxrss`` never decreases, so on the CPU the figure is exact for the largest size run so
far; the scripts run sizes in increasing order, where it is the peak of the current size.
"""

from __future__ import annotations

import resource

import torch

_BASE_RSS_MB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synchronize(device) -> None:
    """Wait for queued GPU work (no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device) -> float:
    """Peak memory (MB) since :func:`reset_peak_memory` (CUDA) or above the post-import RSS (CPU)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - _BASE_RSS_MB


def device_label(device) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    return "CPU"
