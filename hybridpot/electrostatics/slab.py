"""Slabs: 2D-periodic Coulomb sums (pbc ``(True, True, False)``) by the 3D Ewald/PME sum of the
vacuum-padded cell plus the dipole correction of Yeh & Berkowitz in the form of Ballenegger,
Arnold & Cerdà for non-neutral slabs.

A slab is periodic along the lattice vectors ``a`` and ``b``, which lie in the xy plane, and not
along ``c``, which is parallel to z and long enough to hold the atoms plus vacuum. The 3D sum of
such a cell counts the periodic images along z too; the correction removes, to leading order in
the vacuum, their interaction (I.-C. Yeh and M. L. Berkowitz, J. Chem. Phys. 111, 3155 (1999);
V. Ballenegger, A. Arnold and J. J. Cerdà, J. Chem. Phys. 131, 094107 (2009))::

    E_slab = (2 pi k_e / V) [ M_z^2 - Q sum_i q_i z_i^2 - Q^2 L_z^2 / 12 ]

with ``M_z = sum_i q_i z_i`` (e Å), ``Q = sum_i q_i`` (e), ``V`` the cell volume including the
vacuum and ``L_z`` the length of ``c``. For a neutral slab only the Yeh-Berkowitz term
``2 pi k_e M_z^2 / V`` remains; the two charge terms make the energy of a charged slab (with the
3D sum's uniform neutralising background) converge to the 2D-periodic energy with its own
neutralising background as the vacuum grows. The potential ``dE_slab/dq_i`` is torch-pme's
``CoulombPotential.pbc_correction`` (torch-pme 0.5.0 implements exactly this form), used here
through :func:`hybridpot.electrostatics._torchpme.slab_correction_potential`.

Gaussian charges: the 3D sum's Gaussian part of the neutralising background,
``(2 pi k_e / V) Q sum_i q_i sigma_i^2`` (:mod:`hybridpot.electrostatics`), is left out for slabs.
It is an ``O(1/L_z)`` artifact of the 3D background that the correction does not remove: with it a
charged slab's energy approaches the 2D sum only as ``1/L_z`` (measured 0.91 eV Å / L_z for a
+1 e slab of 8 atoms), without it exponentially, like a neutral one. The 2D-periodic energy the
sum converges to is thus that of the 2D Ewald sum of the point charges (with its conventional
``k = 0`` term) minus the ``erfc`` Gaussian correction over all in-plane images.

As a matrix on charges ``q`` (``C_slab = d^2 E_slab / dq dq``)::

    C_slab = (4 pi k_e / V) [ z z^T - (z^2 1^T + 1 z^2^T) / 2 - (L_z^2 / 12) 1 1^T ]

On charges with a fixed total ``Q`` (every charge-equilibration constraint fixes it) this is the
PSD rank-1 Hessian ``(4 pi k_e / V) z z^T`` plus the linear term ``-(2 pi k_e / V) Q z^2 . q``
and the constant ``-(2 pi k_e / V) Q^2 L_z^2 / 12`` (:func:`slab_constrained_terms`): the dense
QEq solve uses that split (the full matrix, with its large negative ``1 1^T`` part, is not
positive definite: smallest eigenvalue of the QEq matrix -95.7 eV/e^2 with it, +3.7 with the split,
for a 48-atom NaCl(001) slab with 12 Å of vacuum); the projected CG of the matrix-free solve sees only the constrained part
anyway.

Validity: ``z_i`` are the atoms' Cartesian z coordinates as given (not wrapped: the slab must not
cross the cell's z boundary), and the vacuum gap ``L_z - (max z - min z)`` must be at least the
real-space cutoff, so that no atom has a periodic image along z within the real-space sum
(the neighbour lists make no images along z). The remaining error of the corrected sum falls
quickly with the vacuum (measured in tests/electrostatics/test_slab.py against an independent 2D
Ewald sum); the uncorrected 3D sum's error falls only as ``1/L_z``.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from .kernels import COULOMB_CONSTANT

__all__ = ["SLAB_PBC", "is_slab", "check_slab", "slab_constrained_terms", "slab_dipole_energy"]

#: the one partially periodic layout supported: periodic along a and b, not along c
SLAB_PBC = (True, True, False)
#: relative tolerance of the slab orientation (a, b in the xy plane, c along z)
_ORIENTATION_TOL = 1e-6


def is_slab(pbc: torch.Tensor) -> bool:
    """Whether a structure's pbc ``[3]`` is the slab layout ``(True, True, False)``."""
    return tuple(bool(p) for p in pbc.tolist()) == SLAB_PBC


def check_slab(positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor, real_space_cutoff: Optional[float],
               structure: int = 0) -> None:
    """Raise ``ValueError`` unless a partially periodic structure is a slab this module can sum.

    Parameters
    ----------
    positions : [n, 3] Å;  cell : [3, 3] Å (rows a, b, c);  pbc : [3] bool
    real_space_cutoff : float or None
        The Coulomb real-space cutoff (Å) the structure is summed with: the least vacuum gap
        (None: check the layout and orientation only).
    structure : int
        Index of the structure in its batch (for the message).
    """
    layout = tuple(bool(p) for p in pbc.tolist())
    if layout != SLAB_PBC:
        raise ValueError(
            f"structure {structure}: pbc={layout} is not supported by the Coulomb sums: partially periodic "
            "structures must be slabs with pbc=(True, True, False), periodic along the first two lattice "
            "vectors a, b (in the xy plane) and not along the third, c (along z). Reorder the cell so that the "
            "non-periodic direction is the third lattice vector along z (e.g. ase.geometry.permute_axes), or "
            "make the structure fully periodic (pbc=True) or finite (pbc=False); wires are not supported")
    cell = cell.detach().to(torch.float64)
    a, b, c = cell[0], cell[1], cell[2]
    length_c = float(c.norm())
    if length_c == 0.0:
        raise ValueError(
            f"structure {structure}: a slab (pbc=(True, True, False)) needs a third lattice vector c along z "
            "spanning the atoms plus vacuum (its length is the period of the 3D sum); e.g. "
            "atoms.center(vacuum=10.0, axis=2) sets it")
    tilt = max(abs(float(a[2])) / max(float(a.norm()), 1e-300), abs(float(b[2])) / max(float(b.norm()), 1e-300),
               float(c[:2].norm()) / length_c)
    if tilt > _ORIENTATION_TOL or float(c[2]) <= 0.0:
        raise ValueError(
            f"structure {structure}: a slab (pbc=(True, True, False)) needs a and b in the xy plane and c along +z "
            f"(lattice vectors {cell.tolist()}); rotate the structure so that the surface normal is +z "
            "(e.g. build it with ase.build surface functions, which use this orientation)")
    if real_space_cutoff is None:
        return
    z = positions.detach().to(torch.float64)[:, 2]
    extent = float(z.max() - z.min())
    gap = length_c - extent
    if gap < real_space_cutoff:
        raise ValueError(
            f"structure {structure}: the slab's atoms span {extent:.3f} Å along z in a {length_c:.3f} Å cell, "
            f"leaving {gap:.3f} Å of vacuum; a slab needs at least the Coulomb real-space cutoff, "
            f"{real_space_cutoff:.3f} Å, between the top atom and the bottom atom's periodic image (the dipole "
            f"correction's error also falls with more vacuum). Lengthen c to at least {extent + real_space_cutoff:.3f} Å "
            "(e.g. atoms.center(vacuum=..., axis=2), which also centres the slab); if the slab crosses the cell's z "
            "boundary, unwrap it along z first")


def slab_dipole_energy(positions: torch.Tensor, cell: torch.Tensor, charges: torch.Tensor) -> torch.Tensor:
    """``E_slab`` of the module docstring (eV), written out (independent of torch-pme's form).

    ``positions [n, 3]`` Å, ``cell [3, 3]`` Å, ``charges [n]`` e; differentiable in all three.
    """
    z = positions[:, 2]
    volume = torch.linalg.det(cell).abs()
    length = cell[2].norm()
    total = charges.sum()
    m_z = torch.dot(charges, z)
    return (2.0 * math.pi * COULOMB_CONSTANT / volume) * (
        m_z * m_z - total * torch.dot(charges, z * z) - total * total * length * length / 12.0)


def slab_constrained_terms(positions: torch.Tensor, cell: torch.Tensor, total_charge: torch.Tensor
                           ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(hessian [n, n], linear [n], constant)`` with ``E_slab(q) = 1/2 q.hessian.q + linear.q + constant``
    for every ``q`` whose sum is ``total_charge`` (e): ``hessian = (4 pi k_e / V) z z^T`` (PSD, rank 1),
    ``linear = -(2 pi k_e / V) Q z^2`` (eV/e), ``constant = -(2 pi k_e / V) Q^2 L_z^2 / 12`` (eV).
    Differentiable in positions and cell."""
    z = positions[:, 2]
    factor = 2.0 * math.pi * COULOMB_CONSTANT / torch.linalg.det(cell).abs()
    length = cell[2].norm()
    hessian = 2.0 * factor * torch.outer(z, z)
    linear = -factor * total_charge * z * z
    constant = -factor * total_charge * total_charge * length * length / 12.0
    return hessian, linear, constant
