"""i-PI drives hybridpot through the socket client (hybridpot.ipi): periodic cells and clusters.

Each run starts a real i-PI server (``pip install ipi``) on a UNIX socket, NVE velocity Verlet
from zero velocities, and serves the shipped molten-NaCl model with :func:`hybridpot.ipi.run_client`.
The same dynamics run with ASE's VelocityVerlet and HybridCalculator: i-PI's potential energy
along the trajectory must equal ASE's (the two integrate the same equations from the same state),
and its conserved energy must stay as constant as ASE's total energy.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units
from ase.io import write

import hybridpot as hp
from engine_systems import melt_box, nacl_cube_cluster
from hybridpot.data import molten_nacl_model_path

pytest.importorskip("ipi", reason="i-PI is not installed (pip install ipi)")
I_PI = shutil.which("i-pi")
pytestmark = pytest.mark.skipif(I_PI is None, reason="the i-pi command is not on PATH (pip install ipi)")

STEPS = 12
INPUT = """<simulation verbosity="low">
  <output prefix="sim">
    <properties stride="1" filename="out" flush="1">[step, conserved{{electronvolt}}, potential{{electronvolt}}]</properties>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>1</seed></prng>
  <ffsocket name="hybridpot" mode="unix" pbc="{pbc}"><address>{address}</address></ffsocket>
  <system>
    <initialize nbeads="1"><file mode="ase">init.xyz</file></initialize>
    <forces><force forcefield="hybridpot"/></forces>
    <motion mode="dynamics"><dynamics mode="nve"><timestep units="femtosecond">1.0</timestep></dynamics></motion>
  </system>
</simulation>
"""


def run_ipi(tmp_path: Path, atoms: Atoms, calculator=None) -> np.ndarray:
    """i-PI NVE of ``atoms`` with the shipped model (or an ASE ``calculator``); rows (step, conserved eV,
    potential eV)."""
    from hybridpot.ipi import run_client

    address = f"hp_test_{uuid.uuid4().hex[:8]}"
    box = atoms.copy()
    if not box.pbc.any():
        box.cell = [40.0, 40.0, 40.0]  # i-PI needs a box; hybridpot ignores it for a finite structure
    write(tmp_path / "init.xyz", box, format="extxyz")
    (tmp_path / "input.xml").write_text(INPUT.format(steps=STEPS, address=address,
                                                     pbc="true" if atoms.pbc.any() else "false"))
    server = subprocess.Popen([I_PI, "input.xml"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        socket_file = Path("/tmp") / f"ipi_{address}"
        deadline = time.time() + 60
        while not socket_file.exists():
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"i-PI did not open its socket:\n{server.stdout.read()}")
            time.sleep(0.2)
        client_atoms = atoms.copy()
        if not atoms.pbc.any():
            client_atoms.cell = box.cell  # i-PI sends its box: kept, but pbc stays False
        run_client(hp.load(molten_nacl_model_path()) if calculator is None else calculator, client_atoms, address)
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    return np.loadtxt(tmp_path / "sim.out", ndmin=2)


def run_ase(atoms: Atoms) -> tuple:
    """The same NVE with ASE: (potential energies per step, total energies), eV."""
    from ase.md.verlet import VelocityVerlet

    atoms = atoms.copy()
    atoms.calc = hp.HybridCalculator(hp.load(molten_nacl_model_path()))
    atoms.set_momenta(np.zeros((len(atoms), 3)))
    potential, total = [atoms.get_potential_energy()], [atoms.get_total_energy()]
    dyn = VelocityVerlet(atoms, 1.0 * units.fs)
    for _ in range(STEPS):
        dyn.run(1)
        potential.append(atoms.get_potential_energy())
        total.append(atoms.get_total_energy())
    return np.asarray(potential), np.asarray(total)


def cluster() -> Atoms:
    return nacl_cube_cluster(seed=0, offset=18.0, box=None)


@pytest.mark.parametrize("make", [melt_box, cluster], ids=["periodic_melt", "cluster"])
def test_ipi_socket_client_follows_ase_dynamics(make, tmp_path):
    atoms = make()
    table = run_ipi(tmp_path, atoms)
    potential_ase, total_ase = run_ase(atoms)
    steps, conserved, potential = table[:, 0].astype(int), table[:, 1], table[:, 2]
    assert list(steps) == list(range(STEPS + 1))
    # i-PI prints 9 significant digits, and converts eV through its own Hartree, which differs from
    # ASE's (CODATA 2014) by ~1e-7 relative: the same trajectory means the same ratio at every step
    ratio = potential / potential_ase
    assert abs(float(ratio[0]) - 1.0) < 2e-7, ratio[0]
    assert float(np.ptp(ratio)) < 5e-9, ratio
    assert float(np.ptp(potential_ase)) > 1e-3  # the atoms moved
    drift_ipi, drift_ase = float(np.ptp(conserved)), float(np.ptp(total_ase))
    assert drift_ipi <= drift_ase + 2e-6 * len(atoms), (drift_ipi, drift_ase)
