"""Pair kernels of Gaussian and point charges, n2p2's electrostatic screening and the smooth
cutoff switch of the real-space sums (units: 1/Å; multiply by ``COULOMB_CONSTANT`` for eV/e^2)."""

from __future__ import annotations

import math
from typing import Optional

import torch

from ._torchpme import COULOMB_PREFACTOR

__all__ = ["COULOMB_CONSTANT", "gaussian_coulomb_kernel", "erfc_coulomb_kernel", "SCREENING_CORES",
           "screening_function", "cutoff_switch"]

#: Coulomb constant k_e = 1/(4 pi eps0) in eV Å / e^2 (torch-pme's prefactor).
COULOMB_CONSTANT = COULOMB_PREFACTOR

_SQRT2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gaussian_coulomb_kernel(r: torch.Tensor, gamma: Optional[torch.Tensor]) -> torch.Tensor:
    """``erf(r / (sqrt(2) gamma)) / r`` (1/Å), finite and smooth at ``r = 0``.

    ``gamma = None`` gives the point-charge kernel ``1/r``. Multiply by ``k_e`` for eV/e^2.
    """
    if gamma is None:
        return 1.0 / r
    x = r / (_SQRT2 * gamma)
    small = x < 1e-4
    r_safe = torch.where(small, torch.ones_like(r), r)
    x_safe = r_safe / (_SQRT2 * gamma)
    regular = torch.erf(x_safe) / r_safe
    # erf(x)/x = 2/sqrt(pi) (1 - x^2/3 + x^4/10 ...)
    series = _SQRT_2_OVER_PI / gamma * (1.0 - x * x / 3.0)
    return torch.where(small, series, regular)


def erfc_coulomb_kernel(r: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``erfc(r / (sqrt(2) gamma)) / r`` (1/Å): point minus Gaussian pair kernel, ``r > 0``."""
    return torch.erfc(r / (_SQRT2 * gamma)) / r


SCREENING_CORES = ("c", "p1", "p2", "p3", "p4", "e")


def screening_function(r: torch.Tensor, inner: float, outer: float, core: str = "p2") -> torch.Tensor:
    """n2p2's electrostatic screening ``f_s(r) = 1 - c(x)``, ``x = (r - inner)/(outer - inner)`` in [0, 1].

    ``core`` names n2p2's CoreFunction: ``"p2"`` (POLY2, default of n2p2's ScreeningFunction
    class: ``f_s = x^3 (10 - 15 x + 6 x^2)``), ``"c"`` (cosine, ``(cos(pi x) + 1)/2``: the
    default of n2p2's ``screen_electrostatics`` keyword), ``"p1"``, ``"p3"``, ``"p4"``, ``"e"``.
    """
    x = ((r - inner) / (outer - inner)).clamp(0.0, 1.0)
    if core == "p2":
        return x * x * x * (10.0 + x * (-15.0 + 6.0 * x))
    if core == "c":
        return 1.0 - 0.5 * (torch.cos(math.pi * x) + 1.0)
    from ..descriptors import compact_core

    kinds = {"p1": 1, "p3": 3, "p4": 4, "e": 0}
    if core not in kinds:
        raise ValueError(f"unknown screening core function {core!r}; choose one of {SCREENING_CORES}")
    # the core is evaluated on [0, 1): at x = 1 it is 0 for every kind
    inside = x < 1.0
    value = compact_core(torch.where(inside, x, torch.zeros_like(x)), kinds[core])
    return torch.where(inside, 1.0 - value, torch.ones_like(x))


def cutoff_switch(r: torch.Tensor, cutoff: float, width: float) -> torch.Tensor:
    """Smooth step ``S(r)``: 1 for ``r <= cutoff - width``, 0 for ``r >= cutoff``, in between
    ``1 - x^3 (10 - 15 x + 6 x^2)``, ``x = (r - cutoff + width) / width`` (C^2: value, slope and
    curvature vanish at the cutoff). ``width = 0``: the hard step ``r < cutoff``."""
    if width <= 0.0:
        return (r < cutoff).to(r.dtype)
    x = ((r - (cutoff - width)) / width).clamp(0.0, 1.0)
    return 1.0 - x * x * x * (10.0 + x * (-15.0 + 6.0 * x))
