"""The k-space CG preconditioner: SPD by construction on liquid boxes, iterations flat with N, float32 k-space products (hybridpot.electrostatics.preconditioner)."""

import math

import numpy as np
import pytest
import torch

import hybridpot as hp
from conftest import one_torch_thread
from hybridpot.qeq import (
    projected_cg,
)
from qeq_helpers import (
    KE,
    make_qeq,
    graph_of,
    jittered_nacl,
    _shipped_melt_frames,
    _liquid_boxes,
    warnings_as_errors,
)

# float() of results that carry autograd graphs is intended in these checks
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True")


_one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


def test_kspace_preconditioner_spd_and_effective():
    """The k-space preconditioner is symmetric positive definite and cuts the CG iterations."""
    from hybridpot.electrostatics import EwaldParameters, periodic_operator

    atoms = jittered_nacl(8, seed=4)
    system = hp.AtomicSystem.from_ase(atoms)
    graph = graph_of(system, 10.0)
    sigma = torch.where(system.numbers == 11, 0.8, 1.1).double()
    diag = torch.where(system.numbers == 11, 1.5, 3.0).double() + KE / (sigma * math.sqrt(math.pi))
    op, _, _ = periodic_operator(system, graph, sigma, 0, EwaldParameters.for_accuracy(1e-5, 10.0), "pme")
    prec = op.kspace_preconditioner(diag)
    g = torch.Generator().manual_seed(0)
    v, w = torch.randn(2, system.n_atoms, generator=g, dtype=torch.float64)
    assert float(v @ prec(w)) == pytest.approx(float(w @ prec(v)), rel=1e-10)
    smooth = torch.cos(2 * math.pi * system.positions[:, 0] / float(system.cell[0, 0, 0]))
    for x in (v, w, smooth, torch.ones_like(v)):
        assert float(x @ prec(x)) > 0
    results = {}
    for kind in ("kspace", "jacobi"):
        qeq = make_qeq(solver="matrix_free", preconditioner=kind, accuracy=1e-5, cg_tol=1e-10)
        with torch.no_grad():
            q, _ = qeq(system, graph)
        results[kind] = (q, qeq.last_iterations[0])
    (qk, nk), (qj, nj) = results["kspace"], results["jacobi"]
    assert torch.allclose(qk, qj, atol=1e-8)
    assert nk < 0.6 * nj, (nk, nj)
    with pytest.raises(ValueError, match="needs periodic_method='pme'"):
        make_qeq(solver="matrix_free", preconditioner="kspace", periodic_method="ewald")


@pytest.mark.parametrize("kspace_dtype", [None, torch.float32])
def test_kspace_preconditioner_spd_on_liquid_boxes(kspace_dtype):
    """Dense check: the preconditioner matrix is symmetric with smallest eigenvalue > 0 on every
    disordered box (the former form was indefinite on such boxes), in float64 and with the
    float32 k-space part; and its eigenvalues stay within the proven bounds
    ``[(1 - max g)/max(diag), 1/min(diag)]``."""
    from hybridpot.electrostatics import PRECONDITIONER_MAX_FILTER, EwaldParameters, periodic_operator

    for atoms in _liquid_boxes():
        system = hp.AtomicSystem.from_ase(atoms)
        graph = graph_of(system, 9.0)
        sigma = torch.where(system.numbers == 11, 0.917, 0.834).double()
        diag = torch.where(system.numbers == 11, 1.42, 1.40).double() + KE / (sigma * math.sqrt(math.pi))
        op, _, _ = periodic_operator(system, graph, sigma, 0, EwaldParameters.for_accuracy(1e-6, 9.0), "pme")
        op.kspace_dtype = kspace_dtype
        prec = op.kspace_preconditioner(diag)
        with torch.no_grad():
            m = torch.stack([prec(e) for e in torch.eye(system.n_atoms, dtype=torch.float64)])
        asym = float((m - m.T).abs().max() / m.abs().max())
        assert asym < (1e-6 if kspace_dtype is torch.float32 else 1e-12), asym
        eig = torch.linalg.eigvalsh(0.5 * (m + m.T))
        assert float(eig[0]) >= (1.0 - PRECONDITIONER_MAX_FILTER) / float(diag.max()) * (1 - 1e-6), float(eig[0])
        assert float(eig[0]) > 0.0
        assert float(eig[-1]) <= 1.0 / float(diag.min()) * (1 + 1e-6)
        # and it does something: the smallest eigenvalue is far below Jacobi's
        assert float(eig[0]) < 0.5 / float(diag.max())


def test_kspace_preconditioner_iterations_do_not_grow_on_melts():
    """CG with the k-space preconditioner on shipped-model melt boxes replicated 1, 2^3 and 3^3
    times (64, 512 and 1728 atoms, rattled so the replicas differ): no fallback, iterations
    roughly constant with N, while Jacobi's grow."""
    from hybridpot.electrostatics import EwaldParameters, periodic_operator
    from hybridpot.qeq import PreconditionerFallbackWarning

    frame = _shipped_melt_frames()[0]
    rng = np.random.default_rng(3)
    counts = {}
    for k in (1, 2, 3):
        atoms = frame.repeat((k, k, k))
        atoms.positions += rng.normal(scale=0.2, size=atoms.positions.shape)
        system = hp.AtomicSystem.from_ase(atoms)
        graph = graph_of(system, 8.0)
        sigma = torch.where(system.numbers == 11, 0.917, 0.834).double()
        diag = torch.where(system.numbers == 11, 1.42, 1.40).double() + KE / (sigma * math.sqrt(math.pi))
        op, _, _ = periodic_operator(system, graph, sigma, 0, EwaldParameters.for_accuracy(1e-4, 8.0), "pme")
        chi = torch.where(system.numbers == 11, -1.0, 1.0).double()
        groups = torch.zeros(system.n_atoms, dtype=torch.long)
        with torch.no_grad(), warnings_as_errors(PreconditionerFallbackWarning):
            matvec = lambda v: op.matvec(v) + diag * v  # noqa: E731
            _, n_kspace, _ = projected_cg(matvec, -chi, groups, 1, op.kspace_preconditioner(diag), 1e-8, 500)
            _, n_jacobi, _ = projected_cg(matvec, -chi, groups, 1, 1.0 / diag, 1e-8, 500)
        counts[system.n_atoms] = (n_kspace, n_jacobi)
    (k64, j64), (k512, j512), (k1728, j1728) = counts[64], counts[512], counts[1728]
    assert k1728 <= k64 + 4 and k512 <= k64 + 4, counts
    assert j1728 > j64 + 10, counts  # (the problem the preconditioner solves)
    assert k1728 < 0.5 * j1728, counts


def test_float32_kspace_products():
    """kspace_precision: float32 k-space products round at ~1e-7 (relative), give the charges of
    float64 products to the CG tolerance, and "auto" picks them only for cg_tol >= 1e-5."""
    from hybridpot.electrostatics import EwaldParameters, periodic_operator

    atoms = jittered_nacl(8, seed=6)
    system = hp.AtomicSystem.from_ase(atoms)
    graph = graph_of(system, 10.0)
    sigma = torch.where(system.numbers == 11, 0.8, 1.1).double()
    params = EwaldParameters.for_accuracy(1e-5, 10.0)
    op64, _, _ = periodic_operator(system, graph, sigma, 0, params, "pme")
    op32, _, _ = periodic_operator(system, graph, sigma, 0, params, "pme")
    op32.kspace_dtype = torch.float32
    v = torch.randn(system.n_atoms, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        exact, rounded = op64.matvec(v), op32.matvec(v)
    assert rounded.dtype == torch.float64
    error = float((rounded - exact).norm() / exact.norm())
    assert 0.0 < error < 1e-5, error
    charges = {}
    for precision in ("float64", "float32"):
        qeq = make_qeq(solver="matrix_free", accuracy=1e-5, cg_tol=1e-6, kspace_precision=precision)
        with torch.no_grad():
            charges[precision] = qeq(system, graph)[0]
    assert float((charges["float32"] - charges["float64"]).abs().max()) < 1e-5
    assert make_qeq(cg_tol=1e-5)._kspace_dtype() == torch.float32
    assert make_qeq(cg_tol=1e-10)._kspace_dtype() == torch.float64
    assert make_qeq(cg_tol=1e-4, kspace_precision="float64")._kspace_dtype() == torch.float64
    with pytest.raises(ValueError, match="kspace_precision"):
        make_qeq(kspace_precision="half")
