"""The smooth step polynomials p1-p4 shared by cutoff functions, compact functions and screening.

``p_n(x)`` (``n`` = 1..4) goes from 1 at ``x = 0`` to 0 at ``x = 1`` with ``n`` vanishing
derivatives at both ends (n2p2's ``CoreFunction`` polynomials):

===  ==================================================================  =========================
 n   p_n(x)                                                              p_n'(x)
===  ==================================================================  =========================
 1   (2x - 3) x^2 + 1                                                     6 x (x - 1)
 2   ((15 - 6x) x - 10) x^3 + 1                                           -30 x^2 (x - 1)^2
 3   (x (x (20x - 70) + 84) - 35) x^4 + 1                                 140 x^3 (x - 1)^3
 4   (x (x ((315 - 70x) x - 540) + 420) - 126) x^5 + 1                    -630 x^4 (x - 1)^4
===  ==================================================================  =========================

They are cutoff types 5-8 (poly1-poly4, :mod:`hybridpot.cutoff`), the cores of n2p2's compact
symmetry functions 20-25 (subtypes ``p1``-``p4``) and the cores of n2p2's electrostatics
screening. This module is the one implementation of them:

* :func:`polynomial_step` evaluates ``p_n`` on a torch tensor (differentiable);
* :func:`polynomial_step_fdf` is the scalar value-and-derivative version, plain Python that
  numba compiles into the symmetry-function kernels (CPU and CUDA,
  ``numba.extending.register_jitable``) and that also runs as ordinary Python.
"""

from __future__ import annotations

import torch

__all__ = ["polynomial_step", "polynomial_step_fdf", "POLYNOMIAL_ORDERS"]

#: orders n of p_n that exist
POLYNOMIAL_ORDERS = (1, 2, 3, 4)

try:  # numba is a dependency; this keeps the module importable for a reader without it
    from numba.extending import register_jitable as _jitable
except ImportError:  # pragma: no cover
    def _jitable(f):
        return f


def polynomial_step(x: torch.Tensor, order: int) -> torch.Tensor:
    """``p_order(x)`` (dimensionless) for ``x`` in ``[0, 1]`` (the caller masks other ``x``).

    Parameters
    ----------
    x : torch.Tensor
        Arguments, any shape.
    order : int
        1, 2, 3 or 4.

    Returns
    -------
    torch.Tensor
        Same shape as ``x``.
    """
    x2 = x * x
    if order == 1:
        return (2.0 * x - 3.0) * x2 + 1.0
    if order == 2:
        return ((15.0 - 6.0 * x) * x - 10.0) * x2 * x + 1.0
    if order == 3:
        return (x * (x * (20.0 * x - 70.0) + 84.0) - 35.0) * x2 * x2 + 1.0
    if order == 4:
        return (x * (x * ((315.0 - 70.0 * x) * x - 540.0) + 420.0) - 126.0) * x2 * x2 * x + 1.0
    raise ValueError(f"polynomial order must be 1, 2, 3 or 4, got {order}")


@_jitable
def polynomial_step_fdf(x: float, order: int):
    """``(p_order(x), p_order'(x))`` for a scalar ``x`` in ``[0, 1]``; order outside 1-4 gives (nan, nan)."""
    x2 = x * x
    if order == 1:
        return (2.0 * x - 3.0) * x2 + 1.0, 6.0 * x * (x - 1.0)
    if order == 2:
        xm = x - 1.0
        return ((15.0 - 6.0 * x) * x - 10.0) * x2 * x + 1.0, -30.0 * x2 * xm * xm
    if order == 3:
        xm = x - 1.0
        return (x * (x * (20.0 * x - 70.0) + 84.0) - 35.0) * x2 * x2 + 1.0, 140.0 * x2 * x * xm * xm * xm
    if order == 4:
        xm = x - 1.0
        xm2 = xm * xm
        return ((x * (x * ((315.0 - 70.0 * x) * x - 540.0) + 420.0) - 126.0) * x2 * x2 * x + 1.0,
                -630.0 * x2 * x2 * xm2 * xm2)
    return float("nan"), float("nan")
