"""Slabs (pbc True, True, False): the corrected 3D Ewald/PME sum against an independent 2D Ewald sum
and a direct sum over in-plane images, forces against finite differences, in-plane stress against
finite strain, and the refusals of unsupported layouts."""

import math

import numpy as np
import pytest
import torch
from ase import Atoms

import hybridpot as hp
from ewald2d_reference import KE, disc_direct_energy, ewald_2d_energy  # tests/ewald2d_reference.py
from hybridpot.electrostatics import COULOMB_CONSTANT, Electrostatics
from hybridpot.electrostatics.slab import check_slab, slab_constrained_terms, slab_dipole_energy
from hybridpot.neighbors import build_graph, compute_neighbors
from hybridpot.qeq import FixedCharges

#: in-plane lattice (oblique, so that nothing relies on a rectangular cell)
A_VEC = np.array([5.3, 0.0, 0.0])
B_VEC = np.array([1.2, 5.8, 0.0])
THICKNESS = 5.0  # Å of atoms along z
SIGMA = {"Na": 0.5, "Cl": 0.55}
SYMBOLS = ["Na", "Cl"] * 4


def _random_slab_atoms(seed=3, total_charge=0.0):
    """8 atoms at least 1.8 Å apart (with in-plane images) in a 5 Å thick layer; random charges
    with the given total and a non-zero dipole along z. Returns (positions [8, 3], charges [8])."""
    rng = np.random.default_rng(seed)
    pos = []
    while len(pos) < len(SYMBOLS):
        f = rng.random(3)
        x = f[0] * A_VEC + f[1] * B_VEC + [0.0, 0.0, f[2] * THICKNESS]
        if all(np.linalg.norm(x - y + i * A_VEC + j * B_VEC) >= 1.8 for y in pos for i in (-1, 0, 1) for j in (-1, 0, 1)):
            pos.append(x)
    q = rng.normal(size=len(SYMBOLS))
    q += (total_charge - q.sum()) / len(q)
    return np.array(pos), q


def _slab(positions, charges, gap, pbc=(True, True, False)):
    """The atoms in a cell with ``gap`` Å of vacuum between the slab and its image along z."""
    atoms = Atoms(SYMBOLS, positions=positions + [0.0, 0.0, gap / 2], cell=[A_VEC, B_VEC, [0.0, 0.0, THICKNESS + gap]],
                  pbc=pbc)
    atoms.set_initial_charges(charges)
    return atoms


def _model(method, accuracy=1e-8, cutoff=5.5):
    return hp.HybridPotential(charges=FixedCharges(sigma=SIGMA),
                              electrostatics=Electrostatics(method=method, accuracy=accuracy, real_space_cutoff=cutoff))


def _energy(model, atoms):
    return float(model(hp.AtomicSystem.from_ase(atoms), compute_forces=False, compute_stress=False)["energy"])


def _sigma():
    return np.array([SIGMA[s] for s in SYMBOLS])


def test_2d_reference_is_independent_of_its_splitting_and_matches_the_image_sum():
    """The test's own 2D Ewald sum: the same for two splitting parameters (neutral and charged),
    and equal to the direct sum over a disc of in-plane images extrapolated in 1/radius (the
    truncated sums themselves are 1e-5 ... 2e-4 off: why the tests compare with the 2D Ewald sum)."""
    pos, q = _random_slab_atoms()
    sigma = _sigma()
    e = ewald_2d_energy(pos, q, sigma, A_VEC, B_VEC, alpha=0.4)
    assert ewald_2d_energy(pos, q, sigma, A_VEC, B_VEC, alpha=0.28) == pytest.approx(e, rel=1e-12)
    _, q_charged = _random_slab_atoms(total_charge=1.0)
    e_charged = ewald_2d_energy(pos, q_charged, sigma, A_VEC, B_VEC, alpha=0.4)
    assert ewald_2d_energy(pos, q_charged, sigma, A_VEC, B_VEC, alpha=0.28) == pytest.approx(e_charged, rel=1e-12)
    # neutral cell, smooth disc window: the sum converges as c1/R + c2/R^2 + ...: fitted over four radii
    radii = np.array([40.0, 80.0, 160.0, 320.0])
    sums = np.array([disc_direct_energy(pos, q, sigma, A_VEC, B_VEC, r) for r in radii])
    fit = np.linalg.solve(np.stack([radii**-k for k in range(4)], axis=1), sums)
    # measured: sums - e = -8.3e-3, -3.6e-3, -1.8e-3, -8.7e-4 eV; extrapolated 3.6e-6 eV (1e-7 relative)
    print("disc sums - 2D Ewald (eV):", sums - e, "extrapolated:", fit[0] - e)
    assert abs(sums[-1] - e) > 1e-5 * abs(e)  # the plain truncated sum is far off ...
    assert fit[0] == pytest.approx(e, rel=1e-6)  # ... its extrapolation is not


@pytest.mark.parametrize("method", ["ewald", "pme"])
def test_corrected_energy_converges_to_the_2d_sum_as_the_vacuum_grows(method):
    """Neutral slab with a dipole: the corrected sum's error falls exponentially with the vacuum
    to the accuracy setting; the uncorrected 3D sum's error falls only as 1/L_z."""
    pos, q = _random_slab_atoms()
    reference = ewald_2d_energy(pos, q, _sigma(), A_VEC, B_VEC)
    model = _model(method)
    gaps = [5.5, 7.0, 9.0, 12.0, 25.0]
    corrected = np.array([_energy(model, _slab(pos, q, g)) - reference for g in gaps])
    plain = np.array([_energy(model, _slab(pos, q, g, pbc=True)) - reference for g in gaps])
    lengths = THICKNESS + np.array(gaps)
    print("gap (Å), corrected - 2D, uncorrected - 2D (eV):", list(zip(gaps, corrected, plain)))
    # measured (ewald and pme): 9.2e-4, 1.1e-4, 4.6e-6, 1.8e-7, 3.4e-7 eV of |E| = 37.7 eV
    assert np.all(np.diff(np.abs(corrected[:4])) < 0)
    assert abs(corrected[0]) > 1e-5 * abs(reference)  # too little vacuum is visible ...
    assert np.all(np.abs(corrected[3:]) < 3e-8 * abs(reference))  # ... and converges to the 1e-8 accuracy
    # uncorrected: error * L_z constant (the dipole term 2 pi k_e M_z^2 / V), 1e5 x the corrected error at 25 Å
    assert np.allclose(plain * lengths, plain[-1] * lengths[-1], rtol=0.01)
    assert abs(plain[-1]) > 1e5 * abs(corrected[-1])


def test_charged_slab_needs_the_total_charge_terms():
    """A +1 e slab: with the Ballenegger-Arnold-Cerdà terms the sum converges to the 2D sum like a
    neutral one; with the Yeh-Berkowitz dipole term alone it does not converge at all."""
    pos, q = _random_slab_atoms(total_charge=1.0)
    reference = ewald_2d_energy(pos, q, _sigma(), A_VEC, B_VEC)
    model = _model("ewald")
    for gap, bound in ((12.0, 3e-8), (40.0, 3e-8)):
        atoms = _slab(pos, q, gap)
        energy = _energy(model, atoms)
        assert abs(energy - reference) < bound * abs(reference)
        # the same sum with the dipole term only: off by eV, and further off with more vacuum
        positions, cell, charges = (torch.tensor(x) for x in (atoms.positions, atoms.cell.array, q))
        dipole_only = 2.0 * math.pi * KE / atoms.get_volume() * float(charges @ positions[:, 2]) ** 2
        yeh_berkowitz = energy - float(slab_dipole_energy(positions, cell, charges)) + dipole_only
        assert abs(yeh_berkowitz - reference) > 1.0
    assert abs(yeh_berkowitz - reference) > 2.0  # (measured 4.8 eV at 12 Å, 10.5 eV at 40 Å)


def test_correction_matrix_energy_and_constrained_split_agree():
    """torch-pme's correction potential (in the operator) is the gradient of the written-out
    E_slab; its matrix restricted to a fixed total charge is the rank-1 Hessian plus a linear
    term and a constant."""
    pos, q = _random_slab_atoms(total_charge=0.7)
    atoms = _slab(pos, q, 12.0)
    system = hp.AtomicSystem.from_ase(atoms)
    elec = Electrostatics(method="ewald", real_space_cutoff=5.5)
    graph = build_graph(system, compute_neighbors(system, elec.cutoff))
    sigma = torch.tensor(_sigma())
    op, _, _ = elec.periodic_operator(system, graph, sigma, 0)
    assert op.slab
    plain = type(op)(op.positions, op.cell, op.pair_i, op.pair_j, op.distances, None, op.params, "ewald")
    op_point = type(op)(op.positions, op.cell, op.pair_i, op.pair_j, op.distances, None, op.params, "ewald", slab=True)
    slab_matrix = op_point.dense() - plain.dense()
    charges = torch.tensor(q, requires_grad=True)
    energy = slab_dipole_energy(system.positions, system.cell[0], charges)
    (gradient,) = torch.autograd.grad(energy, charges)
    torch.testing.assert_close(slab_matrix @ charges.detach(), gradient, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(0.5 * charges.detach() @ slab_matrix @ charges.detach(), energy.detach(),
                               rtol=1e-12, atol=1e-12)
    hessian, linear, constant = slab_constrained_terms(system.positions, system.cell[0], charges.detach().sum())
    qd = charges.detach()
    torch.testing.assert_close(0.5 * qd @ hessian @ qd + linear @ qd + constant, energy.detach(), rtol=1e-12, atol=1e-12)
    assert float(torch.linalg.eigvalsh(hessian).min()) > -1e-12  # PSD
    # the Gaussian background term of the 3D sum is not in a slab's operator (module docstring)
    gaussian_plain = type(op)(op.positions, op.cell, op.pair_i, op.pair_j, op.distances, sigma, op.params, "ewald")
    difference = op.dense() - gaussian_plain.dense() - slab_matrix
    s2 = sigma**2
    background = 2.0 * math.pi * COULOMB_CONSTANT / atoms.get_volume() * (s2[None, :] + s2[:, None])
    torch.testing.assert_close(difference, -background, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["ewald", "pme"])
def test_slab_forces_match_finite_differences(method):
    pos, q = _random_slab_atoms(total_charge=0.5)
    atoms = _slab(pos, q, 8.0)
    model = _model(method, accuracy=1e-8)
    out = model(hp.AtomicSystem.from_ase(atoms), compute_forces=True, compute_stress=False)
    forces = out["forces"].numpy()
    h = 1e-4
    for atom in (0, 5):
        for axis in range(3):
            shifted = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[atom, axis] += sign * h
                shifted.append(_energy(model, moved))
            fd = -(shifted[0] - shifted[1]) / (2 * h)
            assert forces[atom, axis] == pytest.approx(fd, abs=1e-6 * np.abs(forces).max())


@pytest.mark.parametrize("method", ["ewald", "pme"])
def test_slab_in_plane_stress_matches_finite_strain(method):
    """xx, yy, xy (the in-plane, physical components) and zz (well defined for the padded cell)
    against central differences of the energy under homogeneous strain of cell and atoms."""
    pos, q = _random_slab_atoms(total_charge=-0.4)
    atoms = _slab(pos, q, 8.0)
    model = _model(method, accuracy=1e-8)
    stress = model(hp.AtomicSystem.from_ase(atoms), compute_forces=True, compute_stress=True)["stress"][0].numpy()
    volume = atoms.get_volume()
    h = 1e-5
    for i, j in ((0, 0), (1, 1), (0, 1), (2, 2)):
        energies = []
        for sign in (1, -1):
            strain = np.eye(3)
            strain[i, j] += sign * h / (2 if i != j else 1)
            strain[j, i] = strain[i, j]
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ strain, scale_atoms=True)
            energies.append(_energy(model, strained))
        fd = (energies[0] - energies[1]) / (2 * h) / volume
        assert stress[i, j] == pytest.approx(fd, abs=1e-6 * np.abs(stress).max()), (i, j)


def test_unsupported_layouts_and_too_little_vacuum_are_refused_with_what_to_change():
    pos, q = _random_slab_atoms()
    elec = _model("ewald", accuracy=1e-6)
    for pbc in ((True, False, True), (False, True, True), (True, False, False)):
        with pytest.raises(ValueError, match=r"slabs with pbc=\(True, True, False\).*third lattice vector"):
            _energy(elec, _slab(pos, q, 12.0, pbc=pbc))
    tilted = _slab(pos, q, 12.0)
    tilted.cell[2] = [1.0, 0.0, THICKNESS + 12.0]
    with pytest.raises(ValueError, match="c along \\+z"):
        _energy(elec, tilted)
    thin = _slab(pos, q, 4.0)
    extent = np.ptp(thin.positions[:, 2])
    with pytest.raises(ValueError, match=rf"leaving {thin.cell[2, 2] - extent:.3f} Å of vacuum.*Lengthen c to at least "
                                         rf"{extent + 5.5:.3f} Å"):
        _energy(elec, thin)
    # a slab split by the cell's z boundary: its atoms span (nearly) the whole cell
    split = _slab(pos, q, 12.0)
    split.positions[:4, 2] += split.cell[2, 2] - 2.0
    with pytest.raises(ValueError, match="unwrap it along z"):
        _energy(elec, split)
    no_c = _slab(pos, q, 12.0)
    no_c.cell[2] = 0.0
    with pytest.raises(ValueError, match="needs a third lattice vector c along z"):
        check_slab(torch.tensor(no_c.positions), torch.tensor(no_c.cell.array), torch.tensor(no_c.pbc), 5.5)


def test_batch_of_slab_bulk_and_cluster_equals_separate_calls():
    """A slab in a batch with a fully periodic and a finite structure: each gets its own sum."""
    pos, q = _random_slab_atoms(total_charge=0.3)
    slab = _slab(pos, q, 9.0)
    bulk_cell = _slab(pos, q, 9.0, pbc=True)
    cluster = _slab(pos, q, 9.0, pbc=False)
    model = _model("ewald", accuracy=1e-7)
    batch = model(hp.AtomicSystem.from_ase([slab, bulk_cell, cluster]), compute_stress=True)
    start = 0
    for atoms, k in zip((slab, bulk_cell, cluster), range(3)):
        alone = model(hp.AtomicSystem.from_ase(atoms), compute_stress=True)
        n = len(atoms)
        assert float(batch["energy"][k]) == pytest.approx(float(alone["energy"][0]), rel=1e-12)
        torch.testing.assert_close(batch["forces"][start:start + n], alone["forces"], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(batch["stress"][k], alone["stress"][0], rtol=1e-10, atol=1e-12)
        start += n
    # and the three differ: the slab is neither the 3D crystal nor the isolated layer
    energies = batch["energy"].tolist()
    assert min(abs(energies[0] - energies[1]), abs(energies[0] - energies[2])) > 1e-3


def test_point_charge_slab_and_float32():
    """Point charges (no widths) converge to the 2D sum too; a float32 model agrees to its precision."""
    pos, q = _random_slab_atoms(total_charge=-0.6)
    reference = ewald_2d_energy(pos, q, None, A_VEC, B_VEC)
    model = hp.HybridPotential(charges=FixedCharges(), electrostatics=Electrostatics(method="ewald", accuracy=1e-8,
                                                                                     real_space_cutoff=5.5))
    atoms = _slab(pos, q, 14.0)
    assert _energy(model, atoms) == pytest.approx(reference, rel=3e-8)
    energy32 = float(model.float()(hp.AtomicSystem.from_ase(atoms, dtype=torch.float32), compute_forces=False,
                                   compute_stress=False)["energy"])
    assert energy32 == pytest.approx(reference, rel=1e-5)
