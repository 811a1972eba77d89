"""Charge models: fixed input charges and 4G-HDNNP charge equilibration (QEq).

Charge equilibration (Ko et al., Nat. Commun. 12, 398 (2021)): an element-wise network
gives each atom an electronegativity ``chi_i`` (eV/e) from its symmetry functions; with
per-element hardness ``J_Z > 0`` (eV/e^2) and Gaussian widths ``sigma_Z > 0`` (Å) the
charges minimise::

    E_QEq(q) = sum_i [chi_i q_i + 1/2 (J_i + k_e/(sigma_i sqrt(pi))) q_i^2]
             + 1/2 sum_{i != j, images} k_e q_i q_j erf(r_ij/(sqrt(2) gamma_ij)) / r_ij

subject to one total charge per structure, or one per fragment (``system.fragments`` /
``system.fragment_charges``). The Coulomb part is the one of
:mod:`hybridpot.electrostatics` (same kernels and periodic operator; the periodic
neutralising background included). The linear system is ``A q = -chi - B^T mu``,
``B q = Q`` with ``A = C + diag(J + k_e/(sigma sqrt(pi)))`` symmetric positive definite.

Solvers
-------
* ``"dense"``: Cholesky of ``A`` (finite: direct sum; periodic: Ewald matrix) and the
  Lagrange multipliers from ``A [x, Y] = [-chi, B^T]``; differentiable to any order by
  torch autograd (training on forces).
* ``"matrix_free"`` (periodic structures only): projected conjugate gradients on the
  constraint subspace ``{B v = 0}`` (one right-hand side for any number of fragments),
  ``A v`` from the PME (or Ewald) operator of torch-pme + erfc correction on the
  neighbour list + diagonal; preconditioner: a k-space approximate inverse of the smooth
  (long-wavelength) Coulomb part on a coarse mesh of its own (default with PME) or Jacobi
  ``1/(J + k_e/(sigma sqrt(pi)))``. The forward solve's operator and preconditioner are
  reused by the adjoint solve; products inside CG interpolate through a sparse CSR matrix.
  Each solve first runs to ``coarse_tol`` (3e-4) with a cheaper operator whose k-space part
  lives on the preconditioner's coarse mesh, then finishes with the exact operator (same
  result, 40-50% fewer exact products); for ``cg_tol >= 1e-5`` the k-space part of the
  products is evaluated in float32 (``kspace_precision``; CG vectors stay float64).
  Tolerance: ``cg_tol`` is a relative residual; the default 1e-10 makes the solve exact for
  tests, while for MD of large systems ``cg_tol ~ 0.1 x accuracy`` is enough (measured on a
  4096-atom melt at accuracy 1e-4: force error from the solve 1.6e-7 of the largest force at
  ``cg_tol`` 1e-5, 7e-7 at 1e-4, against a PME error of ~5e-5; benchmarks/README.md).
  Gradients by implicit differentiation: the backward pass solves ``P A P lambda = P g``
  once more and differentiates one explicit ``A q`` product; first derivatives only
  (forces, stress, parameter gradients of an energy loss), not force training.
* ``"auto"``: matrix-free for periodic structures with at least ``matrix_free_min_atoms``
  atoms, dense otherwise.

Fractional-charge limit (documented, tested): with only a total-charge constraint, two
separated neutral fragments A and B do not become neutral. At infinite separation
``E_QEq = sum over fragments of chi q + 1/2 J' q^2`` with a transfer ``q`` from B to A
minimising ``(chi_A - chi_B) q + 1/2 (J'_A + J'_B) q^2`` (each fragment's internal
response folded in), i.e. ``q_A = -(chi_A - chi_B)/(J'_A + J'_B)``; for a diatomic with
``J' = J + k_e/(sigma sqrt(pi))``, ``q_1 = -(chi_1 - chi_2)/(J'_1 + J'_2)`` -- the known
spurious charge transfer of QEq at dissociation. Per-fragment constraints remove it.

Package layout (one concept per module): :mod:`.fixed` (:class:`FixedCharges`), :mod:`.errors`,
:mod:`.constraints` (total and fragment charges), :mod:`.solvers` (projected CG, dense solve),
:mod:`.matrix_free` (the autograd Function of the matrix-free solve), :mod:`.term`
(:class:`ChargeEquilibration`).
"""

from __future__ import annotations

from .constraints import _local_groups, constraint_groups  # noqa: F401
from .errors import (  # noqa: F401
    TOTAL_CHARGE_MARGIN,
    IndefinitePreconditionerError,
    PreconditionerFallbackWarning,
    QEqConvergenceError,
    TotalChargeWarning,
    _IndefinitePreconditioner,
)
from .fixed import FixedCharges
from .matrix_free import DEFAULT_COARSE_TOL, KSPACE_FLOAT32_MIN_TOL, _matrix_free_energy, _MatrixFreeQEq, _MatrixFreeSetup  # noqa: F401
from .solvers import _group_mean, projected_cg, solve_qeq_dense  # noqa: F401
from .term import ChargeEquilibration, _element_table, _inverse_softplus  # noqa: F401

__all__ = ["FixedCharges", "ChargeEquilibration", "QEqConvergenceError", "PreconditionerFallbackWarning",
           "IndefinitePreconditionerError", "TotalChargeWarning", "projected_cg", "solve_qeq_dense",
           "constraint_groups"]
