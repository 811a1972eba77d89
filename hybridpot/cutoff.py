"""Cutoff functions f_c(r) with n2p2's numbering and inner shift alpha.

With ``x = (r - alpha r_c) / (r_c - alpha r_c)``, ``f_c = 1`` for ``r < alpha r_c`` and
``f_c = 0`` for ``r >= r_c``. Types (n2p2 ``cutoff_type``):

===  =======  ===========================================================
 0   hard     1
 1   cos      (cos(pi x) + 1) / 2
 2   tanhu    tanh^3(1 - r / r_c)                      (alpha not used)
 3   tanh     tanh^3(1 - r / r_c) / tanh^3(1)          (alpha not used)
 4   exp      exp(1 - 1 / (1 - x^2))
 5   poly1    (2x - 3) x^2 + 1
 6   poly2    ((15 - 6x) x - 10) x^3 + 1
 7   poly3    (x (x (20x - 70) + 84) - 35) x^4 + 1
 8   poly4    (x (x ((315 - 70x) x - 540) + 420) - 126) x^5 + 1
===  =======  ===========================================================

Types 5-8 are the step polynomials of :mod:`hybridpot.polynomials`. :func:`cutoff_function`
works on tensors (the torch reference path); :func:`cutoff_fdf` is the scalar value and
derivative compiled into the symmetry-function kernels.
"""

from __future__ import annotations

import math

import torch

from .polynomials import _jitable, polynomial_step, polynomial_step_fdf

__all__ = ["cutoff_function", "cutoff_fdf", "CUTOFF_TYPES", "cutoff_type_number"]

CUTOFF_TYPES = {0: "hard", 1: "cos", 2: "tanhu", 3: "tanh", 4: "exp", 5: "poly1", 6: "poly2", 7: "poly3", 8: "poly4"}
_TANH_NORM = 1.0 / math.tanh(1.0) ** 3


def cutoff_type_number(cutoff_type: int | str) -> int:
    """n2p2 number of a cutoff type given by number or name."""
    if isinstance(cutoff_type, str):
        names = {v: k for k, v in CUTOFF_TYPES.items()}
        if cutoff_type not in names:
            raise ValueError(f"unknown cutoff type {cutoff_type!r}; known: {sorted(names)}")
        return names[cutoff_type]
    if int(cutoff_type) not in CUTOFF_TYPES:
        raise ValueError(f"unknown cutoff type {cutoff_type}; known: {sorted(CUTOFF_TYPES)}")
    return int(cutoff_type)


def _core(x: torch.Tensor, kind: int) -> torch.Tensor:
    if kind == 1:
        return 0.5 * (torch.cos(math.pi * x) + 1.0)
    if kind == 4:
        # exp(1 - 1/(1 - x^2)); x < 1 is guaranteed by the caller's masking
        return torch.exp(1.0 - 1.0 / (1.0 - x * x))
    if 5 <= kind <= 8:
        return polynomial_step(x, kind - 4)
    raise ValueError(f"unknown cutoff type {kind}")


def cutoff_function(r: torch.Tensor, r_cut, cutoff_type: int = 2, alpha: float = 0.0) -> torch.Tensor:
    """Evaluate the cutoff function (dimensionless) at distances ``r`` (Å).

    Parameters
    ----------
    r : torch.Tensor
        Distances, any shape, Å.
    r_cut : float or torch.Tensor
        Cutoff radius (broadcast against ``r``), Å.
    cutoff_type : int
        n2p2 cutoff type number (see module docstring).
    alpha : float
        Inner shift: the function is 1 below ``alpha * r_cut`` (types 1, 4-8).

    Returns
    -------
    torch.Tensor
        f_c(r), zero for ``r >= r_cut``, with continuous derivatives (type-dependent order).
    """
    kind = cutoff_type_number(cutoff_type)
    inside = r < r_cut
    if kind == 0:
        return inside.to(r.dtype)
    if kind in (2, 3):
        t = torch.tanh(1.0 - r / r_cut)
        value = t * t * t
        if kind == 3:
            value = value * _TANH_NORM
        return torch.where(inside, value, torch.zeros_like(value))
    r_inner = alpha * r_cut
    x = (r - r_inner) / (r_cut - r_inner)
    # keep x in [0, 1) where evaluated so that masked branches stay finite (no NaN gradients)
    x_safe = torch.where(inside & (x > 0), x, torch.zeros_like(x))
    value = _core(x_safe, kind)
    value = torch.where(x > 0, value, torch.ones_like(value))
    return torch.where(inside, value, torch.zeros_like(value))


@_jitable
def cutoff_fdf(r: float, r_cut: float, kind: int, alpha: float):
    """``(f_c(r), df_c/dr)`` for a scalar distance ``r`` (Å), cutoff type number ``kind``.

    Same functions as :func:`cutoff_function`; ``df_c/dr`` in 1/Å. Zero beyond ``r_cut``.
    """
    if r >= r_cut:
        return 0.0, 0.0
    if kind == 0:
        return 1.0, 0.0
    if kind == 2 or kind == 3:
        t = math.tanh(1.0 - r / r_cut)
        norm = _TANH_NORM if kind == 3 else 1.0
        return norm * t * t * t, -norm * 3.0 * t * t * (1.0 - t * t) / r_cut
    r_inner = alpha * r_cut
    if r <= r_inner:
        return 1.0, 0.0
    width = r_cut - r_inner
    x = (r - r_inner) / width
    if kind == 1:
        return 0.5 * (math.cos(math.pi * x) + 1.0), -0.5 * math.pi * math.sin(math.pi * x) / width
    if kind == 4:
        d = 1.0 - x * x
        value = math.exp(1.0 - 1.0 / d)
        return value, -2.0 * x * value / (d * d) / width
    f, df = polynomial_step_fdf(x, kind - 4)
    return f, df / width
