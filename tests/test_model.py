"""HybridPotential with a Behler-Parrinello short range: forces, stress, invariances, extensivity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import make_supercell

import hybridpot as hp

from conftest import make_short_range_model, random_cluster, random_periodic


def energy(model, atoms) -> float:
    return float(model(hp.AtomicSystem.from_ase(atoms), compute_forces=False, compute_stress=False)["energy"][0])


def fd_forces(model, atoms, h=1e-4):
    forces = np.zeros((len(atoms), 3))
    for a in range(len(atoms)):
        for c in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[a, c] += h
            minus.positions[a, c] -= h
            # fourth-order central difference: error ~h^4
            p2, m2 = atoms.copy(), atoms.copy()
            p2.positions[a, c] += 2 * h
            m2.positions[a, c] -= 2 * h
            forces[a, c] = -(8 * (energy(model, plus) - energy(model, minus)) - (energy(model, p2) - energy(model, m2))) / (12 * h)
    return forces


@pytest.mark.parametrize("angular_type", [3, 9])
@pytest.mark.parametrize("kind", ["periodic", "cluster"])
def test_forces_equal_finite_differences(kind, angular_type):
    model = make_short_range_model(angular_type=angular_type)
    atoms = random_periodic(9, seed=11) if kind == "periodic" else random_cluster(8, seed=12, box=4.0)
    out = model(hp.AtomicSystem.from_ase(atoms))
    want = fd_forces(model, atoms)
    got = out["forces"].numpy()
    assert np.abs(want).max() > 1e-3
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())


def test_stress_equals_finite_strain_differences():
    model = make_short_range_model()
    atoms = random_periodic(9, seed=13)
    stress = model(hp.AtomicSystem.from_ase(atoms))["stress"][0].numpy()
    volume = atoms.get_volume()
    h = 1e-5
    want = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            energies = []
            for sign in (1, -1, 2, -2):
                eps = np.zeros((3, 3))
                eps[a, b] += 0.5 * sign * h
                eps[b, a] += 0.5 * sign * h
                strained = atoms.copy()
                strained.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
                energies.append(energy(model, strained))
            ep, em, ep2, em2 = energies
            want[a, b] = (8 * (ep - em) - (ep2 - em2)) / (12 * h) / volume
    assert np.abs(want).max() > 1e-5
    np.testing.assert_allclose(stress, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())


def test_invariances():
    model = make_short_range_model()
    atoms = random_periodic(12, seed=14)
    e0 = energy(model, atoms)
    f0 = model(hp.AtomicSystem.from_ase(atoms))["forces"].numpy()

    moved = atoms.copy()
    moved.translate([0.37, -1.2, 2.9])
    assert energy(model, moved) == pytest.approx(e0, rel=1e-12)

    wrapped = moved.copy()
    wrapped.wrap()  # another choice of cell images
    assert energy(model, wrapped) == pytest.approx(e0, rel=1e-12)

    rotated = atoms.copy()
    rotated.rotate(37.0, (1.0, 2.0, -0.5), rotate_cell=True)
    out = model(hp.AtomicSystem.from_ase(rotated))
    assert float(out["energy"][0]) == pytest.approx(e0, rel=1e-12)
    rot = np.linalg.solve(atoms.cell.array, rotated.cell.array)  # row-vector convention: x' = x @ rot
    np.testing.assert_allclose(out["forces"].numpy(), f0 @ rot, atol=1e-10)

    perm = np.random.default_rng(0).permutation(len(atoms))
    permuted = atoms[perm]
    out = model(hp.AtomicSystem.from_ase(permuted))
    assert float(out["energy"][0]) == pytest.approx(e0, rel=1e-12)
    np.testing.assert_allclose(out["forces"].numpy(), f0[perm], atol=1e-12)

    # another, equivalent lattice basis (a unimodular change) gives the same crystal
    sheared = atoms.copy()
    sheared.set_cell(np.array([[1, 1, 0], [0, 1, 0], [0, -1, 1]]) @ atoms.cell.array, scale_atoms=False)
    assert energy(model, sheared) == pytest.approx(e0, rel=1e-12)


def test_size_extensive_molecule_copies():
    model = make_short_range_model()
    mol = random_cluster(6, seed=15, box=3.5)
    e1 = energy(model, mol)
    far = mol.copy()
    far.translate([30.0, 0.0, 0.0])
    assert energy(model, mol + far) == pytest.approx(2 * e1, rel=1e-13)


@pytest.mark.parametrize("small", [False, True])
def test_cell_equals_one_eighth_of_supercell(small):
    model = make_short_range_model()
    if small:  # edges shorter than the cutoff (4.5 Å): many images of each atom
        atoms = Atoms("NaClO", scaled_positions=[[0, 0, 0], [0.5, 0.4, 0.6], [0.1, 0.7, 0.3]],
                      cell=[[3.3, 0, 0], [0.5, 3.4, 0], [0.2, -0.4, 3.6]], pbc=True)
    else:
        atoms = random_periodic(9, seed=16)
    e = energy(model, atoms)
    super_atoms = make_supercell(atoms, 2 * np.eye(3))
    assert energy(model, super_atoms) == pytest.approx(8 * e, rel=1e-12)
    elongated = make_supercell(atoms, np.diag([3, 1, 2]))
    assert energy(model, elongated) == pytest.approx(6 * e, rel=1e-12)


def test_continuous_through_cutoff():
    """Energy and forces go smoothly to their no-neighbour values as a pair crosses r_c."""
    model = make_short_range_model(elements=("Na", "Cl"), r_cut=4.5)
    r_c = 4.5
    rs = np.linspace(r_c - 0.05, r_c + 0.05, 201)
    es, fs = [], []
    for r in rs:
        atoms = Atoms("NaCl", positions=[[0, 0, 0], [r, 0, 0]])
        out = model(hp.AtomicSystem.from_ase(atoms))
        es.append(float(out["energy"][0]))
        fs.append(float(out["forces"][1, 0]))
    es, fs = np.array(es), np.array(fs)
    beyond = rs >= r_c
    assert np.all(es[beyond] == es[-1]) and np.all(fs[beyond] == 0.0)
    # no jumps: successive differences are small and shrink towards r_c
    assert np.abs(np.diff(es)).max() < 1e-6
    assert np.abs(np.diff(fs)).max() < 1e-4
    assert abs(fs[np.argmax(beyond) - 1]) < 1e-7


def test_batch_equals_individual_systems():
    model = make_short_range_model()
    structures = [random_periodic(9, seed=17), random_cluster(5, seed=18), random_periodic(7, seed=19, cell=np.diag([5.5, 6.0, 6.5]))]
    batch = model(hp.AtomicSystem.from_ase(structures), compute_stress=True)
    offset = 0
    for s, atoms in enumerate(structures):
        alone = model(hp.AtomicSystem.from_ase(atoms), compute_stress=True)
        n = len(atoms)
        assert float(batch["energy"][s]) == pytest.approx(float(alone["energy"][0]), rel=1e-13)
        np.testing.assert_allclose(batch["forces"][offset : offset + n], alone["forces"], atol=1e-13)
        np.testing.assert_allclose(batch["stress"][s], alone["stress"][0], atol=1e-13)
        offset += n
    assert torch.all(batch["stress"][1] == 0)  # finite structure


def test_float32_agrees_with_float64():
    m64 = make_short_range_model()
    m32 = make_short_range_model(dtype=torch.float32)
    atoms = random_periodic(12, seed=20)
    o64, o32 = m64(hp.AtomicSystem.from_ase(atoms)), m32(hp.AtomicSystem.from_ase(atoms))
    assert o32["energy"].dtype == torch.float32 and o32["forces"].dtype == torch.float32
    # float32 rounding (~1e-7 relative) of each atomic energy, summed over the atoms
    scale = float(o64["energies"].abs().sum())
    assert abs(float(o32["energy"][0]) - float(o64["energy"][0])) < 1e-5 * scale
    np.testing.assert_allclose(o32["forces"].double(), o64["forces"], atol=1e-4 * float(o64["forces"].abs().max()))


def test_create_graph_allows_force_training():
    model = make_short_range_model()
    atoms = random_cluster(6, seed=21)
    out = model(hp.AtomicSystem.from_ase(atoms), create_graph=True)
    loss = (out["forces"] ** 2).sum()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().max()) > 0 for g in grads)


def test_energies_sum_to_energy_and_save_load(tmp_path):
    model = make_short_range_model()
    atoms = random_periodic(9, seed=22)
    out = model(hp.AtomicSystem.from_ase(atoms))
    assert float(out["energies"].sum()) == pytest.approx(float(out["energy"][0]), rel=1e-13)
    hp.save(model, tmp_path / "m.pt")
    again = hp.load(tmp_path / "m.pt")
    assert torch.equal(again(hp.AtomicSystem.from_ase(atoms))["forces"], out["forces"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    model = make_short_range_model()
    atoms = random_periodic(12, seed=23)
    cpu = model(hp.AtomicSystem.from_ase(atoms))
    gpu = model.to("cuda")(hp.AtomicSystem.from_ase(atoms))
    assert gpu["forces"].device.type == "cuda"
    np.testing.assert_allclose(gpu["forces"].cpu(), cpu["forces"], atol=1e-10)


# ----------------------------------------------------------------------------- bad input
def test_unknown_element_is_named():
    model = make_short_range_model(elements=("Na", "Cl"))
    atoms = Atoms("NaClK", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0]])
    with pytest.raises(ValueError, match=r"atom\(s\) \[2\].*\[19\]"):
        model(hp.AtomicSystem.from_ase(atoms))


def test_non_finite_coordinates_are_named():
    model = make_short_range_model()
    atoms = random_cluster(5)
    atoms.positions[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"non-finite coordinates for atom\(s\) \[3\]"):
        model(hp.AtomicSystem.from_ase(atoms))


def test_degenerate_cell():
    model = make_short_range_model()
    atoms = random_periodic(6)
    atoms.set_cell([[5, 0, 0], [0, 5, 0], [5, 5, 0]], scale_atoms=False)
    with pytest.raises(ValueError, match="degenerate cell"):
        model(hp.AtomicSystem.from_ase(atoms))


def test_overlapping_atoms_are_named():
    model = make_short_range_model()
    atoms = Atoms("NaClO", positions=[[0, 0, 0], [2.5, 0, 0], [2.55, 0, 0]])
    with pytest.raises(ValueError, match=r"atoms 1 and 2 are 0.0500 Å apart"):
        model(hp.AtomicSystem.from_ase(atoms))


def test_relu_is_refused():
    desc = hp.SymmetryFunctions.default(["Na"], r_cut=4.0)
    with pytest.raises(ValueError, match="discontinuous"):
        hp.ShortRange(["Na"], desc, activation="relu")


def test_shared_descriptor_is_computed_once_per_call(monkeypatch):
    """Short range and QEq sharing one descriptor module: one evaluation per model call,
    same energy and forces as two separate (deep-copied) descriptor modules."""
    import copy

    torch.manual_seed(4)
    desc = hp.SymmetryFunctions.default(["Na", "Cl"], r_cut=4.0, n_radial=4, angular_etas=(0.01,), zetas=(1.0,))

    def build(charge_desc):
        torch.manual_seed(5)
        return hp.HybridPotential(
            short_range=hp.ShortRange(["Na", "Cl"], desc, hidden=(6,), use_charges=True),
            charges=hp.ChargeEquilibration(["Na", "Cl"], charge_desc, hidden=(6,), real_space_cutoff=6.0,
                                           accuracy=1e-4, sigma=0.8),
            electrostatics=hp.Electrostatics(real_space_cutoff=6.0, accuracy=1e-4),
        ).double()

    shared, separate = build(desc), build(copy.deepcopy(desc))
    atoms = random_periodic(16, symbols=("Na", "Cl"), seed=31, cell=np.eye(3) * 7.0)
    calls = []
    original = hp.SymmetryFunctions._compute
    monkeypatch.setattr(hp.SymmetryFunctions, "_compute", lambda self, *a: calls.append(id(self)) or original(self, *a))
    out_shared = shared(hp.AtomicSystem.from_ase(atoms))
    assert len(calls) == 1
    calls.clear()
    out_separate = separate(hp.AtomicSystem.from_ase(atoms))
    assert len(calls) == 2
    for key in ("energy", "forces", "stress", "charges"):
        np.testing.assert_allclose(out_shared[key], out_separate[key], rtol=1e-12, atol=1e-12)
