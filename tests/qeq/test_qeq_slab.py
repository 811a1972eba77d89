"""Charge equilibration on slabs (pbc True, True, False): dense and matrix-free solves agree and keep
the total and fragment charges, the charges equal an independent solution with the 2D Ewald
Coulomb matrix, and forces match finite differences."""

import numpy as np
import pytest
import torch
from ase.build import bulk

import hybridpot as hp
from ewald2d_reference import KE, ewald_2d_energy
from hybridpot.electrostatics import Electrostatics
from qeq_helpers import graph_of, make_qeq


def nacl_slab(layers=3, repeat=1, vacuum=12.0, seed=0, jitter=0.12, charge=0.0):
    """A rock-salt NaCl(001) slab of ``layers`` layers (8 repeat^2 / 2 atoms each, a = 5.64 Å), jittered,
    in a cell with ``vacuum`` Å between the top layer and the bottom layer's image; c along z."""
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat((repeat, repeat, (layers + 1) // 2))
    atoms = atoms[atoms.positions[:, 2] < (layers - 0.5) * 2.82]
    atoms.positions += np.random.default_rng(seed).normal(scale=jitter, size=atoms.positions.shape)
    atoms.cell[2] = [0.0, 0.0, np.ptp(atoms.positions[:, 2]) + vacuum]
    atoms.positions[:, 2] += vacuum / 2 - atoms.positions[:, 2].min()
    atoms.pbc = (True, True, False)
    atoms.info["charge"] = charge
    return atoms


@pytest.mark.parametrize("charge", [0.0, 1.0])
def test_dense_and_matrix_free_agree_on_a_slab_and_keep_the_total_charge(charge):
    atoms = nacl_slab(layers=3, repeat=2, charge=charge)  # 48 atoms
    system = hp.AtomicSystem.from_ase(atoms)
    results = {}
    for name, solver, method in (("dense", "dense", "pme"), ("pme", "matrix_free", "pme"),
                                 ("ewald", "matrix_free", "ewald")):
        qeq = make_qeq(solver=solver, periodic_method=method, accuracy=1e-7, cg_tol=1e-12, coarse_tol=None)
        q, _ = qeq(system, graph_of(system, qeq.cutoff))
        results[name] = (q.detach(), float(qeq.last_energy.detach()), qeq.last_diagnostics[0])
    dense, pme, ewald = results["dense"], results["pme"], results["ewald"]
    assert float(dense[0].abs().max()) > 0.2
    for q, _, _ in results.values():
        assert float(q.sum()) == pytest.approx(charge, abs=1e-10)
    # Ewald operator: the same matrix as the dense solve; PME: within its accuracy
    assert float((ewald[0] - dense[0]).abs().max()) < 1e-9
    assert ewald[1] == pytest.approx(dense[1], rel=1e-10)
    assert float((pme[0] - dense[0]).abs().max()) < 1e-6
    assert pme[1] == pytest.approx(dense[1], rel=1e-7)
    # the k-space preconditioner (which ignores the PSD dipole term) stays SPD on the slab
    assert pme[2]["preconditioner"] == "kspace" and pme[2]["fallback"] is None
    assert ewald[2]["preconditioner"] == "jacobi"
    print("CG iterations on the slab: k-space", pme[2]["iterations"], "Jacobi", ewald[2]["iterations"])


def test_slab_fragment_charges_are_kept_by_both_solvers():
    atoms = nacl_slab(layers=2, repeat=2)  # 32 atoms
    n = len(atoms)
    atoms.info["fragments"] = [list(range(0, n // 2)), list(range(n // 2, n))]
    atoms.info["fragment_charges"] = [1.0, -2.0]
    atoms.info["charge"] = -1.0
    system = hp.AtomicSystem.from_ase(atoms)
    charges = []
    for solver in ("dense", "matrix_free"):
        qeq = make_qeq(solver=solver, periodic_method="ewald", accuracy=1e-7, cg_tol=1e-12)
        q = qeq(system, graph_of(system, qeq.cutoff))[0].detach()
        assert float(q[: n // 2].sum()) == pytest.approx(1.0, abs=1e-10)
        assert float(q[n // 2:].sum()) == pytest.approx(-2.0, abs=1e-10)
        charges.append(q)
    assert float((charges[0] - charges[1]).abs().max()) < 1e-9


def _coulomb_matrix_2d(atoms, sigma):
    """``C_ij = d^2 E_2D / dq_i dq_j`` of the independent 2D Ewald sum, by polarisation of the
    quadratic form (``E(e_i + e_j) - E(e_i) - E(e_j)``), eV/e^2."""
    n = len(atoms)
    a, b = atoms.cell[0], atoms.cell[1]
    pos = atoms.positions

    def energy(q):
        return ewald_2d_energy(pos, q, sigma, a, b)

    unit = np.eye(n)
    single = np.array([energy(unit[i]) for i in range(n)])
    c = np.diag(2.0 * single)
    for i in range(n):
        for j in range(i + 1, n):
            c[i, j] = c[j, i] = energy(unit[i] + unit[j]) - single[i] - single[j]
    return c


@pytest.mark.parametrize("charge", [0.0, 1.0])
def test_slab_charges_equal_an_independent_2d_solution(charge):
    """Dense QEq on the corrected 3D sum vs the constrained minimum of chi.q + 1/2 q.(C_2D + diag) q
    with the 2D Ewald matrix (numpy KKT solve); the uncorrected 3D sum (pbc True) is much further off."""
    atoms = nacl_slab(layers=2, vacuum=14.0, seed=1, charge=charge)  # 8 atoms
    system = hp.AtomicSystem.from_ase(atoms)
    qeq = make_qeq(solver="dense", accuracy=1e-9, real_space_cutoff=11.0)
    graph = graph_of(system, qeq.cutoff)
    q, sigma = qeq(system, graph)
    chi = qeq.electronegativity(system, graph).detach().numpy()
    sigma = sigma.detach().numpy()
    index = qeq.element_index[system.numbers]
    diag = qeq.hardness.detach()[index].numpy() + KE / (sigma * np.sqrt(np.pi))
    n = len(atoms)
    kkt = np.zeros((n + 1, n + 1))
    kkt[:n, :n] = _coulomb_matrix_2d(atoms, sigma) + np.diag(diag)
    kkt[:n, n] = kkt[n, :n] = 1.0
    reference = np.linalg.solve(kkt, np.concatenate([-chi, [charge]]))[:n]
    error = np.abs(q.detach().numpy() - reference).max()
    bulk_atoms = atoms.copy()
    bulk_atoms.pbc = True
    bulk_system = hp.AtomicSystem.from_ase(bulk_atoms)
    q3d, _ = qeq(bulk_system, graph_of(bulk_system, qeq.cutoff))
    error_3d = np.abs(q3d.detach().numpy() - reference).max()
    print(f"slab QEq charges vs 2D reference: corrected {error:.2e} e, uncorrected 3D {error_3d:.2e} e")
    assert np.abs(reference).max() > 0.2
    assert error < 1e-7
    assert error_3d > 100 * error


@pytest.mark.parametrize("solver", ["dense", "matrix_free"])
def test_slab_qeq_forces_match_finite_differences(solver):
    atoms = nacl_slab(layers=2, vacuum=10.5, seed=2, jitter=0.2, charge=0.5)
    qeq = make_qeq(solver=solver, accuracy=1e-6, cg_tol=1e-13)
    model = hp.HybridPotential(charges=qeq, electrostatics=Electrostatics(accuracy=1e-6))

    def energy(a):
        return float(model(hp.AtomicSystem.from_ase(a), compute_forces=False, compute_stress=False)["energy"])

    forces = model(hp.AtomicSystem.from_ase(atoms), compute_stress=False)["forces"].numpy()
    h = 1e-4
    for atom in (0, 5):
        for axis in range(3):
            moved = [atoms.copy(), atoms.copy()]
            moved[0].positions[atom, axis] += h
            moved[1].positions[atom, axis] -= h
            fd = -(energy(moved[0]) - energy(moved[1])) / (2 * h)
            assert forces[atom, axis] == pytest.approx(fd, abs=2e-6 * np.abs(forces).max()), (atom, axis)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("solver", ["dense", "matrix_free"])
def test_slab_qeq_and_pme_on_cuda_match_cpu(solver):
    """A slab through QEq (dense, or matrix-free PME CG with the k-space preconditioner) and PME
    electrostatics on CUDA equals the CPU result (which the tests above check)."""
    atoms = nacl_slab(layers=3, repeat=2, seed=3, jitter=0.15, charge=1.0)
    qeq = make_qeq(solver=solver, periodic_method="pme", accuracy=1e-7, cg_tol=1e-11, warm_start=False)
    model = hp.HybridPotential(charges=qeq, electrostatics=Electrostatics(method="pme", accuracy=1e-7))
    cpu = model(hp.AtomicSystem.from_ase(atoms), compute_stress=True)
    gpu = model.to("cuda")(hp.AtomicSystem.from_ase(atoms, device="cuda"), compute_stress=True)
    model.to("cpu")
    for key in ("energy", "forces", "charges", "stress"):
        assert gpu[key].device.type == "cuda", key
        np.testing.assert_allclose(gpu[key].cpu().numpy(), cpu[key].numpy(), atol=1e-8, rtol=1e-9, err_msg=key)
    assert float(cpu["forces"].abs().max()) > 1e-2
