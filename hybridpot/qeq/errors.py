"""Errors and warnings of the charge models."""

from __future__ import annotations

__all__ = ["QEqConvergenceError", "TotalChargeWarning", "IndefinitePreconditionerError",
           "PreconditionerFallbackWarning", "TOTAL_CHARGE_MARGIN"]


class QEqConvergenceError(RuntimeError):
    """Conjugate gradients did not reach the requested tolerance."""


class TotalChargeWarning(UserWarning):
    """A structure's total charge lies far outside the total charges of the training data
    (:attr:`ChargeEquilibration.training_charge_range`): the charges are an extrapolation."""


#: how far (e) a total charge may lie outside the training range before a TotalChargeWarning
TOTAL_CHARGE_MARGIN = 1.0


class IndefinitePreconditionerError(ValueError):
    """:func:`projected_cg` found its preconditioner not positive definite (``r.z <= 0`` or not
    finite). :class:`ChargeEquilibration` catches it and solves again with Jacobi (with a
    :class:`PreconditionerFallbackWarning`); direct callers of :func:`projected_cg` see it."""


_IndefinitePreconditioner = IndefinitePreconditionerError  # (former private name)


class PreconditionerFallbackWarning(RuntimeWarning):
    """The k-space CG preconditioner failed (``r.z <= 0`` or not finite) and the solve was redone
    with Jacobi. The k-space preconditioner is positive definite by construction
    (:meth:`~hybridpot.electrostatics.PeriodicCoulomb.kspace_preconditioner`), so this points
    to non-finite inputs or rounding trouble; the result is still exact to ``cg_tol``, only
    slower. Recorded in :attr:`ChargeEquilibration.last_diagnostics` as well."""
