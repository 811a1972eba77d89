"""HybridPotential: short range + electrostatics + dispersion, forces and stress by autograd."""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from .neighbors import MIN_DISTANCE, NeighborList, build_graph, compute_neighbors
from .system import AtomicSystem

__all__ = ["HybridPotential", "save", "load"]


class HybridPotential(nn.Module):
    """Total energy ``E = E_short + E_elec + E_disp`` of a batch of structures.

    Any term may be ``None``. Terms are ``nn.Module`` s with a ``cutoff`` attribute (Å,
    the neighbour range they need) that return per-atom energies (eV):

    * ``charges(system, graph) -> (q [N], sigma [N] or None)``: charges (e) and Gaussian widths (Å);
    * ``short_range(system, graph, q) -> [N]``;
    * ``electrostatics(system, graph, q, sigma) -> [N]``;
    * ``dispersion(system, graph) -> [N]``.

    Forces ``F = -dE/dR`` and stress ``(1/V) dE/d(strain)`` come from one autograd call,
    so they are exactly conservative. Parameters and buffers decide dtype and device:
    input systems are converted to them.
    """

    def __init__(
        self,
        short_range: Optional[nn.Module] = None,
        charges: Optional[nn.Module] = None,
        electrostatics: Optional[nn.Module] = None,
        dispersion: Optional[nn.Module] = None,
    ):
        super().__init__()
        if all(t is None for t in (short_range, charges, electrostatics, dispersion)):
            raise ValueError("a HybridPotential needs at least one term")
        if electrostatics is not None and charges is None:
            raise ValueError("electrostatics needs a charge model (ChargeEquilibration or FixedCharges)")
        self.short_range = short_range
        self.charges = charges
        self.electrostatics = electrostatics
        self.dispersion = dispersion

    # ------------------------------------------------------------------ properties
    def terms(self) -> Dict[str, nn.Module]:
        names = ("short_range", "charges", "electrostatics", "dispersion")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    @property
    def cutoff(self) -> float:
        """Largest neighbour cutoff any term needs (Å)."""
        return max(float(getattr(t, "cutoff", 0.0)) for t in self.terms().values())

    @property
    def elements(self) -> Optional[list]:
        """Atomic numbers the model can handle (None: any)."""
        sets = [set(t.elements) for t in self.terms().values() if getattr(t, "elements", None) is not None]
        if not sets:
            return None
        return sorted(set.intersection(*sets))

    def _reference_tensor(self) -> torch.Tensor:
        for p in self.parameters():
            return p
        for b in self.buffers():
            if b.is_floating_point():
                return b
        return torch.zeros(())

    @property
    def dtype(self) -> torch.dtype:
        return self._reference_tensor().dtype

    @property
    def device(self) -> torch.device:
        return self._reference_tensor().device

    # ------------------------------------------------------------------ evaluation
    def forward(
        self,
        system: AtomicSystem,
        compute_forces: bool = True,
        compute_stress: Optional[bool] = None,
        create_graph: bool = False,
        neighbors: Optional[NeighborList] = None,
    ) -> Dict[str, torch.Tensor]:
        """Energies, forces, stress, charges and dipoles of a batch.

        Parameters
        ----------
        system : AtomicSystem
        compute_forces : bool
            Return ``forces`` ``[N, 3]`` (eV/Å).
        compute_stress : bool, optional
            Return ``stress`` ``[S, 3, 3]`` (eV/Å^3, ASE sign convention; zero for finite
            structures). Default: when any structure is periodic.
        create_graph : bool
            Keep the autograd graph of the outputs (training): of forces/stress for higher
            derivatives, and of the energy even when no forces are computed.
        neighbors : NeighborList, optional
            A precomputed list with cutoff >= ``self.cutoff`` (default: computed here).

        Returns
        -------
        dict
            ``energy`` [S] (eV), ``energies`` [N] (per atom, eV), ``forces`` [N, 3],
            ``stress`` [S, 3, 3], ``charges`` [N] (e), ``dipole`` [S, 3] (e·Å, about the
            origin; meaningful for finite structures).
        """
        system = system.to(device=self.device, dtype=self.dtype)
        system.validate(self.elements)
        if compute_stress is None:
            compute_stress = bool(system.periodic.any())
        cutoff = self.cutoff
        if neighbors is None:
            # terms may need no neighbours at all (cutoff 0, e.g. direct electrostatics); the
            # list then still serves the overlapping-atoms check
            neighbors = compute_neighbors(system, max(cutoff, MIN_DISTANCE))
        elif neighbors.cutoff < cutoff - 1e-12:
            raise ValueError(f"neighbour list cutoff {neighbors.cutoff} Å is below the model's {cutoff} Å")
        neighbors = neighbors.to(system.device)

        need_grad = compute_forces or compute_stress
        with torch.enable_grad() if (need_grad or create_graph) else torch.no_grad():
            positions = system.positions.detach().requires_grad_(need_grad)
            strain = torch.zeros_like(system.cell).requires_grad_(compute_stress)
            sym = 0.5 * (strain + strain.transpose(1, 2))
            eye = torch.eye(3, dtype=system.dtype, device=system.device)
            positions_eff = torch.einsum("na,nab->nb", positions, eye + sym[system.batch])
            cell_eff = torch.bmm(system.cell, eye + sym)
            # one graph per call: terms that share a descriptor module compute it once
            graph = build_graph(system, neighbors, positions_eff, cell_eff, cutoff=cutoff).share_features()
            strained = AtomicSystem(
                positions_eff, system.numbers, cell_eff, system.pbc, system.charge, system.batch, system.ptr,
                system.initial_charges, system.fragments, system.fragment_charges,
            )

            energies = torch.zeros(system.n_atoms, dtype=system.dtype, device=system.device)
            out: Dict[str, torch.Tensor] = {}
            charges = widths = None
            if self.charges is not None:
                charges, widths = self.charges(strained, graph)
                out["charges"] = charges
                out["dipole"] = torch.zeros(system.n_systems, 3, dtype=system.dtype, device=system.device).index_add(
                    0, system.batch, charges.unsqueeze(1) * positions_eff
                )
            if self.short_range is not None:
                energies = energies + self.short_range(strained, graph, charges)
            if self.electrostatics is not None:
                energies = energies + self.electrostatics(strained, graph, charges, widths)
            if self.dispersion is not None:
                energies = energies + self.dispersion(strained, graph)
            energy = torch.zeros(system.n_systems, dtype=system.dtype, device=system.device).index_add(
                0, system.batch, energies
            )
            out["energy"] = energy
            out["energies"] = energies

            if need_grad:
                inputs = [positions] + ([strain] if compute_stress else [])
                grads = torch.autograd.grad(
                    energy.sum(), inputs, create_graph=create_graph, allow_unused=True, retain_graph=create_graph
                )
                grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]
                if compute_forces:
                    out["forces"] = -grads[0]
                if compute_stress:
                    volume = torch.linalg.det(system.cell).abs()
                    periodic = system.periodic
                    safe_volume = torch.where(periodic, volume, torch.ones_like(volume))
                    stress = grads[1] / safe_volume.view(-1, 1, 1)
                    out["stress"] = torch.where(periodic.view(-1, 1, 1), stress, torch.zeros_like(stress))
            if not create_graph:
                out = {k: v.detach() for k, v in out.items()}
        return out


def save(model: nn.Module, path) -> None:
    """Save a model (architecture, weights, scaling) to ``path``."""
    from . import __version__

    torch.save({"format": "hybridpot-model", "version": __version__, "model": model}, path)


def load(path, map_location="cpu") -> nn.Module:
    """Load a model saved with :func:`save` (trusted files only: it unpickles Python objects)."""
    payload = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != "hybridpot-model":
        raise ValueError(f"{path} is not a hybridpot model file")
    return payload["model"]
