"""The demo runs end to end in reduced size (``hybridpot demo --quick``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms

import hybridpot as hp
from hybridpot.cli import main


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--output", str(out), "--no-progress"]) == 0
    return out


def test_demo_writes_plots_models_and_results(demo_dir):
    for name in ("dimer_dissociation.png", "md_energy.png"):
        data = (demo_dir / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    results = json.loads((demo_dir / "results.json").read_text())
    assert set(results["accuracy"]) == {"2G", "4G"}
    for row in results["accuracy"].values():
        assert np.isfinite(row["energy_rmse_meV_per_atom"]) and np.isfinite(row["forces_rmse_eV_per_A"])
        # the test split has both total charges, reported separately
        assert {"energy_rmse_meV_per_atom_Q+0", "energy_rmse_meV_per_atom_Q+1"} <= set(row)
    assert np.isfinite(results["accuracy"]["4G"]["charges_rmse_e"])
    md = results["md"]
    assert md["steps"] > 0 and np.isfinite(md["max_abs_energy_change_meV_per_atom"])
    # QEq keeps the total charge along the trajectory
    assert md["max_total_charge_error_e"] < 1e-8


def test_demo_models_2g_flat_beyond_cutoff_4g_has_a_tail(demo_dir):
    m2, m4 = hp.load(demo_dir / "model_2G.pt"), hp.load(demo_dir / "model_4G.pt")

    def run(model, r):
        out = model(hp.AtomicSystem.from_ase(Atoms("NaCl", positions=[[0, 0, 0], [r, 0, 0]])))
        return float(out["energy"][0]), out.get("charges")

    cutoff = m2.cutoff
    e2 = [run(m2, r)[0] for r in (cutoff + 0.5, cutoff + 4.0)]
    assert e2[0] == pytest.approx(e2[1], abs=1e-10)  # a 2G model sees two isolated atoms
    (e4a, qa), (e4b, qb) = run(m4, cutoff + 0.5), run(m4, cutoff + 4.0)
    assert abs(float(qa.sum())) < 1e-10 and abs(float(qb.sum())) < 1e-10
    # beyond the cutoff the 4G energy is the Coulomb energy of its (Gaussian) charges plus a constant
    if abs(float(qa[0])) > 1e-3:
        assert abs(e4a - e4b) > 1e-4
