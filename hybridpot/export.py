"""TorchScript export of a model's local pieces, for MD engines that bring their own long range.

Under MPI domain decomposition an MD engine (LAMMPS through metatomic, ``pair_style mliap``, or
a custom pair style) gives each rank its atoms plus ghost atoms within a cutoff; the terms of
a hybrid model that are sums of local atomic energies run there unchanged, while the global
charge equilibration and the Ewald/PME reciprocal sum belong to the engine (docs/scaling.md,
design A). :func:`export_torchscript` writes those local pieces as TorchScript files (loadable
with ``torch.jit.load`` in Python and ``torch::jit::load`` in C++), each with a tensor-only
signature and the neighbour list passed in:

``local_energy.pt``
    ``forward(positions [N,3] Å, numbers [N] int64, cell [3,3] Å, i [M], j [M], shifts [M,3] int64,
    charges [N] e) -> [N]`` per-atom short-range energies (eV), plus the damped dispersion
    pair energies (half of each pair to each atom, no long-range tail correction) when the model
    has a dispersion term. ``charges`` is the 4G short range's charge input (ignored by a 2G model).
    Buffer ``interaction_range`` (Å): the neighbour-list cutoff the module needs.
    Forces ``-dE/dr`` and ``dE/dq`` (the right-hand side of the adjoint QEq solve) by autograd of
    the sum; stress through ``cell``.
``electronegativity.pt`` (models with :class:`~hybridpot.ChargeEquilibration`)
    ``forward(positions, numbers, cell, i, j, shifts) -> chi [N]`` (eV/e), with the buffers
    ``hardness`` and ``sigma`` (``[119]``, indexed by atomic number; NaN for unknown elements),
    the QEq hardness J_Z (eV/e^2) and Gaussian widths sigma_Z (Å).

Pairs: any list that holds every pair closer than the model's cutoff (full list, both
directions, periodic images through ``shifts``: ``r_ij = r_j - r_i + shifts @ cell``); pairs
beyond the cutoff (a Verlet skin) are dropped inside. The files are made by tracing
(``torch.jit.trace``) and checked against the eager model on the example and on a second,
larger structure before they are written; the check raises if they differ.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from .neighbors import Graph, compute_neighbors
from .system import AtomicSystem
from .terms import call_energy_term

__all__ = ["LocalEnergy", "Electronegativity", "pair_inputs", "export_torchscript", "load_exported"]


def _graph(positions, cell, i, j, shifts, cutoffs) -> Graph:
    """Pairs closer than max(cutoffs), with the sub-graphs of the other cutoffs precomputed, so that
    ``Graph.within`` takes no data-dependent branch while tracing."""
    vectors = positions.index_select(0, j) - positions.index_select(0, i) + shifts.to(positions.dtype) @ cell
    distances = vectors.norm(dim=1)
    graphs = {}
    for c in sorted(set(cutoffs), reverse=True):
        idx = torch.nonzero(distances.detach() < c).flatten()
        graphs[c] = Graph(positions, cell.unsqueeze(0), i[idx], j[idx], shifts[idx], vectors.index_select(0, idx),
                          distances.index_select(0, idx), c)
    top = graphs[max(graphs)]
    top._cache.update({(c, grad): g for c, g in graphs.items() for grad in (True, False)})
    return top


def _system(positions, numbers, cell) -> AtomicSystem:
    n = numbers.shape[0]
    return AtomicSystem(
        positions, numbers, cell.unsqueeze(0), torch.zeros(1, 3, dtype=torch.bool, device=positions.device),
        torch.zeros(1, dtype=positions.dtype, device=positions.device),
        torch.zeros(n, dtype=torch.long, device=positions.device),
        torch.tensor([0, n], device=positions.device),
    )


class LocalEnergy(nn.Module):
    """Per-atom energies of a model's local terms (:func:`hybridpot.terms.term_traits`
    ``is_local``: the short range, dispersion without its tail, ...), tensor-only signature."""

    def __init__(self, model):
        super().__init__()
        traits = model.term_traits()
        names = [n for n, tr in traits.items() if tr.is_local and not tr.provides_charges]
        if not names:
            raise ValueError("the model has no local energy term to export (short range, dispersion, ...)")
        self.term_names = names
        self.terms = nn.ModuleDict({n: model.terms()[n] for n in names})
        self.traits = {n: traits[n] for n in names}
        self.cutoffs = [float(t.cutoff) for t in self.terms.values()]
        for term in self.terms.values():
            if hasattr(term, "descriptor"):
                self.cutoffs.append(float(term.descriptor.cutoff))
        self.cutoff = max(self.cutoffs)
        self.register_buffer("interaction_range", torch.tensor(self.cutoff, dtype=torch.float64))

    def forward(self, positions, numbers, cell, i, j, shifts, charges):
        graph = _graph(positions, cell, i, j, shifts, self.cutoffs)
        system = _system(positions, numbers, cell)  # pbc unset: no dispersion tail correction
        energies = torch.zeros_like(positions[:, 0])
        for name in self.term_names:
            traits = self.traits[name]
            term_charges = charges if (traits.needs_charges or traits.takes_charges) else None
            energies = energies + call_energy_term(self.terms[name], traits, system, graph, term_charges, None)
        return energies


class Electronegativity(nn.Module):
    """QEq electronegativities of a 4G model, tensor-only signature; hardness and widths as buffers."""

    def __init__(self, charges):
        super().__init__()
        self.charges = charges
        self.cutoff = float(charges.descriptor.cutoff)
        hardness = torch.full((119,), float("nan"), dtype=torch.float64)
        sigma = torch.full((119,), float("nan"), dtype=torch.float64)
        with torch.no_grad():
            hardness[charges.elements] = charges.hardness.detach().double()
            sigma[charges.elements] = charges.sigma.detach().double()
        self.register_buffer("hardness", hardness)
        self.register_buffer("sigma", sigma)
        self.register_buffer("interaction_range", torch.tensor(self.cutoff, dtype=torch.float64))

    def forward(self, positions, numbers, cell, i, j, shifts):
        graph = _graph(positions, cell, i, j, shifts, [self.cutoff])
        return self.charges.electronegativity(_system(positions, numbers, cell), graph)


def pair_inputs(atoms, cutoff: float, dtype: torch.dtype = torch.float64) -> Tuple[torch.Tensor, ...]:
    """``(positions, numbers, cell, i, j, shifts)`` of an ``ase.Atoms`` for the exported modules
    (full neighbour list to ``cutoff`` Å; a zero cell for finite structures)."""
    system = AtomicSystem.from_ase(atoms, dtype=dtype)
    nl = compute_neighbors(system, cutoff)
    return system.positions, system.numbers, system.cell[0], nl.i, nl.j, nl.shifts


def _trace(module: nn.Module, inputs) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        # torch 2.13 marks jit.trace deprecated; the traced graph is checked below instead of by
        # the tracer's own (branch) warnings
        warnings.simplefilter("ignore")
        return torch.jit.trace(module, inputs, check_trace=False)


def load_exported(path) -> torch.jit.ScriptModule:
    """Load a file written by :func:`export_torchscript` (``torch.jit.load``; torch 2.13 marks
    TorchScript deprecated in favour of ``torch.export``, which C++ MD engines cannot load yet, so
    the warning is silenced here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return torch.jit.load(str(path))


def _check(eager: nn.Module, traced, inputs, name: str, with_charges: bool) -> float:
    """Largest relative difference of outputs and position (and charge) gradients."""
    worst = 0.0
    outs = []
    for m in (eager, traced):
        x = [t.detach().clone() for t in inputs]
        x[0].requires_grad_(True)
        if with_charges:
            x[-1].requires_grad_(True)
        y = m(*x)
        wanted = [x[0]] + ([x[-1]] if with_charges else [])
        grads = torch.autograd.grad(y.sum(), wanted, allow_unused=True)
        outs.append([y.detach()] + [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wanted)])
    for a, b in zip(*outs):
        scale = max(float(a.abs().max()), 1e-12) if a.numel() else 1.0
        if a.shape != b.shape:
            raise RuntimeError(f"exported {name}: output shape {tuple(b.shape)} != {tuple(a.shape)}")
        worst = max(worst, float((a - b).abs().max()) / scale if a.numel() else 0.0)
    if worst > 1e-9:
        raise RuntimeError(f"exported {name} differs from the model by {worst:.1e} (relative): tracing failed")
    return worst


def export_torchscript(model, directory, example, check=None, skin: float = 1.0) -> Dict[str, Path]:
    """Write the model's local pieces as TorchScript (see the module docstring).

    Parameters
    ----------
    model : HybridPotential
        Converted to float64 for the export (use ``.float()`` on the loaded module for float32).
    directory : path
        Output folder (created).
    example : ase.Atoms
        A structure with every element of the model (traced on it, with a neighbour list to
        ``cutoff + skin`` so that the cutoff filter is part of the trace).
    check : ase.Atoms, optional
        A second structure the exported modules must reproduce (default: ``example`` repeated
        twice along the first axis and rattled by 0.05 Å, periodic or not).
    skin : float
        Extra neighbour range of the example (Å).

    Returns
    -------
    dict
        ``{"local_energy": path, "electronegativity": path}`` (the second only for 4G models).
    """
    from .qeq import ChargeEquilibration

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).double().eval()
    if check is None:
        check = example.repeat((2, 1, 1)) if example.pbc.any() else example.copy()
        if not example.pbc.any():
            check.positions = check.positions * 1.03
        check.rattle(0.05, seed=1)
    written = {}
    local = LocalEnergy(model)
    pieces = [("local_energy", local, True)]
    if isinstance(model.charges, ChargeEquilibration):
        pieces.append(("electronegativity", Electronegativity(model.charges), False))
    for name, module, with_charges in pieces:
        def inputs(atoms):
            x = list(pair_inputs(atoms, module.cutoff + skin))
            if with_charges:
                x.append(torch.linspace(-0.5, 0.5, len(atoms), dtype=torch.float64))
            return x

        traced = _trace(module, tuple(inputs(example)))
        for atoms in (example, check):
            _check(module, traced, inputs(atoms), name, with_charges)
        path = directory / f"{name}.pt"
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch 2.13: TorchScript deprecated
            traced.save(str(path))
        written[name] = path
    return written
