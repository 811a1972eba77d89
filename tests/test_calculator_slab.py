"""The ASE calculator on a slab (pbc True, True, False): the shipped molten-NaCl 4G model on a
NaCl(001) slab, forces and in-plane stress against finite differences, invariance under moving the
slab in its cell, and the refusal of other partially periodic layouts."""

from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

import hybridpot as hp

MODEL = Path(hp.__file__).resolve().parent / "data" / "molten_nacl_4G.pt"


def nacl001_slab(layers=2, vacuum=12.0, rattle=0.0, seed=0):
    """A 2 x 2 NaCl(001) slab of ``layers`` layers (8 atoms each, a = 5.64 Å), centred in a cell with
    ``vacuum`` Å between its top layer and the image of its bottom layer; pbc (True, True, False)."""
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat((2, 2, (layers + 1) // 2))
    atoms = atoms[atoms.positions[:, 2] < (layers - 0.5) * 2.82]
    atoms.center(vacuum=vacuum / 2, axis=2)
    atoms.pbc = (True, True, False)
    if rattle:
        atoms.rattle(rattle, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def model():
    return hp.load(MODEL)


def test_shipped_model_runs_a_nacl001_slab(model):
    slab = nacl001_slab(layers=3)
    slab.calc = hp.HybridCalculator(model)
    energy = slab.get_potential_energy()
    charges = slab.get_charges()
    assert charges.sum() == pytest.approx(0.0, abs=1e-10)
    assert np.all(charges[slab.numbers == 11] > 0.3) and np.all(charges[slab.numbers == 17] < -0.3)
    assert np.abs(slab.get_forces()).max() < 0.5  # an unrelaxed ideal slab: small forces, mostly along z
    stress = slab.get_stress()
    assert stress.shape == (6,) and np.all(np.isfinite(stress))
    # cleaving costs energy: surface energy against the bulk crystal (measured 0.215 J/m^2 with 3 layers)
    crystal = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(2)
    crystal.calc = hp.HybridCalculator(model)
    per_atom = crystal.get_potential_energy() / len(crystal)
    area = np.linalg.norm(np.cross(slab.cell[0], slab.cell[1]))
    surface_energy = (energy - len(slab) * per_atom) / (2 * area) * 16.021766  # J/m^2
    print(f"NaCl(001) surface energy, 3-layer slab: {surface_energy:.3f} J/m^2")
    assert surface_energy > 0.0


def test_slab_results_do_not_depend_on_where_the_slab_sits_in_its_cell(model):
    slab = nacl001_slab(rattle=0.1)
    slab.calc = hp.HybridCalculator(model)
    energy, forces, charges = slab.get_potential_energy(), slab.get_forces(), slab.get_charges()
    moved = slab.copy()
    moved.positions += [0.7, -1.3, 3.9]  # up along z (the vacuum stays >= the cutoff) and in-plane
    moved.calc = hp.HybridCalculator(model)
    assert moved.get_potential_energy() == pytest.approx(energy, abs=1e-9)
    np.testing.assert_allclose(moved.get_forces(), forces, atol=1e-9)
    np.testing.assert_allclose(moved.get_charges(), charges, atol=1e-10)


def test_slab_forces_and_in_plane_stress_match_finite_differences(model):
    slab = nacl001_slab(rattle=0.1, seed=4)
    slab.calc = hp.HybridCalculator(model, skin=0.0)
    forces, stress = slab.get_forces(), slab.get_stress(voigt=False)

    def energy(atoms):
        atoms = atoms.copy()
        atoms.calc = hp.HybridCalculator(model, skin=0.0)
        return atoms.get_potential_energy()

    h = 1e-4
    for atom, axis in ((0, 0), (9, 2)):
        plus, minus = slab.copy(), slab.copy()
        plus.positions[atom, axis] += h
        minus.positions[atom, axis] -= h
        fd = -(energy(plus) - energy(minus)) / (2 * h)
        assert forces[atom, axis] == pytest.approx(fd, abs=1e-5 * np.abs(forces).max())
    volume = slab.get_volume()
    for i, j in ((0, 0), (0, 1)):
        energies = []
        for sign in (1, -1):
            strain = np.eye(3)
            strain[i, j] += sign * h / (2 if i != j else 1)
            strain[j, i] = strain[i, j]
            strained = slab.copy()
            strained.set_cell(slab.cell.array @ strain, scale_atoms=True)
            energies.append(energy(strained))
        fd = (energies[0] - energies[1]) / (2 * h) / volume
        assert stress[i, j] == pytest.approx(fd, abs=1e-5 * np.abs(stress).max()), (i, j)


def test_other_partial_periodicity_is_refused_with_what_to_change(model):
    slab = nacl001_slab()
    slab.pbc = (True, False, True)
    slab.calc = hp.HybridCalculator(model)
    with pytest.raises(ValueError, match=r"pbc=\(True, True, False\)"):
        slab.get_potential_energy()
    thin = nacl001_slab(vacuum=4.0)
    thin.calc = hp.HybridCalculator(model)
    with pytest.raises(ValueError, match="Lengthen c to at least"):
        thin.get_potential_energy()
    no_c = nacl001_slab()
    no_c.cell[2] = 0.0
    no_c.calc = hp.HybridCalculator(model)
    with pytest.raises(ValueError, match=r"needs its third lattice vector too.*atoms.center\(vacuum"):
        no_c.get_potential_energy()

