"""Neighbour lists against ASE's brute-force list; differentiable pair vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import primitive_neighbor_list

import hybridpot as hp
from hybridpot.neighbors import build_graph, compute_neighbors

from conftest import random_cluster, random_periodic


def pair_set(i, j, shifts):
    return sorted(zip(i.tolist(), j.tolist(), map(tuple, shifts.tolist())))


@pytest.mark.parametrize(
    "atoms",
    [
        random_periodic(10, seed=1),
        random_cluster(8, seed=2),
        Atoms("NaCl", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=[[2.5, 0, 0], [1.0, 2.6, 0], [0.3, 0.2, 2.4]], pbc=True),
        Atoms("NaClO", positions=[[0, 0, 1], [1.5, 1.0, 2.0], [0.5, 2.0, 3.5]], cell=[3.0, 3.2, 8.0], pbc=[True, True, False]),
    ],
    ids=["triclinic", "cluster", "tiny-cell", "slab"],
)
def test_same_pairs_as_ase(atoms):
    cutoff = 5.0
    system = hp.AtomicSystem.from_ase(atoms)
    nl = compute_neighbors(system, cutoff)
    i, j, s = primitive_neighbor_list("ijS", atoms.pbc, atoms.cell.array, atoms.positions, cutoff, self_interaction=False)
    assert pair_set(nl.i, nl.j, nl.shifts) == pair_set(torch.as_tensor(i), torch.as_tensor(j), torch.as_tensor(s))
    graph = build_graph(system, nl)
    d = atoms.positions[j] - atoms.positions[i] + s @ atoms.cell.array
    order_ours = np.lexsort((nl.shifts[:, 2], nl.shifts[:, 1], nl.shifts[:, 0], nl.j, nl.i))
    order_ase = np.lexsort((s[:, 2], s[:, 1], s[:, 0], j, i))
    np.testing.assert_allclose(graph.vectors.numpy()[order_ours], d[order_ase], atol=1e-12)


def test_batch_offsets_and_half_list():
    structures = [random_periodic(6, seed=3), random_cluster(5, seed=4)]
    system = hp.AtomicSystem.from_ase(structures)
    nl = compute_neighbors(system, 4.0)
    assert bool((system.batch[nl.i] == system.batch[nl.j]).all())
    graph = build_graph(system, nl)
    half = graph.half()
    assert 2 * len(half.i) == len(graph.i)
    # each kept pair's reverse is in the full list
    full = set(pair_set(graph.i, graph.j, graph.shifts))
    for a, b, s in pair_set(half.j, half.i, -half.shifts):
        assert (a, b, s) in full


def test_vectors_are_differentiable_in_positions_and_cell():
    atoms = random_periodic(6, seed=5)
    system = hp.AtomicSystem.from_ase(atoms)
    nl = compute_neighbors(system, 4.0)
    pos = system.positions.clone().requires_grad_(True)
    cell = system.cell.clone().requires_grad_(True)
    graph = build_graph(system, nl, pos, cell)
    f = (graph.distances**2).sum()
    gp, gc = torch.autograd.grad(f, [pos, cell])
    # d/dR sum |r_ij|^2 over the full list = -4 sum_j r_ij; d/dcell = 2 sum S^T r_ij
    want_p = torch.zeros_like(pos).index_add(0, graph.i, -4.0 * graph.vectors.detach())
    want_c = 2.0 * torch.einsum("pa,pb->ab", nl.shifts.double(), graph.vectors.detach())
    torch.testing.assert_close(gp, want_p)
    torch.testing.assert_close(gc[0], want_c)


def test_within_filters_and_refuses_larger_cutoff():
    system = hp.AtomicSystem.from_ase(random_periodic(8, seed=6))
    graph = build_graph(system, compute_neighbors(system, 5.0))
    sub = graph.within(3.0)
    assert bool((sub.distances < 3.0).all()) and len(sub.i) == int((graph.distances < 3.0).sum())
    assert graph.within(3.0) is sub
    with pytest.raises(ValueError, match="cannot provide"):
        graph.within(6.0)


def test_subgraph_made_without_gradients_is_not_reused_with_gradients():
    """Graph.within() called under torch.no_grad() (e.g. charges for inspection) must not hand
    a gradient-free sub-graph to a later differentiable call on the same graph."""
    atoms = Atoms("NaClCl", positions=[[0, 0, 0], [2.5, 0.3, 0], [0, 4.5, 0]], cell=[12, 12, 12], pbc=True)
    system = hp.AtomicSystem.from_ase(atoms)
    positions = system.positions.clone().requires_grad_(True)
    graph = build_graph(system, compute_neighbors(system, 5.0), positions=positions)
    with torch.no_grad():
        assert not graph.within(4.0).distances.requires_grad
    sub = graph.within(4.0)
    assert sub.distances.numel() < graph.distances.numel()  # the 4.5 Å pair was dropped
    assert sub.distances.requires_grad
    (grad,) = torch.autograd.grad(sub.distances.sum(), positions)
    assert float(grad.abs().max()) > 0
