"""Ewald/PME parameters: the accuracy rules, the smooth real-space switch, density-following
parameters for dilute boxes, and n2p2's own ``ewald_prec`` truncation."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Tuple

import torch
from scipy.special import erfcinv

from .kernels import _SQRT2

__all__ = ["EwaldParameters", "N2p2EwaldTruncation", "minimum_real_space_cutoff", "DILUTE_DENSITY",
           "SWITCH_FRACTION"]

#: measured PME interpolation error (potential, relative) at actual mesh spacing 0.137 s,
#: and its exponent in the mesh spacing, per number of interpolation nodes.
_PME_ERROR_LAW = {4: (5.9e-5, 4.2), 5: (3.2e-6, 5.4), 6: (7.5e-7, 6.2), 7: (5.3e-8, 6.7)}


def _fft_size(n: int) -> int:
    """Smallest ``m >= n`` of the form ``2^a 3^b 5^c``."""
    m = max(int(n), 1)
    while True:
        k = m
        for f in (2, 3, 5):
            while k % f == 0:
                k //= f
        if k == 1:
            return m
        m += 1


#: atoms/Å^3 below which Ewald/PME parameters follow the density, not the box
#: (EwaldParameters.for_structure); molten NaCl has 0.032, water 0.1
DILUTE_DENSITY = 0.01
#: width of the smooth switch of the real-space kernel, as a fraction of the real-space cutoff
SWITCH_FRACTION = 0.03


@dataclass(frozen=True)
class N2p2EwaldTruncation:
    """n2p2's own choice of Ewald parameters from ``ewald_prec`` (per structure, from its volume
    and number of atoms), to reproduce n2p2's truncated sums rather than converged ones.

    Reimplemented from n2p2's documented formulas (libnnp EwaldTruncJackson,
    EwaldTruncKolafaOptEta, EwaldTruncKolafaFixR), in the files' units with ``4 pi eps0 = 1``
    as n2p2 does, then converted to Å:

    * ``method = 0`` (Jackson & Catlow, n2p2's default ``ewald_truncation_error_method``):
      ``eta = V^(1/3) / sqrt(2 pi)``, ``r_c = sqrt(-2 ln p) eta``, ``k_c = sqrt(-2 ln p) / eta``.
    * ``method = 1`` (Kolafa & Perram, ``ewald_prec p q_max``): ``C = 2^(3/4) q_max^2 sqrt(N/V)``;
      ``eta`` from the fixed point ``eta = eta0 (1 + 1/(2 s^2))^(1/6)``,
      ``eta0 = (V^2 / (3.676 (2 pi)^3))^(1/6)``, with ``s`` solving
      ``exp(-s^2)/sqrt(s) = p sqrt(eta/2) / C`` (Newton steps as n2p2); then
      ``eta = max(eta, max Gaussian width)``, ``r_c = sqrt(2) eta s``, ``k_c = sqrt(2) s / eta``.
    * ``method = 1`` with a third value (``ewald_prec p q_max r_c``): fixed ``r_c``,
      ``C = 2 q_max^2 sqrt(N/V)``, ``eta = r_c / sqrt(-2 ln(sqrt(r_c/2) p / C))``, ``k_c`` solving
      ``exp(-k_c^2 eta^2 / 2)/sqrt(k_c) = eta p / (sqrt(2) C)``.

    The sums are then n2p2's: real-space pairs closer than ``r_c`` (hard cut, no switch, the
    Gaussian erfc correction truncated there too), k-vectors ``|k| < k_c``, smearing ``eta``
    (``erfc(r / (sqrt(2) eta))`` convention, as torch-pme's smearing).

    Attributes: ``method`` (0 or 1), ``precision`` ``p`` (method 1: a force, file energy / file
    length), ``max_charge`` (e), ``max_sigma`` (largest ``fixed_gausswidth``, file length),
    ``fixed_cutoff`` (file length or None), ``length_unit`` (Å per file length unit).
    """

    method: int
    precision: float
    max_charge: float = 1.0
    max_sigma: float = 0.0
    fixed_cutoff: Optional[float] = None
    length_unit: float = 1.0

    def __post_init__(self):
        if self.method not in (0, 1):
            raise ValueError(f"ewald_truncation_error_method must be 0 or 1, got {self.method}")
        if not self.precision > 0.0:
            raise ValueError(f"ewald_prec precision must be positive, got {self.precision}")
        if self.method == 0 and self.precision >= 1.0:
            raise ValueError(f"ewald_truncation_error_method 0 needs ewald_prec < 1, got {self.precision}")

    def cutoffs(self, n_atoms: int, volume: float) -> Tuple[float, float, float]:
        """``(eta, r_c, k_c)`` in Å and 1/Å for a structure of ``n_atoms`` in ``volume`` Å^3."""
        unit = self.length_unit
        v = volume / unit**3
        p = self.precision
        if self.method == 0:
            eta = v ** (1.0 / 3.0) / math.sqrt(2.0 * math.pi)
            factor = math.sqrt(-2.0 * math.log(p))
            return eta * unit, factor * eta * unit, factor / eta / unit
        if self.fixed_cutoff is None:
            c = 2.0**0.75 * self.max_charge**2 * math.sqrt(n_atoms / v)
            eta0 = (v**2 / (3.676 * (2.0 * math.pi) ** 3)) ** (1.0 / 6.0)
            eta, s, change = eta0, 1.0, 1.0
            while change > 1e-10:
                s = self._solve_s(s, p / c * math.sqrt(eta / 2.0))
                old, eta = eta, eta0 * (1.0 + 1.0 / (2.0 * s * s)) ** (1.0 / 6.0)
                change = abs(old - eta) / eta
            eta = max(eta, self.max_sigma)
            return eta * unit, math.sqrt(2.0) * eta * s * unit, math.sqrt(2.0) * s / eta / unit
        rc = self.fixed_cutoff
        c = 2.0 * self.max_charge**2 * math.sqrt(n_atoms / v)
        x = math.sqrt(rc / 2.0) * p / c
        if x >= 1.0:
            raise ValueError(f"ewald_prec {p} with real-space cutoff {rc}: bad precision settings (n2p2 refuses them "
                             "too); try a smaller precision")
        eta = rc / math.sqrt(-2.0 * math.log(x))
        y = eta * p / (math.sqrt(2.0) * c)
        k, dx, dy = 1.0 / eta, 1.0, 1.0
        while dx > 1e-10 or dy > 1e-10:
            old = k
            k -= 2.0 * k / (1.0 + 2.0 * (k * eta) ** 2) * (-1.0 + math.sqrt(k) * math.exp((k * eta) ** 2 / 2.0) * y)
            if k <= 0.0:
                k = old / 2.0
                continue
            dx = abs((k - old) / k)
            dy = abs((math.exp(-((k * eta) ** 2) / 2.0) / math.sqrt(k) - y) / y)
        return eta * unit, rc * unit, k / unit

    @staticmethod
    def _solve_s(s: float, y: float) -> float:
        """``s`` with ``exp(-s^2)/sqrt(s) = y`` (Newton-like steps from ``s``, n2p2's iteration)."""
        if s <= 0.0:
            s = 0.5
        dx = dy = 1.0
        while dx > 1e-10 or dy > 1e-10:
            step = 2.0 * s / (4.0 * s * s + 1.0) * (1.0 - math.sqrt(s) / math.exp(-s * s) * y)
            if s <= -step:  # would become negative: restart from a smaller value
                s /= 2.0
                continue
            s += step
            dy = abs((math.exp(-s * s) / math.sqrt(s) - y) / y)
            dx = abs(step / s)
        return s


@dataclass(frozen=True)
class EwaldParameters:
    """Range-separation parameters (Å) for one relative accuracy and real-space cutoff.

    The real-space kernel is multiplied by :func:`cutoff_switch` over the last
    ``switch_width`` Å before ``real_space_cutoff``, so energies and forces are continuous
    when a pair crosses the cutoff; the smearing is chosen for the switch's inner edge
    ``real_space_cutoff - switch_width`` (where the kernel's tail is already below
    ``0.1 accuracy``), so the accuracy rules below are unchanged. ``switch_width = 0`` (the
    class default, which is what objects pickled before the switch existed get) is a hard cut.
    """

    accuracy: float
    real_space_cutoff: float
    smearing: float
    k_max: float
    mesh_spacing: float
    interpolation_nodes: int
    switch_width: float = 0.0
    #: n2p2's ewald_prec truncation instead of these converged-sum parameters (for_structure)
    truncation: Optional[N2p2EwaldTruncation] = None

    @property
    def switch_start(self) -> float:
        """Distance (Å) where the real-space switch begins."""
        return self.real_space_cutoff - self.switch_width

    def for_structure(self, n_atoms: int, volume: float) -> "EwaldParameters":
        """These parameters, or for a structure more dilute than ``DILUTE_DENSITY`` (atoms/Å^3)
        the same accuracy with every length scaled by ``(DILUTE_DENSITY V / n)^(1/3)`` (real-space
        cutoff, switch, smearing, mesh spacing; ``k_max`` divided by it). Then the number of
        k-vectors (Ewald, ~V k_max^3), of mesh points (PME, ~V / h^3) and of real-space pairs
        (~n^2 r_c^3 / V) are those of the same atoms at ``DILUTE_DENSITY``: a cluster in a large
        periodic box costs what a dense box of its atoms costs, instead of growing with the
        box (two atoms in a 600 Å box: 10^8 k-vectors, 6.4 GB, with fixed parameters).
        """
        if self.truncation is not None:  # n2p2's own per-structure parameters
            eta, rc, kc = self.truncation.cutoffs(n_atoms, volume)
            return replace(self, real_space_cutoff=rc, smearing=eta, k_max=kc, switch_width=0.0)
        density = n_atoms / volume
        if density >= DILUTE_DENSITY:
            return self
        factor = (DILUTE_DENSITY / density) ** (1.0 / 3.0)
        return EwaldParameters.for_accuracy(self.accuracy, self.real_space_cutoff * factor, self.interpolation_nodes,
                                            self.switch_width * factor)

    @classmethod
    def for_accuracy(cls, accuracy: float, real_space_cutoff: float, interpolation_nodes: int = 7,
                     switch_width: Optional[float] = None) -> "EwaldParameters":
        """Parameters for relative ``accuracy`` (module docstring); ``switch_width`` (Å) defaults
        to ``SWITCH_FRACTION * real_space_cutoff`` (0.3 Å at 10 Å: 10% more k-vectors or mesh
        points than a hard cut at the same cutoff)."""
        if not 0.0 < accuracy < 1.0:
            raise ValueError(f"accuracy must be in (0, 1), got {accuracy}")
        if real_space_cutoff <= 0:
            raise ValueError(f"real_space_cutoff must be positive, got {real_space_cutoff}")
        if interpolation_nodes not in _PME_ERROR_LAW:
            raise ValueError(f"interpolation_nodes must be one of {sorted(_PME_ERROR_LAW)}, got {interpolation_nodes}")
        width = SWITCH_FRACTION * real_space_cutoff if switch_width is None else float(switch_width)
        if not 0.0 <= width < real_space_cutoff:
            raise ValueError(f"switch_width must be in [0, real_space_cutoff), got {switch_width}")
        tail = 0.1 * accuracy
        smearing = (real_space_cutoff - width) / (_SQRT2 * float(erfcinv(tail)))
        k_max = math.sqrt(2.0 * math.log(1.0 / tail)) / smearing
        e0, p = _PME_ERROR_LAW[interpolation_nodes]
        ratio = 0.137 * min(2.2, (0.05 * accuracy / e0) ** (1.0 / p))
        # torch-pme uses >= 2 L / mesh_spacing + 1 points per axis: actual spacing <= mesh_spacing / 2
        mesh_spacing = 2.0 * ratio * smearing
        return cls(accuracy, real_space_cutoff, smearing, k_max, mesh_spacing, interpolation_nodes, width)


def _upgraded(params: EwaldParameters) -> EwaldParameters:
    """Parameters unpickled from a model saved before the cutoff switch existed (no
    ``switch_width`` of their own) rebuilt with today's rules, so old models get a smooth cutoff
    (energies change at the level of the accuracy setting)."""
    if "switch_width" in vars(params):
        return params
    return EwaldParameters.for_accuracy(params.accuracy, params.real_space_cutoff, params.interpolation_nodes)


def minimum_real_space_cutoff(sigma_max: float, accuracy: float) -> float:
    """Smallest real-space cutoff (Å) whose Gaussian erfc correction has decayed below
    ``0.1 accuracy`` at the inner edge of the cutoff switch, for Gaussian widths up to
    ``sigma_max`` (Å): ``2 sigma_max erfcinv(0.1 accuracy) / (1 - SWITCH_FRACTION)``."""
    return 2.0 * float(sigma_max) * float(erfcinv(0.1 * accuracy)) / (1.0 - SWITCH_FRACTION)
