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
