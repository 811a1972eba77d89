"""Ethylammonium nitrate (EAN): the box builder, the shipped GFN1-xTB data and 4G model, the MD example.

tblite-needing tests skip without tblite."""

from __future__ import annotations

import importlib.util

import ase.io
import numpy as np
import pytest
from ase import units
from ase.geometry import get_distances

import hybridpot as hp
from conftest import one_torch_thread
from hybridpot.data import (ethylammonium_nitrate_model_md_path, ethylammonium_nitrate_model_path,
                            ethylammonium_nitrate_path, load_ethylammonium_nitrate)
from hybridpot.reference_data.ethylammonium_nitrate import (EAN_DENSITY, EAN_MOLAR_MASS, ammonium_h_distances,
                                                            closest_intermolecular, ean_box, ion_charge_sums,
                                                            ion_groups, with_fragments)
from example_scripts import load_script  # tests/example_scripts.py

_one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)

HAS_TBLITE = importlib.util.find_spec("tblite") is not None
needs_tblite = pytest.mark.skipif(not HAS_TBLITE, reason="tblite not installed (pip install hybridpot[reference])")
needs_model = pytest.mark.skipif(not ethylammonium_nitrate_model_path().exists(),
                                 reason="shipped EAN model not present (examples/train_ethylammonium_nitrate.py --install)")


# ------------------------------------------------------------------------------------ builder
def test_box_composition_density_and_fragments():
    box = ean_box(4, np.random.default_rng(3))
    assert box.get_chemical_formula(mode="hill") == "C8H32N8O12"
    assert box.pbc.all() and box.info["charge"] == 0.0
    mass_g = box.get_masses().sum() / units._Nav
    assert mass_g / (box.get_volume() * 1e-24) == pytest.approx(EAN_DENSITY, rel=1e-3)
    assert box.get_masses().sum() / 4 == pytest.approx(EAN_MOLAR_MASS, abs=0.01)
    fragments, charges = box.info["fragments"], box.info["fragment_charges"]
    assert sorted(i for f in fragments for i in f) == list(range(60))
    assert sorted(len(f) for f in fragments) == [4] * 4 + [11] * 4
    for f, q in zip(fragments, charges):  # cations are C2H8N (+1), anions NO3 (-1)
        formula = "".join(sorted(box[f].get_chemical_formula()))
        assert (q, formula) in ((1.0, "".join(sorted("C2H8N"))), (-1.0, "".join(sorted("NO3"))))
    assert sum(charges) == 0.0
    assert closest_intermolecular(box) >= 1.8


def test_ions_keep_their_hand_written_geometry():
    """Rotation and placement are rigid: bond lengths of the templates (N-H 1.03, N-O 1.25 Å)."""
    box = ean_box(4, np.random.default_rng(1))
    cations, anions = ion_groups(box)
    for c in cations:
        _, d = get_distances(box.positions[c[3:6]], box.positions[[c[0]]], cell=box.cell, pbc=True)
        np.testing.assert_allclose(d.ravel(), 1.03, atol=2e-3)
    for a in anions:
        _, d = get_distances(box.positions[a[1:]], box.positions[[a[0]]], cell=box.cell, pbc=True)
        np.testing.assert_allclose(d.ravel(), 1.25, atol=2e-3)
    longest_nh, shortest_ho = ammonium_h_distances(box)
    assert longest_nh == pytest.approx(1.03, abs=2e-3) and shortest_ho >= 1.8


def test_fragments_survive_extended_xyz(tmp_path):
    box = ean_box(4, np.random.default_rng(2))
    out = box.copy()
    del out.info["fragments"], out.info["fragment_charges"]  # nested lists are not written; ion arrays are
    ase.io.write(tmp_path / "box.extxyz", out)
    back = with_fragments(ase.io.read(tmp_path / "box.extxyz"))
    assert back.info["fragments"] == box.info["fragments"]
    assert back.info["fragment_charges"] == box.info["fragment_charges"]
    system = hp.AtomicSystem.from_ase(back)
    np.testing.assert_array_equal(system.fragments.numpy(), box.arrays["ion"])


# ------------------------------------------------------------------------------- shipped data
@pytest.mark.skipif(not ethylammonium_nitrate_path().exists(), reason="EAN dataset not generated")
def test_shipped_data_labels_and_ion_charges():
    images = load_ethylammonium_nitrate()
    assert len(images) > 100
    for atoms in images[:: max(1, len(images) // 20)]:
        assert len(atoms) == 60 and atoms.info["method"] == "GFN1-xTB"
        forces = atoms.get_forces()
        assert forces.shape == (60, 3) and np.isfinite(atoms.get_potential_energy())
        # net force of a periodic box vanishes (translation invariance of the reference)
        np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-6)
        q = ion_charge_sums(atoms)
        assert abs(q.sum()) < 1e-6  # Mulliken charges sum to the total charge
        sign = np.asarray(atoms.info["fragment_charges"])
        # Mulliken per-ion sums are not +-1: GFN1-xTB moves some charge between the ions
        assert np.all(q * sign > 0.5) and np.all(q * sign < 1.0)
    if ethylammonium_nitrate_model_md_path().exists():
        assert any(str(a.info["source"]).startswith("model md") for a in images)


@needs_model
def test_shipped_model_fits_reference_forces_and_keeps_ion_charges():
    """On a few shipped structures the model explains most of the force variance and its charges
    sum to exactly +-1 per ion."""
    model = hp.load(ethylammonium_nitrate_model_path())
    images = [a for a in load_ethylammonium_nitrate() if str(a.info["source"]).startswith("xtb md")][::32][:5]
    df, f_ref = [], []
    for atoms in images:
        out = model(hp.AtomicSystem.from_ase(atoms), compute_forces=True)
        df.append(out["forces"].detach().numpy() - atoms.get_forces())
        f_ref.append(atoms.get_forces())
        per_ion = ion_charge_sums(atoms, out["charges"].detach().numpy())
        np.testing.assert_allclose(per_ion, atoms.info["fragment_charges"], atol=1e-9)
    rmse = np.sqrt(np.mean(np.concatenate(df) ** 2))
    rms = np.sqrt(np.mean(np.concatenate(f_ref) ** 2))
    assert rmse < 0.4 * rms  # measured on the test split: 0.28 eV/Å against a reference RMS of about 1 eV/Å


@needs_model
def test_small_box_equals_half_its_doubled_supercell():
    """The 8.4 Å box is shorter than twice the 6 Å cutoff: periodic images must be counted; the
    energy per atom and the forces are those of the 2x1x1 supercell."""
    model = hp.load(ethylammonium_nitrate_model_path())
    box = ean_box(4, np.random.default_rng(4))
    big = box.repeat((2, 1, 1))
    big.arrays["ion"] = np.concatenate([box.arrays["ion"], box.arrays["ion"] + 8])
    big.info["ion_charges"] = np.tile(box.info["ion_charges"], 2)
    with_fragments(big)
    small = model(hp.AtomicSystem.from_ase(box), compute_forces=True)
    large = model(hp.AtomicSystem.from_ase(big), compute_forces=True)
    assert float(large["energy"][0]) == pytest.approx(2 * float(small["energy"][0]), abs=1e-6)
    np.testing.assert_allclose(large["forces"].detach().numpy()[:60], small["forces"].detach().numpy(), atol=1e-6)


@needs_model
def test_md_example_runs_with_exact_ion_charges(tmp_path):
    script = load_script("examples/ethylammonium_nitrate_md.py")
    results = script.main(["--langevin-ps", "0.01", "--nve-ps", "0.05", "--output", str(tmp_path), "--no-progress"])
    assert (tmp_path / "rdf.png").stat().st_size > 0 and (tmp_path / "msd.png").stat().st_size > 0
    assert results["max_abs_total_charge_e"] < 1e-9
    assert results["max_abs_ion_charge_error_e"] < 1e-9
    assert results["largest_ammonium_NH_A"] < 1.3


# ------------------------------------------------------------------------------------ tblite
@needs_tblite
def test_reference_labels_a_box_with_stress_and_ion_data():
    from hybridpot.reference_data.ethylammonium_nitrate import label

    box = ean_box(4, np.random.default_rng(5))
    (ref,) = label([box], progress=False)
    assert ref.get_stress().shape == (6,)
    np.testing.assert_array_equal(ref.arrays["ion"], box.arrays["ion"])
    q = ion_charge_sums(ref)
    assert abs(q.sum()) < 1e-6
    assert np.all(q[:4] > 0.5) and np.all(q[4:] < -0.5)


def test_contact_wall_forces_are_its_energy_gradient():
    script = load_script("examples/ethylammonium_nitrate_md.py")
    box = ean_box(4, np.random.default_rng(6))
    cations, _ = ion_groups(box)
    # push an H of cation 1 to 1.2 Å from an H of cation 0 (inside the 1.5 Å H-H wall)
    h0, h1 = cations[0][8], cations[1][8]
    _, d = get_distances(box.positions[[h1]], box.positions[[h0]], cell=box.cell, pbc=True)
    vector, _ = get_distances(box.positions[[h0]], box.positions[[h1]], cell=box.cell, pbc=True)
    box.positions[h1] = box.positions[h0] + vector[0, 0] / np.linalg.norm(vector[0, 0]) * 1.2
    wall = script.ContactWall(box)
    energy, forces = wall(box)
    assert energy > 0
    step = 1e-5
    for atom in (h0, h1):
        for axis in range(3):
            plus, minus = box.copy(), box.copy()
            plus.positions[atom, axis] += step
            minus.positions[atom, axis] -= step
            numerical = -(wall(plus)[0] - wall(minus)[0]) / (2 * step)
            assert forces[atom, axis] == pytest.approx(numerical, abs=1e-6)
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-10)
