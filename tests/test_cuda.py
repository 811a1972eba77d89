"""The whole 4G hybrid path on CUDA equals the CPU path (skipped without a GPU).

Neighbours (vesin), descriptors, QEq (dense and matrix-free PME CG with the k-space
preconditioner), PME/Ewald/direct electrostatics, dispersion, forces and stress by autograd:
each structure is evaluated on the CPU and on the GPU in float64 and compared. The CPU path is
tested against finite differences and reference codes elsewhere, so equality here carries
those checks over to CUDA.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

import hybridpot as hp

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def make_4g(solver: str, method: str = "pme"):
    torch.manual_seed(5)
    elements = ["Na", "Cl"]
    desc = hp.SymmetryFunctions.default(elements, r_cut=4.5, n_radial=4, angular_etas=(0.01,), zetas=(1.0, 4.0))
    return hp.HybridPotential(
        short_range=hp.ShortRange(elements, desc, hidden=(8, 8), use_charges=True),
        charges=hp.ChargeEquilibration(elements, desc, hidden=(6,), real_space_cutoff=8.5, accuracy=1e-7,
                                       solver=solver, periodic_method=method, cg_tol=1e-10, warm_start=False),
        electrostatics=hp.Electrostatics(method=method, real_space_cutoff=8.5, accuracy=1e-7),
        dispersion=hp.Dispersion(elements, cutoff=6.0, switch_width=1.0),
    ).double()


def crystal(repeat, rattle=0.1, seed=0):
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(repeat)
    atoms.rattle(rattle, seed=seed)
    return atoms


def compare(model, atoms_list, stress=True, atol=1e-8):
    cpu = model(hp.AtomicSystem.from_ase(atoms_list), compute_stress=stress)
    gpu_model = model.to("cuda")
    gpu = gpu_model(hp.AtomicSystem.from_ase(atoms_list, device="cuda"), compute_stress=stress)
    model.to("cpu")
    keys = ["energy", "forces", "charges"] + (["stress"] if stress else [])
    for key in keys:
        assert gpu[key].device.type == "cuda", key
        np.testing.assert_allclose(gpu[key].cpu().numpy(), cpu[key].numpy(), atol=atol, rtol=1e-9, err_msg=key)
    assert float(cpu["forces"].abs().max()) > 1e-2  # a real comparison, not zeros


@pytest.mark.parametrize("solver", ["dense", "matrix_free"])
def test_periodic_pme_qeq_on_cuda_matches_cpu(solver):
    compare(make_4g(solver), [crystal((2, 2, 2))])


def test_ewald_and_cluster_batch_on_cuda_matches_cpu():
    cluster = crystal((1, 1, 1), seed=3)
    cluster.pbc = False
    cluster.cell = np.zeros((3, 3))
    cluster.center(vacuum=4.0)
    cluster.pbc = False
    compare(make_4g("dense", method="ewald"), [crystal((2, 1, 1), seed=1), cluster], stress=False)


def test_calculator_md_step_on_cuda():
    from ase.md.verlet import VelocityVerlet
    from ase import units

    atoms = crystal((2, 2, 2), seed=4)
    atoms.calc = hp.HybridCalculator(make_4g("matrix_free"), device="cuda")
    e0 = atoms.get_potential_energy()
    VelocityVerlet(atoms, 0.5 * units.fs).run(5)
    assert np.isfinite(atoms.get_potential_energy()) and abs(atoms.get_potential_energy() - e0) < 1.0
