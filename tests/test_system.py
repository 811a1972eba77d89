"""AtomicSystem construction and batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

import hybridpot as hp

from conftest import random_cluster, random_periodic


def test_from_ase_fields():
    atoms = random_periodic(5)
    atoms.info["charge"] = -1
    atoms.set_initial_charges([1, -1, 0.5, -0.5, -1])
    s = hp.AtomicSystem.from_ase(atoms)
    assert s.positions.shape == (5, 3) and s.positions.dtype == torch.float64
    np.testing.assert_array_equal(s.numbers, atoms.numbers)
    np.testing.assert_allclose(s.cell[0], atoms.cell.array)
    assert s.pbc.tolist() == [[True, True, True]]
    assert float(s.charge[0]) == -1.0
    np.testing.assert_allclose(s.initial_charges, [1, -1, 0.5, -0.5, -1])
    finite = hp.AtomicSystem.from_ase(random_cluster(3))
    assert float(finite.charge[0]) == 0.0 and finite.initial_charges is None
    assert torch.all(finite.cell == 0) and not bool(finite.periodic[0])


def test_concatenate_and_split():
    a, b, c = random_periodic(4), random_cluster(3), random_periodic(6, seed=7)
    s = hp.AtomicSystem.from_ase([a, b, c])
    assert s.n_systems == 3 and s.n_atoms == 13
    assert s.ptr.tolist() == [0, 4, 7, 13]
    assert s.batch.tolist() == [0] * 4 + [1] * 3 + [2] * 6
    parts = s.split()
    np.testing.assert_allclose(parts[2].positions, c.positions)
    again = hp.AtomicSystem.concatenate([hp.AtomicSystem.concatenate(parts[:2]), parts[2]])
    assert torch.equal(again.batch, s.batch) and torch.equal(again.positions, s.positions)


def test_fragments():
    atoms = Atoms("NaClNaCl", positions=np.arange(12).reshape(4, 3) * 1.0)
    s = hp.AtomicSystem.from_ase(atoms, fragments=[[0, 1], [2], [3]], fragment_charges=[0, 1, -1])
    assert s.fragments.tolist() == [0, 0, 1, 2]
    assert s.fragment_charges.tolist() == [0.0, 1.0, -1.0]
    batch = hp.AtomicSystem.concatenate([s, hp.AtomicSystem.from_ase(random_cluster(2))])
    assert batch.fragments.tolist() == [0, 0, 1, 2, 3, 3]  # a structure without fragments is one fragment
    with pytest.raises(ValueError, match="belong to no fragment"):
        hp.AtomicSystem.from_ase(atoms, fragments=[[0, 1], [2]])
    with pytest.raises(ValueError, match="shares atoms"):
        hp.AtomicSystem.from_ase(atoms, fragments=[[0, 1], [1, 2, 3]])
    with pytest.raises(ValueError, match="fragment charges"):
        hp.AtomicSystem.from_ase(atoms, fragments=[[0, 1], [2, 3]], fragment_charges=[0])


def test_to_dtype_keeps_integers():
    s = hp.AtomicSystem.from_ase(random_periodic(4)).to(dtype=torch.float32)
    assert s.positions.dtype == torch.float32 and s.numbers.dtype == torch.long and s.pbc.dtype == torch.bool


# ---------------------------------------------------------------------------- bad cells and coordinates
import pytest as _pytest  # noqa: E402

from conftest import make_short_range_model as _make_model  # noqa: E402


def _atoms_in(cell):
    from ase import Atoms

    return Atoms("NaCl", positions=[[0.1, 0.2, 0.0], [2.5, 2.4, 0.0]], cell=cell, pbc=True)


@_pytest.mark.parametrize("cell,match", [
    ([[5, 0, 0], [0, 5, 0], [0, 0, 1e-9]], "degenerate cell"),        # one lattice vector 1e-9 Å long
    ([[5, 0, 0], [0, 5, 0], [5, 5, 1e-7]], "degenerate cell"),        # three nearly coplanar vectors
    ([[5, 0, 0], [0, 5, 0], [5, 5, 0.05]], "0.05 Å thin along lattice vector"),
    ([[5, 0, 0], [0, 5, 0], [5, 5, 0]], "degenerate cell"),           # exactly singular
])
def test_degenerate_cells_raise_clear_errors_quickly(cell, match):
    import hybridpot as hp

    model = _make_model(("Na", "Cl"))
    atoms = _atoms_in(cell)
    with _pytest.raises(ValueError, match=match):
        model(hp.AtomicSystem.from_ase(atoms))
    atoms.calc = hp.HybridCalculator(model)
    with _pytest.raises(ValueError, match=match):
        atoms.get_potential_energy()
    with _pytest.raises(ValueError, match=match):
        hp.compute_neighbors(hp.AtomicSystem.from_ase(atoms), 6.0)


def test_cell_needing_too_many_images():
    import hybridpot as hp

    atoms = _atoms_in([[0.11, 0, 0], [0, 0.11, 0], [0, 0, 0.11]])
    atoms.positions = [[0.0, 0.0, 0.0], [0.05, 0.05, 0.05]]
    with _pytest.raises(ValueError, match=r"needs 1.08e\+07 periodic images"):
        hp.compute_neighbors(hp.AtomicSystem.from_ase(atoms), 12.0)


def test_non_finite_coordinates_through_the_calculator():
    import numpy as np

    import hybridpot as hp

    model = _make_model(("Na", "Cl"))
    for pbc in (True, False):
        atoms = _atoms_in([[5, 0, 0], [0, 5, 0], [0, 0, 5]])
        atoms.pbc = pbc
        atoms.positions[1, 2] = np.inf
        atoms.calc = hp.HybridCalculator(model)
        with _pytest.raises(ValueError, match=r"non-finite coordinates for atom\(s\) \[1\]"):
            atoms.get_forces()
