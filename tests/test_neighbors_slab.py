"""Neighbour lists of slabs (pbc True, True, False): images along a and b only, never along c."""

import numpy as np
from ase import Atoms

import hybridpot as hp
from hybridpot.neighbors import compute_neighbors


def test_slab_neighbour_list_has_in_plane_images_only():
    """A slab whose vacuum (2 Å) is far below the cutoff (6 Å): the list holds exactly the pairs of
    a brute-force sum over in-plane images, none across the cell's z boundary."""
    rng = np.random.default_rng(0)
    a, b, c = np.array([4.1, 0.0, 0.0]), np.array([0.9, 3.8, 0.0]), np.array([0.0, 0.0, 7.0])
    frac = rng.random((10, 2))
    positions = frac[:, :1] * a + frac[:, 1:] * b + np.outer(rng.random(10) * 5.0, [0.0, 0.0, 1.0])
    atoms = Atoms("Na10", positions=positions, cell=[a, b, c], pbc=(True, True, False))
    cutoff = 6.0
    nl = compute_neighbors(hp.AtomicSystem.from_ase(atoms), cutoff)
    shifts = nl.shifts.numpy()
    assert np.all(shifts[:, 2] == 0)
    assert np.abs(shifts[:, :2]).max() >= 2  # the in-plane images beyond the first shell are there
    found = sorted(zip(nl.i.tolist(), nl.j.tolist(), map(tuple, shifts.tolist())))
    expected = []
    for i in range(len(atoms)):
        for j in range(len(atoms)):
            for na in range(-4, 5):
                for nb in range(-4, 5):
                    if i == j and na == nb == 0:
                        continue
                    if np.linalg.norm(positions[j] - positions[i] + na * a + nb * b) < cutoff:
                        expected.append((i, j, (na, nb, 0)))
    assert found == sorted(expected)
    # the same atoms fully periodic: pairs through the 2 Å vacuum appear (what the slab list omits)
    atoms.pbc = True
    nl3 = compute_neighbors(hp.AtomicSystem.from_ase(atoms), cutoff)
    assert bool((nl3.shifts[:, 2] != 0).any()) and len(nl3.i) > len(nl.i)
