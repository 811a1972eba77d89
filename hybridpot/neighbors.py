"""Neighbour lists (vesin-torch) and differentiable pair geometry.

The list itself (pair indices and integer cell shifts) is computed without gradients;
pair vectors are recomputed from positions, cells and shifts so that they are
differentiable with respect to both (forces and stress by autograd).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
from vesin_torch import NeighborList as _VesinNeighborList

from .system import AtomicSystem

__all__ = ["NeighborList", "Graph", "compute_neighbors", "build_graph", "MIN_DISTANCE"]

#: Closest allowed approach of two atoms (Å); closer pairs raise ``ValueError``.
MIN_DISTANCE = 0.1


@dataclass
class NeighborList:
    """A full (i->j and j->i) neighbour list over a batch.

    Attributes
    ----------
    i, j : torch.Tensor
        Global atom indices of each pair, ``[M]`` int64.
    shifts : torch.Tensor
        Integer cell shifts ``S`` such that ``r_ij = r_j - r_i + S @ cell``, ``[M, 3]``.
    cutoff : float
        Cutoff radius the list was built for (Å); it may contain pairs up to
        ``cutoff + skin``.
    descriptor_store : dict, optional
        Descriptor results (symmetry functions and their derivatives) of this list's
        structure kept between calls: only for a structure whose positions and cell never
        change while the list lives, i.e. training data (:meth:`AtomsDataset.cache_descriptors`).
    """

    i: torch.Tensor
    j: torch.Tensor
    shifts: torch.Tensor
    cutoff: float
    descriptor_store: Optional[dict] = field(default=None, compare=False, repr=False)

    def to(self, device) -> "NeighborList":
        return NeighborList(self.i.to(device), self.j.to(device), self.shifts.to(device), self.cutoff,
                            self.descriptor_store)


def compute_neighbors(system: AtomicSystem, cutoff: float, full_list: bool = True) -> NeighborList:
    """Full neighbour list of every structure in ``system`` within ``cutoff`` (Å).

    Periodic, mixed and finite boundary conditions and cells smaller than the cutoff
    (pairs with many images) are handled by vesin-torch. ``full_list=False``: every pair once
    (one direction, one of each pair of opposite images), as the pair sums of
    :class:`~hybridpot.electrostatics.PeriodicCoulomb` need them; about half the search time.
    """
    if cutoff <= 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    # non-finite coordinates, singular or nearly flat cells: a clear error instead of a
    # RuntimeError from vesin or a search over billions of images
    system.validate(cutoff=float(cutoff))
    calculator = _VesinNeighborList(cutoff=float(cutoff), full_list=bool(full_list))
    device = system.device
    pos_all = system.positions.detach()
    cells = system.cell.detach()
    i_parts, j_parts, s_parts = [], [], []
    for s in range(system.n_systems):
        a, b = int(system.ptr[s]), int(system.ptr[s + 1])
        pbc = system.pbc[s]
        periodic = bool(pbc.any())
        points = pos_all[a:b]
        box = cells[s] if periodic else torch.zeros(3, 3, dtype=points.dtype, device=device)
        if periodic and not bool(pbc.all()):
            pbc_arg = pbc
        else:
            pbc_arg = periodic
        # vesin works on CPU and CUDA; float64 for a robust list whatever the model dtype
        i, j, shifts = calculator.compute(
            points.to(torch.float64), box.to(torch.float64), pbc_arg, quantities="ijS", copy=True
        )
        i_parts.append(i.to(device=device, dtype=torch.long) + a)
        j_parts.append(j.to(device=device, dtype=torch.long) + a)
        s_parts.append(shifts.to(device))
    return NeighborList(
        i=torch.cat(i_parts),
        j=torch.cat(j_parts),
        shifts=torch.cat(s_parts).to(torch.long),
        cutoff=float(cutoff),
    )


@dataclass
class Graph:
    """Pair geometry of a batch, differentiable in positions and cells.

    Attributes
    ----------
    positions : torch.Tensor
        (Possibly strained) positions ``[N, 3]`` (Å) that the vectors were computed from.
    cell : torch.Tensor
        (Possibly strained) cells ``[S, 3, 3]`` (Å).
    i, j, shifts : torch.Tensor
        Pair indices and integer cell shifts, ``[M]``, ``[M]``, ``[M, 3]``.
    vectors : torch.Tensor
        ``r_j - r_i + shift @ cell``, ``[M, 3]`` (Å).
    distances : torch.Tensor
        ``|vectors|``, ``[M]`` (Å).
    cutoff : float
        All pairs with distance below ``cutoff`` are present.
    """

    positions: torch.Tensor
    cell: torch.Tensor
    i: torch.Tensor
    j: torch.Tensor
    shifts: torch.Tensor
    vectors: torch.Tensor
    distances: torch.Tensor
    cutoff: float

    def __post_init__(self):
        self._cache: Dict[Tuple[float, bool], "Graph"] = {}
        #: per-call store of descriptor outputs shared by this graph and its sub-graphs, so
        #: that terms sharing one descriptor module compute it once (None: off; switched on
        #: by :meth:`share_features` for the length of one model call)
        self.feature_cache: Optional[dict] = None
        #: descriptor results kept across calls for a fixed structure (from its NeighborList)
        self.descriptor_store: Optional[dict] = None

    def share_features(self) -> "Graph":
        """Let descriptors computed on this graph (and its sub-graphs) be reused within one call.

        Only for a graph whose positions, cell and model parameters stay fixed while it lives
        (:class:`~hybridpot.HybridPotential` builds a fresh graph per call).
        """
        self.feature_cache = {}
        for sub in self._cache.values():
            sub.feature_cache = self.feature_cache
        return self

    def within(self, cutoff: float) -> "Graph":
        """The sub-graph of pairs closer than ``cutoff`` (cached per cutoff)."""
        cutoff = float(cutoff)
        if cutoff > self.cutoff + 1e-12:
            raise ValueError(f"graph built for cutoff {self.cutoff} Å cannot provide pairs up to {cutoff} Å")
        # sub-graphs made under torch.no_grad() carry no gradient: cached apart from the others
        key = (cutoff, torch.is_grad_enabled())
        if key in self._cache:
            return self._cache[key]
        keep = self.distances.detach() < cutoff
        if bool(keep.all()):
            sub = Graph(self.positions, self.cell, self.i, self.j, self.shifts, self.vectors, self.distances, cutoff)
        else:
            idx = torch.nonzero(keep).flatten()
            sub = Graph(
                self.positions,
                self.cell,
                self.i.index_select(0, idx),
                self.j.index_select(0, idx),
                self.shifts.index_select(0, idx),
                self.vectors.index_select(0, idx),
                self.distances.index_select(0, idx),
                cutoff,
            )
        sub.feature_cache = self.feature_cache
        sub.descriptor_store = self.descriptor_store
        self._cache[key] = sub
        return sub

    def half(self) -> "Graph":
        """Each unordered pair once (i < j, or i == j with the first non-zero shift positive)."""
        s = self.shifts
        first_nonzero = torch.where(s[:, 0] != 0, s[:, 0], torch.where(s[:, 1] != 0, s[:, 1], s[:, 2]))
        keep = (self.i < self.j) | ((self.i == self.j) & (first_nonzero > 0))
        idx = torch.nonzero(keep).flatten()
        return Graph(
            self.positions, self.cell, self.i.index_select(0, idx), self.j.index_select(0, idx), s.index_select(0, idx),
            self.vectors.index_select(0, idx), self.distances.index_select(0, idx), self.cutoff
        )


def build_graph(
    system: AtomicSystem,
    neighbors: NeighborList,
    positions: Optional[torch.Tensor] = None,
    cell: Optional[torch.Tensor] = None,
    cutoff: Optional[float] = None,
    check_distance: bool = True,
) -> Graph:
    """Differentiable pair vectors from positions, cells and the list's integer shifts.

    Parameters
    ----------
    system : AtomicSystem
    neighbors : NeighborList
    positions, cell : torch.Tensor, optional
        Tensors to differentiate through (e.g. strained copies); default the system's.
    cutoff : float, optional
        Keep only pairs within this distance (default: the list's cutoff).
    check_distance : bool
        Raise ``ValueError`` naming the atoms when two are closer than ``MIN_DISTANCE``.
    """
    positions = system.positions if positions is None else positions
    cell = system.cell if cell is None else cell
    cutoff = neighbors.cutoff if cutoff is None else float(cutoff)
    i, j = neighbors.i, neighbors.j
    shifts = neighbors.shifts
    if cell.shape[0] == 1:
        # one structure: a [M, 3] x [3, 3] product (no per-pair copy of the cell)
        offsets = shifts.to(positions.dtype) @ cell[0]
    else:
        offsets = torch.einsum("pa,pab->pb", shifts.to(positions.dtype), cell[system.batch[i]])
    # index_select: its backward is index_add (faster on CPU than the accumulate of x[idx])
    vectors = positions.index_select(0, j) - positions.index_select(0, i) + offsets
    distances = vectors.norm(dim=1)
    if check_distance and distances.numel() > 0:
        too_close = distances.detach() < MIN_DISTANCE
        if bool(too_close.any()):
            p = int(torch.nonzero(too_close).flatten()[0])
            raise ValueError(
                f"atoms {int(i[p])} and {int(j[p])} are {float(distances[p].detach()):.4f} Å apart "
                f"(closer than {MIN_DISTANCE} Å): overlapping atoms"
            )
    keep = distances.detach() < cutoff
    if not bool(keep.all()):
        idx = torch.nonzero(keep).flatten()
        i, j, shifts = i.index_select(0, idx), j.index_select(0, idx), shifts.index_select(0, idx)
        vectors, distances = vectors.index_select(0, idx), distances.index_select(0, idx)
    graph = Graph(positions, cell, i, j, shifts, vectors, distances, cutoff)
    graph.descriptor_store = neighbors.descriptor_store
    return graph
