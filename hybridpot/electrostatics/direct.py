"""Exact direct Coulomb sums of finite structures (all pairs, no cutoff)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from .kernels import COULOMB_CONSTANT, gaussian_coulomb_kernel

__all__ = ["finite_pairs", "direct_coulomb_matrix"]


def finite_pairs(ptr: torch.Tensor, batch: torch.Tensor, atom_mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """All pairs ``i < j`` inside the same structure, for atoms with ``atom_mask`` set.

    Vectorised over the batch (no loop over structures). Returns global indices ``i, j``.
    """
    n = batch.shape[0]
    device = batch.device
    idx = torch.arange(n, device=device)
    counts = (ptr[batch + 1] - idx - 1) * atom_mask.to(torch.long)
    i = torch.repeat_interleave(idx, counts)
    start = torch.cumsum(counts, 0) - counts
    j = i + 1 + (torch.arange(i.shape[0], device=device) - start[i])
    return i, j


def direct_coulomb_matrix(positions: torch.Tensor, sigma: Optional[torch.Tensor]) -> torch.Tensor:
    """Dense Coulomb matrix ``C_ij = k_e erf(r_ij/(sqrt2 gamma_ij))/r_ij`` (``C_ii = 0``) of one finite structure."""
    n = positions.shape[0]
    iu, ju = torch.triu_indices(n, n, 1, device=positions.device)
    r = (positions[ju] - positions[iu]).norm(dim=1)
    gamma = None if sigma is None else torch.sqrt(sigma[iu] ** 2 + sigma[ju] ** 2)
    k = COULOMB_CONSTANT * gaussian_coulomb_kernel(r, gamma)
    mat = positions.new_zeros(n, n)
    mat = mat.index_put((iu, ju), k).index_put((ju, iu), k)
    return mat
