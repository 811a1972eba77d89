"""The energy-term protocol: what :class:`~hybridpot.HybridPotential` needs to know of a term.

A model is an ordered set of named terms. Each term is an ``nn.Module`` with a ``cutoff``
(Å, the neighbour range it reads) and one of two roles:

* a **charge model** (``provides_charges``): ``term(system, graph) -> (q [N] e, sigma [N] Å or None)``;
  the model runs charge models first and hands their charges to the other terms;
* an **energy term**: per-atom energies ``[N]`` (eV) from ``term(system, graph)``, or, when it
  ``needs_charges``, ``term(system, graph, q)`` (a charge-aware short range) or
  ``term(system, graph, q, sigma)`` (``uses_widths``: electrostatics of Gaussian charges).

``is_local`` says whether the energy is a sum of atomic energies that depend on atoms within
``cutoff`` only (given the charges): local terms can be exported for domain-decomposed MD
(:mod:`hybridpot.export`) and evaluated on a subset of atoms; global terms (Ewald/PME, the
QEq solve) cannot.

A term declares these traits as class (or instance) attributes ``provides_charges``,
``needs_charges``, ``uses_widths`` and ``is_local``. Classes that do not (yet) declare them
get the entries of :data:`KNOWN_TRAITS`, keyed by class name. Adding a term means: write the
module with ``cutoff`` and these attributes, pass it to ``HybridPotential(terms={"name":
module})``, and (to save it) register an architecture codec in :mod:`hybridpot.serialization`.

Per-call state that must survive between calls (the warm start of an iterative charge solve:
the previous MD step's solution) belongs to the caller that steps through time, not to the
module: :meth:`HybridPotential.forward` takes ``state`` (a dict the caller keeps, e.g.
:class:`~hybridpot.HybridCalculator`) and gives each term its own sub-dict
(:func:`call_charge_model`). A term that keeps something of a call for later inspection (the
QEq energy, :attr:`~hybridpot.ChargeEquilibration.last_energy`) may define ``release_graph()``:
the model calls it after every call without ``create_graph``, so that the kept values no longer
hold that call's autograd graph (and the memory of everything it saved).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import nn

__all__ = ["TermTraits", "KNOWN_TRAITS", "term_traits", "call_charge_model", "call_energy_term"]


@dataclass(frozen=True)
class TermTraits:
    """What a term needs and what it gives (see the module docstring)."""

    #: the term computes charges (and Gaussian widths) instead of an energy
    provides_charges: bool = False
    #: the energy term cannot work without charges (the model must have a charge model)
    needs_charges: bool = False
    #: the energy term is called with the charges ``term(system, graph, q)``, ``q`` None when the
    #: model has no charge model (implied by ``needs_charges``)
    takes_charges: bool = False
    #: the energy term also takes the Gaussian widths (electrostatics of Gaussian charges)
    uses_widths: bool = False
    #: a sum of atomic energies within ``cutoff`` (exportable to domain-decomposed MD)
    is_local: bool = True


#: Traits of the terms shipped with hybridpot, for classes that do not declare them as
#: attributes. ``ShortRange`` needs charges only when built with ``use_charges=True``
#: (resolved per instance in :func:`term_traits`).
KNOWN_TRAITS: Dict[str, TermTraits] = {
    "ShortRange": TermTraits(needs_charges=True, takes_charges=True, is_local=True),
    "ChargeEquilibration": TermTraits(provides_charges=True, is_local=False),
    "FixedCharges": TermTraits(provides_charges=True, is_local=True),
    "Electrostatics": TermTraits(needs_charges=True, takes_charges=True, uses_widths=True, is_local=False),
    # pair sum within the cutoff; its periodic tail correction is a volume term (stress, no forces),
    # which the export for domain-decomposed MD leaves out (documented there)
    "Dispersion": TermTraits(is_local=True),
}

#: Traits of a term of an unknown class given through one of the constructor's keywords: the
#: calling convention that keyword always had.
SLOT_TRAITS: Dict[str, TermTraits] = {
    "charges": TermTraits(provides_charges=True, is_local=False),
    "short_range": TermTraits(takes_charges=True, is_local=False),
    "electrostatics": TermTraits(needs_charges=True, takes_charges=True, uses_widths=True, is_local=False),
    "dispersion": TermTraits(is_local=False),
}

_TRAIT_NAMES = ("provides_charges", "needs_charges", "takes_charges", "uses_widths", "is_local")


def term_traits(term: nn.Module, slot: Optional[str] = None) -> TermTraits:
    """The :class:`TermTraits` of a term.

    Its own attributes first, then :data:`KNOWN_TRAITS` (by class name), then the calling
    convention of the constructor keyword ``slot`` it was given by (:data:`SLOT_TRAITS`).
    Anything else is an energy term ``term(system, graph) -> [N]`` not assumed local.
    """
    base = KNOWN_TRAITS.get(type(term).__name__) or SLOT_TRAITS.get(slot) or TermTraits(is_local=False)
    values = {name: bool(getattr(term, name, getattr(base, name))) for name in _TRAIT_NAMES}
    if type(term).__name__ == "ShortRange" and not hasattr(term, "needs_charges"):
        values["needs_charges"] = bool(getattr(term, "use_charges", False))
    return TermTraits(**values)


def _accepts_state(term: nn.Module) -> bool:
    try:
        return "state" in inspect.signature(term.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        return False


def call_charge_model(term: nn.Module, system, graph, state: Optional[dict]
                      ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Dict[str, torch.Tensor]]:
    """``(q, sigma, diagnostics)`` of a charge model, with the caller's warm-start ``state`` (or None).

    A charge model may return ``(q, sigma)`` or ``(q, sigma, diagnostics)`` with a dict of
    tensors (e.g. CG iteration counts, residuals); :meth:`HybridPotential.forward` puts them
    into its outputs as ``<term name>_<key>`` (instead of attributes on the module).

    A term whose ``forward`` takes ``state`` gets it directly. For the current
    :class:`~hybridpot.ChargeEquilibration` (which keeps its warm-start store in
    ``_warm_cache``) the caller's store is swapped in for the call, so that two calculators
    sharing one model never start from each other's solutions; ``state=None`` keeps the
    module's own store (the behaviour of a bare ``model(system)`` call).
    """
    if state is None:
        result = term(system, graph)
    elif _accepts_state(term):
        result = term(system, graph, state=state)
    elif hasattr(term, "_warm_cache"):
        own = term._warm_cache
        term._warm_cache = state.setdefault("warm_cache", {})
        try:
            result = term(system, graph)
        finally:
            term._warm_cache = own
    else:
        result = term(system, graph)
    if len(result) == 3:
        return result[0], result[1], dict(result[2])
    q, sigma = result
    return q, sigma, solver_diagnostics(term, q.device)


def solver_diagnostics(term: nn.Module, device) -> Dict[str, torch.Tensor]:
    """The charge solves of a call as output tensors, one entry per structure (``[S]``):
    ``matrix_free`` (bool), ``cg_iterations`` (forward solves' CG iterations; 0 for dense solves),
    ``preconditioner_fallback`` (bool: the k-space preconditioner was replaced by Jacobi, with a
    warning). Read from the term's record of its last call (``last_diagnostics``); empty for terms
    without one."""
    records = getattr(term, "last_diagnostics", None)
    if not records:
        return {}
    matrix_free = [r.get("solver") == "matrix_free" for r in records]
    iterations = [sum(r.get("iterations", [])) if mf else 0 for r, mf in zip(records, matrix_free)]
    fallback = [bool(r.get("fallback")) for r in records]
    return {"matrix_free": torch.tensor(matrix_free, device=device),
            "cg_iterations": torch.tensor(iterations, dtype=torch.long, device=device),
            "preconditioner_fallback": torch.tensor(fallback, device=device)}


def call_energy_term(term: nn.Module, traits: TermTraits, system, graph, charges: Optional[torch.Tensor],
                     widths: Optional[torch.Tensor]) -> torch.Tensor:
    """Per-atom energies ``[N]`` (eV) of an energy term, given the charges of the charge model."""
    if traits.needs_charges and charges is None:
        raise ValueError(f"term {type(term).__name__} needs charges, but the model has no charge model "
                         "(add ChargeEquilibration or FixedCharges)")
    if traits.uses_widths:
        return term(system, graph, charges, widths)
    if traits.takes_charges or traits.needs_charges:
        return term(system, graph, charges)
    return term(system, graph)
