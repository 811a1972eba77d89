"""HybridPotential: short range + electrostatics + dispersion, forces and stress by autograd."""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional

import torch
from torch import nn

from .neighbors import MIN_DISTANCE, NeighborList, build_graph, compute_neighbors
from .system import AtomicSystem
from .terms import TermTraits, call_charge_model, call_energy_term, term_traits

__all__ = ["HybridPotential", "save", "load"]


#: the constructor's named slots, in evaluation order within their role
LEGACY_SLOTS = ("charges", "short_range", "electrostatics", "dispersion")


class HybridPotential(nn.Module):
    """Total energy ``E = sum of its terms`` (short range + electrostatics + dispersion + ...).

    A model is an ordered set of named terms (:mod:`hybridpot.terms`): charge models run
    first and give charges (e) and Gaussian widths (Å) to the terms that need them; every
    other term returns per-atom energies (eV). The four classic terms are given by keyword
    (any may be None):

    * ``charges(system, graph) -> (q [N], sigma [N] or None)``: charges and widths;
    * ``short_range(system, graph[, q]) -> [N]``;
    * ``electrostatics(system, graph, q, sigma) -> [N]``;
    * ``dispersion(system, graph) -> [N]``;

    more terms by ``terms={"name": module}`` (each with ``cutoff`` and the traits of
    :func:`hybridpot.terms.term_traits`). Terms are submodules under their names
    (``model.short_range``; a classic slot that is not used reads as None).

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
        terms: Optional[Mapping[str, nn.Module]] = None,
    ):
        super().__init__()
        named = {"charges": charges, "short_range": short_range, "electrostatics": electrostatics,
                 "dispersion": dispersion}
        for name, term in (terms or {}).items():
            if not name.isidentifier() or name.startswith("_"):
                raise ValueError(f"term name {name!r} must be a Python identifier not starting with '_'")
            if name in named and named[name] is not None:
                raise ValueError(f"term {name!r} given twice (keyword and terms=)")
            if name not in named and hasattr(HybridPotential, name):
                raise ValueError(f"term name {name!r} is an attribute of HybridPotential; choose another name")
            named[name] = term
        present = {n: t for n, t in named.items() if t is not None}
        if not present:
            raise ValueError("a HybridPotential needs at least one term")
        for name, term in present.items():
            if not isinstance(term, nn.Module):
                raise TypeError(f"term {name!r} must be a torch.nn.Module, got {type(term).__name__}")
        providers = [n for n, t in present.items() if term_traits(t, n).provides_charges]
        if len(providers) > 1:
            raise ValueError(f"a model takes one charge model, got {providers}")
        needing = [n for n, t in present.items() if term_traits(t, n).needs_charges]
        if needing and not providers:
            what = "electrostatics" if "electrostatics" in needing else needing[0]
            raise ValueError(f"{what} needs a charge model (ChargeEquilibration or FixedCharges)")
        # charge models first, then the energy terms in the order given
        order = providers + [n for n in present if n not in providers]
        self.term_names: List[str] = order
        for name in order:
            self._modules[name] = present[name]  # (add_module's hasattr check sees the None slots)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in LEGACY_SLOTS:
                return None
            raise

    def __setattr__(self, name: str, value) -> None:
        # ``model.short_range = module`` replaces (or adds) a term, ``= None`` removes it
        if name in LEGACY_SLOTS and "term_names" in self.__dict__:
            if value is None:
                if name in self._modules:
                    del self._modules[name]
                self.term_names = [n for n in self.term_names if n != name]
                return
            if isinstance(value, nn.Module) and name not in self.term_names:
                self.term_names = ([name] + self.term_names if term_traits(value, name).provides_charges
                                   else self.term_names + [name])
        super().__setattr__(name, value)

    def __setstate__(self, state):
        # models pickled before the term protocol: four fixed slots, possibly None
        super().__setstate__(state)
        if "term_names" not in self.__dict__:
            modules = self.__dict__["_modules"]
            for name in [n for n, m in modules.items() if m is None]:
                del modules[name]
            self.__dict__["term_names"] = [n for n in LEGACY_SLOTS if n in modules] + [
                n for n in modules if n not in LEGACY_SLOTS]

    # ------------------------------------------------------------------ properties
    def terms(self) -> Dict[str, nn.Module]:
        """The terms by name, in evaluation order (charge model first)."""
        return {n: self._modules[n] for n in self.term_names}

    def term_traits(self) -> Dict[str, TermTraits]:
        """:class:`~hybridpot.terms.TermTraits` of each term, by name."""
        return {n: term_traits(t, n) for n, t in self.terms().items()}

    @property
    def charge_model(self) -> Optional[nn.Module]:
        """The term that provides the charges (None: no charges)."""
        for name, traits in self.term_traits().items():
            if traits.provides_charges:
                return self._modules[name]
        return None

    def without(self, *names: str) -> Optional["HybridPotential"]:
        """A model sharing this one's modules without the named terms (None if nothing is left).

        Used to evaluate some terms alone, e.g. everything but the short range.
        """
        rest = {n: t for n, t in self.terms().items() if n not in names}
        traits = {n: term_traits(t, n) for n, t in rest.items()}
        needing = [n for n, tr in traits.items() if tr.needs_charges]
        if not any(tr.provides_charges for tr in traits.values()) and needing:
            raise ValueError(f"cannot remove the charge model: {needing} need charges")
        energy_terms = [n for n, tr in traits.items() if not tr.provides_charges]
        if not energy_terms:
            return None
        return HybridPotential(terms=rest)

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
        # the first parameter of the energy terms (the short range's networks) decides, then the
        # charge model's: a model built without .double()/.float() mixes the networks' default
        # dtype with float64 tables, and the networks' dtype is the one inputs must have
        traits = self.term_traits()
        ordered = [t for n, t in self.terms().items() if not traits[n].provides_charges] + [
            t for n, t in self.terms().items() if traits[n].provides_charges]
        for term in ordered:
            for p in term.parameters():
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
        state: Optional[dict] = None,
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
        state : dict, optional
            Per-term state kept by a caller that steps through time (the warm start of an
            iterative charge solve), e.g. :class:`~hybridpot.HybridCalculator`; each term gets
            ``state[name]``. None: the terms' own defaults.

        Returns
        -------
        dict
            ``energy`` [S] (eV), ``energies`` [N] (per atom, eV), ``forces`` [N, 3],
            ``stress`` [S, 3, 3], ``charges`` [N] (e), ``dipole`` [S, 3] (e·Å, about the
            origin; meaningful for finite structures), ``energy_<term>`` [S] (eV) for
            each energy term (e.g. ``energy_short_range``, ``energy_electrostatics``), and the
            charge model's diagnostics as ``<term>_<key>`` when it returns any
            (:func:`hybridpot.terms.call_charge_model`).
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
            for name, term in self.terms().items():
                traits = term_traits(term, name)
                if traits.provides_charges:
                    term_state = None if state is None else state.setdefault(name, {})
                    charges, widths, diagnostics = call_charge_model(term, strained, graph, term_state)
                    out.update({f"{name}_{key}": value for key, value in diagnostics.items()})
                    out["charges"] = charges
                    out["dipole"] = torch.zeros(system.n_systems, 3, dtype=system.dtype,
                                                device=system.device).index_add(
                        0, system.batch, charges.unsqueeze(1) * positions_eff
                    )
                    continue
                term_energies = call_energy_term(term, traits, strained, graph, charges, widths)
                out[f"energy_{name}"] = torch.zeros(system.n_systems, dtype=system.dtype,
                                                    device=system.device).index_add(0, system.batch, term_energies)
                energies = energies + term_energies
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
                for term in self.terms().values():  # state kept by a term must not hold this call's graph
                    release = getattr(term, "release_graph", None)
                    if release is not None:
                        release()
        return out


def save(model: nn.Module, path) -> None:
    """Save a model to ``path`` in the safe format of :mod:`hybridpot.serialization`."""
    from .serialization import save_model

    save_model(model, path)


def load(path, map_location="cpu", trust_pickle: bool = False) -> nn.Module:
    """Load a model file (see :func:`hybridpot.serialization.load_model`).

    Files written by :func:`save` load without running any code. Old pickled files (before
    format version 1) load only with ``trust_pickle=True`` (it runs the file's code: only for
    files you trust), with a warning; re-save them with :func:`save`.
    """
    from .serialization import load_model

    return load_model(path, map_location=map_location, trust_pickle=trust_pickle)
