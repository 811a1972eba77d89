"""Projected CG and the dense constrained solve (hybridpot.qeq.solvers)."""


import pytest
import torch

import hybridpot as hp
from conftest import one_torch_thread
from hybridpot.qeq import (
    QEqConvergenceError,
    projected_cg,
    solve_qeq_dense,
)
from qeq_helpers import (
    make_qeq,
    graph_of,
    jittered_nacl,
)

# float() of results that carry autograd graphs is intended in these checks
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True")


_one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


def test_singular_and_nonconverging_systems():
    a = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)  # singular
    with pytest.raises(ValueError, match="singular"):
        solve_qeq_dense(a, torch.tensor([0.1, -0.1], dtype=torch.float64), torch.tensor([0, 0]), torch.tensor([0.0], dtype=torch.float64))
    groups = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="singular"):
        projected_cg(lambda v: a @ v, torch.tensor([1.0, -1.0], dtype=torch.float64), groups, 1, torch.ones(2, dtype=torch.float64))
    # a CG that cannot converge in the allowed iterations reports its residual
    atoms = jittered_nacl(2, seed=1)
    qeq = make_qeq(solver="matrix_free", cg_maxiter=2)
    system = hp.AtomicSystem.from_ase(atoms)
    with pytest.raises(QEqConvergenceError, match="relative residual"):
        qeq(system, graph_of(system, qeq.cutoff))


def test_projected_cg_starting_guess():
    """x0 = the solution: no iteration; any x0 (even infeasible) gives the constrained solution."""
    g = torch.Generator().manual_seed(2)
    m = torch.randn(20, 20, generator=g, dtype=torch.float64)
    a = m @ m.T + 20 * torch.eye(20, dtype=torch.float64)
    b = torch.randn(20, generator=g, dtype=torch.float64)
    groups = torch.tensor([0] * 12 + [1] * 8)
    x, it, _ = projected_cg(lambda v: a @ v, b, groups, 2, 1.0 / torch.diagonal(a), tol=1e-12)
    assert it > 0
    x_again, it0, _ = projected_cg(lambda v: a @ v, b, groups, 2, 1.0 / torch.diagonal(a), tol=1e-12, x0=x)
    assert it0 == 0 and torch.allclose(x_again, x, atol=1e-12)
    x_far, _, _ = projected_cg(lambda v: a @ v, b, groups, 2, 1.0 / torch.diagonal(a), tol=1e-12,
                               x0=torch.randn(20, generator=g, dtype=torch.float64))
    assert torch.allclose(x_far, x, atol=1e-9)
    assert abs(float(x_far[:12].sum())) < 1e-12 and abs(float(x_far[12:].sum())) < 1e-12
