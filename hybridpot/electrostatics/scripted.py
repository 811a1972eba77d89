"""TorchScript-compatible Coulomb sums of Gaussian charges, for the whole-model export.

The same formulas as :class:`~hybridpot.electrostatics.PeriodicCoulomb` (Ewald branch, its
``dense`` matrix and ``matvec``), :func:`~hybridpot.electrostatics.direct_coulomb_matrix` and
:func:`~hybridpot.electrostatics.screening_function`, written as plain functions of tensors and
floats so that ``torch.jit.script`` compiles them (the eager classes hold Python objects and
torch-pme modules built per call). torch-pme's Coulomb potential (``sr_from_dist``,
``lr_from_k_sq``, ``self_contribution``, ``background_correction``) is transcribed term by
term, so results agree with the eager model to rounding (tests/test_metatomic.py).

Units: Å, e, eV; ``k_e`` = :data:`~hybridpot.electrostatics.COULOMB_CONSTANT`. Pair lists here
are *full* lists (each pair in both directions, periodic images through integer shifts), as
an MD engine provides them; sums over them count each unordered pair twice, matrices get
each entry once per direction, which equals the eager half-list sums.

No ``from __future__ import annotations`` in this module: TorchScript reads the annotations.
"""

import math
from typing import List

import torch

from .kernels import COULOMB_CONSTANT

__all__ = ["gaussian_kernel", "cutoff_switch", "screening_factor", "ewald_kvectors", "real_space_kernel",
           "ewald_matrix", "direct_matrix", "SCRIPTED_SCREENING_CORES"]

#: k_e (eV Å/e^2) to pass to the functions below (TorchScript compiles no Python globals)
K_E: float = float(COULOMB_CONSTANT)
#: screening core functions available to the export, by the integer code the export stores
SCRIPTED_SCREENING_CORES = {"p2": 0, "c": 1}


def gaussian_kernel(r: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``erf(r / (sqrt2 gamma)) / r`` (1/Å), smooth at ``r = 0`` (series below x = 1e-4), as
    :func:`hybridpot.electrostatics.gaussian_coulomb_kernel`."""
    x = r / (math.sqrt(2.0) * gamma)
    small = x < 1e-4
    r_safe = torch.where(small, torch.ones_like(r), r)
    x_safe = r_safe / (math.sqrt(2.0) * gamma)
    regular = torch.erf(x_safe) / r_safe
    series = math.sqrt(2.0 / math.pi) / gamma * (1.0 - x * x / 3.0)
    return torch.where(small, series, regular)


def cutoff_switch(r: torch.Tensor, cutoff: float, width: float) -> torch.Tensor:
    """Smooth step of the real-space sums (:func:`hybridpot.electrostatics.cutoff_switch`)."""
    if width <= 0.0:
        return (r < cutoff).to(r.dtype)
    x = ((r - (cutoff - width)) / width).clamp(0.0, 1.0)
    return 1.0 - x * x * x * (10.0 + x * (-15.0 + 6.0 * x))


def screening_factor(r: torch.Tensor, inner: float, outer: float, core: int) -> torch.Tensor:
    """n2p2's screening ``f_s(r)`` (:func:`hybridpot.electrostatics.screening_function`) for the
    cores of :data:`SCRIPTED_SCREENING_CORES` (0: ``"p2"``, 1: ``"c"``)."""
    x = ((r - inner) / (outer - inner)).clamp(0.0, 1.0)
    if core == 0:
        return x * x * x * (10.0 + x * (-15.0 + 6.0 * x))
    return 1.0 - 0.5 * (torch.cos(math.pi * x) + 1.0)


def ewald_kvectors(cell: torch.Tensor, k_max: float) -> torch.Tensor:
    """Reciprocal vectors ``0 < |k| <= k_max`` ``[K, 3]`` (1/Å), differentiable in ``cell``
    (:func:`hybridpot.electrostatics.ewald_kvectors`)."""
    recip = 2.0 * math.pi * torch.linalg.inv(cell).transpose(0, 1)
    lengths = torch.linalg.vector_norm(cell.detach(), dim=1)
    ranges: List[torch.Tensor] = []
    for a in range(3):
        n = int(math.floor(k_max * float(lengths[a]) / (2.0 * math.pi)))
        ranges.append(torch.arange(-n, n + 1, device=cell.device, dtype=cell.dtype))
    grids = torch.meshgrid(ranges, indexing="ij")  # the order of torch.cartesian_prod
    m = torch.stack([grids[0].reshape(-1), grids[1].reshape(-1), grids[2].reshape(-1)], dim=1)
    k = m @ recip.detach()
    keep = (torch.linalg.vector_norm(k, dim=1) <= k_max) & (m.abs().sum(dim=1) > 0)
    return m[keep] @ recip


def real_space_kernel(distances: torch.Tensor, gamma: torch.Tensor, smearing: float, real_space_cutoff: float,
                      switch_width: float, k_e: float) -> torch.Tensor:
    """Real-space pair kernel (eV/e^2) of Ewald/PME for Gaussian charges: torch-pme's point-charge
    ``sr_from_dist`` (``from_dist - lr_from_dist``) minus ``k_e erfc(r/(sqrt2 gamma))/r``, times
    the smooth switch (``PeriodicCoulomb.real_kernel``)."""
    point = k_e * (1.0 / distances.clamp(min=1e-15))
    long_range = k_e * (torch.erf(distances / smearing / 2.0**0.5) / distances.clamp(min=1e-12))
    kernel = point - long_range - k_e * (torch.erfc(distances / (math.sqrt(2.0) * gamma)) / distances)
    if switch_width > 0.0:
        kernel = kernel * cutoff_switch(distances, real_space_cutoff, switch_width)
    return kernel


def ewald_matrix(positions: torch.Tensor, cell: torch.Tensor, i: torch.Tensor, j: torch.Tensor,
                 distances: torch.Tensor, sigma: torch.Tensor, smearing: float, k_max: float,
                 real_space_cutoff: float, switch_width: float, k_e: float) -> torch.Tensor:
    """Ewald Coulomb matrix ``C [n, n]`` (eV/e^2) of Gaussian charges in a periodic cell (``k_e``: :data:`K_E`).

    ``i, j, distances``: the full list of pairs closer than ``real_space_cutoff`` (Å);
    ``sigma [n]`` (Å). The eager ``PeriodicCoulomb(..., "ewald").dense()``: point-charge Ewald
    (torch-pme's Coulomb potential, smearing ``smearing`` Å, k-vectors up to ``k_max`` 1/Å)
    minus the Gaussian erfc correction on the pairs, times the smooth real-space switch, plus
    the neutralising background's Gaussian part. Differentiable in positions, cell, distances.
    """
    n = positions.shape[0]
    gamma = torch.sqrt(sigma.index_select(0, i) ** 2 + sigma.index_select(0, j) ** 2)
    kernel = real_space_kernel(distances, gamma, smearing, real_space_cutoff, switch_width, k_e)
    mat = positions.new_zeros(n, n).index_put((i, j), kernel, accumulate=True)
    volume = torch.linalg.det(cell).abs()
    kvec = ewald_kvectors(cell, k_max)
    k_sq = (kvec**2).sum(dim=1)
    masked = torch.where(k_sq == 0, torch.ones_like(k_sq), k_sq)
    g = k_e * torch.where(k_sq == 0, torch.zeros_like(k_sq),
                          4 * math.pi * torch.exp(-0.5 * smearing**2 * masked) / masked) / volume
    phase = kvec @ positions.T
    c, s = torch.cos(phase), torch.sin(phase)
    mat = mat + (c.T * g) @ c + (s.T * g) @ s
    self_term = k_e * (2 / math.pi) ** 0.5 / smearing
    background = 2.0 * (k_e * math.pi * smearing**2) / volume
    mat = mat - torch.diag(torch.full((n,), self_term, dtype=positions.dtype, device=positions.device)) - background
    s2 = sigma**2
    return mat + (2.0 * math.pi * k_e / volume) * (s2.unsqueeze(0) + s2.unsqueeze(1))


def direct_matrix(positions: torch.Tensor, sigma: torch.Tensor, k_e: float) -> torch.Tensor:
    """Coulomb matrix ``C_ij = k_e erf(r_ij/(sqrt2 gamma_ij))/r_ij`` ``[n, n]`` (``C_ii = 0``) of a
    finite structure (:func:`hybridpot.electrostatics.direct_coulomb_matrix`)."""
    n = positions.shape[0]
    iu = torch.triu_indices(n, n, 1, device=positions.device)
    a, b = iu[0], iu[1]
    r = torch.linalg.vector_norm(positions[b] - positions[a], dim=1)
    gamma = torch.sqrt(sigma[a] ** 2 + sigma[b] ** 2)
    k = k_e * gaussian_kernel(r, gamma)
    return positions.new_zeros(n, n).index_put((a, b), k).index_put((b, a), k)
