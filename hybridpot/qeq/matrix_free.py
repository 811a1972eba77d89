"""The matrix-free QEq solve: an autograd Function (charges by projected CG on the periodic
Coulomb operator, gradients by one adjoint solve) and the per-structure solve setup."""

from __future__ import annotations

import warnings
from typing import Optional

import torch

from ..electrostatics import PeriodicCoulomb
from .errors import IndefinitePreconditionerError, PreconditionerFallbackWarning
from .solvers import projected_cg

__all__ = ["KSPACE_FLOAT32_MIN_TOL", "DEFAULT_COARSE_TOL", "REBUILD_OPERATOR_MIN_ATOMS"]


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
        if positions.shape[0] < REBUILD_OPERATOR_MIN_ATOMS:
            setup.solve_operator = op  # reused by the adjoint solve (same geometry, no autograd)
        else:
            # large systems: the adjoint solve rebuilds it, so that the rest of the forward pass (the
            # electrostatics term, where the call's peak memory falls) runs without it
            setup.kspace_preconditioner = None
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
            if op is None:  # not kept (large system), or freed by an earlier backward (retain_graph)
                op = setup.operator(positions, cell, distances, sigma)
            lam, iters = setup.solve(op, lambda v: op.matvec(v) + diag * v, grad_q, diag, "adjoint")
        setup.iterations.append(iters)
        # the solves are done: free their operator (CSR real-space matrix, float32 stencil, mesh
        # buffers, preconditioner) before the differentiable product below builds its own; at
        # 21952 atoms that is ~300 MB off the call's peak, which falls in this product's backward
        del op
        setup.solve_operator = setup.kspace_preconditioner = None
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
                 coarse_tol: Optional[float] = None, slab: bool = False):
        self.pair_i, self.pair_j = pair_i, pair_j
        # a slab's operator adds the dipole correction to every product; the k-space
        # preconditioner ignores it (a PSD rank-1 term on the constraint space: still SPD)
        self.slab = bool(slab)
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
                               kspace_dtype=self.kspace_dtype, slab=self.slab)


#: From this many atoms the forward solve's Coulomb operator (CSR real-space matrix, PME stencil
#: in float32, mesh buffers, preconditioner) is not kept for the adjoint solve but rebuilt there.
#: Measured at 21952 melt atoms (benchmarks/md_step.py): the call's peak RSS drops from 2433 to
#: 2155 MB, and the rebuild costs 0.2-0.3 s CPU of an 8.2 s call (3%).
REBUILD_OPERATOR_MIN_ATOMS = 10_000

#: smallest CG tolerance at which kspace_precision="auto" evaluates the PME k-space part of the
#: CG products in float32 (its rounding, ~1e-7 relative, must stay well below the tolerance)
KSPACE_FLOAT32_MIN_TOL = 1e-5
#: default relative residual of the coarse-operator CG stage (benchmarks/README.md 4c)
DEFAULT_COARSE_TOL = 3e-4


def _matrix_free_energy(inputs, params, method, chi, diag, q, slab: bool = False) -> torch.Tensor:
    """``chi.q + 1/2 q.(C + diag) q`` with a fresh (differentiable) Coulomb operator."""
    op = PeriodicCoulomb(*inputs, params, method, slab=slab)
    return torch.dot(chi, q) + 0.5 * torch.dot(q, op.matvec(q) + diag * q)
