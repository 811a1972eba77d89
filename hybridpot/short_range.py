"""Behler-Parrinello short-range energy: a sum of element-wise atomic energies.

The symmetry functions come from the descriptor's engine (compiled kernels by default,
:mod:`hybridpot.descriptors.engine`); forces and stress follow by autograd through the
kernels' analytic dG/dr_ij.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch
from torch import nn

from .atomic_nets import ElementNets
from .descriptors import SymmetryFunctions, element_number
from .neighbors import Graph
from .system import AtomicSystem

__all__ = ["ShortRange"]


class ShortRange(nn.Module):
    """Short-range energy ``E_short = sum_i [NN_{Z_i}(G_i [, q_i]) + E0_{Z_i}]`` (eV).

    Size-extensive by construction: a sum of atomic energies, each a smooth function of
    the atom's symmetry functions within the descriptor's cutoff.

    Parameters
    ----------
    elements : iterable of int or str
        Elements the model handles.
    descriptor : SymmetryFunctions
        The symmetry functions (with their scaling).
    hidden : sequence of int
        Hidden layer sizes of each element's network.
    activation : str or sequence of str
        Smooth activation(s) of the hidden layers ("tanh", "softplus", ...).
    use_charges : bool
        Append the atom's charge (e) as one more network input (4G-HDNNP).
    """

    def __init__(
        self,
        elements: Iterable[int | str],
        descriptor: SymmetryFunctions,
        hidden: Sequence[int] = (25, 25),
        activation: str | Sequence[str] = "tanh",
        use_charges: bool = False,
    ):
        super().__init__()
        self.elements = sorted({element_number(e) for e in elements})
        missing = [z for z in self.elements if z not in descriptor.elements]
        if missing:
            raise ValueError(f"descriptor has no symmetry functions for element(s) {missing}")
        self.descriptor = descriptor
        self.use_charges = bool(use_charges)
        extra = 1 if self.use_charges else 0
        n_inputs = {z: descriptor.n_features[descriptor.elements.index(z)] + extra for z in self.elements}
        self.nets = ElementNets(self.elements, n_inputs, hidden=hidden, activation=activation)
        #: per-element reference energy added to each atom (eV), indexed by atomic number
        self.register_buffer("atomic_energy_offset", torch.zeros(119, dtype=torch.float64))

    @property
    def cutoff(self) -> float:
        """Neighbour cutoff needed (Å)."""
        return self.descriptor.cutoff

    def forward(self, system: AtomicSystem, graph: Graph, charges: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Atomic energies ``[N]`` (eV)."""
        return self.energies_from_features(self.descriptor(system.numbers, graph), system.numbers, charges)

    def energies_from_features(self, features: torch.Tensor, numbers: torch.Tensor,
                               charges: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Atomic energies ``[N]`` (eV) from the descriptor's features ``[N, F]`` (and the charges
        ``[N]`` e of a 4G model): the networks' part of :meth:`forward` (the whole-model export
        computes the features once for this term and the charge model)."""
        return self.energies_from_inputs(self.network_inputs(features, numbers, charges), numbers)

    def network_inputs(self, features: torch.Tensor, numbers: torch.Tensor,
                       charges: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The networks' inputs ``[N, F_max (+1)]``: the features, with each atom's charge (e) in the
        column after its element's features for a 4G model."""
        if not self.use_charges:
            return features
        if charges is None:
            raise ValueError("this ShortRange uses charges as input, but no charges were given")
        n_feat = torch.as_tensor(self.descriptor.n_features, device=features.device)
        column = n_feat[self.descriptor.slots(numbers)].unsqueeze(1)
        features = torch.cat([features, features.new_zeros(features.shape[0], 1)], dim=1)
        return features.scatter(1, column, charges.to(features.dtype).unsqueeze(1))

    def energies_from_inputs(self, inputs: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
        """Atomic energies ``[N]`` (eV) from the networks' inputs (:meth:`network_inputs`)."""
        energies = self.nets(inputs, numbers).squeeze(1)
        return energies + self.atomic_energy_offset.to(energies.dtype)[numbers]
