"""Smoke tests of validation/md_stability.py, validation/dissociation.py, examples/ionic_liquid_md.py and
examples/electrolyte_md.py.

Each script's ``main()`` runs in a tiny mode on untrained models of the demo's architecture
(saved like ``hybridpot demo`` saves them); the checks are facts that hold for any model:
exact charge constraints along MD, and a 2G model being constant beyond its cutoff.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import hybridpot as hp
from example_scripts import load_script  # tests/example_scripts.py


@pytest.fixture(scope="module")
def cached_dataset():
    from hybridpot.data import load_nacl_clusters

    return load_nacl_clusters()


@pytest.fixture(autouse=True)
def _load_dataset_once(cached_dataset, monkeypatch):
    # the scripts import hybridpot.data.load_nacl_clusters inside their functions; parsing the
    # shipped file takes seconds, so it is parsed once here (the scripts do not modify the frames)
    import hybridpot.data

    monkeypatch.setattr(hybridpot.data, "load_nacl_clusters", lambda: cached_dataset)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    from hybridpot.demo import QUICK, _build_model

    folder = tmp_path_factory.mktemp("models")
    for kind in ("2G", "4G"):
        torch.manual_seed(0)
        hp.save(_build_model(kind, QUICK).eval(), folder / f"model_{kind}.pt")
    return folder


def test_md_stability_main(models_dir, tmp_path):
    script = load_script("validation/md_stability.py")
    rows = script.main(["--models", str(models_dir), "--output", str(tmp_path), "--steps", "5"])
    assert set(rows) == {"Na4Cl4, Q=0", "Na5Cl4, Q=+1", "Na4Cl4, Q=0, 2 fragments (0, 0)"}
    for row in rows.values():
        assert row["steps"] == 5 and np.isfinite(row["drift_meV_per_atom_per_ps"])
        assert row["max_total_charge_error_e"] < 1e-10
    assert rows["Na4Cl4, Q=0, 2 fragments (0, 0)"]["max_fragment_charge_error_e"] < 1e-10
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"]["Na5Cl4, Q=+1"]["natoms"] == 9
    with pytest.raises(ValueError, match="model_4G.pt"):
        script.main(["--models", str(tmp_path), "--output", str(tmp_path), "--steps", "5"])


def test_dissociation_main(models_dir, tmp_path):
    script = load_script("validation/dissociation.py")
    rows = script.main(["--models", str(models_dir), "--output", str(tmp_path), "--no-charged", "--points", "8"])
    assert [r["model"] for r in rows] == ["2G", "4G (QEq)"]
    assert (tmp_path / "dissociation_2g_vs_4g.png").stat().st_size > 0
    # beyond its cutoff a 2G model is constant, so its offset-free error there is the
    # spread (standard deviation) of the reference energies beyond the cutoff
    ref = script.reference_curves(with_charged=False)["NaCl (Q=0)"]
    r, e = ref["r"][::8], ref["energy"][::8]
    beyond = e[r > 6.0]
    assert rows[0]["shape_rmse_beyond_eV"] == pytest.approx(beyond.std(), rel=1e-9)


def test_ionic_liquid_example_main(models_dir, tmp_path):
    script = load_script("examples/ionic_liquid_md.py")
    atoms = script.build_box(4, 4.6, np.random.default_rng(0))
    assert len(atoms) == 16 and sorted(atoms.info["fragment_charges"]) == [-1.0] * 4 + [1.0] * 4
    assert sum(len(f) for f in atoms.info["fragments"]) == 16
    with pytest.raises(ValueError, match="cube"):
        script.build_box(3, 4.6, np.random.default_rng(0))
    out = script.main(["--model", str(models_dir / "model_4G.pt"), "--output", str(tmp_path), "--steps", "3",
                       "--relax-steps", "0", "--wall", "1.6", "--ion-charge", "1", "--spacing", "4.6"])
    assert not out["collapsed"]  # 3 steps from ions >= 2.3 Å apart
    assert out["max_ion_charge_error_e"] < 1e-10
    assert np.isfinite(out["drift_meV_per_atom_per_ps"])
    assert (tmp_path / "final.extxyz").exists()


def test_ionic_liquid_core_wall_adds_k_times_overlap_squared(models_dir):
    from ase import Atoms

    script = load_script("examples/ionic_liquid_md.py")
    model = hp.load(models_dir / "model_4G.pt")
    walled = hp.load(models_dir / "model_4G.pt")
    walled.short_range = script.CoreWall(walled.short_range, r_wall=1.6, k=50.0)
    for r, de, df in ((1.4, 50.0 * 0.2**2, 2 * 50.0 * 0.2), (2.0, 0.0, 0.0)):
        atoms = Atoms("NaCl", positions=[[0, 0, 0], [r, 0, 0]])
        out = [m(hp.AtomicSystem.from_ase(atoms), compute_forces=True) for m in (model, walled)]
        assert float(out[1]["energy"] - out[0]["energy"]) == pytest.approx(de, abs=1e-10)
        # the wall pushes Cl (atom 1, at +x) outwards with force 2 k (r_wall - r)
        assert float(out[1]["forces"][1, 0] - out[0]["forces"][1, 0]) == pytest.approx(df, abs=1e-9)


def test_electrolyte_example_main(models_dir, tmp_path):
    """Molten-NaCl example in a tiny mode: the 4G model and the Tosi-Fumi reference both run,
    the total charge stays zero, RDFs are written."""
    script = load_script("examples/electrolyte_md.py")
    out = script.main(["--model", str(models_dir / "model_4G.pt"), "--output", str(tmp_path), "--steps", "10"])
    assert set(out) == {"4G model", "Tosi-Fumi"}
    assert out["4G model"]["max_total_charge_e"] < 1e-10
    assert out["Tosi-Fumi"]["max_total_charge_e"] is None
    for row in out.values():
        assert np.isfinite(row["drift_meV_per_atom_per_ps"]) and row["closest_A"] > 1.0
        assert set(row["peaks_A"]) == {"Na-Cl", "Na-Na", "Cl-Cl"}
    assert (tmp_path / "rdf.png").stat().st_size > 0
