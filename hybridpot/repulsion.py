"""A short-range pair repulsion: a wall below the closest contacts of the training data.

Energy (eV) of a structure::

    E_rep = sum_{i<j, r_ij < r_c,ab} epsilon_ab * (r_c,ab / r_ij - 1)^3

for the element pair ``ab`` of atoms ``i, j`` (pairs without an entry get nothing). Each pair
energy and its first and second derivatives vanish at ``r_c,ab`` (``x = r_c/r - 1`` has a simple
zero there, ``x^3`` a triple one), so the energy is C2: forces and their derivatives are
continuous, which velocity Verlet needs for energy conservation. The wall diverges as
``epsilon_ab (r_c,ab / r)^3`` for ``r -> 0``, so two atoms cannot fuse.

Why: a network potential is unconstrained where its data have no structures. A model of aqueous
NaCl trained on GFN1-xTB MD frames (closest Na-O 1.97 Å in the data) gave an Na-O energy that
*fell* by 0.2 eV from 2.0 to 1.5 Å where GFN1-xTB rises by 1.7 eV (``examples/aqueous_nacl_scans.py``),
and its MD fell into that hole (Na 1.23 Å from an O). With ``r_c,ab`` chosen below the closest
``ab`` contact of the training data (:meth:`PairRepulsion.below_data`), the term is exactly zero on
every training structure: it does not change what the networks fit there, and it closes the holes
below. It is a baseline, not a fit: its parameters are buffers, not trained.

Per-atom energies give half of each pair to each atom; the term is local (``cutoff`` =
the largest ``r_c``) and exportable like the dispersion term.
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .descriptors import element_number
from .neighbors import Graph
from .system import AtomicSystem

__all__ = ["PairRepulsion", "closest_contacts"]


def _pair_key(a: int | str, b: int | str) -> Tuple[int, int]:
    za, zb = element_number(a), element_number(b)
    return (min(za, zb), max(za, zb))


def closest_contacts(images: Sequence, pairs: Iterable[Tuple[int | str, int | str]], r_max: float = 4.0
                     ) -> Dict[Tuple[int, int], float]:
    """Closest distance (Å, minimum image) of every element pair over ``images`` (``ase.Atoms``).

    Pairs never closer than ``r_max`` (or absent) get ``r_max``.
    """
    from ase.neighborlist import neighbor_list

    keys = [_pair_key(a, b) for a, b in pairs]
    closest = {k: float(r_max) for k in keys}
    for atoms in images:
        i, j, d = neighbor_list("ijd", atoms, r_max)
        zi, zj = atoms.numbers[i], atoms.numbers[j]
        lo, hi = np.minimum(zi, zj), np.maximum(zi, zj)
        for key in keys:
            mask = (lo == key[0]) & (hi == key[1])
            if mask.any():
                closest[key] = min(closest[key], float(d[mask].min()))
    return closest


class PairRepulsion(nn.Module):
    """Pair wall ``epsilon_ab (r_c,ab / r - 1)^3`` for ``r < r_c,ab`` (eV), zero beyond.

    Parameters
    ----------
    cutoffs : mapping (element, element) -> float
        ``r_c,ab`` (Å) per element pair (order and symbol/number spelling free).
    strengths : mapping (element, element) -> float, or float
        ``epsilon_ab`` (eV) per pair, or one value for every pair. With ``epsilon = 100`` eV the
        wall is 0.16 eV (force 2.6 eV/Å) at 0.2 Å below ``r_c = 1.9`` Å and 1.9 eV at 0.4 Å below.
    """

    # energy-term traits (hybridpot.terms): a pair sum within ``cutoff``
    provides_charges = False
    needs_charges = False
    takes_charges = False
    uses_widths = False
    is_local = True

    def __init__(self, cutoffs: Mapping[Tuple[int | str, int | str], float],
                 strengths: Mapping[Tuple[int | str, int | str], float] | float = 100.0):
        super().__init__()
        if not cutoffs:
            raise ValueError("PairRepulsion needs at least one element pair in cutoffs")
        table_rc = torch.zeros(119, 119, dtype=torch.float64)
        table_eps = torch.zeros(119, 119, dtype=torch.float64)
        self.pairs: Dict[Tuple[int, int], Tuple[float, float]] = {}
        for (a, b), rc in cutoffs.items():
            key = _pair_key(a, b)
            if isinstance(strengths, Mapping):
                matches = [v for (c, d), v in strengths.items() if _pair_key(c, d) == key]
                if not matches:
                    raise ValueError(f"no strength for the pair {key}: give strengths[{key}] or one float")
                eps = float(matches[0])
            else:
                eps = float(strengths)
            if not rc > 0 or not eps >= 0:
                raise ValueError(f"pair {key}: need r_c > 0 Å and epsilon >= 0 eV, got {rc}, {eps}")
            self.pairs[key] = (float(rc), eps)
            for p, q in (key, key[::-1]):
                table_rc[p, q] = float(rc)
                table_eps[p, q] = eps
        #: per element pair (indexed by atomic numbers): r_c (Å), 0 where no wall; epsilon (eV)
        self.register_buffer("pair_cutoff", table_rc)
        self.register_buffer("pair_strength", table_eps)
        self.cutoff = max(rc for rc, _ in self.pairs.values())

    @classmethod
    def below_data(cls, images: Sequence, pairs: Iterable[Tuple[int | str, int | str]], margin: float = 0.05,
                   strength: float = 100.0, r_max: float = 4.0) -> "PairRepulsion":
        """Walls ``margin`` Å below the closest contact of each pair in ``images``.

        The term is then zero on every structure of ``images`` (checked by the caller's tests,
        not assumed): it cannot change a fit to them.
        """
        closest = closest_contacts(images, pairs, r_max=r_max)
        return cls({k: v - margin for k, v in closest.items()}, strength)

    def pair_energy(self, r: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
        """Energy (eV) of pairs at distances ``r`` (Å) of elements ``zi``, ``zj``."""
        rc = self.pair_cutoff[zi, zj].to(r.dtype)
        eps = self.pair_strength[zi, zj].to(r.dtype)
        inside = r < rc
        # r clamped inside the branch so that the gradient of the masked-out side is finite
        x = torch.where(inside, rc / torch.where(inside, r, rc) - 1.0, torch.zeros_like(r))
        return eps * x**3

    def forward(self, system: AtomicSystem, graph: Graph) -> torch.Tensor:
        """Per-atom repulsion energies ``[N]`` (eV): half of each pair to each atom."""
        g = graph.within(self.cutoff)
        e_pair = self.pair_energy(g.distances, system.numbers[g.i], system.numbers[g.j])
        return torch.zeros_like(system.positions[:, 0]).index_add(0, g.i, 0.5 * e_pair)

    def extra_repr(self) -> str:
        return ", ".join(f"{a}-{b}: r_c {rc:.3f} Å, eps {eps:g} eV" for (a, b), (rc, eps) in self.pairs.items())
