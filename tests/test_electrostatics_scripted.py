"""The TorchScript Coulomb pieces of the whole-model export (hybridpot.electrostatics.scripted,
scripted_operator; hybridpot.qeq.scripted), compiled with torch.jit.script and compared with
the eager implementations they transcribe."""

from __future__ import annotations

import pytest
import torch

import hybridpot as hp
from conftest import random_cluster, random_periodic
from hybridpot.electrostatics import (
    EwaldParameters,
    PeriodicCoulomb,
    direct_coulomb_matrix,
    screening_function,
)
from hybridpot.electrostatics import preconditioner as pc
from hybridpot.electrostatics import scripted
from hybridpot.electrostatics.scripted_operator import ScriptedKSpacePreconditioner, ScriptedPeriodicCoulomb
from hybridpot.neighbors import build_graph, compute_neighbors
from hybridpot.qeq import solve_qeq_dense
from hybridpot.qeq.scripted import solve_qeq_dense_total

PARAMS = EwaldParameters.for_accuracy(1e-6, 6.0)


@pytest.fixture(scope="module")
def box():
    atoms = random_periodic(n_atoms=40, symbols=("Na", "Cl"), seed=3, cell=[[9.0, 0, 0], [0.5, 8.5, 0], [0, 0.7, 9.5]])
    system = hp.AtomicSystem.from_ase(atoms)
    graph = build_graph(system, compute_neighbors(system, PARAMS.real_space_cutoff))
    g = torch.Generator().manual_seed(5)
    sigma = 0.6 + torch.rand(len(atoms), generator=g, dtype=torch.float64)
    return system, graph, sigma


def _relative(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("method", ["ewald", "pme"])
def test_operator_equals_periodic_coulomb(box, method):
    """Products C v of the scripted operator (full pair list) equal PeriodicCoulomb's (half list)."""
    system, graph, sigma = box
    half = graph.half()
    eager = PeriodicCoulomb(system.positions, system.cell[0], half.i, half.j, half.distances, sigma, PARAMS, method)
    op = torch.jit.script(ScriptedPeriodicCoulomb(PARAMS.smearing, PARAMS.k_max, PARAMS.real_space_cutoff,
                                                  PARAMS.switch_width, PARAMS.mesh_spacing,
                                                  PARAMS.interpolation_nodes, method == "pme", scripted.K_E))
    op.prepare(system.positions, system.cell[0], graph.i, graph.j, graph.distances, sigma)
    v = torch.randn(system.n_atoms, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert _relative(op.matvec(v), eager.matvec(v)) < 1e-13
    if method == "pme":
        assert op.mesh_shape == list(eager.mesh_shape)


def test_ewald_matrix_equals_dense(box):
    system, graph, sigma = box
    half = graph.half()
    eager = PeriodicCoulomb(system.positions, system.cell[0], half.i, half.j, half.distances, sigma, PARAMS, "ewald")
    ewald = torch.jit.script(scripted.ewald_matrix)
    mat = ewald(system.positions, system.cell[0], graph.i, graph.j, graph.distances, sigma, PARAMS.smearing,
                PARAMS.k_max, PARAMS.real_space_cutoff, PARAMS.switch_width, scripted.K_E)
    assert _relative(mat, eager.dense()) < 1e-13


def test_kspace_preconditioner_equals_eager(box):
    system, graph, sigma = box
    half = graph.half()
    eager = PeriodicCoulomb(system.positions, system.cell[0], half.i, half.j, half.distances, sigma, PARAMS, "pme")
    diag = 5.0 + torch.rand(system.n_atoms, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    reference = eager.kspace_preconditioner(diag)
    precond = torch.jit.script(ScriptedKSpacePreconditioner(pc.PRECONDITIONER_SPACING,
                                                            pc.PRECONDITIONER_DENSITY_SPACING,
                                                            pc.PRECONDITIONER_NODES, pc.PRECONDITIONER_MAX_FILTER,
                                                            scripted.K_E))
    precond.prepare(system.positions, system.cell[0], diag, sigma, list(eager.mesh_shape))
    r = torch.randn(system.n_atoms, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    assert _relative(precond.apply(r), reference(r)) < 1e-13
    assert float(torch.dot(r, precond.apply(r))) > 0.0  # positive definite


def test_direct_matrix_screening_and_dense_solve():
    atoms = random_cluster(n_atoms=9, symbols=("Na", "Cl"), seed=4)
    positions = torch.as_tensor(atoms.positions, dtype=torch.float64)
    sigma = torch.linspace(0.7, 1.4, len(atoms), dtype=torch.float64)
    mat = torch.jit.script(scripted.direct_matrix)(positions, sigma, scripted.K_E)
    assert _relative(mat, direct_coulomb_matrix(positions, sigma)) < 1e-14
    r = torch.linspace(0.5, 9.0, 50, dtype=torch.float64)
    screening = torch.jit.script(scripted.screening_factor)
    for core, code in scripted.SCRIPTED_SCREENING_CORES.items():
        assert torch.allclose(screening(r, 2.5, 6.0, code), screening_function(r, 2.5, 6.0, core), rtol=0, atol=1e-15)
    a = mat + torch.diag(torch.full((len(atoms),), 12.0, dtype=torch.float64))
    chi = torch.linspace(-1.0, 1.0, len(atoms), dtype=torch.float64)
    q = torch.jit.script(solve_qeq_dense_total)(a, chi, torch.tensor([1.0], dtype=torch.float64))
    q_eager, _ = solve_qeq_dense(a, chi, torch.zeros(len(atoms), dtype=torch.long), torch.tensor([1.0],
                                                                                                  dtype=torch.float64))
    assert abs(float(q.sum()) - 1.0) < 1e-13
    assert _relative(q, q_eager) < 1e-13
