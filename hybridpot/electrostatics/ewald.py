"""Explicit Ewald k-space sums: the reciprocal vectors."""

from __future__ import annotations

import math

import torch

__all__ = ["ewald_kvectors"]


def ewald_kvectors(cell: torch.Tensor, k_max: float) -> torch.Tensor:
    """All reciprocal vectors ``0 < |k| <= k_max`` of ``cell`` (rows = lattice vectors), ``[K, 3]``.

    Differentiable with respect to ``cell`` (the integer set is chosen without gradients).
    """
    recip = 2.0 * math.pi * torch.linalg.inv(cell).transpose(0, 1)  # rows b_a, a_a . b_b = 2 pi delta
    lengths = cell.detach().norm(dim=1)
    n_max = [int(math.floor(k_max * float(length) / (2.0 * math.pi))) for length in lengths]
    ranges = [torch.arange(-n, n + 1, device=cell.device, dtype=cell.dtype) for n in n_max]
    m = torch.cartesian_prod(*ranges).reshape(-1, 3)
    k = m @ recip.detach()
    keep = (k.norm(dim=1) <= k_max) & (m.abs().sum(dim=1) > 0)
    return m[keep] @ recip
