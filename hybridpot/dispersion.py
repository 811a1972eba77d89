"""Damped C6 dispersion with Grimme's D2 parameters.

Energy (eV) of a structure::

    E_disp = - sum_{i<j} s6 * scale * C6_ij * f(r_ij) * S(r_ij)  [ + E_tail ]

* ``C6_ij = sqrt(C6_i C6_j)`` (geometric mean, as in DFT-D2);
* damping ``f`` (``R0_ij = radius_scale * (R0_i + R0_j)``):

  - ``"bj"`` (Becke-Johnson / rational form): ``f(r) = 1 / (r^6 + R0_ij^6)``, finite at
    ``r = 0`` (``E -> -s6 C6_ij / R0_ij^6``), ``-> 1/r^6`` at long range;
  - ``"fermi"`` (DFT-D2's own form): ``f(r) = r^-6 / (1 + exp(-d (r / R0_ij - 1)))`` with
    ``d = 20`` and ``radius_scale = 1.1`` in D2. It diverges (weakly) as ``r -> 0``.

* ``S(r)`` is a smooth switching function, 1 below ``cutoff - switch_width`` and 0 at
  ``cutoff``; it is n2p2's ``poly2`` cutoff function (``1 - 10x^3 + 15x^4 - 6x^5``), so
  energy, forces and their first derivatives are continuous at the cutoff.
* Periodic structures (all three directions periodic) get, by default, the homogeneous
  long-range tail correction for what the switching removes:
  ``E_tail = -(2 pi / V) s6 scale sum_{a,b} N_a N_b C6_ab I_ab`` with
  ``I_ab = int_0^inf (1 - S(r)) f_ab(r) r^2 dr`` (Å^-3; ``-> 1 / (3 r_c^3)`` for a hard cutoff
  and undamped ``r^-6``), computed by quadrature in :meth:`Dispersion._tail_integrals`.
  It assumes a uniform pair distribution beyond ``cutoff - switch_width`` (exact for
  liquids/gases in the limit, a few per cent of the tail for crystals, where the tail
  itself is small at the default 12 Å). It depends on the volume, so it contributes to
  stress but not to forces; it is spread over atoms as ``e_i = -(2 pi/V) s6 scale
  sum_b N_b C6_{Z_i b} I_{Z_i b}``. Slabs and wires (partially periodic) and finite
  systems get no tail correction: they use the same smooth pair sum only.

Parameters (per element): C6 in J nm^6 mol^-1 and van der Waals radii R0 in Å from
S. Grimme, "Semiempirical GGA-type density functional constructed with a long-range
dispersion correction", J. Comput. Chem. 27, 1787-1799 (2006), Table 1, elements H-Xe.
They are converted to eV Å^6 with ``ase.units`` (``kJ/mol`` and ``nm``).

Per-atom energies give half of each pair to each atom.
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, Mapping, Optional

import numpy as np
import torch
from ase import units
from torch import nn

from .cutoff import cutoff_function
from .descriptors import element_number
from .neighbors import Graph
from .system import AtomicSystem

__all__ = ["Dispersion", "D2_C6", "D2_R0", "d2_c6", "d2_r0"]

# Grimme D2 (J. Comput. Chem. 27, 1787 (2006), Table 1): C6 in J nm^6 mol^-1, index = Z - 1.
D2_C6 = (
    0.14, 0.08,                                                      # H He
    1.61, 1.61, 3.13, 1.75, 1.23, 0.70, 0.75, 0.63,                  # Li-Ne
    5.71, 5.71, 10.79, 9.23, 7.84, 5.57, 5.07, 4.61,                 # Na-Ar
    10.80, 10.80,                                                    # K Ca
    10.80, 10.80, 10.80, 10.80, 10.80, 10.80, 10.80, 10.80, 10.80, 10.80,  # Sc-Zn
    16.99, 17.10, 16.37, 12.64, 12.47, 12.01,                        # Ga-Kr
    24.67, 24.67,                                                    # Rb Sr
    24.67, 24.67, 24.67, 24.67, 24.67, 24.67, 24.67, 24.67, 24.67, 24.67,  # Y-Cd
    37.32, 38.71, 38.44, 31.74, 31.50, 29.99,                        # In-Xe
)
# van der Waals radii R0 in Å, same table.
D2_R0 = (
    1.001, 1.012,
    0.825, 1.408, 1.485, 1.452, 1.397, 1.342, 1.287, 1.243,
    1.144, 1.364, 1.639, 1.716, 1.705, 1.683, 1.639, 1.595,
    1.485, 1.474,
    1.562, 1.562, 1.562, 1.562, 1.562, 1.562, 1.562, 1.562, 1.562, 1.562,
    1.650, 1.727, 1.760, 1.771, 1.749, 1.727,
    1.628, 1.606,
    1.639, 1.639, 1.639, 1.639, 1.639, 1.639, 1.639, 1.639, 1.639, 1.639,
    1.672, 1.804, 1.881, 1.892, 1.892, 1.881,
)
assert len(D2_C6) == len(D2_R0) == 54

#: 1 J nm^6 mol^-1 in eV Å^6
J_NM6_PER_MOL = 1e-3 * units.kJ / units.mol * units.nm**6


def d2_c6(element: int | str) -> float:
    """D2 C6 coefficient of an element (H-Xe), eV Å^6."""
    z = element_number(element)
    if not 1 <= z <= len(D2_C6):
        raise ValueError(f"no D2 C6 coefficient for Z = {z} (table covers H-Xe); pass c6={{Z: value}}")
    return D2_C6[z - 1] * J_NM6_PER_MOL


def d2_r0(element: int | str) -> float:
    """D2 van der Waals radius of an element (H-Xe), Å."""
    z = element_number(element)
    if not 1 <= z <= len(D2_R0):
        raise ValueError(f"no D2 radius for Z = {z} (table covers H-Xe); pass r0={{Z: value}}")
    return float(D2_R0[z - 1])


class Dispersion(nn.Module):
    """Damped pairwise C6 dispersion (eV) with a smooth cutoff.

    Parameters
    ----------
    elements : iterable of int or str
        Elements handled.
    damping : {"bj", "fermi"}
        Becke-Johnson (rational, finite at r = 0) or D2's Fermi damping.
    s6 : float
        Global scaling factor (dimensionless).
    cutoff : float
        Distance (Å) where the pair energy reaches zero smoothly.
    switch_width : float
        Width (Å) of the switching region ``[cutoff - switch_width, cutoff]``.
    radius_scale : float, optional
        ``R0_ij = radius_scale (R0_i + R0_j)``; default 1.0 for "bj", 1.1 for "fermi" (D2).
    d : float
        Steepness of the Fermi damping (D2: 20).
    tail_correction : bool
        Add the homogeneous tail correction for fully periodic structures.
    learnable_scale : bool
        Make the global scale (initially 1) a trainable parameter.
    c6, r0 : mapping, optional
        Per-element overrides ``{element: value}`` in eV Å^6 and Å (required for Z > 54).
    """

    # energy-term traits (hybridpot.terms): a pair sum within the cutoff; the periodic tail
    # correction is a volume term (stress, no forces), left out by the export for MD engines
    provides_charges = False
    needs_charges = False
    takes_charges = False
    uses_widths = False
    is_local = True

    def __init__(
        self,
        elements: Iterable[int | str],
        damping: str = "bj",
        s6: float = 1.0,
        cutoff: float = 12.0,
        switch_width: float = 2.0,
        radius_scale: Optional[float] = None,
        d: float = 20.0,
        tail_correction: bool = True,
        learnable_scale: bool = False,
        c6: Optional[Mapping[int | str, float]] = None,
        r0: Optional[Mapping[int | str, float]] = None,
    ):
        super().__init__()
        if damping not in ("bj", "fermi"):
            raise ValueError(f"damping must be 'bj' or 'fermi', got {damping!r}")
        if cutoff <= 0:
            raise ValueError(f"cutoff must be positive, got {cutoff}")
        if not 0 <= switch_width <= cutoff:
            raise ValueError(f"switch_width must be in [0, cutoff], got {switch_width}")
        self.elements = sorted({element_number(e) for e in elements})
        if not self.elements:
            raise ValueError("Dispersion needs at least one element")
        self.damping = damping
        self.cutoff = float(cutoff)
        self.switch_width = float(switch_width)
        self.radius_scale = float(radius_scale if radius_scale is not None else (1.0 if damping == "bj" else 1.1))
        self.d = float(d)
        self.tail_correction = bool(tail_correction)
        c6 = {element_number(k): float(v) for k, v in (c6 or {}).items()}
        r0 = {element_number(k): float(v) for k, v in (r0 or {}).items()}
        c6_table = torch.zeros(119, dtype=torch.float64)
        r0_table = torch.ones(119, dtype=torch.float64)
        for z in self.elements:
            c6_table[z] = c6[z] if z in c6 else d2_c6(z)
            r0_table[z] = r0[z] if z in r0 else d2_r0(z)
            if c6_table[z] < 0 or r0_table[z] <= 0:
                raise ValueError(f"element {z}: need C6 >= 0 and R0 > 0, got {c6_table[z]}, {r0_table[z]}")
        #: per-element C6 (eV Å^6) and radius (Å), indexed by atomic number
        self.register_buffer("c6", c6_table)
        self.register_buffer("r0", r0_table)
        self.register_buffer("s6", torch.tensor(float(s6), dtype=torch.float64))
        if learnable_scale:
            self.scale = nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
        else:
            self.register_buffer("scale", torch.tensor(1.0, dtype=torch.float64))
        # element slots and tail integrals I_ab (Å^-3) for the homogeneous tail correction
        slot = torch.full((119,), -1, dtype=torch.long)
        slot[self.elements] = torch.arange(len(self.elements))
        self.register_buffer("slot", slot)
        self.register_buffer("tail_integrals", torch.as_tensor(self._tail_integrals(), dtype=torch.float64))

    # ------------------------------------------------------------------ pair terms
    def pair_c6(self, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
        """``C6_ij = sqrt(C6_i C6_j)`` (eV Å^6)."""
        return torch.sqrt(self.c6[zi] * self.c6[zj])

    def pair_radius(self, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
        """``R0_ij = radius_scale (R0_i + R0_j)`` (Å)."""
        return self.radius_scale * (self.r0[zi] + self.r0[zj])

    def damped(self, r: torch.Tensor, r0: torch.Tensor) -> torch.Tensor:
        """Damped ``1/r^6`` (Å^-6) for distances ``r`` and pair radii ``r0``."""
        if self.damping == "bj":
            return 1.0 / (r**6 + r0**6)
        return 1.0 / (r**6 * (1.0 + torch.exp(-self.d * (r / r0 - 1.0))))

    def switching(self, r: torch.Tensor) -> torch.Tensor:
        """Smooth switching function ``S(r)`` (1 inside, 0 at the cutoff)."""
        if self.switch_width == 0:
            return (r < self.cutoff).to(r.dtype)
        alpha = (self.cutoff - self.switch_width) / self.cutoff
        return cutoff_function(r, self.cutoff, cutoff_type=6, alpha=alpha)

    def pair_energy(self, r: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
        """Energy of pairs at distance ``r`` (Å) with the switching function (eV)."""
        factor = (self.s6 * self.scale).to(r.dtype)
        c6 = self.pair_c6(zi, zj).to(r.dtype)
        r0 = self.pair_radius(zi, zj).to(r.dtype)
        return -factor * c6 * self.damped(r, r0) * self.switching(r)

    # ------------------------------------------------------------------ tail
    def _tail_integrals(self) -> np.ndarray:
        """``I_ab = int_0^inf (1 - S(r)) f_ab(r) r^2 dr`` (Å^-3) for every element pair.

        Gauss-Legendre on the switching interval plus the substitution ``u = 1/r`` beyond the
        cutoff (smooth integrand ``u^4 r^6 f(1/u)`` on ``[0, 1/cutoff]``), converged to machine
        precision for the smooth integrands here.
        """
        x, w = np.polynomial.legendre.leggauss(64)
        n = len(self.elements)
        out = np.zeros((n, n))
        r_on = self.cutoff - self.switch_width
        with torch.no_grad():
            for a, za in enumerate(self.elements):
                for b, zb in enumerate(self.elements):
                    zi = torch.tensor([za])
                    zj = torch.tensor([zb])
                    r0 = self.pair_radius(zi, zj)
                    total = 0.0
                    if self.switch_width > 0:
                        r = torch.as_tensor(r_on + 0.5 * (x + 1.0) * self.switch_width, dtype=torch.float64)
                        g = (1.0 - self.switching(r)) * self.damped(r, r0) * r**2
                        total += 0.5 * self.switch_width * float((torch.as_tensor(w) * g).sum())
                    u = torch.as_tensor(0.5 * (x + 1.0) / self.cutoff, dtype=torch.float64)
                    g = self.damped(1.0 / u, r0) / u**4
                    total += 0.5 / self.cutoff * float((torch.as_tensor(w) * g).sum())
                    out[a, b] = total
        return out

    def tail_energies(self, system: AtomicSystem) -> torch.Tensor:
        """Per-atom homogeneous tail correction (eV), zero for structures not periodic in 3D."""
        dtype = system.dtype
        numbers = system.numbers
        slots = self.slot[numbers]
        n_el = len(self.elements)
        counts = torch.zeros(system.n_systems, n_el, dtype=dtype, device=system.device)
        counts.index_put_((system.batch, slots), torch.ones_like(system.positions[:, 0]), accumulate=True)
        full = system.pbc.all(dim=1)
        volume = torch.linalg.det(system.cell).abs()
        volume = torch.where(full, volume, torch.ones_like(volume))
        c6ab = self.pair_c6(
            torch.tensor(self.elements, device=system.device).unsqueeze(1),
            torch.tensor(self.elements, device=system.device).unsqueeze(0),
        ).to(dtype)
        kernel = c6ab * self.tail_integrals.to(dtype)  # [n_el, n_el]
        per_element = counts @ kernel  # [S, n_el]: sum_b N_b C6_ab I_ab
        factor = -2.0 * math.pi * (self.s6 * self.scale).to(dtype) / volume  # [S]
        per_atom = factor[system.batch] * per_element[system.batch, slots]
        return torch.where(full[system.batch], per_atom, torch.zeros_like(per_atom))

    # ------------------------------------------------------------------ forward
    def forward(self, system: AtomicSystem, graph: Graph) -> torch.Tensor:
        """Per-atom dispersion energies ``[N]`` (eV): half of each pair to each atom."""
        if bool((self.slot[system.numbers] < 0).any()):
            unknown = sorted(set(system.numbers[self.slot[system.numbers] < 0].tolist()))
            raise ValueError(f"Dispersion has no parameters for element(s) {unknown} (known: {self.elements})")
        g = graph.within(self.cutoff)
        e_pair = self.pair_energy(g.distances, system.numbers[g.i], system.numbers[g.j])
        energies = torch.zeros_like(system.positions[:, 0]).index_add(0, g.i, 0.5 * e_pair)
        if self.tail_correction and bool(system.pbc.all(dim=1).any()):
            energies = energies + self.tail_energies(system)
        return energies

    def extra_repr(self) -> str:
        return (
            f"elements={self.elements}, damping={self.damping!r}, cutoff={self.cutoff}, "
            f"switch_width={self.switch_width}, radius_scale={self.radius_scale}, tail_correction={self.tail_correction}"
        )
