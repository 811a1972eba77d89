"""The periodic Coulomb operator: dense form, PME stencil against torch-pme, atom order, continuity at the cutoff (hybridpot.electrostatics.operator)."""


import numpy as np
import pytest
import torch
from ase import Atoms

import hybridpot as hp
from conftest import one_torch_thread
from hybridpot.electrostatics import (
    Electrostatics,
    EwaldParameters,
)
from hybridpot.neighbors import build_graph, compute_neighbors
from electrostatics_helpers import (
    KE,
    _term,
    _fourier_energy,
    _random_cell,
    _pair_across_cutoff,
)

# float() of results that carry autograd graphs is intended in these checks
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True")


_one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)



def test_dense_matrix_matches_operator():
    pos, cell, q, sig = _random_cell(n=6, seed=5)
    atoms = Atoms("H6", positions=pos, cell=cell, pbc=True)
    elec = Electrostatics(method="ewald", accuracy=1e-8)
    _, system, graph = _term(atoms, elec, q, sig)
    st = torch.as_tensor(sig)
    qt = torch.as_tensor(q)
    for method in ("ewald", "pme"):
        op, _, _ = elec.periodic_operator(system, graph, st, 0, method=method)
        assert torch.allclose(op.dense() @ qt, op.matvec(qt), rtol=0, atol=1e-7 * float(qt.abs().max()) * KE)
    op, _, _ = elec.periodic_operator(system, graph, st, 0, method="ewald")
    dense = op.dense()
    assert torch.allclose(dense, dense.T, atol=1e-12)
    assert float(0.5 * qt @ dense @ qt) == pytest.approx(_fourier_energy(pos, cell, q, sig), rel=1e-8)


def test_pme_stencil_kspace_equals_torchpme():
    """hybridpot's flat-index PME spreading/interpolation gives torch-pme's k-space potential and the
    same derivatives with respect to charges, positions and cell (same mesh and weights)."""
    from hybridpot.electrostatics import EwaldParameters, PeriodicCoulomb

    pos, cell, q, sig = _random_cell(n=40, seed=7)
    positions = torch.as_tensor(pos).requires_grad_(True)
    cellt = torch.as_tensor(cell).requires_grad_(True)
    qt = torch.as_tensor(q).requires_grad_(True)
    empty = torch.zeros(0, dtype=torch.long)
    params = EwaldParameters.for_accuracy(1e-5, 4.0)
    op = PeriodicCoulomb(positions, cellt, empty, empty, torch.zeros(0, dtype=torch.float64), None, params, "pme")
    ours = op._pme_kspace(qt.unsqueeze(1)).squeeze(1)
    theirs = 2.0 * op.calculator._compute_kspace(qt.unsqueeze(1), cellt, positions).squeeze(1)
    assert float(theirs.abs().max()) > 1.0
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-12 * float(theirs.abs().max()))
    weights = torch.linspace(0.5, 1.5, len(q), dtype=torch.float64)
    for a, b in zip(torch.autograd.grad((weights * ours).sum(), [qt, positions, cellt], retain_graph=True),
                    torch.autograd.grad((weights * theirs).sum(), [qt, positions, cellt])):
        assert torch.allclose(a, b, rtol=0, atol=1e-11 * float(b.abs().max()))


def test_pme_products_do_not_depend_on_atom_order():
    """The PME operator sorts atoms by mesh cell internally: products (with and without autograd,
    float64 and float32 k-space) and their position derivatives follow any input order."""
    from hybridpot.electrostatics import EwaldParameters, PeriodicCoulomb

    pos, cell, q, sig = _random_cell(n=60, seed=11)
    perm = torch.as_tensor(np.random.default_rng(0).permutation(60))
    params = EwaldParameters.for_accuracy(1e-5, 4.0)
    empty = torch.zeros(0, dtype=torch.long)
    results = []
    for order in (torch.arange(60), perm):
        positions = torch.as_tensor(pos)[order].requires_grad_(True)
        op = PeriodicCoulomb(positions, torch.as_tensor(cell), empty, empty, torch.zeros(0, dtype=torch.float64),
                             torch.as_tensor(sig)[order], params, "pme")
        v = torch.as_tensor(q)[order]
        with torch.no_grad():
            no_grad = op.matvec(v)
            op.kspace_dtype = torch.float32
            rounded = op.matvec(v)
        energy = 0.5 * (v * op.matvec(v)).sum()
        (force,) = torch.autograd.grad(-energy, positions)
        inverse = torch.argsort(order)
        results.append([t.detach()[inverse] for t in (no_grad, rounded, force)] + [energy.detach()])
    (a64, a32, fa, ea), (b64, b32, fb, eb) = results
    scale = float(a64.abs().max())
    assert torch.allclose(a64, b64, rtol=0, atol=1e-12 * scale)
    assert torch.allclose(a32, b32, rtol=0, atol=1e-5 * scale)  # float32 sums in another order
    assert torch.allclose(fa, fb, rtol=0, atol=1e-11 * float(fa.abs().max()))
    assert float(ea) == pytest.approx(float(eb), rel=1e-12)


@pytest.mark.parametrize("method", ["ewald", "pme"])
def test_energy_and_forces_continuous_across_the_real_space_cutoff(method, dense_parameters):
    """A pair crossing the real-space cutoff: the energy is continuous to 1e-12 relative (the
    switch vanishes with its first two derivatives at the cutoff), forces too; with a hard cut
    (switch_width 0) the energy jumps by the erfc tail, ~1e-8 relative at accuracy 1e-6."""
    rc = 10.0
    eps = 1e-9
    smooth = EwaldParameters.for_accuracy(1e-6, rc)
    assert smooth.switch_width == pytest.approx(0.03 * rc)
    # the change across the cutoff (rc - eps -> rc + eps) equals the change over the same step just
    # inside (rc - 3 eps -> rc - eps) up to O(eps^2) and rounding: no jump
    e_before, f_before = _pair_across_cutoff(rc - 3 * eps, method, smooth)
    e_in, f_in = _pair_across_cutoff(rc - eps, method, smooth)
    e_out, f_out = _pair_across_cutoff(rc + eps, method, smooth)
    assert abs((e_out - e_in) - (e_in - e_before)) <= 1e-12 * abs(e_in), (e_before, e_in, e_out)
    assert abs((f_out - f_in) - (f_in - f_before)) <= 1e-12 * abs(f_in), (f_before, f_in, f_out)
    hard = EwaldParameters.for_accuracy(1e-6, rc, switch_width=0.0)
    e_before, _ = _pair_across_cutoff(rc - 3 * eps, method, hard)
    e_in, _ = _pair_across_cutoff(rc - eps, method, hard)
    e_out, _ = _pair_across_cutoff(rc + eps, method, hard)
    assert abs((e_out - e_in) - (e_in - e_before)) > 1e-9 * abs(e_in)  # a hard cut jumps: the test can fail


def test_qeq_operator_continuous_across_the_real_space_cutoff(dense_parameters):
    """The Coulomb matrix of the QEq solvers (dense Ewald form and matrix-free products) uses the
    same switched kernel: continuous to 1e-12 relative when a pair crosses the cutoff."""
    from hybridpot.electrostatics import periodic_operator

    params = EwaldParameters.for_accuracy(1e-6, 10.0)
    mats, products = [], []
    for separation in (10.0 - 3e-9, 10.0 - 1e-9, 10.0 + 1e-9):
        atoms = Atoms("NaClNaCl", positions=[[1.0, 1.0, 1.0], [1.0 + separation, 1.0, 1.0], [5.0, 17.0, 9.0],
                                             [9.0, 21.0, 13.0]], cell=[31.0] * 3, pbc=True)
        system = hp.AtomicSystem.from_ase(atoms)
        graph = build_graph(system, compute_neighbors(system, 10.0))
        sigma = torch.tensor([0.9, 0.8, 0.9, 0.8], dtype=torch.float64)
        mats.append(periodic_operator(system, graph, sigma, 0, params, "ewald")[0].dense())
        v = torch.tensor([1.0, -0.5, 0.25, -0.75], dtype=torch.float64)
        products.append(periodic_operator(system, graph, sigma, 0, params, "pme")[0].matvec(v))
    # the change across the cutoff equals the change over the same step just inside: no jump
    for before, inside, outside in (mats, products):
        jump = (outside - inside) - (inside - before)
        assert float(jump.abs().max()) <= 1e-12 * float(inside.abs().max()), float(jump.abs().max())
