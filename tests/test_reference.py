"""Tests of the shipped reference data and of hybridpot.reference (tblite tests skip without it)."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from hybridpot.data import load_nacl_clusters, nacl_clusters_path
from hybridpot.reference_data.nacl_clusters import MAX_CLOSE_CONTACT_FORCE
from hybridpot.reference import dimer_scan, multiplicity, random_cluster, require_tblite

HAS_TBLITE = importlib.util.find_spec("tblite") is not None
needs_tblite = pytest.mark.skipif(not HAS_TBLITE, reason="tblite not installed (pip install hybridpot[reference])")


@pytest.fixture(scope="module")
def dataset():
    return load_nacl_clusters()


def test_shipped_file_is_small_and_loads(dataset):
    path = nacl_clusters_path()
    assert path.exists() and path.stat().st_size < 5e6
    assert 300 <= len(dataset) <= 1000
    assert (path.parent / "README.md").exists()


def test_shipped_fields_are_consistent(dataset):
    for atoms in dataset:
        assert set(atoms.get_chemical_symbols()) <= {"Na", "Cl"}
        q_total = atoms.info["charge"]
        assert q_total in (0.0, 1.0)
        e = atoms.get_potential_energy()
        f = atoms.get_forces()
        q = atoms.get_charges()
        assert np.isfinite(e) and f.shape == (len(atoms), 3) and np.isfinite(f).all()
        # Mulliken charges add up to the total charge; forces of an isolated cluster add up to zero
        assert q.sum() == pytest.approx(q_total, abs=1e-6)
        assert np.abs(f.sum(axis=0)).max() < 1e-4 * max(1.0, np.abs(f).max())
        # Na positive, Cl negative, as for any sensible charge model of NaCl; homonuclear dimers neutral
        if len(set(atoms.numbers)) == 2:
            assert (q[atoms.numbers == 11] > 0).all() and (q[atoms.numbers == 17] < 0).all()
        else:
            assert np.abs(q).max() < 1e-6
        assert atoms.info["multiplicity"] == multiplicity(atoms.numbers, q_total)
        assert not atoms.pbc.any()
        d = atoms.get_all_distances() + np.eye(len(atoms)) * 10
        assert d.min() > 1.0


def test_shipped_dataset_covers_sizes_charges_and_the_dimer_scan(dataset):
    kinds = Counter((int((a.numbers == 11).sum()), int((a.numbers == 17).sum()), a.info["charge"]) for a in dataset)
    # the same compositions with total charge 0 and +1
    both = [k for k in kinds if k[2] == 1.0 and (k[0], k[1], 0.0) in kinds]
    assert len(both) >= 3
    assert len({k[0] + k[1] for k in kinds}) >= 5
    scan = [a for a in dataset if a.info["source"] == "dimer_scan"]
    r = np.array([a.get_distance(0, 1) for a in scan])
    assert r.min() == pytest.approx(1.8) and r.max() == pytest.approx(10.0) and len(scan) >= 30
    e = np.array([a.get_potential_energy() for a in scan])[np.argsort(r)]
    # a bound minimum between 2 and 3 Å, energy rising towards dissociation
    r_sorted = np.sort(r)
    assert 2.0 < r_sorted[np.argmin(e)] < 3.0 and e[-1] - e.min() > 1.0
    sources = Counter(str(a.info["source"]).split("_")[0] for a in dataset)
    assert {"dimer", "random", "relaxed", "rattle", "md", "compressed"} <= set(sources)
    # close contacts (a trained model must see the repulsive wall): compressed clusters with like ions
    # closer than in any relaxed cluster and unlike ions closer than any MD frame gets...
    def closest(atoms, like):
        d = atoms.get_all_distances() + np.eye(len(atoms)) * 100
        same = atoms.numbers[:, None] == atoms.numbers[None, :]
        return d[same == like].min()

    def frames(prefix):
        return [a for a in dataset if str(a.info["source"]).startswith(prefix)]

    compressed = frames("compressed")
    assert len(compressed) >= 50
    assert min(closest(a, True) for a in compressed) < min(closest(a, True) for a in frames("relaxed")) - 0.3
    assert min(closest(a, False) for a in compressed) < min(closest(a, False) for a in frames("md")) - 0.1
    # ... but none with the forces of tens of eV/Å that no MD reaches (the generator's cap)
    assert max(np.abs(a.get_forces()).max() for a in compressed) <= MAX_CLOSE_CONTACT_FORCE
    assert max(np.abs(a.get_forces()).max() for a in frames("md")) < 5.0


def test_hybridpot_io_reads_the_shipped_file(dataset):
    io = pytest.importorskip("hybridpot.io")
    if not hasattr(io, "read_structures"):
        pytest.skip("hybridpot.io.read_structures not available")
    images = io.read_structures(nacl_clusters_path())
    ref = dataset
    assert len(images) == len(ref)
    assert images[5].info["charge"] == ref[5].info["charge"]
    np.testing.assert_allclose(images[5].get_forces(), ref[5].get_forces())


def test_multiplicity_and_geometry_helpers():
    assert multiplicity([11, 17], 0) == 1
    assert multiplicity([11, 11, 17], 1) == 1
    assert multiplicity([11, 11, 17], 0) == 2
    with pytest.raises(ValueError):
        multiplicity([11], 0.5)
    rng = np.random.default_rng(0)
    for n_na, n_cl in ((4, 3), (3, 3), (1, 0)):
        a = random_cluster(n_na, n_cl, rng)
        assert (a.numbers == 11).sum() == n_na and (a.numbers == 17).sum() == n_cl
        if len(a) > 1:
            d = a.get_all_distances() + np.eye(len(a)) * 100
            assert d.min() >= 2.25 - 1e-9
            # connected: every ion has a neighbour within the largest bond length
            assert (d.min(axis=1) <= 3.0 + 1e-9).all()
    scan = dimer_scan(2.0, 4.0, 3)
    assert [a.get_distance(0, 1) for a in scan] == pytest.approx([2.0, 3.0, 4.0])


def test_missing_tblite_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tblite.interface", None)
    monkeypatch.setitem(sys.modules, "tblite", None)
    with pytest.raises(ImportError, match=r"hybridpot\[reference\]"):
        require_tblite()


@needs_tblite
def test_recomputing_stored_structures_reproduces_them(dataset):
    from hybridpot.reference import compute_reference

    picks = [dataset[0]] + [a for a in dataset if a.info["charge"] == 1.0][:1] + [
        a for a in dataset if a.info["multiplicity"] == 2
    ][:1]
    for atoms in picks:
        fresh = Atoms(atoms.numbers, positions=atoms.positions)
        fresh.info["charge"] = atoms.info["charge"]
        out = compute_reference(fresh, method=atoms.info["method"],
                                electronic_temperature=atoms.info["electronic_temperature"])
        assert out.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), abs=1e-5)
        np.testing.assert_allclose(out.get_forces(), atoms.get_forces(), atol=1e-4)
        np.testing.assert_allclose(out.get_charges(), atoms.get_charges(), atol=1e-5)


@needs_tblite
def test_units_of_forces_and_stress_by_finite_differences():
    from hybridpot.reference import compute_reference

    atoms = random_cluster(2, 1, np.random.default_rng(1))
    atoms.info["charge"] = 1.0
    f = compute_reference(atoms).get_forces()
    h = 1e-3
    for a, k in ((0, 0), (2, 1)):
        p, m = atoms.copy(), atoms.copy()
        p.positions[a, k] += h
        m.positions[a, k] -= h
        fd = -(compute_reference(p).get_potential_energy() - compute_reference(m).get_potential_energy()) / (2 * h)
        assert f[a, k] == pytest.approx(fd, abs=2e-4 * max(1.0, abs(fd)))
    # periodic: stress (eV/Å^3) against a finite strain of the cubic rock-salt cell
    crystal = bulk("NaCl", "rocksalt", a=5.5, cubic=True)
    stress = compute_reference(crystal).get_stress()
    h = 1e-4
    energies = []
    for sign in (1, -1):
        c = crystal.copy()
        c.set_cell(crystal.cell.array * (1 + sign * h), scale_atoms=True)
        energies.append(compute_reference(c).get_potential_energy())
    # isotropic strain: dE/d(eps) = V (s_xx + s_yy + s_zz)
    fd = (energies[0] - energies[1]) / (2 * h) / crystal.get_volume()
    assert abs(fd) > 1e-3
    assert stress[:3].sum() == pytest.approx(fd, rel=1e-3)
