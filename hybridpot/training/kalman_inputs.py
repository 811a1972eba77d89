"""Kalman observations of the short-range networks from frozen inputs (the energy stage).

In the energy stage of Kalman training only the short-range networks learn; the structures, the
descriptors, the 4G charges (the charge model is frozen after its stage) and every other term
(electrostatics, dispersion) stay fixed. Per structure, everything but the networks is therefore
computed once:

* ``x`` ``[N, F']``: the networks' inputs (scaled symmetry functions, and the charge for 4G);
* ``D`` ``[3N, N, F']``: ``dx / dr_k`` for every force component ``k = 3 atom + xyz``, through the
  descriptors *and* the charges (``dq / dr``), obtained once by forward-mode products (two reverse
  passes per component);
* ``E_other`` and ``F_other``: the energy and forces of all other terms.

Then ``E = sum_i NN(x_i) + E_offsets + E_other`` and ``F_k = -sum_i dNN/dx (x_i) . D_ik + F_other,k``:
an update costs one pass of the small networks and its (double) backward instead of a whole model
call with QEq and electrostatics. The observations equal :class:`~hybridpot.training.kalman_fit.KalmanEpochs`'
full-model ones to rounding (tested).

Measured on n2p2's Carbon_chain_4G set (12-atom structures, 1472 weights, one thread; see
validation/README.md): energy observation 6.7 -> 0.6 ms, force observation 9.8 -> 1.4 ms.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import nn

from ..neighbors import build_graph
from ..system import AtomicSystem
from ..terms import call_charge_model, call_energy_term, term_traits

__all__ = ["FrozenInputs", "short_range_term_name", "FROZEN_INPUTS_LIMIT"]

#: largest total size (bytes) of the stored input derivatives ``D`` over the training set; above it the
#: Kalman energy stage uses full-model observations (``D`` grows as ``3 N^2 F'`` per structure)
FROZEN_INPUTS_LIMIT = 512 * 2**20


def short_range_term_name(model: nn.Module, parameters: Sequence[nn.Parameter]) -> Optional[str]:
    """Name of the model's short-range term if ``parameters`` are all its networks' weights, else None.

    Only then are all other terms, and the networks' inputs, independent of what is trained.
    """
    from ..short_range import ShortRange

    trained = {id(p) for p in parameters}
    for name, term in model.terms().items():
        if isinstance(term, ShortRange):
            nets = {id(p) for p in term.nets.parameters()}
            return name if trained and trained <= nets else None
    return None


class FrozenInputs:
    """The frozen per-structure inputs of one structure's short-range networks.

    Parameters
    ----------
    model : nn.Module
        The :class:`~hybridpot.model.HybridPotential` (its charge model and non-network terms frozen).
    term_name : str
        Name of its :class:`~hybridpot.ShortRange` term (:func:`short_range_term_name`).
    batch : Batch
        One structure (``collate`` of one sample, in the training dtype and device).
    need_forces : bool
        Store ``D`` and ``F_other`` (for force observations).

    Attributes
    ----------
    inputs : torch.Tensor
        ``x`` ``[N, F']``.
    derivatives : torch.Tensor or None
        ``D`` ``[3N, N, F']`` (1/Å).
    energy_other : float
        Energy of all terms but the networks, plus the per-atom offsets of the short range (eV).
    forces_other : torch.Tensor or None
        Their forces, flattened ``[3N]`` (eV/Å).
    """

    def __init__(self, model: nn.Module, term_name: str, batch, need_forces: bool):
        system = batch.system
        short = model.terms()[term_name]
        self.numbers = system.numbers
        with torch.enable_grad():
            positions = system.positions.detach().requires_grad_(need_forces)
            graph = build_graph(system, batch.neighbors, positions, system.cell, cutoff=model.cutoff).share_features()
            frozen = AtomicSystem(positions, system.numbers, system.cell, system.pbc, system.charge, system.batch,
                                  system.ptr, system.initial_charges, system.fragments, system.fragment_charges)
            charges = widths = None
            energy_other = torch.zeros((), dtype=system.dtype, device=system.device)
            inputs = None
            for name, term in model.terms().items():
                traits = term_traits(term, name)
                if traits.provides_charges:
                    charges, widths, _ = call_charge_model(term, frozen, graph, None)
                elif name == term_name:
                    features = short.descriptor(system.numbers, graph)
                    inputs = short.network_inputs(features, system.numbers, charges if short.use_charges else None)
                else:
                    energy_other = energy_other + call_energy_term(term, traits, frozen, graph, charges, widths).sum()
            offsets = short.atomic_energy_offset.to(system.dtype)[system.numbers].sum()
            self.energy_other = float((energy_other + offsets).detach())
            self.inputs = inputs.detach()
            self.derivatives = self.forces_other = None
            if need_forces:
                n3 = positions.numel()
                if energy_other.requires_grad:
                    (grad,) = torch.autograd.grad(energy_other, positions, retain_graph=True, allow_unused=True)
                    self.forces_other = (-grad if grad is not None else torch.zeros_like(positions)).detach().reshape(-1)
                else:
                    self.forces_other = torch.zeros(n3, dtype=system.dtype, device=system.device)
                # forward mode by two reverse passes: g(u) = (dx/dr)^T u is linear in u, and
                # d g_k / d u = dx / dr_k (one reverse pass of g per component)
                u = torch.zeros_like(inputs, requires_grad=True)
                (g,) = torch.autograd.grad(inputs, positions, grad_outputs=u, create_graph=True, allow_unused=True)
                rows: List[torch.Tensor] = []
                for k in range(n3):
                    component = g.reshape(-1)[k] if g is not None else None
                    if component is None or not component.requires_grad:
                        rows.append(torch.zeros_like(inputs))
                        continue
                    (d,) = torch.autograd.grad(component, u, retain_graph=k + 1 < n3, allow_unused=True)
                    rows.append(torch.zeros_like(inputs) if d is None else d.detach())
                self.derivatives = torch.stack(rows)

    @staticmethod
    def nbytes(n_atoms: int, n_inputs: int, itemsize: int) -> int:
        """Size of ``D`` for a structure of ``n_atoms`` atoms and ``n_inputs`` network inputs."""
        return 3 * n_atoms * n_atoms * n_inputs * itemsize

    def energy(self, short: nn.Module) -> torch.Tensor:
        """The model's energy (eV, scalar), differentiable with respect to the networks' weights."""
        return short.nets(self.inputs, self.numbers).sum() + self.energy_other

    def forces(self, short: nn.Module, components: torch.Tensor) -> torch.Tensor:
        """Force components ``components`` (flat ``3 atom + xyz``), eV/Å, differentiable with respect
        to the weights (``create_graph``)."""
        x = self.inputs.detach().requires_grad_(True)
        energies = short.nets(x, self.numbers)
        (slope,) = torch.autograd.grad(energies.sum(), x, create_graph=True)  # dNN/dx [N, F']
        d = self.derivatives[components]  # [m, N, F']
        return -(d * slope.unsqueeze(0)).sum(dim=(1, 2)) + self.forces_other[components]
