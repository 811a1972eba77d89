"""TorchScript-compatible periodic Coulomb operator ``v -> C v`` (Ewald or PME) for the export.

The products of :class:`~hybridpot.electrostatics.PeriodicCoulomb` (``matvec``), written as a
scriptable module: the real-space kernel of the pairs (torch-pme's point-charge short-range part
minus the Gaussian erfc correction, times the smooth switch), the k-space part by an explicit
Ewald sum or by PME with torch-pme's ``MeshInterpolator`` (Lagrange, as ``PMECalculator``) and
``KSpaceFilter`` on the eager operator's mesh (the smallest FFT-friendly size ``2^a 3^b 5^c``
with spacing at most ``mesh_spacing / 2``, not torch-pme's power of two), minus the self term
and the neutralising background, plus the background's Gaussian part. The eager operator
reimplements torch-pme's spreading and interpolation with its own stencils (same weights, other
summation order): the two agree to rounding (tests/test_metatomic.py).

The module is stateful within one call: :meth:`ScriptedPeriodicCoulomb.prepare` stores one
structure's geometry (differentiably) and every :meth:`~ScriptedPeriodicCoulomb.matvec` after it
uses that geometry, as the eager operator does; a CG solve calls ``prepare`` once.

No ``from __future__ import annotations`` here: TorchScript reads the annotations.
"""

import math
from typing import List

import torch
import torchpme
from torch import nn

from .scripted import ewald_kvectors, real_space_kernel

__all__ = ["ScriptedPeriodicCoulomb", "ScriptedKSpacePreconditioner", "fft_size"]


def fft_size(n: int) -> int:
    """Smallest ``m >= n`` of the form ``2^a 3^b 5^c`` (:func:`hybridpot.electrostatics.parameters._fft_size`)."""
    m = max(int(n), 1)
    found = False
    while not found:
        k = m
        for f in [2, 3, 5]:
            while k % f == 0:
                k = k // f
        if k == 1:
            found = True
        else:
            m += 1
    return m


class ScriptedPeriodicCoulomb(nn.Module):
    """``C v`` of one periodic structure with fixed Ewald/PME parameters (Å, 1/Å).

    Parameters
    ----------
    smearing, k_max, real_space_cutoff, switch_width, mesh_spacing : float
        :class:`~hybridpot.electrostatics.EwaldParameters` of the term.
    interpolation_nodes : int
    pme : bool
        PME k-space part (else the explicit Ewald sum).
    k_e : float
        Coulomb constant (eV Å/e^2).
    """

    def __init__(self, smearing: float, k_max: float, real_space_cutoff: float, switch_width: float,
                 mesh_spacing: float, interpolation_nodes: int, pme: bool, k_e: float):
        super().__init__()
        self.smearing, self.k_max = float(smearing), float(k_max)
        self.real_space_cutoff, self.switch_width = float(real_space_cutoff), float(switch_width)
        self.mesh_spacing, self.pme = float(mesh_spacing), bool(pme)
        self.k_e = float(k_e)
        potential = torchpme.CoulombPotential(smearing=float(smearing), prefactor=float(k_e)).to(torch.float64)
        cell = torch.eye(3, dtype=torch.float64)
        ones = torch.ones(3, dtype=torch.long)
        self.kspace_filter = torchpme.lib.KSpaceFilter(cell, ones, kernel=potential, fft_norm="backward",
                                                       ifft_norm="forward")
        self.interpolator = torchpme.lib.MeshInterpolator(cell, ones, int(interpolation_nodes), "Lagrange")
        empty = torch.zeros(0, dtype=torch.float64)
        index = torch.zeros(0, dtype=torch.long)
        self._i, self._j = index, index
        self._kernel, self._sigma2, self._g, self._cos, self._sin = empty, empty, empty, empty, empty
        self._volume = torch.ones((), dtype=torch.float64)
        self.mesh_shape: List[int] = [1, 1, 1]

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """:meth:`matvec` (after :meth:`prepare`)."""
        return self.matvec(v)

    @torch.jit.export
    def prepare(self, positions: torch.Tensor, cell: torch.Tensor, i: torch.Tensor, j: torch.Tensor,
                distances: torch.Tensor, sigma: torch.Tensor) -> None:
        """Store the geometry of a structure: full pair list ``i, j, distances`` within the
        real-space cutoff, Gaussian widths ``sigma [n]`` (Å)."""
        gamma = torch.sqrt(sigma.index_select(0, i) ** 2 + sigma.index_select(0, j) ** 2)
        self._i, self._j = i, j
        self._kernel = real_space_kernel(distances, gamma, self.smearing, self.real_space_cutoff, self.switch_width,
                                         self.k_e)
        self._volume = torch.linalg.det(cell).abs()
        self._sigma2 = sigma**2
        if self.pme:
            lengths = torch.linalg.vector_norm(cell.detach(), dim=1)
            ns = [fft_size(int(math.ceil(2.0 * float(lengths[a]) / self.mesh_spacing + 1.0))) for a in range(3)]
            mesh = torch.tensor(ns, device=cell.device)
            self.mesh_shape = ns
            self.interpolator.update(cell, mesh)
            self.kspace_filter.update(cell, mesh)
            self.interpolator.compute_weights(positions)
        else:
            kvec = ewald_kvectors(cell, self.k_max)
            k_sq = (kvec**2).sum(dim=1)
            masked = torch.where(k_sq == 0, torch.ones_like(k_sq), k_sq)
            self._g = self.k_e * torch.where(k_sq == 0, torch.zeros_like(k_sq),
                                             4 * math.pi * torch.exp(-0.5 * self.smearing**2 * masked) / masked
                                             ) / self._volume
            phase = kvec @ positions.T
            self._cos, self._sin = torch.cos(phase), torch.sin(phase)

    @torch.jit.export
    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``C v`` (V) for ``v`` ``[n, channels]`` (e), differentiable in ``v`` and in the geometry
        given to :meth:`prepare`."""
        out = torch.zeros_like(v).index_add(0, self._i, self._kernel.unsqueeze(1) * v.index_select(0, self._j))
        self_term = self.k_e * (2 / math.pi) ** 0.5 / self.smearing
        background = 2.0 * (self.k_e * math.pi * self.smearing**2) / self._volume
        if self.pme:
            rho = self.interpolator.points_to_mesh(v)
            phi = self.kspace_filter.forward(rho)
            out = out + self.interpolator.mesh_to_points(phi) / self._volume
        else:
            out = out + self._cos.T @ (self._g.unsqueeze(1) * (self._cos @ v))
            out = out + self._sin.T @ (self._g.unsqueeze(1) * (self._sin @ v))
        out = out - self_term * v - background * v.sum(dim=0, keepdim=True)
        s2 = self._sigma2.unsqueeze(1)
        factor = 2.0 * math.pi * self.k_e / self._volume
        return out + factor * (s2 * v.sum(dim=0, keepdim=True) + (s2 * v).sum(dim=0, keepdim=True))


class ScriptedKSpacePreconditioner(nn.Module):
    """The k-space CG preconditioner of the PME operator, scriptable
    (:func:`hybridpot.electrostatics.preconditioner.kspace_preconditioner`: the same mesh,
    cubic B-spline (P3M) stencil, density normalisation and filter; symmetric positive definite
    by construction). :meth:`prepare` once per structure (no gradients), then :meth:`apply`
    ``r -> M^-1 r`` for ``r [n]``.

    Parameters
    ----------
    spacing, density_spacing : float
        ``PRECONDITIONER_SPACING`` (in rms Gaussian widths) and ``PRECONDITIONER_DENSITY_SPACING``
        (in mean atomic spacings): the least coarse-mesh spacing.
    nodes : int
        ``PRECONDITIONER_NODES`` (B-spline order).
    max_filter : float
        ``PRECONDITIONER_MAX_FILTER``.
    k_e : float
        Coulomb constant (eV Å/e^2).
    """

    def __init__(self, spacing: float, density_spacing: float, nodes: int, max_filter: float, k_e: float):
        super().__init__()
        self.spacing, self.density_spacing = float(spacing), float(density_spacing)
        self.nodes, self.max_filter, self.k_e = int(nodes), float(max_filter), float(k_e)
        self.tiny = float(torch.finfo(torch.float64).tiny)  # (float64: the export's dtype)
        cell = torch.eye(3, dtype=torch.float64)
        self.interpolator = torchpme.lib.MeshInterpolator(cell, torch.full((3,), 4, dtype=torch.long), int(nodes),
                                                          "P3M")
        empty = torch.zeros(0, dtype=torch.float64)
        self._scale, self._mesh_scale, self._filter = empty, empty, empty
        self._shape: List[int] = [1, 1, 1]

    @torch.jit.export
    def prepare(self, positions: torch.Tensor, cell: torch.Tensor, diag: torch.Tensor, sigma: torch.Tensor,
                operator_shape: List[int]) -> None:
        """Build the preconditioner of ``C + diag(diag)`` for one structure (the PME operator's
        mesh ``operator_shape`` bounds the coarse mesh from below)."""
        with torch.no_grad():
            cell = cell.detach()
            d = diag.detach()
            sigma2 = float((sigma.detach() ** 2).mean())
            volume = float(torch.linalg.det(cell).abs())
            d_h = float(1.0 / (1.0 / d).mean())
            n = positions.shape[0]
            norms = torch.linalg.vector_norm(cell, dim=1)
            lengths = [float(norms[0]), float(norms[1]), float(norms[2])]
            own = min([lengths[a] / operator_shape[a] for a in range(3)])
            per_atom = (volume / n) ** (1.0 / 3.0)
            spacing = max(self.spacing * math.sqrt(sigma2), self.density_spacing * per_atom, own)
            shape = [fft_size(max(int(math.ceil(lengths[a] / spacing)), self.nodes)) for a in range(3)]
            ns = torch.tensor(shape, device=cell.device)
            kvec = torchpme.lib.generate_kvectors_for_mesh(cell, ns)
            k2 = (kvec**2).sum(dim=-1)
            safe = torch.where(k2 == 0, torch.ones_like(k2), k2)
            lam = (n / volume) * 4.0 * math.pi * self.k_e * torch.exp(-k2 * sigma2) / (safe * d_h)
            fx = torch.sinc(torch.fft.fftfreq(shape[0], device=cell.device)).to(k2.dtype) ** (2 * self.nodes)
            fy = torch.sinc(torch.fft.fftfreq(shape[1], device=cell.device)).to(k2.dtype) ** (2 * self.nodes)
            fz = torch.sinc(torch.fft.rfftfreq(shape[2], device=cell.device)).to(k2.dtype) ** (2 * self.nodes)
            transfer = fx[:, None, None] * fy[None, :, None] * fz[None, None, :]
            g = torch.where(k2 == 0, torch.zeros_like(k2), lam / (1.0 + lam) / transfer)
            self._filter = g.clamp(max=self.max_filter)
            self.interpolator.update(cell, ns)
            self.interpolator.compute_weights(positions.detach())
            density = self.interpolator.points_to_mesh((1.0 / d).unsqueeze(1))
            self._mesh_scale = torch.where(density > 0, torch.rsqrt(density.clamp(min=self.tiny)),
                                           torch.zeros_like(density))
            self._scale = 1.0 / torch.sqrt(d)
            self._shape = shape

    @torch.jit.export
    def apply(self, r: torch.Tensor) -> torch.Tensor:
        """``M^-1 r`` (no gradients) for ``r [n]``."""
        v = self._scale * r
        mesh = self.interpolator.points_to_mesh((self._scale * v).unsqueeze(1)) * self._mesh_scale
        spectrum = torch.fft.rfftn(mesh, dim=[1, 2, 3]) * self._filter
        smooth = torch.fft.irfftn(spectrum, s=self._shape, dim=[1, 2, 3]) * self._mesh_scale
        return self._scale * (v - self._scale * self.interpolator.mesh_to_points(smooth).squeeze(1))

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """:meth:`apply`."""
        return self.apply(r)
