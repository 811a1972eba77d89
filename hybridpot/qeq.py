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
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Dict, Iterable, Optional, Sequence, Tuple

import torch
from torch import nn

from .atomic_nets import ElementNets
from .descriptors import SymmetryFunctions, element_number
from .electrostatics import (
    COULOMB_CONSTANT,
    EwaldParameters,
    PeriodicCoulomb,
    direct_coulomb_matrix,
    periodic_operator,
    periodic_operator_inputs,
)
from .neighbors import Graph
from .system import AtomicSystem

__all__ = ["FixedCharges", "ChargeEquilibration", "QEqConvergenceError", "PreconditionerFallbackWarning",
           "IndefinitePreconditionerError", "TotalChargeWarning", "projected_cg", "solve_qeq_dense"]

_SQRT_PI = math.sqrt(math.pi)


class QEqConvergenceError(RuntimeError):
    """Conjugate gradients did not reach the requested tolerance."""


class TotalChargeWarning(UserWarning):
    """A structure's total charge lies far outside the total charges of the training data
    (:attr:`ChargeEquilibration.training_charge_range`): the charges are an extrapolation."""


#: how far (e) a total charge may lie outside the training range before a TotalChargeWarning
TOTAL_CHARGE_MARGIN = 1.0


class IndefinitePreconditionerError(ValueError):
    """:func:`projected_cg` found its preconditioner not positive definite (``r.z <= 0`` or not
    finite). :class:`ChargeEquilibration` catches it and solves again with Jacobi (with a
    :class:`PreconditionerFallbackWarning`); direct callers of :func:`projected_cg` see it."""


_IndefinitePreconditioner = IndefinitePreconditionerError  # (former private name)


class PreconditionerFallbackWarning(RuntimeWarning):
    """The k-space CG preconditioner failed (``r.z <= 0`` or not finite) and the solve was redone
    with Jacobi. The k-space preconditioner is positive definite by construction
    (:meth:`~hybridpot.electrostatics.PeriodicCoulomb.kspace_preconditioner`), so this points
    to non-finite inputs or rounding trouble; the result is still exact to ``cg_tol``, only
    slower. Recorded in :attr:`ChargeEquilibration.last_diagnostics` as well."""


def _element_table(values, elements: Sequence[int], name: str, default: Optional[float] = None) -> Dict[int, float]:
    """Per-element values from a float (all elements) or a dict keyed by symbol or number."""
    if isinstance(values, dict):
        table = {element_number(k): float(v) for k, v in values.items()}
        missing = [z for z in elements if z not in table]
        if missing and default is None:
            raise ValueError(f"{name} missing for element(s) {missing}")
        return {z: table.get(z, default) for z in elements}
    return {z: float(values) for z in elements}


def _inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


# ---------------------------------------------------------------------------- fixed charges
class FixedCharges(nn.Module):
    """Charges given with the input (``system.initial_charges``, e.g. ase initial charges).

    Parameters
    ----------
    sigma : float or dict, optional
        Gaussian width (Å) for all atoms, or per element (symbol or atomic number);
        None: point charges.
    """

    cutoff = 0.0

    def __init__(self, sigma: Optional[float | Dict] = None):
        super().__init__()
        table = torch.full((119,), float("nan"), dtype=torch.float64)
        self.point_charges = sigma is None
        if isinstance(sigma, dict):
            for k, v in sigma.items():
                table[element_number(k)] = float(v)
        elif sigma is not None:
            table[:] = float(sigma)
        if bool((table[~torch.isnan(table)] <= 0).any()):
            raise ValueError(f"Gaussian widths must be positive, got {sigma}")
        self.register_buffer("sigma_table", table)

    def forward(self, system: AtomicSystem, graph: Optional[Graph] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(q [N] e, sigma [N] Å or None)``; zero charges when the input has none."""
        q = system.initial_charges
        if q is None:
            q = torch.zeros(system.n_atoms, dtype=system.dtype, device=system.device)
        if q.shape != (system.n_atoms,):
            raise ValueError(f"initial charges must have shape [{system.n_atoms}], got {list(q.shape)}")
        if self.point_charges:
            return q, None
        sigma = self.sigma_table.to(system.dtype)[system.numbers]
        if bool(torch.isnan(sigma).any()):
            missing = sorted(set(system.numbers[torch.isnan(sigma)].tolist()))
            raise ValueError(f"FixedCharges has no Gaussian width for element(s) {missing}")
        return q, sigma


# ---------------------------------------------------------------------------- solvers
def _group_mean(v: torch.Tensor, groups: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    sums = torch.zeros(counts.shape[0], dtype=v.dtype, device=v.device).index_add(0, groups, v)
    return (sums / counts)[groups]


def projected_cg(matvec, b: torch.Tensor, groups: torch.Tensor, n_groups: int, precond: torch.Tensor,
                 tol: float = 1e-10, maxiter: int = 1000, x0: Optional[torch.Tensor] = None,
                 coarse: Optional[tuple] = None) -> Tuple[torch.Tensor, int, float]:
    """Solve ``P A P x = P b`` with ``x`` in ``{v: sum_{i in g} v_i = 0 for every group g}``.

    ``P`` subtracts each group's mean. Preconditioned CG with the symmetric preconditioner
    ``P diag(precond) P``. Stops when ``|P (b - A x)| <= tol |P b|``.

    ``precond`` is a tensor (diagonal preconditioner) or a function ``r -> M^-1 r``
    (symmetric positive definite). ``x0`` is a starting guess (projected onto the
    constraint space; e.g. the previous MD step's solution): the stopping rule stays relative
    to ``|P b|``, so a warm start gives the same accuracy in fewer iterations.
    ``coarse = (coarse_matvec, coarse_tol, log)``: when the start's relative residual is above
    ``coarse_tol``, first solve with the cheaper approximate operator ``coarse_matvec`` (same
    preconditioner) to ``coarse_tol`` and continue from there with ``matvec`` (the result and
    the stopping rule are those of ``matvec``; only the number of its products drops); the
    coarse stage's iteration count is appended to the list ``log``.
    Returns ``(x, iterations, relative residual)`` (iterations with ``matvec``). Raises
    :class:`QEqConvergenceError` (with the residual) if ``maxiter`` is reached and
    ``ValueError`` if ``A`` is not positive definite on the subspace (singular system).
    """
    counts = torch.zeros(n_groups, dtype=b.dtype, device=b.device).index_add(0, groups, torch.ones_like(b))

    def project(v):
        return v - _group_mean(v, groups, counts)

    if callable(precond):
        apply_precond = precond
    else:
        def apply_precond(v):
            return precond * v

    r = project(b)
    x = torch.zeros_like(b)
    b_norm = float(r.norm())
    if b_norm == 0.0:
        return x, 0, 0.0
    res = 1.0
    if x0 is not None:
        x = project(x0.to(dtype=b.dtype, device=b.device))
        r = r - project(matvec(x))
        res = float(r.norm()) / b_norm
        if res <= tol:
            return x, 0, res
    if coarse is not None and res > coarse[1]:
        coarse_matvec, coarse_tol, log = coarse
        x, coarse_iterations, _ = projected_cg(coarse_matvec, b, groups, n_groups, precond, coarse_tol, maxiter,
                                               None if x0 is None else x)
        log.append(coarse_iterations)
        r = project(b) - project(matvec(x))
    z = project(apply_precond(r))
    p = z
    rz = torch.dot(r, z)
    res = 1.0
    for it in range(1, maxiter + 1):
        ap = project(matvec(p))
        pap = torch.dot(p, ap)
        alpha = rz / pap
        x = x + alpha * p
        r = r - alpha * ap
        z = project(apply_precond(r))
        rz_new = torch.dot(r, z)
        # one host read per iteration (on a GPU, one synchronisation): the checks and the
        # residual together; the preconditioner is applied before knowing whether this
        # iteration converged, which costs one extra application per solve
        pap_value, r_norm, rz_value = torch.stack([pap, r.norm(), rz_new]).tolist()
        if not (pap_value > 0.0 and math.isfinite(pap_value)):
            raise ValueError(
                f"QEq matrix is singular or not positive definite on the constraint space (p.Ap = {pap_value:.3e} "
                f"at CG iteration {it}); check hardness and widths"
            )
        res = r_norm / b_norm
        if res <= tol:
            return x, it, res
        if not rz_value > 0.0:
            raise IndefinitePreconditionerError(
                f"preconditioner not positive definite (r.z = {rz_value:.3e} at CG iteration {it}); use a "
                "symmetric positive definite preconditioner (ChargeEquilibration: preconditioner='jacobi')")
        p = z + (rz_new / rz) * p
        rz = rz_new
    raise QEqConvergenceError(
        f"QEq conjugate gradients did not converge in {maxiter} iterations: relative residual {res:.3e} > tol {tol:.1e}"
    )


def solve_qeq_dense(a: torch.Tensor, chi: torch.Tensor, groups: torch.Tensor, totals: torch.Tensor
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Minimise ``chi.q + 1/2 q.A q`` subject to ``sum_{i in g} q_i = totals[g]``.

    Parameters
    ----------
    a : [n, n] symmetric positive definite matrix (eV/e^2)
    chi : [n] (eV/e);  groups : [n] int in ``0..G-1``;  totals : [G] (e)

    Returns ``(q [n], E_QEq scalar)``. Differentiable to any order. Raises ``ValueError``
    when ``A`` is singular / not positive definite.
    """
    n_groups = totals.shape[0]
    l, info = torch.linalg.cholesky_ex(a)
    if int(info) != 0:
        raise ValueError(
            f"QEq matrix is singular or not positive definite (Cholesky failed at column {int(info)}); "
            "check hardness, widths and overlapping atoms"
        )
    b = torch.nn.functional.one_hot(groups, n_groups).to(a.dtype)  # [n, G] = B^T
    sol = torch.cholesky_solve(torch.cat([-chi.unsqueeze(1), b], dim=1), l)
    x, y = sol[:, 0], sol[:, 1:]
    schur = b.T @ y  # [G, G], SPD
    mu = torch.linalg.solve(schur, totals - b.T @ x)
    q = x + y @ mu
    if not bool(torch.isfinite(q).all()):
        raise ValueError("QEq solution is not finite (singular system)")
    energy = torch.dot(chi, q) + 0.5 * torch.dot(q, a @ q)
    return q, energy


class _MatrixFreeQEq(torch.autograd.Function):
    """Charges from projected CG; backward by one more (adjoint) solve."""

    @staticmethod
    def forward(ctx, setup, chi, diag, positions, cell, distances, sigma):
        with torch.no_grad():
            op = setup.operator(positions, cell, distances, sigma)

            def matvec(v):
                return op.matvec(v) + diag * v

            q0 = setup.totals[setup.groups] / setup.counts[setup.groups]
            x, iters = setup.solve(op, matvec, -chi - matvec(q0), diag, "forward")
            q = q0 + x
        setup.iterations.append(iters)
        setup.solve_operator = op  # reused by the adjoint solve (same geometry, no autograd)
        ctx.setup = setup
        ctx.save_for_backward(chi, diag, positions, cell, distances, sigma, q)
        return q

    @staticmethod
    def backward(ctx, grad_q):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "the matrix-free QEq solver provides first derivatives only (forces, stress, parameter "
                "gradients of energies); use solver='dense' to train on forces (create_graph=True)"
            )
        setup = ctx.setup
        chi, diag, positions, cell, distances, sigma, q = ctx.saved_tensors
        with torch.no_grad():
            op = setup.solve_operator
            lam, iters = setup.solve(op, lambda v: op.matvec(v) + diag * v, grad_q, diag, "adjoint")
        setup.iterations.append(iters)
        inputs = [diag, positions, cell, distances, sigma]
        needs = ctx.needs_input_grad[2:]
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(n) for t, n in zip(inputs, needs)]
            op = setup.operator(*leaves[1:])
            aq = op.matvec(q.detach()) + leaves[0] * q.detach()
            wanted = [t for t, n in zip(leaves, needs) if n]
            grads = torch.autograd.grad(aq, wanted, grad_outputs=-lam, allow_unused=True) if wanted else []
        it = iter(grads)
        out = [next(it) if n else None for n in needs]
        grad_chi = -lam if ctx.needs_input_grad[1] else None
        return (None, grad_chi, *out)


class _MatrixFreeSetup:
    """Non-tensor data of one matrix-free solve (a structure's pairs, constraints, settings)."""

    def __init__(self, pair_i, pair_j, params, method, groups, totals, tol, maxiter, preconditioner="jacobi",
                 warm_start: Optional[dict] = None, kspace_dtype: Optional[torch.dtype] = None,
                 coarse_tol: Optional[float] = None):
        self.pair_i, self.pair_j = pair_i, pair_j
        self.kspace_dtype, self.coarse_tol = kspace_dtype, coarse_tol
        self.params, self.method = params, method
        self.groups, self.totals = groups, totals.detach()
        self.n_groups = int(totals.shape[0])
        self.counts = torch.zeros(self.n_groups, dtype=totals.dtype, device=totals.device).index_add(
            0, groups, torch.ones(groups.shape[0], dtype=totals.dtype, device=totals.device)
        )
        self.tol, self.maxiter = tol, maxiter
        self.preconditioner = preconditioner
        self.iterations = []
        self.coarse_iterations = []
        # previous solutions of the same structure ("forward": charges - q0, "adjoint"), or None
        self.warm_start = warm_start
        self.solve_operator = None  # the forward solve's operator, kept for the adjoint solve
        self.kspace_preconditioner = None
        self.fallback: Optional[str] = None  # why the k-space preconditioner was abandoned, if it was
        # what the solves did, kept up to date (a small dict: no reference to the operator)
        self.record = {"solver": "matrix_free", "preconditioner": preconditioner, "iterations": self.iterations,
                       "coarse_iterations": self.coarse_iterations, "fallback": None}

    def solve(self, op, matvec, rhs, diag, kind: str):
        """Projected CG with the k-space preconditioner (falling back to Jacobi) or Jacobi,
        started from the previous solution of the same ``kind`` when warm starts are on."""
        x0 = None
        if self.warm_start is not None:
            x0 = self.warm_start.get(kind)
            if x0 is not None and (x0.shape != rhs.shape or x0.device != rhs.device):
                x0 = None
        x = None
        if self.preconditioner == "kspace" and self.fallback is None:
            if self.kspace_preconditioner is None:  # built once, shared by the forward and adjoint solves
                self.kspace_preconditioner = op.kspace_preconditioner(diag)
            try:
                coarse = None
                if self.coarse_tol is not None and self.coarse_tol > self.tol and op.sigma is not None:
                    coarse_op = op.coarse_matvec()  # (point charges: the preconditioner mesh is the operator's)
                    coarse = (lambda v: coarse_op(v) + diag * v, self.coarse_tol, self.coarse_iterations)
                x, iters, _ = projected_cg(matvec, rhs, self.groups, self.n_groups, self.kspace_preconditioner,
                                           self.tol, self.maxiter, x0, coarse)
            except IndefinitePreconditionerError as error:
                # positive definite by construction: only rounding or non-finite values get here
                self.fallback = f"{kind} solve: k-space {error}; solved again with Jacobi"
                self.record.update(preconditioner="jacobi", fallback=self.fallback)
                warnings.warn(f"QEq CG: the k-space {error}; solving again with the Jacobi preconditioner "
                              "(same result, more iterations). Check the inputs for non-finite values, or set "
                              "preconditioner='jacobi' to skip the k-space one.",
                              PreconditionerFallbackWarning, stacklevel=2)
                x = None
        if x is None:
            x, iters, _ = projected_cg(matvec, rhs, self.groups, self.n_groups, 1.0 / diag, self.tol, self.maxiter, x0)
        if self.warm_start is not None:
            self.warm_start[kind] = x.detach().clone()
        return x, iters

    def operator(self, positions, cell, distances, sigma) -> PeriodicCoulomb:
        return PeriodicCoulomb(positions, cell, self.pair_i, self.pair_j, distances, sigma, self.params, self.method,
                               kspace_dtype=self.kspace_dtype)


#: smallest CG tolerance at which kspace_precision="auto" evaluates the PME k-space part of the
#: CG products in float32 (its rounding, ~1e-7 relative, must stay well below the tolerance)
KSPACE_FLOAT32_MIN_TOL = 1e-5
#: default relative residual of the coarse-operator CG stage (benchmarks/README.md 4c)
DEFAULT_COARSE_TOL = 3e-4


# ---------------------------------------------------------------------------- QEq term
class ChargeEquilibration(nn.Module):
    """4G-HDNNP charge equilibration: ``(q, sigma) = QEq(chi_NN(G), J, sigma, Q)``.

    Parameters
    ----------
    elements : iterable of int or str
    descriptor : SymmetryFunctions
        Descriptors for the electronegativity networks.
    hidden, activation
        Electronegativity network shape (one network per element, linear output, eV/e).
    solver : {"auto", "dense", "matrix_free"}
    cg_tol, cg_maxiter
        Relative residual tolerance and iteration limit of the matrix-free solver, which
        solves in float64 whatever the model's dtype (the tolerance is raised to at least
        ``50 eps`` of float64).
    hardness : float or dict
        Initial hardness ``J_Z`` (eV/e^2), learnable (softplus parametrisation, always > 0).
    sigma : float or dict
        Initial Gaussian widths ``sigma_Z`` (Å), learnable if ``learn_sigma``.
    accuracy, real_space_cutoff, periodic_method, interpolation_nodes
        Coulomb operator of periodic structures, as in
        :class:`~hybridpot.electrostatics.Electrostatics` (``periodic_method`` is the
        matrix-free operator: "pme" or "ewald"; the dense solver always uses Ewald).
    matrix_free_min_atoms : int
        ``solver="auto"`` uses the matrix-free solver for periodic structures at least this large
        (default 1000: the measured crossover, validation/README.md).
    preconditioner : {"auto", "kspace", "jacobi"}
        CG preconditioner of the matrix-free solver: ``"kspace"`` (PME operator only; see
        :meth:`~hybridpot.electrostatics.PeriodicCoulomb.kspace_preconditioner`; the CG
        iteration count then stays nearly constant with system size) or Jacobi;
        ``"auto"``: k-space with PME, Jacobi with Ewald.
    kspace_precision : {"auto", "float64", "float32"}
        Precision of the PME k-space part of the CG products and preconditioner (the CG itself,
        the real-space part and all derivatives stay in float64). ``"float32"`` makes each
        product about 1.9x faster on CPUs at 10^5 atoms; its rounding (~1e-7 relative) limits
        the reachable residual, so ``"auto"`` uses it only when ``cg_tol >= 1e-5``
        (measured: benchmarks/README.md 4c) and float64 otherwise (e.g. the default 1e-10).
    coarse_tol : float or None
        With the k-space preconditioner (PME, Gaussian charges), each CG solve first runs to
        this relative residual with a cheap approximate operator (the k-space part on the
        preconditioner's coarse mesh, ~4x cheaper per product, accurate to a few 1e-3) and
        then continues with the exact operator to ``cg_tol``: the same result and stopping
        rule, 40-50% fewer exact products (measured at 17576 atoms: 16/17 -> 7/8 exact iterations
        cold, 11/12 -> 7/7 warm; benchmarks/README.md 4c). None turns it off. Skipped when the
        start is already below ``coarse_tol`` (warm starts) or ``coarse_tol <= cg_tol``.
    training_charge_range : (float, float), optional
        Smallest and largest total charge (e) of the training structures, when known (a trainer
        sets it); a structure more than ``TOTAL_CHARGE_MARGIN`` (1 e) outside gets a
        :class:`TotalChargeWarning`. Non-finite total charges always raise ``ValueError``.
    warm_start : bool
        Start each matrix-free CG solve (charges and the adjoint solve for forces) from the
        previous call's solution for the same structure (same atoms in the same order, at
        the same position in the batch), e.g. the previous MD step. The stopping rule does
        not change (relative to the right-hand side), so results agree with cold starts to
        the CG tolerance; only the iteration count drops (benchmarks/README.md).

    After each call, ``last_energy`` holds ``E_QEq`` per structure ``[S]`` (eV,
    differentiable) and ``last_iterations`` the CG iteration counts.
    """

    def __init__(
        self,
        elements: Iterable[int | str],
        descriptor: SymmetryFunctions,
        hidden: Sequence[int] = (15, 15),
        activation: str | Sequence[str] = "tanh",
        solver: str = "auto",
        cg_tol: float = 1e-10,
        cg_maxiter: int = 1000,
        hardness: float | Dict = 1.0,
        sigma: float | Dict = 1.0,
        learn_sigma: bool = True,
        accuracy: float = 1e-6,
        real_space_cutoff: Optional[float] = None,
        periodic_method: str = "pme",
        interpolation_nodes: int = 7,
        matrix_free_min_atoms: int = 1000,
        preconditioner: str = "auto",
        warm_start: bool = True,
        kspace_precision: str = "auto",
        coarse_tol: Optional[float] = DEFAULT_COARSE_TOL,
        training_charge_range: Optional[Tuple[float, float]] = None,
    ):
        super().__init__()
        self.elements = sorted({element_number(e) for e in elements})
        missing = [z for z in self.elements if z not in descriptor.elements]
        if missing:
            raise ValueError(f"descriptor has no symmetry functions for element(s) {missing}")
        if solver not in ("auto", "dense", "matrix_free"):
            raise ValueError(f"unknown solver {solver!r}; choose 'auto', 'dense' or 'matrix_free'")
        if periodic_method not in ("pme", "ewald"):
            raise ValueError(f"periodic_method must be 'pme' or 'ewald', got {periodic_method!r}")
        if cg_tol <= 0:
            raise ValueError(f"cg_tol must be positive, got {cg_tol}")
        if preconditioner not in ("auto", "kspace", "jacobi"):
            raise ValueError(f"preconditioner must be 'auto', 'kspace' or 'jacobi', got {preconditioner!r}")
        if preconditioner == "kspace" and periodic_method != "pme":
            raise ValueError("the k-space preconditioner needs periodic_method='pme'")
        self.preconditioner = preconditioner
        if kspace_precision not in ("auto", "float64", "float32"):
            raise ValueError(f"kspace_precision must be 'auto', 'float64' or 'float32', got {kspace_precision!r}")
        self.kspace_precision = kspace_precision
        if coarse_tol is not None and not 0.0 < coarse_tol < 1.0:
            raise ValueError(f"coarse_tol must be in (0, 1) or None, got {coarse_tol}")
        self.coarse_tol = coarse_tol
        if training_charge_range is not None:
            low, high = (float(x) for x in training_charge_range)
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ValueError(f"training_charge_range must be (low, high) with low <= high, got {training_charge_range}")
            training_charge_range = (low, high)
        self.training_charge_range = training_charge_range
        self.warm_start = bool(warm_start)
        self._warm_cache: Dict[int, dict] = {}
        self.descriptor = descriptor
        n_inputs = {z: descriptor.n_features[descriptor.elements.index(z)] for z in self.elements}
        self.nets = ElementNets(self.elements, n_inputs, hidden=hidden, activation=activation)
        self.solver = solver
        self.cg_tol, self.cg_maxiter = float(cg_tol), int(cg_maxiter)
        self.periodic_method = periodic_method
        self.matrix_free_min_atoms = int(matrix_free_min_atoms)
        self.real_space_cutoff = 10.0 if real_space_cutoff is None else float(real_space_cutoff)
        self.params = EwaldParameters.for_accuracy(float(accuracy), self.real_space_cutoff, interpolation_nodes)

        j0 = _element_table(hardness, self.elements, "hardness")
        s0 = _element_table(sigma, self.elements, "sigma")
        if min(j0.values()) <= 0 or min(s0.values()) <= 0:
            raise ValueError("initial hardness and widths must be positive")
        lookup = torch.full((119,), -1, dtype=torch.long)
        lookup[self.elements] = torch.arange(len(self.elements))
        self.register_buffer("element_index", lookup, persistent=False)
        jt = torch.tensor([j0[z] for z in self.elements], dtype=torch.float64)
        st = torch.tensor([s0[z] for z in self.elements], dtype=torch.float64)
        self.raw_hardness = nn.Parameter(_inverse_softplus(jt))
        if learn_sigma:
            self.raw_sigma = nn.Parameter(_inverse_softplus(st))
        else:
            self.register_buffer("raw_sigma", _inverse_softplus(st))
        self._last_energies: list = []  # per structure: E_QEq, or a function computing it
        self._iteration_logs: list = []
        self._coarse_logs: list = []
        self._diagnostics: list = []

    def __getstate__(self):
        # the last call's results are graph tensors: not part of the model (copy, pickle, save)
        state = dict(self.__dict__)
        state["_last_energies"] = []
        state["_iteration_logs"] = []
        state["_coarse_logs"] = []
        state["_diagnostics"] = []
        state["_warm_cache"] = {}
        return state

    def __setstate__(self, state):
        state.setdefault("warm_start", True)  # models saved before warm starts existed
        state.pop("last_energy", None)  # models saved when it was a plain attribute
        state.setdefault("_last_energies", [])
        state.setdefault("_warm_cache", {})
        state.setdefault("_coarse_logs", [])
        state.setdefault("_diagnostics", [])
        # models saved before these options existed get today's defaults
        state.setdefault("kspace_precision", "auto")
        state.setdefault("coarse_tol", DEFAULT_COARSE_TOL)
        state.setdefault("training_charge_range", None)  # unknown for models saved before it existed
        if "params" in state:  # models saved before the real-space cutoff switch
            from .electrostatics import _upgraded

            state["params"] = _upgraded(state["params"])
        super().__setstate__(state)

    def _warm_start_slot(self, s: int, numbers: torch.Tensor, cache: Optional[dict] = None) -> Optional[dict]:
        """The warm-start store of structure ``s`` of the batch (reset when its atoms change), in
        the caller's ``cache`` when given, else in this module's own one."""
        if not self.warm_start:
            return None
        cache = self._warm_cache if cache is None else cache
        slot = cache.get(s)
        if slot is None or slot["numbers"].shape != numbers.shape or not torch.equal(slot["numbers"], numbers):
            slot = {"numbers": numbers.detach().clone()}
            cache[s] = slot
        return slot

    def _kspace_dtype(self) -> torch.dtype:
        """dtype of the PME k-space part of the CG products (``kspace_precision``)."""
        precision = self.kspace_precision
        if precision == "auto":
            precision = "float32" if self.cg_tol >= KSPACE_FLOAT32_MIN_TOL else "float64"
        return getattr(torch, precision)

    def _preconditioner_kind(self) -> str:
        if self.preconditioner == "auto":
            return "kspace" if self.periodic_method == "pme" else "jacobi"
        return self.preconditioner

    @property
    def last_iterations(self) -> list:
        """CG iteration counts of the last call (forward solves, then adjoint solves once backward ran)."""
        return [n for log in self._iteration_logs for n in log]

    @property
    def last_diagnostics(self) -> list:
        """One dict per structure of the last call: ``solver`` ("dense" or "matrix_free"); for
        matrix-free ones also ``preconditioner`` (the one that produced the result: "kspace" or
        "jacobi"), ``iterations`` (forward, then adjoint once backward ran), ``coarse_iterations``
        and ``fallback`` (None, or why the k-space preconditioner was replaced by Jacobi; a
        :class:`PreconditionerFallbackWarning` is issued as well)."""
        return [dict(d, iterations=list(d["iterations"]), coarse_iterations=list(d["coarse_iterations"]))
                if d["solver"] == "matrix_free" else dict(d) for d in self._diagnostics]

    @property
    def last_coarse_iterations(self) -> list:
        """Iteration counts of the coarse-operator stages of the last call (``coarse_tol``), in the
        order of the solves that ran one (not counted in :attr:`last_iterations`)."""
        return [n for log in self._coarse_logs for n in log]

    @property
    def cutoff(self) -> float:
        """Neighbour range (Å): descriptors, and the real-space cutoff for periodic structures."""
        return max(self.descriptor.cutoff, self.real_space_cutoff)

    @property
    def hardness(self) -> torch.Tensor:
        """``J_Z`` per element of ``self.elements`` (eV/e^2)."""
        return nn.functional.softplus(self.raw_hardness)

    @property
    def sigma(self) -> torch.Tensor:
        """``sigma_Z`` per element of ``self.elements`` (Å)."""
        return nn.functional.softplus(self.raw_sigma)

    def electronegativity(self, system: AtomicSystem, graph: Graph) -> torch.Tensor:
        """``chi_i`` (eV/e), ``[N]``."""
        features = self.descriptor(system.numbers, graph.within(self.descriptor.cutoff))
        return self.nets(features, system.numbers).squeeze(1)

    def forward(self, system: AtomicSystem, graph: Graph, warm_start_cache: Optional[dict] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(q [N] e, sigma [N] Å)``.

        ``warm_start_cache``: a dict owned by the caller that steps through time (a calculator or
        an MD driver; start with ``{}`` and pass the same dict at every step) holding the previous
        matrix-free solutions per structure; None uses this module's own store (as before).
        What the solves did is in :attr:`last_diagnostics`.
        """
        idx = self.element_index[system.numbers]
        if bool((idx < 0).any()):
            raise ValueError(f"ChargeEquilibration does not know element(s) {sorted(set(system.numbers[idx < 0].tolist()))}")
        chi = self.electronegativity(system, graph)
        dtype = chi.dtype
        hard = self.hardness.to(dtype)[idx]
        sigma = self.sigma.to(dtype)[idx]
        diag = hard + COULOMB_CONSTANT / (sigma * _SQRT_PI)
        groups, totals = constraint_groups(system)
        self._check_total_charges(system)
        charges, energies = [], []
        self._iteration_logs, self._coarse_logs, self._diagnostics = [], [], []
        for s in range(system.n_systems):
            a, b = int(system.ptr[s]), int(system.ptr[s + 1])
            g_local, t_local = _local_groups(groups[a:b], totals)
            if bool(system.periodic[s]) and not bool(system.pbc[s].all()):
                raise ValueError("ChargeEquilibration supports fully periodic or finite structures, not mixed boundaries")
            periodic = bool(system.periodic[s])
            use_mf = periodic and (self.solver == "matrix_free" or (self.solver == "auto" and b - a >= self.matrix_free_min_atoms))
            if use_mf:
                inputs, _, _, params = periodic_operator_inputs(system, graph, sigma, s, self.params)
                positions, cell, pair_i, pair_j, distances, sig = inputs
                # the CG solve (and its adjoint) always runs in float64: in float32 the rounding
                # noise of a large PME product stalls CG above its tolerance (seen at 8000 atoms)
                # and can break its positive definiteness
                tol = max(self.cg_tol, 50.0 * torch.finfo(torch.float64).eps)
                setup = _MatrixFreeSetup(pair_i, pair_j, params, self.periodic_method, g_local,
                                         t_local.double(), tol, self.cg_maxiter, self._preconditioner_kind(),
                                         self._warm_start_slot(s, system.numbers[a:b], warm_start_cache),
                                         self._kspace_dtype(),
                                         self.coarse_tol)
                as64 = [None if t is None else t.double() for t in (chi[a:b], diag[a:b], positions, cell,
                                                                   distances, sig)]
                q = _MatrixFreeQEq.apply(setup, *as64).to(dtype)
                self._iteration_logs.append(setup.iterations)
                self._coarse_logs.append(setup.coarse_iterations)
                self._diagnostics.append(setup.record)
                # E_QEq costs one more (differentiable) PME product: computed only when asked for
                energy = functools.partial(_matrix_free_energy, inputs, params, self.periodic_method,
                                           chi[a:b], diag[a:b], q)
            else:
                if periodic:
                    op, _, _ = periodic_operator(system, graph, sigma, s, self.params, "ewald")
                    c = op.dense()
                else:
                    c = direct_coulomb_matrix(system.positions[a:b], sigma[a:b])
                q, energy = solve_qeq_dense(c + torch.diag(diag[a:b]), chi[a:b], g_local, t_local)
                self._diagnostics.append({"solver": "dense"})
            charges.append(q)
            energies.append(energy)
        self._last_energies = energies
        return torch.cat(charges), sigma

    def _check_total_charges(self, system: AtomicSystem) -> None:
        """``ValueError`` for a non-finite total or fragment charge; :class:`TotalChargeWarning` for
        a total charge more than ``TOTAL_CHARGE_MARGIN`` e outside :attr:`training_charge_range`."""
        totals = system.charge.detach()
        if not bool(torch.isfinite(totals).all()):
            s = int(torch.nonzero(~torch.isfinite(totals)).flatten()[0])
            raise ValueError(f'structure {s}: the total charge (atoms.info["charge"]) is {float(totals[s])}; '
                             "it must be a finite number of elementary charges")
        if system.fragment_charges is not None and not bool(torch.isfinite(system.fragment_charges).all()):
            raise ValueError('fragment charges (atoms.info["fragment_charges"]) must be finite numbers, got '
                             f"{system.fragment_charges.tolist()}")
        known = getattr(self, "training_charge_range", None)
        if known is not None:
            low, high = known
            outside = (totals < low - TOTAL_CHARGE_MARGIN) | (totals > high + TOTAL_CHARGE_MARGIN)
            if bool(outside.any()):
                s = int(torch.nonzero(outside).flatten()[0])
                warnings.warn(
                    f'structure {s}: total charge {float(totals[s]):g} e (atoms.info["charge"]) is far outside the '
                    f"total charges of the training data ({low:g} to {high:g} e): the charges and energies are an "
                    "extrapolation", TotalChargeWarning, stacklevel=3)

    @property
    def last_energy(self) -> Optional[torch.Tensor]:
        """``E_QEq`` per structure ``[S]`` (eV) of the last call, differentiable like the charges
        (for matrix-free structures evaluated on first access: one more PME product)."""
        if not self._last_energies:
            return None
        self._last_energies = [e() if callable(e) else e for e in self._last_energies]
        return torch.stack(self._last_energies)


def _matrix_free_energy(inputs, params, method, chi, diag, q) -> torch.Tensor:
    """``chi.q + 1/2 q.(C + diag) q`` with a fresh (differentiable) Coulomb operator."""
    op = PeriodicCoulomb(*inputs, params, method)
    return torch.dot(chi, q) + 0.5 * torch.dot(q, op.matvec(q) + diag * q)


def constraint_groups(system: AtomicSystem) -> Tuple[torch.Tensor, torch.Tensor]:
    """Constraint group of every atom (global) and the groups' total charges.

    One group per structure, or the fragments when given. Raises ``ValueError`` when a
    fragment spans structures or the fragment charges of a structure do not add up to
    its total charge.
    """
    if system.fragments is None:
        return system.batch, system.charge
    frag = system.fragments.to(torch.long)
    totals = system.fragment_charges.to(system.dtype)
    if frag.shape != (system.n_atoms,):
        raise ValueError(f"fragments must have shape [{system.n_atoms}], got {list(frag.shape)}")
    n_frag = totals.shape[0]
    if bool((frag < 0).any()) or bool((frag >= n_frag).any()):
        raise ValueError(f"fragment indices must be in 0..{n_frag - 1}")
    owner = torch.full((n_frag,), -1, dtype=torch.long, device=frag.device)
    owner = owner.scatter_reduce(0, frag, system.batch, reduce="amax", include_self=True)
    owner_min = torch.full((n_frag,), system.n_systems, dtype=torch.long, device=frag.device)
    owner_min = owner_min.scatter_reduce(0, frag, system.batch, reduce="amin", include_self=True)
    if bool((owner != owner_min).any()):
        raise ValueError("a fragment contains atoms of different structures")
    used = owner >= 0
    per_structure = torch.zeros(system.n_systems, dtype=totals.dtype, device=totals.device).index_add(
        0, owner[used], totals[used]
    )
    bad = (per_structure - system.charge.to(totals.dtype)).abs() > 1e-6
    if bool(bad.any()):
        s = int(torch.nonzero(bad).flatten()[0])
        raise ValueError(
            f"structure {s}: fragment charges add up to {float(per_structure[s]):g} e but the total charge is "
            f"{float(system.charge[s]):g} e"
        )
    return frag, totals


def _local_groups(groups: torch.Tensor, totals: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    uniq, inverse = torch.unique(groups, return_inverse=True)
    return inverse, totals[uniq]
