"""Coulomb energy of Gaussian (or point) charges: exact direct sums and Ewald/PME.

Energy (eV), charges ``q`` (e), widths ``sigma`` (Å), ``gamma_ij = sqrt(sigma_i^2 + sigma_j^2)``::

    E_elec = 1/2 sum_{i != j, images} k_e q_i q_j erf(r_ij / (sqrt(2) gamma_ij)) / r_ij

(point charges: ``erf -> 1``). No self energy (it belongs to the charge model). The
per-atom potential is ``V_i = dE/dq_i = sum_j C_ij q_j`` (V = eV/e) and the per-atom energy
is ``q_i V_i / 2``. ``k_e`` is torch-pme's ``prefactors.eV_A``.

* Finite structures: exact direct sum over all pairs (no cutoff), vectorised over the
  batch.
* Periodic structures: point-charge Ewald or PME from torch-pme, minus the short-range
  correction ``k_e q_i q_j erfc(r_ij/(sqrt(2) gamma_ij))/r_ij`` on the neighbour list, plus
  the Gaussian part of the neutralising background (below).

Net charge in a periodic cell: the energy is that of the charges plus a uniform
neutralising background (the ``k = 0`` Fourier component removed). For point charges
this is torch-pme's ``-pi k_e s^2 Q^2 / V`` term (``s``: Ewald smearing, cancelled by the
real-space sum); for Gaussian charges the ``k = 0`` part of the erfc correction,
``(pi k_e / V) sum_ij q_i q_j gamma_ij^2 = (2 pi k_e / V) Q sum_i q_i sigma_i^2``, is added
back so the result does not depend on ``s`` and equals the Fourier-space energy of the
Gaussian charges with a background. Both vanish for neutral cells.

Parameters for a requested relative ``accuracy`` (not torch-pme's tuners, whose error
estimates were measured to be optimistic by 3-300x; the rules below were calibrated
against tight Ewald references and are checked in tests/test_electrostatics_parameters.py):

* smearing ``s`` from the real-space cutoff ``r_c``: ``erfc(r_c / (sqrt(2) s)) = 0.1 accuracy``;
* Ewald: all k-vectors with ``|k| <= k_max``, ``exp(-k_max^2 s^2 / 2) = 0.1 accuracy``;
* PME: ``interpolation_nodes`` (default 7) and a mesh so fine that the measured
  interpolation error law ``err ~ e0 (h/(0.137 s))^p`` gives ``0.05 accuracy`` for the
  potential (PME forces are several times less accurate than potentials; with this
  margin they stay below ``accuracy`` relative to the largest force).

n2p2 screening (``screening=(r_inner, r_outer)``, n2p2 keyword ``screen_electrostatics``):
the pair interaction in the *electrostatic energy* is multiplied by
``f_s(r) = 0 (r <= r_inner), 1 (r >= r_outer), 1 - c(x)`` in between, with
``x = (r - r_inner)/(r_outer - r_inner)`` and n2p2's default core function POLY2,
``c(x) = ((15 - 6x) x - 10) x^3 + 1``, i.e. ``f_s = x^3 (10 - 15 x + 6 x^2)``. In n2p2
(Structure::calculateElectrostaticEnergy + calculateScreeningEnergy) the charges come from
the *unscreened* QEq matrix; the electrostatic energy is ``1/2 q^T (A - diag J) q`` (the
unscreened Gaussian Coulomb energy incl. self terms) plus the screening energy
``-sum_i q_i^2/(2 sigma_i sqrt(pi)) + sum_{pairs r < r_outer} q_i q_j erf(r/(sqrt2 gamma))/r (f_s - 1)``,
which is exactly the screened ``E_elec`` above with ``erf(..)/r -> erf(..) f_s(r)/r``.
Here the screening therefore applies to :class:`Electrostatics` only, never to the QEq
matrix of :class:`~hybridpot.qeq.ChargeEquilibration`. (n2p2's periodic loop counts a pair
of an atom with its own periodic image inside ``r_outer`` twice; this only matters for
cells shorter than ``r_outer`` and is not reproduced: each pair is counted once.)

Slabs (pbc ``(True, True, False)``, c along z, vacuum at least the real-space cutoff): the 3D sum
of the vacuum-padded cell plus the Yeh-Berkowitz / Ballenegger-Arnold-Cerdà dipole correction,
:mod:`.slab`; other partially periodic layouts are refused.

Package layout (one concept per module): :mod:`.kernels` (pair kernels, screening, cutoff
switch), :mod:`.direct` (finite structures), :mod:`.parameters` (Ewald/PME parameters, n2p2's
truncation), :mod:`.ewald` (k-vectors), :mod:`.mesh` (PME stencil, spreading, convolutions),
:mod:`.operator` (:class:`PeriodicCoulomb`), :mod:`.preconditioner` (CG preconditioner, coarse
operator), :mod:`.slab` (2D-periodic slabs: layout checks, dipole correction), :mod:`.term`
(:class:`Electrostatics`) and :mod:`._torchpme` (every call into torch-pme's internals).
"""

from __future__ import annotations

from .direct import direct_coulomb_matrix, finite_pairs
from .ewald import ewald_kvectors
from .kernels import (
    COULOMB_CONSTANT,
    SCREENING_CORES,
    cutoff_switch,
    erfc_coulomb_kernel,
    gaussian_coulomb_kernel,
    screening_function,
)
from .mesh import (  # noqa: F401  (private helpers, importable as before)
    _csr,
    _interpolation_matrix,
    _interpolation_stencil,
    _MeshConvolution,
    _sparse_csr,
    _sparse_index_dtype,
    _spatial_order,
    _spread,
    _unsort,
)
from .operator import PeriodicCoulomb, _structure_pairs, periodic_operator, periodic_operator_inputs  # noqa: F401
from .parameters import (  # noqa: F401
    _PME_ERROR_LAW,
    DILUTE_DENSITY,
    SWITCH_FRACTION,
    EwaldParameters,
    N2p2EwaldTruncation,
    _fft_size,
    _upgraded,
    minimum_real_space_cutoff,
)
from .preconditioner import (
    PRECONDITIONER_DENSITY_SPACING,
    PRECONDITIONER_MAX_FILTER,
    PRECONDITIONER_NODES,
    PRECONDITIONER_SPACING,
)
from .term import Electrostatics

__all__ = [
    "Electrostatics",
    "COULOMB_CONSTANT",
    "gaussian_coulomb_kernel",
    "erfc_coulomb_kernel",
    "screening_function",
    "SCREENING_CORES",
    "EwaldParameters",
    "PeriodicCoulomb",
    "finite_pairs",
    "direct_coulomb_matrix",
    "cutoff_switch",
    "minimum_real_space_cutoff",
    "N2p2EwaldTruncation",
    "ewald_kvectors",
    "periodic_operator",
    "periodic_operator_inputs",
]
