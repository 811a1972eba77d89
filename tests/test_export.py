"""TorchScript export of the local model pieces (hybridpot.export)."""

import dataclasses

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

import hybridpot as hp
from conftest import one_torch_thread
from hybridpot.export import export_torchscript, load_exported, pair_inputs
from hybridpot.neighbors import build_graph, compute_neighbors

_one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


def make_model():
    torch.manual_seed(3)
    elements = ["Na", "Cl"]
    desc = hp.SymmetryFunctions.default(elements, r_cut=4.5, n_radial=4, angular_etas=(0.01,), zetas=(1.0, 4.0))
    return hp.HybridPotential(
        short_range=hp.ShortRange(elements, desc, hidden=(8, 8), use_charges=True),
        charges=hp.ChargeEquilibration(elements, desc, hidden=(6,), real_space_cutoff=8.0, accuracy=1e-6),
        electrostatics=hp.Electrostatics(real_space_cutoff=8.0, accuracy=1e-6),
        dispersion=hp.Dispersion(elements, cutoff=6.0, switch_width=1.0, tail_correction=False),
    ).double()


def crystal(repeat, a=5.64, rattle=0.1, seed=0):
    atoms = bulk("NaCl", "rocksalt", a=a, cubic=True).repeat(repeat)
    atoms.rattle(rattle, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = make_model()
    paths = export_torchscript(model, tmp_path_factory.mktemp("export"), crystal((2, 2, 2)))
    return model, {k: load_exported(p) for k, p in paths.items()}


def eager_pieces(model, atoms):
    """Per-atom short-range + dispersion energies, QEq charges and chi of the eager model."""
    system = hp.AtomicSystem.from_ase(atoms)
    positions = system.positions.clone().requires_grad_(True)
    system = dataclasses.replace(system, positions=positions)
    graph = build_graph(system, compute_neighbors(system, model.cutoff))
    with torch.no_grad():
        q, _ = model.charges(system, graph)
    local = model.short_range(system, graph, q) + model.dispersion(system, graph)
    forces = -torch.autograd.grad(local.sum(), positions)[0]
    chi = model.charges.electronegativity(system, graph).detach()
    return local.detach(), forces, q, chi


@pytest.mark.parametrize("atoms", [crystal((3, 2, 2), a=5.8, rattle=0.2, seed=4),
                                   Atoms("Na3Cl3", positions=np.random.default_rng(2).random((6, 3)) * 6.0)],
                         ids=["periodic-96", "cluster-6"])
def test_exported_modules_reproduce_the_model(exported, atoms):
    """On structures not used for tracing (other size, a finite cluster): per-atom energies,
    forces, charge gradients and electronegativities equal the eager model's."""
    model, modules = exported
    local, forces, q, chi = eager_pieces(model, atoms)
    # the engine's list may be longer than the cutoff (Verlet skin): pairs beyond are dropped inside
    positions, numbers, cell, i, j, shifts = pair_inputs(atoms, model.cutoff + 1.5)
    positions = positions.clone().requires_grad_(True)
    charges = q.clone().requires_grad_(True)
    energies = modules["local_energy"](positions, numbers, cell, i, j, shifts, charges)
    assert energies.shape == (len(atoms),)
    assert torch.allclose(energies, local, rtol=0, atol=1e-12 * float(local.abs().max()))
    f, dq = torch.autograd.grad(energies.sum(), [positions, charges])
    assert torch.allclose(-f, forces, rtol=0, atol=1e-10 * float(forces.abs().max()))
    assert float(dq.abs().max()) > 0  # the 4G short range depends on the charges
    chi_exported = modules["electronegativity"](positions.detach(), numbers, cell, i, j, shifts)
    assert torch.allclose(chi_exported, chi, rtol=0, atol=1e-12 * float(chi.abs().max()))


def test_exported_qeq_parameters(exported):
    model, modules = exported
    hardness, sigma = modules["electronegativity"].hardness, modules["electronegativity"].sigma
    for k, z in enumerate(model.charges.elements):
        assert float(hardness[z]) == pytest.approx(float(model.charges.hardness[k].detach()), rel=1e-14)
        assert float(sigma[z]) == pytest.approx(float(model.charges.sigma[k].detach()), rel=1e-14)
    assert torch.isnan(hardness[1])
    assert float(modules["local_energy"].interaction_range) == model.dispersion.cutoff
    assert float(modules["electronegativity"].interaction_range) == model.charges.descriptor.cutoff


def test_export_of_a_2g_model_and_bad_input(tmp_path):
    torch.manual_seed(0)
    desc = hp.SymmetryFunctions.default(["Na", "Cl"], r_cut=4.0, n_radial=3, angular_etas=(0.01,), zetas=(1.0,))
    model = hp.HybridPotential(short_range=hp.ShortRange(["Na", "Cl"], desc, hidden=(5,))).double()
    paths = export_torchscript(model, tmp_path, crystal((2, 1, 1)))
    assert set(paths) == {"local_energy"}
    module = load_exported(paths["local_energy"])
    atoms = crystal((1, 2, 3), seed=5)
    x = pair_inputs(atoms, 5.0)
    out = model(hp.AtomicSystem.from_ase(atoms))
    assert float(module(*x, torch.zeros(len(atoms), dtype=torch.float64)).sum().detach()) == pytest.approx(
        float(out["energy"][0]), rel=1e-12)
    with pytest.raises(ValueError, match="no local energy term"):
        export_torchscript(hp.HybridPotential(charges=hp.FixedCharges(), electrostatics=hp.Electrostatics()),
                           tmp_path, crystal(1))
