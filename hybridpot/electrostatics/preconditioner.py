"""The k-space CG preconditioner of the periodic Coulomb operator (symmetric positive definite by
construction) and the coarse-mesh operator used for the first CG stage."""

from __future__ import annotations

import functools
import math
from typing import Tuple

import torch

from . import _torchpme
from .kernels import COULOMB_CONSTANT
from .mesh import _MeshConvolution, _interpolation_stencil, _spread, _unsort
from .parameters import _fft_size

__all__ = ["kspace_preconditioner", "coarse_matvec", "PRECONDITIONER_SPACING", "PRECONDITIONER_DENSITY_SPACING",
           "PRECONDITIONER_NODES", "PRECONDITIONER_MAX_FILTER"]

#: mesh spacing of the coarse CG operator (and least spacing of the preconditioner), in units of
#: the rms Gaussian width
PRECONDITIONER_SPACING = 1.0
#: least mesh spacing of the CG preconditioner in units of the mean atomic spacing (V/n)^(1/3)
PRECONDITIONER_DENSITY_SPACING = 0.75
#: interpolation nodes of that projection (4: cubic B-spline for the preconditioner, cubic
#: Lagrange for the coarse operator)
PRECONDITIONER_NODES = 4
#: largest value of the preconditioner's k-space filter g(k) < 1: its smallest eigenvalue is
#: at least 1 - this (relative to Jacobi), far above float32 rounding of the filter products
PRECONDITIONER_MAX_FILTER = 1.0 - 1e-4


def kspace_preconditioner(op, diag: torch.Tensor):
    """Approximate inverse of ``C + diag(diag)`` for CG, symmetric positive definite by
    construction (no gradients). Returns ``r -> M^-1 r`` for ``r`` ``[n]``.

    Model of the operator: ``D^-1/2 (C + D) D^-1/2 ~ I + S^T K S`` with ``D = diag(diag)``,
    ``S = W D^-1/2`` (``W`` [mesh, n]: spreading of the atoms onto a coarse mesh with cubic
    B-spline weights, all >= 0) and ``K`` the smooth (long-wavelength) Coulomb kernel
    ``4 pi k_e exp(-k^2 sigma_mean^2)/k^2`` on that mesh. Its exact inverse is
    ``I - S^T (K^-1 + S S^T)^-1 S``. The preconditioner replaces ``S S^T`` by its row sums
    ``Lambda = W (1/diag)`` (the local density of ``1/diag`` at each mesh point) and the
    mesh inverse by a k-space filter::

        M^-1 = D^-1/2 (I - S^T Lambda^-1/2 G Lambda^-1/2 S) D^-1/2,
        g(k) = lam/(1 + lam) < 1,   lam(k) = rho 4 pi k_e exp(-k^2 sigma_mean^2) / (k^2 d_h)

    (``rho = n/V``, ``d_h`` the harmonic mean of ``diag``, ``g(0) = 0``; for a uniform density
    ``Lambda`` is constant and this is the classic smooth-mode inverse). Why it is SPD for
    every configuration: ``S S^T`` has non-negative entries, so by Gershgorin
    ``S S^T <= diag(row sums) = Lambda``; hence ``Lambda^-1/2 S S^T Lambda^-1/2 <= I``
    (pseudo-inverse where ``Lambda = 0``: those rows of ``S`` are zero), the middle term has
    eigenvalues in ``[0, max g]`` and ``M^-1`` has eigenvalues of ``D^-1/2 (I - ...) D^-1/2``
    with ``I - ... >= (1 - max g) I > 0``. (The earlier form used one global density
    ``n / mesh`` and Lagrange weights, which can be negative: on disordered boxes, where
    atoms crowd, it was indefinite and CG fell back to Jacobi.) Cost: one spread, two FFTs
    and one interpolation on the coarse mesh, a fraction of a PME product.
    """
    if op.method != "pme":
        raise ValueError("the k-space preconditioner needs the PME operator")
    with torch.no_grad():
        cell = op.cell.detach()
        d = diag.detach()
        sigma_sq = torch.zeros_like(d) if op.sigma is None else op.sigma.detach() ** 2
        # the three scalars in one host read (one GPU sync)
        sigma2, volume, d_h = torch.stack([sigma_sq.mean(), op.volume.detach().to(d.dtype),
                                          1.0 / (1.0 / d).mean()]).tolist()
        shape = _preconditioner_shape(op, sigma2, volume)
        op._coarse_shape = _coarse_operator_shape(op, sigma2)  # for coarse_matvec
        flat, weights = _coarse_stencil(op, shape, "P3M")
        nx, ny, nz = shape
        dtype = op.kspace_dtype or d.dtype
        # (torch-pme wants the mesh sizes on the cell's device: one GPU sync per preconditioner)
        kvec = _torchpme.mesh_kvectors(cell, (nx, ny, nz))
        k2 = (kvec**2).sum(dim=-1)
        n = op.positions.shape[0]
        safe = torch.where(k2 == 0, torch.ones_like(k2), k2)
        lam = (n / volume) * 4.0 * math.pi * COULOMB_CONSTANT * torch.exp(-k2 * sigma2) / (safe * d_h)
        # spreading and interpolating a plane wave with cubic B-splines each multiply its smooth
        # part by prod_a sinc^4(m_a / n_a) (m_a: mesh frequency): compensated, up to the bound
        freqs = [torch.fft.fftfreq(nx, device=k2.device), torch.fft.fftfreq(ny, device=k2.device),
                 torch.fft.rfftfreq(nz, device=k2.device)]
        fx, fy, fz = (torch.sinc(f).to(k2.dtype) ** (2 * PRECONDITIONER_NODES) for f in freqs)
        transfer = fx[:, None, None] * fy[None, :, None] * fz[None, None, :]
        g = torch.where(k2 == 0, torch.zeros_like(k2), lam / (1.0 + lam) / transfer)
        g = g.clamp(max=PRECONDITIONER_MAX_FILTER)
        order = op._order
        scale = 1.0 / torch.sqrt(d)
        scale_sorted = scale.index_select(0, order)
        inv_d_sorted = (1.0 / d).index_select(0, order)
        density = _spread(flat, weights.to(d.dtype), inv_d_sorted.unsqueeze(1), nx * ny * nz).squeeze(1)
        # Lambda^-1/2 where Lambda > 0, 0 elsewhere (mesh points no atom reaches)
        mesh_scale = torch.where(density > 0, torch.rsqrt(density.clamp(min=torch.finfo(d.dtype).tiny)),
                                 torch.zeros_like(density))
        smooth_part = _MeshConvolution(flat, weights, shape, g, "backward", dtype, mesh_scale=mesh_scale)

    def apply(r: torch.Tensor) -> torch.Tensor:
        v = scale * r  # D^-1/2 r
        smooth = smooth_part((scale_sorted * v.index_select(0, order)))  # S^T Lambda^-1/2 G Lambda^-1/2 S v
        return scale * (v - scale * _unsort(smooth.to(v.dtype), order).squeeze(1))

    return apply


def coarse_matvec(op):
    """``v -> C' v`` (no gradients, ``v`` ``[n]``): this operator with its k-space part on the
    coarse mesh of :meth:`kspace_preconditioner` (built first), 4-point Lagrange
    interpolation, same smearing, real-space part and corrections.

    About 4x cheaper than :meth:`matvec` and accurate to a few 1e-3 (relative), it gives CG a
    cheap first approximation: :class:`~hybridpot.qeq.ChargeEquilibration` solves with it
    to ``coarse_tol`` before the exact operator takes over, so fewer exact products are
    needed for the same final tolerance.
    """
    if op._coarse_shape is None:
        raise ValueError("coarse_matvec needs the mesh of kspace_preconditioner: build that first")
    if op._coarse_convolution is None:  # once per operator (forward and adjoint solves)
        shape = op._coarse_shape
        with torch.no_grad():
            flat, weights = _coarse_stencil(op, shape, "Lagrange")
            kfilter = _torchpme.kspace_filter_on_mesh(op.cell.detach(), shape, op.potential)
            op._coarse_convolution = _MeshConvolution(flat, weights, shape, kfilter, "forward",
                                                      op.kspace_dtype or op.positions.dtype)
    return functools.partial(op.matvec, coarse=True)


def _preconditioner_shape(op, sigma2: float, volume: float) -> Tuple[int, int, int]:
    """Mesh of the preconditioner's smooth-mode projection.

    The preconditioner only has to capture the modes where ``lam(k)`` of
    :meth:`kspace_preconditioner` is large (``k`` up to ~1/Å in molten NaCl), and its
    density normalisation ``Lambda`` must be smooth on the mesh: with cubic B-splines on a
    mesh finer than the atoms (spacing 0.9 Å in molten NaCl) ``Lambda`` is rough and the
    smooth modes lose most of their weight (measured: ``mean(sqrt Lambda)^2 / mean(Lambda)``
    = 0.36 at 0.9 Å, 0.90 at 1.6 Å, 0.96 at 2.0 Å on a 1728-atom melt; CG iterations
    to 1e-10 there: 40, 27, 26, 32 at 0.45, 0.65, 0.8, 1.0 (V/n)^(1/3)). Spacing:
    ``max(PRECONDITIONER_SPACING sigma_rms, PRECONDITIONER_DENSITY_SPACING (V/n)^(1/3))``,
    never finer than the operator's mesh.
    """
    lengths = op.cell_lengths
    own_spacing = min(length / n for length, n in zip(lengths, op.mesh_shape))
    per_atom = (volume / op.positions.shape[0]) ** (1.0 / 3.0)
    spacing = max(PRECONDITIONER_SPACING * math.sqrt(sigma2), PRECONDITIONER_DENSITY_SPACING * per_atom,
                  own_spacing)
    return tuple(_fft_size(max(int(math.ceil(length / spacing)), PRECONDITIONER_NODES)) for length in lengths)


def _coarse_operator_shape(op, sigma2: float) -> Tuple[int, int, int]:
    """Mesh of the coarse operator of :meth:`coarse_matvec`: spacing
    ``PRECONDITIONER_SPACING * sigma_rms`` with 4-point Lagrange interpolation (64 stencil
    points per atom instead of the operator's p^3 on a finer mesh, accurate to a few 1e-3),
    never finer than the operator's mesh. Point charges (no widths): the operator's mesh.
    """
    lengths = op.cell_lengths
    if sigma2 <= 0.0:
        return tuple(op.mesh_shape)
    own_spacing = min(length / n for length, n in zip(lengths, op.mesh_shape))
    spacing = max(PRECONDITIONER_SPACING * math.sqrt(sigma2), own_spacing)
    return tuple(_fft_size(max(int(math.ceil(length / spacing)), PRECONDITIONER_NODES)) for length in lengths)


def _coarse_stencil(op, shape, method: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(flat, weights)`` of a ``PRECONDITIONER_NODES``-point stencil on the mesh ``shape``
    (no gradients; rows in the operator's spatial order ``op._order``): ``"P3M"``
    (B-spline, non-negative weights: the preconditioner) or ``"Lagrange"`` (the coarse operator)."""
    interpolator = _torchpme.mesh_interpolator(op.cell.detach(), shape, PRECONDITIONER_NODES, method)
    return _interpolation_stencil(interpolator, op.positions.detach().index_select(0, op._order), shape)
