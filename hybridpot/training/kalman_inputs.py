"""Kalman observations from frozen inputs: the short-range networks (energy stage) and QEq (charge stage).

In the energy stage of Kalman training only the short-range networks learn; the structures, the
descriptors, the 4G charges (the charge model is frozen after its stage) and every other term
(electrostatics, dispersion) stay fixed. Per structure, everything but the networks is therefore
computed once:

* ``x`` ``[N, F']``: the networks' inputs (scaled symmetry functions, and the charge for 4G);
* ``D`` ``[3N, N, F']``: ``dx / dr_k`` for every force component ``k = 3 atom + xyz``, through the
  descriptors *and* the charges (``dq / dr``), obtained once by forward-mode products (a reverse pass
  of the linear map ``u -> (dx/dr)^T u``, batched over the components);
* ``E_other`` and ``F_other``: the energy and forces of all other terms.

Then ``E = sum_i NN(x_i) + E_offsets + E_other`` and ``F_k = -sum_i dNN/dx (x_i) . D_ik + F_other,k``:
an update costs one pass of the small networks and its (double) backward instead of a whole model
call with QEq and electrostatics. The observations equal :class:`~hybridpot.training.kalman_fit.KalmanEpochs`'
full-model ones to rounding (tested).

The charge stage (4G) is treated in the same way: only the electronegativity networks and the hardness
learn, so each structure's charge-descriptor features, Coulomb matrix (Gaussian widths fixed) and
constraints are stored once (:class:`FrozenChargeInputs`), and an update costs the networks and a dense
``n x n`` solve.

Measured on n2p2's Carbon_chain_4G set (12-atom structures, 1472 weights, one thread; see
validation/README.md): energy observation 6.7 -> 0.6 ms, force observation 9.8 -> 1.4 ms.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
from torch import nn

from ..neighbors import build_graph
from ..system import AtomicSystem
from ..terms import call_charge_model, call_energy_term, term_traits

__all__ = ["FrozenInputs", "FrozenChargeInputs", "short_range_term_name", "frozen_charge_model", "FROZEN_INPUTS_LIMIT"]

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


def _forward_mode_rows(g: Optional[torch.Tensor], u: torch.Tensor, n3: int) -> torch.Tensor:
    """``D [3N, *u.shape]``: ``d g_k / d u`` for every component ``k`` of ``g(u) = (dx/dr)^T u``.

    All components in one batched reverse pass (``is_grads_batched``, vmap over the backward); a loop of
    reverse passes where an operation of the graph has no batching rule.
    """
    if g is None or not g.requires_grad:  # the inputs do not depend on the positions
        return torch.zeros((n3,) + tuple(u.shape), dtype=u.dtype, device=u.device)
    try:
        eye = torch.eye(n3, dtype=g.dtype, device=g.device).reshape((n3,) + tuple(g.shape))
        (d,) = torch.autograd.grad(g, u, grad_outputs=eye, is_grads_batched=True, retain_graph=True,
                                   allow_unused=True)
        if d is not None:
            return d.detach()
    except RuntimeError:  # no batching rule for an operation (e.g. a custom Function's backward)
        pass
    rows: List[torch.Tensor] = []
    for k in range(n3):
        component = g.reshape(-1)[k]
        if not component.requires_grad:
            rows.append(torch.zeros_like(u))
            continue
        (d,) = torch.autograd.grad(component, u, retain_graph=True, allow_unused=True)
        rows.append(torch.zeros_like(u) if d is None else d.detach())
    return torch.stack(rows)


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
                self.derivatives = _forward_mode_rows(g, u, n3)

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


def frozen_charge_model(model: nn.Module, parameters: Sequence[nn.Parameter], train) -> Optional[nn.Module]:
    """The model's :class:`~hybridpot.ChargeEquilibration` if a charge stage training ``parameters`` can use
    :class:`FrozenChargeInputs`: only its networks and hardness learn (fixed widths) and every structure
    takes the dense solve. Else None."""
    from ..qeq import ChargeEquilibration

    term = model.charge_model
    if not isinstance(term, ChargeEquilibration):
        return None
    allowed = {id(p) for p in term.nets.parameters()} | {id(term.sqrt_hardness)}
    trained = {id(p) for p in parameters}
    if not trained or not trained <= allowed:
        return None
    for sample in train.samples:
        system = sample.system
        if any(term.uses_matrix_free(system, s) for s in range(system.n_systems)):
            return None
    return term


class FrozenChargeInputs:
    """One structure's frozen QEq inputs for the charge stage: ``q = QEq(chi(G), J)`` with ``G``, the
    Coulomb matrix, the self terms and the constraints stored.

    Parameters
    ----------
    term : ChargeEquilibration
        The charge model (:func:`frozen_charge_model`).
    batch : Batch
        One structure, in the training dtype and device.
    cutoff : float
        The model's neighbour cutoff (Å), for the graph.
    """

    def __init__(self, term: nn.Module, batch, cutoff: float):
        from ..electrostatics import COULOMB_CONSTANT
        from ..qeq.constraints import _local_groups, constraint_groups

        system = batch.system
        with torch.no_grad():
            graph = build_graph(system, batch.neighbors, cutoff=cutoff)
            self.numbers = system.numbers
            self.index = term.element_index[system.numbers]
            self.features = term.descriptor(system.numbers, graph.within(term.descriptor.cutoff)).detach()
            sigma = term.sigma.to(self.features.dtype)[self.index]
            self.self_term = COULOMB_CONSTANT / (sigma * math.sqrt(math.pi))
            groups, totals = constraint_groups(system)
            self.groups, self.totals = _local_groups(groups, totals)
            c, self.linear, self.constant = term.dense_coulomb(system, graph, sigma, 0, self.totals)
            self.coulomb = c.detach()

    def charges(self, term: nn.Module) -> torch.Tensor:
        """``q`` ``[N]`` (e), differentiable with respect to the networks' weights and the hardness."""
        from ..qeq.solvers import solve_qeq_dense

        chi = term.nets(self.features, self.numbers).squeeze(1)
        diag = term.hardness.to(chi.dtype)[self.index] + self.self_term
        rhs = chi if self.linear is None else chi + self.linear.detach()
        q, _ = solve_qeq_dense(self.coulomb + torch.diag(diag), rhs, self.groups, self.totals)
        return q
