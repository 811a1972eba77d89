"""TorchScript-compatible dense QEq solve with one total-charge constraint (whole-model export).

The same steps as :func:`hybridpot.qeq.solve_qeq_dense` for one constraint group (Cholesky of
``A``, two right-hand sides ``A [x, y] = [-chi, 1]``, ``q = x + (Q - sum x)/(sum y) y``), so the
exported model's charges equal the eager model's to rounding; differentiable to any order by
autograd (forces then include ``dq/dR`` without an adjoint solve).

No ``from __future__ import annotations`` here: TorchScript reads the annotations.
"""

import torch

__all__ = ["solve_qeq_dense_total"]


def solve_qeq_dense_total(a: torch.Tensor, chi: torch.Tensor, total_charge: torch.Tensor) -> torch.Tensor:
    """Charges ``q [n]`` (e) minimising ``chi.q + 1/2 q.A q`` with ``sum q = total_charge``.

    ``a``: ``[n, n]`` symmetric positive definite (eV/e^2); ``chi``: ``[n]`` (eV/e);
    ``total_charge``: ``[1]`` (e). Raises when ``A`` is not positive definite.
    """
    l, info = torch.linalg.cholesky_ex(a)
    if int(info) != 0:
        raise ValueError("QEq matrix is singular or not positive definite (Cholesky failed); check hardness, "
                         "widths and overlapping atoms")
    b = torch.ones(chi.shape[0], 1, dtype=a.dtype, device=a.device)  # [n, 1] = B^T of one group
    sol = torch.cholesky_solve(torch.cat([-chi.unsqueeze(1), b], dim=1), l)
    x, y = sol[:, 0], sol[:, 1:]
    schur = b.T @ y
    mu = torch.linalg.solve(schur, total_charge.reshape(1).to(a.dtype) - b.T @ x)
    q = x + y @ mu
    if not bool(torch.isfinite(q).all()):
        raise ValueError("QEq solution is not finite (singular system)")
    return q
