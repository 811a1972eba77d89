"""The smooth step polynomials p1-p4 shared by cutoff functions, compact functions and screening.

``p_n(x)`` (``n`` = 1..4) goes from 1 at ``x = 0`` to 0 at ``x = 1`` with ``n`` vanishing
derivatives at both ends (n2p2's ``CoreFunction`` polynomials):

===  ==========================================  ======================================  ===================
 n   p_n(x)                                      evaluated as                            p_n'(x)
===  ==========================================  ======================================  ===================
 1   1 - 3x^2 + 2x^3                             (1-x)^2 (1 + 2x)                         6 x (x - 1)
 2   1 - 10x^3 + 15x^4 - 6x^5                    (1-x)^3 (1 + 3x + 6x^2)                  -30 (x (x - 1))^2
 3   1 - 35x^4 + 84x^5 - 70x^6 + 20x^7           (1-x)^4 (1 + 4x + 10x^2 + 20x^3)         140 (x (x - 1))^3
 4   1 - 126x^5 + 420x^6 - 540x^7 + 315x^8       (1-x)^5 (1 + 5x + 15x^2 + 35x^3 + 70x^4)  -630 (x (x - 1))^4
     - 70x^9
===  ==========================================  ======================================  ===================

The factored forms keep full relative accuracy near ``x = 1``, where the expanded (and
n2p2's Horner) forms lose digits to cancellation.

They are cutoff types 5-8 (poly1-poly4, :mod:`hybridpot.cutoff`), the cores of n2p2's compact
symmetry functions 20-25 (subtypes ``p1``-``p4``) and the cores of n2p2's electrostatics
screening. This module is the one implementation of them:

* :func:`polynomial_step` evaluates ``p_n`` on a torch tensor (differentiable);
* :func:`polynomial_step_fdf` is the scalar value-and-derivative version, plain Python that
  numba compiles into the symmetry-function kernels (CPU and CUDA,
  ``numba.extending.register_jitable``) and that also runs as ordinary Python.
"""

from __future__ import annotations

import math

import torch

__all__ = ["polynomial_step", "polynomial_step_derivative", "polynomial_step_fdf", "POLYNOMIAL_ORDERS"]

#: orders n of p_n that exist
POLYNOMIAL_ORDERS = (1, 2, 3, 4)

try:  # numba is a dependency; this keeps the module importable for a reader without it
    from numba.extending import register_jitable as _jitable
except ImportError:  # pragma: no cover
    def _jitable(f):
        return f


def _factored(x: torch.Tensor, order: int) -> torch.Tensor:
    """``(1 - x)^(n+1) q_n(x)``: the same polynomial with relative accuracy up to ``x -> 1``.

    Why: the expanded or Horner forms cancel near ``x = 1`` (terms O(100), result
    O((1 - x)^(n+1))): at x = 0.95, poly2 carried a relative error of 1e-12.
    """
    u = 1.0 - x
    if order == 1:
        return u * u * (1.0 + 2.0 * x)
    if order == 2:
        return u * u * u * (1.0 + x * (3.0 + 6.0 * x))
    if order == 3:
        u2 = u * u
        return u2 * u2 * (1.0 + x * (4.0 + x * (10.0 + 20.0 * x)))
    if order == 4:
        u2 = u * u
        return u2 * u2 * u * (1.0 + x * (5.0 + x * (15.0 + x * (35.0 + 70.0 * x))))
    raise ValueError(f"polynomial order must be 1, 2, 3 or 4, got {order}")


#: p_n'(x) = c_n (x (x - 1))^n
_DERIVATIVE_FACTOR = {1: 6.0, 2: -30.0, 3: 140.0, 4: -630.0}


def polynomial_step_derivative(x: torch.Tensor, order: int) -> torch.Tensor:
    """``p_order'(x) = c_n (x (x - 1))^n`` (factored: no cancellation near ``x = 1``)."""
    return _DERIVATIVE_FACTOR[order] * (x * (x - 1.0)) ** order


class _PolynomialStep(torch.autograd.Function):
    """Factored value and derivative. Why: autograd through the value's operations gives a
    derivative with cancellation (an absolute error ~1e-14); the compiled kernels use the
    factored derivative, and with autograd's the torch reference and the kernels differed by
    2e-12 relative in forces on tiny features. The backward is made of torch operations, so
    higher derivatives work too."""

    @staticmethod
    def forward(ctx, x, order):
        ctx.order = order
        ctx.save_for_backward(x)
        return _factored(x, order)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * polynomial_step_derivative(x, ctx.order), None


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
        Same shape as ``x``; differentiable (derivative in the factored form
        :func:`polynomial_step_derivative`).
    """
    if order not in _DERIVATIVE_FACTOR:
        raise ValueError(f"polynomial order must be 1, 2, 3 or 4, got {order}")
    if torch.jit.is_tracing() or torch.jit.is_scripting() or not (x.requires_grad and torch.is_grad_enabled()):
        return _factored(x, order)  # traced graphs (export) keep plain operations
    return _PolynomialStep.apply(x, order)


@_jitable
def polynomial_step_fdf(x: float, order: int):
    """``(p_order(x), p_order'(x))`` for a scalar ``x`` in ``[0, 1]``, both in factored form
    (relative accuracy up to ``x -> 1``); order outside 1-4 gives (nan, nan)."""
    u = 1.0 - x
    w = -x * u  # x (x - 1)
    if order == 1:
        return u * u * (1.0 + 2.0 * x), 6.0 * w
    if order == 2:
        return u * u * u * (1.0 + x * (3.0 + 6.0 * x)), -30.0 * w * w
    if order == 3:
        u2 = u * u
        return u2 * u2 * (1.0 + x * (4.0 + x * (10.0 + 20.0 * x))), 140.0 * w * w * w
    if order == 4:
        u2 = u * u
        w2 = w * w
        return u2 * u2 * u * (1.0 + x * (5.0 + x * (15.0 + x * (35.0 + 70.0 * x)))), -630.0 * w2 * w2
    return math.nan, math.nan
