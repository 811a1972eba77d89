"""Whole-model export as a metatomic AtomisticModel (hybridpot.metatomic, hybridpot.scripted).

The exported file, loaded back and run by metatomic's own ASE calculator (metatomic-ase:
its neighbour lists, its autograd forces and stress), must equal HybridCalculator on the
eager model to 1e-10 (relative) in float64: periodic cells (neutral and charged), clusters,
the n2p2 4G examples; an NVE run must follow the same trajectory and conserve energy alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

import hybridpot as hp
from conftest import one_torch_thread

pytest.importorskip("metatomic.torch", reason="metatomic-torch not installed (pip install 'hybridpot[metatomic]')")
metatomic_ase = pytest.importorskip("metatomic_ase",
                                    reason="metatomic-ase not installed (pip install 'hybridpot[metatomic]')")

from hybridpot.metatomic import export_metatomic, load_metatomic

_one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)
# torch 2.13 marks TorchScript (jit.script/load, which metatomic uses) deprecated
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

DATA = Path(hp.__file__).resolve().parent / "data"
N2P2 = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "n2p2"
TOL = 1e-10


def melt_frames(count=3):
    import ase.io

    frames = ase.io.read(DATA / "molten_nacl.extxyz.gz", f":{count}")
    for atoms in frames:
        # a Python float: metatomic-ase 0.1.4 sees a numpy info value as changed at every call
        # (``isinstance(old == new, bool)``) and recomputes for each property
        atoms.info["charge"] = float(atoms.info.get("charge", 0.0))
    return frames


@pytest.fixture(scope="module")
def nacl(tmp_path_factory):
    """The shipped 4G molten-NaCl model (QEq, charge-aware short range, Ewald electrostatics),
    exported on a 64-atom melt frame."""
    model = hp.load(DATA / "molten_nacl_4G.pt")
    path = export_metatomic(model, tmp_path_factory.mktemp("mta") / "nacl.pt", example=melt_frames(1)[0])
    return model, path


def four_term_model():
    """A random 4G model with all four terms: dispersion with its periodic tail, electrostatics
    with other Ewald parameters than the QEq (so the export builds two matrices)."""
    torch.manual_seed(3)
    elements = ["Na", "Cl"]
    desc = hp.SymmetryFunctions.default(elements, r_cut=4.5, n_radial=4, angular_etas=(0.01,), zetas=(1.0, 4.0))
    return hp.HybridPotential(
        short_range=hp.ShortRange(elements, desc, hidden=(8, 8), use_charges=True),
        charges=hp.ChargeEquilibration(elements, desc, hidden=(6,), real_space_cutoff=8.0, accuracy=1e-6),
        electrostatics=hp.Electrostatics(real_space_cutoff=8.5, accuracy=1e-7),
        dispersion=hp.Dispersion(elements, cutoff=7.0, switch_width=1.0, tail_correction=True),
    ).double()


def crystal(repeat=(2, 2, 2), a=5.64, rattle=0.15, seed=0):
    atoms = bulk("NaCl", "rocksalt", a=a, cubic=True).repeat(repeat)
    atoms.rattle(rattle, seed=seed)
    return atoms


def compare(model, path, atoms, stress=True):
    """Energy, forces (and stress) of the exported file under metatomic-ase against HybridCalculator."""
    exported, eager = atoms.copy(), atoms.copy()
    exported.calc = metatomic_ase.MetatomicCalculator(str(path))
    eager.calc = hp.HybridCalculator(model)
    e_exported, e_eager = exported.get_potential_energy(), eager.get_potential_energy()
    assert abs(e_exported - e_eager) <= TOL * abs(e_eager)
    f_exported, f_eager = exported.get_forces(), eager.get_forces()
    assert np.abs(f_exported - f_eager).max() <= TOL * np.abs(f_eager).max()
    if stress:
        s_exported, s_eager = exported.get_stress(), eager.get_stress()
        assert np.abs(s_exported - s_eager).max() <= TOL * np.abs(s_eager).max()
    return e_eager


@pytest.mark.parametrize("charge", [0.0, 1.0, -2.0])
def test_periodic_melt_equals_hybrid_calculator(nacl, charge):
    """The shipped model on a 64-atom melt frame not used for tracing, neutral and charged
    (metatomic's per-system "charge" input, from atoms.info["charge"])."""
    model, path = nacl
    atoms = melt_frames(2)[1]
    atoms.info["charge"] = charge
    compare(model, path, atoms)


def test_pme_electrostatics_above_ewald_max_atoms(tmp_path):
    """The eager electrostatics switches from Ewald to PME above ewald_max_atoms (here lowered
    to 32, so that a 64-atom melt takes the PME path): the export does the same, to rounding."""
    model = hp.load(DATA / "molten_nacl_4G.pt")
    model.electrostatics.ewald_max_atoms = 32
    frames = melt_frames(2)
    path = export_metatomic(model, tmp_path / "pme.pt", example=frames[0])
    frames[1].info["charge"] = 1.0
    compare(model, path, frames[1])


@pytest.mark.parametrize("method", ["pme", "ewald"])
def test_matrix_free_qeq_with_adjoint(tmp_path, method):
    """The matrix-free QEq (projected CG on the PME or Ewald operator; forces through the
    adjoint solve) against the eager matrix-free solver. Both solve to the relative residual
    cg_tol = 1e-10 with different preconditioners (eager: k-space or Jacobi, warm starts; export:
    Jacobi, cold): energies agree to rounding, charges, forces and stress to the solve's
    tolerance (3e-11 relative measured)."""
    model = hp.load(DATA / "molten_nacl_4G.pt")
    model.charges.solver = "matrix_free"
    model.charges.periodic_method = method
    model.charges.preconditioner = "auto"
    model.electrostatics.method = method
    frames = melt_frames(2)
    path = export_metatomic(model, tmp_path / "mf.pt", example=frames[0])
    atoms = frames[1].copy()
    atoms.info["charge"] = -1.0
    exported, eager = atoms.copy(), atoms.copy()
    exported.calc = metatomic_ase.MetatomicCalculator(str(path))
    eager.calc = hp.HybridCalculator(model)
    energy = eager.get_potential_energy()
    assert abs(exported.get_potential_energy() - energy) <= TOL * abs(energy)
    cg_tol = model.charges.cg_tol
    for name in ("forces", "stress"):
        a, b = exported.calc.results[name], eager.calc.results[name]
        assert np.abs(a - b).max() <= 10 * cg_tol * np.abs(b).max(), name
    from metatomic.torch import ModelOutput

    q = exported.calc.run_model(exported, {"hybridpot::charges": ModelOutput(unit="e", sample_kind="atom")})
    q = q["hybridpot::charges"].block().values.detach().reshape(-1).numpy()
    assert abs(q.sum() + 1.0) < 1e-12
    assert np.abs(q - eager.get_charges()).max() <= 10 * cg_tol


def test_total_charge_is_an_input(nacl):
    """The total charge reaches the charge equilibration: the exported charges add up to it
    and equal the eager model's; the energy changes with it."""
    from metatomic.torch import ModelOutput

    model, path = nacl
    atoms = melt_frames(2)[1]
    calc = metatomic_ase.MetatomicCalculator(str(path))
    energies = []
    for charge in (0.0, 1.0):
        atoms.info["charge"] = charge
        out = calc.run_model(atoms, {"hybridpot::charges": ModelOutput(unit="e", sample_kind="atom"),
                                     "energy": ModelOutput(unit="eV", sample_kind="atom")})
        q = out["hybridpot::charges"].block().values.detach().reshape(-1)
        eager = model(hp.AtomicSystem.from_ase(atoms), compute_forces=False)
        assert abs(float(q.sum()) - charge) < 1e-10
        assert torch.allclose(q, eager["charges"], rtol=0, atol=1e-12)
        per_atom = out["energy"].block().values.detach().reshape(-1)
        assert torch.allclose(per_atom, eager["energies"], rtol=0, atol=1e-10 * float(eager["energies"].abs().max()))
        energies.append(float(per_atom.sum()))
    assert abs(energies[1] - energies[0]) > 1.0


def test_cluster_equals_hybrid_calculator(nacl):
    """A finite NaCl cluster (direct Coulomb sums, no cell) with the model exported on a melt."""
    import ase.io

    model, path = nacl
    clusters = ase.io.read(DATA / "nacl_clusters.extxyz.gz", ":")
    atoms = max(clusters, key=len).copy()
    assert not atoms.pbc.any() and len(atoms) >= 8
    compare(model, path, atoms, stress=False)
    atoms.info["charge"] = 1.0
    compare(model, path, atoms, stress=False)


def test_all_four_terms_with_dispersion_tail(tmp_path):
    """Short range (4G), QEq, electrostatics with its own Ewald parameters and dispersion with
    the periodic tail correction: a crystal and a cluster."""
    model = four_term_model()
    path = export_metatomic(model, tmp_path / "four.pt", example=crystal((2, 2, 2)))
    compare(model, path, crystal((2, 1, 1), a=5.8, seed=3))
    cluster = Atoms("Na4Cl4", positions=np.random.default_rng(5).random((8, 3)) * 5.5)
    compare(model, path, cluster, stress=False)


def test_2g_model_requests_no_charge(tmp_path):
    """A short-range-only model: no total-charge input, finite interaction range, same results."""
    torch.manual_seed(1)
    desc = hp.SymmetryFunctions.default(["Na", "Cl"], r_cut=5.0, n_radial=4)
    model = hp.HybridPotential(short_range=hp.ShortRange(["Na", "Cl"], desc, hidden=(8,))).double()
    path = export_metatomic(model, tmp_path / "2g.pt", example=crystal((1, 1, 1)))
    loaded = load_metatomic(path)
    assert loaded.requested_inputs(use_new_names=True) == {}
    assert loaded.capabilities().interaction_range == pytest.approx(5.0)
    compare(model, path, crystal((2, 2, 1), seed=2))


def test_n2p2_carbon_chain_4g(tmp_path):
    """n2p2's Carbon_chain_4G (a finite chain, screened electrostatics) imported with from_n2p2."""
    directory = N2P2 / "Carbon_chain_4G"
    if not directory.is_dir():
        pytest.skip(f"n2p2 reference potentials not found at {directory}")
    from hybridpot.io.input_data import read_input_data

    model = hp.from_n2p2(directory, units="ase", overrides={"global_nodes_short": "10 10"})
    frames = read_input_data(directory / "input.data", units="bohr_hartree")
    path = export_metatomic(model, tmp_path / "carbon.pt", example=frames[0])
    compare(model, path, frames[-1], stress=False)


def test_n2p2_water_4g_periodic(tmp_path):
    """n2p2's H2O_RPBE-D3_4G on a small periodic water box (Ewald QEq, n2p2 screening)."""
    directory = N2P2 / "H2O_RPBE-D3_4G"
    if not directory.is_dir():
        pytest.skip(f"n2p2 reference potentials not found at {directory}")
    from test_n2p2 import small_water_box

    model = hp.from_n2p2(directory, units="ase", accuracy=1e-7)
    atoms = small_water_box()
    path = export_metatomic(model, tmp_path / "water.pt", example=atoms)
    moved = atoms.copy()
    moved.rattle(0.03, seed=7)
    compare(model, path, moved)
    moved.info["charge"] = 1.0
    compare(model, path, moved)


def test_nve_follows_the_hybrid_calculator(nacl):
    """Velocity Verlet under metatomic-ase and under HybridCalculator: the same trajectory and
    the same (conserved) total energy."""
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    model, path = nacl
    runs = []
    for calc in (metatomic_ase.MetatomicCalculator(str(path)), hp.HybridCalculator(model)):
        atoms = melt_frames(3)[2]
        MaxwellBoltzmannDistribution(atoms, temperature_K=1200, rng=np.random.default_rng(4))
        atoms.calc = calc
        dyn = VelocityVerlet(atoms, 2.0 * units.fs)
        totals = []
        for _ in range(15):
            dyn.run(1)
            totals.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
        runs.append((atoms.positions.copy(), np.array(totals)))
    (p_exported, e_exported), (p_eager, e_eager) = runs
    assert np.abs(p_exported - p_eager).max() < 1e-9
    assert np.abs(e_exported - e_eager).max() < 1e-9
    drift = np.abs(e_exported - e_exported[0]).max()
    assert drift < 2e-3 * len(p_eager) / 64  # eV: velocity-Verlet fluctuation at 2 fs, not a drift


def test_export_refuses_what_it_cannot_script(tmp_path):
    desc = hp.SymmetryFunctions.default(["Na", "Cl"], r_cut=4.0, n_radial=3)
    model = hp.HybridPotential(short_range=hp.ShortRange(["Na", "Cl"], desc, hidden=(4,)),
                               charges=hp.FixedCharges(sigma=1.0), electrostatics=hp.Electrostatics()).double()
    with pytest.raises(ValueError, match="FixedCharges"):
        export_metatomic(model, tmp_path / "fixed.pt", example=crystal((1, 1, 1)))


def test_cli_export(nacl, tmp_path):
    from hybridpot.cli import main

    out = tmp_path / "cli.pt"
    assert main(["export", str(DATA / "molten_nacl_4G.pt"), str(out)]) == 0
    model, _ = nacl
    compare(model, out, melt_frames(2)[1])
    assert main(["export", str(tmp_path / "missing.pt"), str(tmp_path / "x.pt")]) == 2
