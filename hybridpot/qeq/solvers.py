"""Linear solvers of the QEq problem: projected preconditioned conjugate gradients (matrix-free)
and the dense constrained solve (differentiable to any order)."""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from .errors import IndefinitePreconditionerError, QEqConvergenceError

__all__ = ["projected_cg", "solve_qeq_dense"]


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
