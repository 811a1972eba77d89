"""Coulomb energy of Gaussian (or point) charges: exact direct sums and Ewald/PME.

Energy (eV), charges ``q`` (e), widths ``sigma`` (Å), ``gamma_ij = sqrt(sigma_i^2 + sigma_j^2)``::

    E_elec = 1/2 sum_{i != j, images} k_e q_i q_j erf(r_ij / (sqrt(2) gamma_ij)) / r_ij

(point charges: ``erf -> 1``). No self energy (it belongs to the charge model). The
per-atom potential is ``V_i = dE/dq_i = sum_j C_ij q_j`` (V = eV/e) and the per-atom energy
is ``q_i V_i / 2``. ``k_e`` is torch-pme's ``prefactors.eV_A``.

* Finite structures: exact direct sum over all pairs (no cutoff), vectorised over the
  batch.
* Periodic structures: point-charge Ewald or PME from torch-pme, minus the short-range
  correction ``k_e q_i q_j erfc(r_ij/(sqrt(2) gamma_ij))/r_ij`` on the neighbour list, plus
  the Gaussian part of the neutralising background (below).

Net charge in a periodic cell: the energy is that of the charges plus a uniform
neutralising background (the ``k = 0`` Fourier component removed). For point charges
this is torch-pme's ``-pi k_e s^2 Q^2 / V`` term (``s``: Ewald smearing, cancelled by the
real-space sum); for Gaussian charges the ``k = 0`` part of the erfc correction,
``(pi k_e / V) sum_ij q_i q_j gamma_ij^2 = (2 pi k_e / V) Q sum_i q_i sigma_i^2``, is added
back so the result does not depend on ``s`` and equals the Fourier-space energy of the
Gaussian charges with a background. Both vanish for neutral cells.

Parameters for a requested relative ``accuracy`` (not torch-pme's tuners, whose error
estimates were measured to be optimistic by 3-300x; the rules below were calibrated
against tight Ewald references and are checked in tests/test_electrostatics.py):

* smearing ``s`` from the real-space cutoff ``r_c``: ``erfc(r_c / (sqrt(2) s)) = 0.1 accuracy``;
* Ewald: all k-vectors with ``|k| <= k_max``, ``exp(-k_max^2 s^2 / 2) = 0.1 accuracy``;
* PME: ``interpolation_nodes`` (default 7) and a mesh so fine that the measured
  interpolation error law ``err ~ e0 (h/(0.137 s))^p`` gives ``0.05 accuracy`` for the
  potential (PME forces are several times less accurate than potentials; with this
  margin they stay below ``accuracy`` relative to the largest force).

n2p2 screening (``screening=(r_inner, r_outer)``, n2p2 keyword ``screen_electrostatics``):
the pair interaction in the *electrostatic energy* is multiplied by
``f_s(r) = 0 (r <= r_inner), 1 (r >= r_outer), 1 - c(x)`` in between, with
``x = (r - r_inner)/(r_outer - r_inner)`` and n2p2's default core function POLY2,
``c(x) = ((15 - 6x) x - 10) x^3 + 1``, i.e. ``f_s = x^3 (10 - 15 x + 6 x^2)``. In n2p2
(Structure::calculateElectrostaticEnergy + calculateScreeningEnergy) the charges come from
the *unscreened* QEq matrix; the electrostatic energy is ``1/2 q^T (A - diag J) q`` (the
unscreened Gaussian Coulomb energy incl. self terms) plus the screening energy
``-sum_i q_i^2/(2 sigma_i sqrt(pi)) + sum_{pairs r < r_outer} q_i q_j erf(r/(sqrt2 gamma))/r (f_s - 1)``,
which is exactly the screened ``E_elec`` above with ``erf(..)/r -> erf(..) f_s(r)/r``.
Here the screening therefore applies to :class:`Electrostatics` only, never to the QEq
matrix of :class:`~hybridpot.qeq.ChargeEquilibration`. (n2p2's periodic loop counts a pair
of an atom with its own periodic image inside ``r_outer`` twice; this only matters for
cells shorter than ``r_outer`` and is not reproduced: each pair is counted once.)
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, replace
from typing import Optional, Tuple

import torch
import torchpme
from scipy.special import erfcinv
from torch import nn

from .neighbors import Graph
from .system import AtomicSystem

__all__ = [
    "Electrostatics",
    "COULOMB_CONSTANT",
    "gaussian_coulomb_kernel",
    "erfc_coulomb_kernel",
    "screening_function",
    "SCREENING_CORES",
    "EwaldParameters",
    "PeriodicCoulomb",
    "finite_pairs",
    "direct_coulomb_matrix",
    "cutoff_switch",
    "minimum_real_space_cutoff",
    "N2p2EwaldTruncation",
]

#: Coulomb constant k_e = 1/(4 pi eps0) in eV Å / e^2 (torch-pme's prefactor).
COULOMB_CONSTANT = float(torchpme.prefactors.eV_A)

_SQRT2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)

#: measured PME interpolation error (potential, relative) at actual mesh spacing 0.137 s,
#: and its exponent in the mesh spacing, per number of interpolation nodes.
_PME_ERROR_LAW = {4: (5.9e-5, 4.2), 5: (3.2e-6, 5.4), 6: (7.5e-7, 6.2), 7: (5.3e-8, 6.7)}


# ---------------------------------------------------------------------------- kernels
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
    from .descriptors import compact_core

    kinds = {"p1": 1, "p3": 3, "p4": 4, "e": 0}
    if core not in kinds:
        raise ValueError(f"unknown screening core function {core!r}; choose one of {SCREENING_CORES}")
    # the core is evaluated on [0, 1): at x = 1 it is 0 for every kind
    inside = x < 1.0
    value = compact_core(torch.where(inside, x, torch.zeros_like(x)), kinds[core])
    return torch.where(inside, 1.0 - value, torch.ones_like(x))


# ---------------------------------------------------------------------------- finite systems
def finite_pairs(ptr: torch.Tensor, batch: torch.Tensor, atom_mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """All pairs ``i < j`` inside the same structure, for atoms with ``atom_mask`` set.

    Vectorised over the batch (no loop over structures). Returns global indices ``i, j``.
    """
    n = batch.shape[0]
    device = batch.device
    idx = torch.arange(n, device=device)
    counts = (ptr[batch + 1] - idx - 1) * atom_mask.to(torch.long)
    i = torch.repeat_interleave(idx, counts)
    start = torch.cumsum(counts, 0) - counts
    j = i + 1 + (torch.arange(i.shape[0], device=device) - start[i])
    return i, j


def direct_coulomb_matrix(positions: torch.Tensor, sigma: Optional[torch.Tensor]) -> torch.Tensor:
    """Dense Coulomb matrix ``C_ij = k_e erf(r_ij/(sqrt2 gamma_ij))/r_ij`` (``C_ii = 0``) of one finite structure."""
    n = positions.shape[0]
    iu, ju = torch.triu_indices(n, n, 1, device=positions.device)
    r = (positions[ju] - positions[iu]).norm(dim=1)
    gamma = None if sigma is None else torch.sqrt(sigma[iu] ** 2 + sigma[ju] ** 2)
    k = COULOMB_CONSTANT * gaussian_coulomb_kernel(r, gamma)
    mat = positions.new_zeros(n, n)
    mat = mat.index_put((iu, ju), k).index_put((ju, iu), k)
    return mat


# ---------------------------------------------------------------------------- periodic systems
def _csr(indices: torch.Tensor, values: torch.Tensor, size) -> torch.Tensor:
    """A sparse CSR matrix from COO indices ``[2, nnz]`` (repeated entries add up in products).

    Built by one stable sort of the rows (no coalescing: 2.7x faster to build at 4e6 entries)
    with 32-bit indices when they fit (the sparse kernels would convert 64-bit ones per call).
    """
    rows, cols = indices[0], indices[1]
    n_rows = int(size[0])
    order = torch.argsort(rows.to(_sparse_index_dtype(rows.shape[0], *size)), stable=True)
    crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=rows.device)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n_rows), 0)
    return _sparse_csr(crow, cols.index_select(0, order), values.index_select(0, order), size)


def _sparse_index_dtype(*sizes: int) -> torch.dtype:
    """32-bit sparse indices when every size fits (the sparse kernels, e.g. MKL, would convert
    64-bit ones on every product), else 64-bit."""
    return torch.int32 if max(int(k) for k in sizes) < 2**31 - 1 else torch.int64


def _sparse_csr(crow: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, size) -> torch.Tensor:
    """``torch.sparse_csr_tensor`` with :func:`_sparse_index_dtype` indices, without torch's beta warnings."""
    index_dtype = _sparse_index_dtype(values.shape[0], *size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow.to(index_dtype), cols.to(index_dtype), values, size)


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


def cutoff_switch(r: torch.Tensor, cutoff: float, width: float) -> torch.Tensor:
    """Smooth step ``S(r)``: 1 for ``r <= cutoff - width``, 0 for ``r >= cutoff``, in between
    ``1 - x^3 (10 - 15 x + 6 x^2)``, ``x = (r - cutoff + width) / width`` (C^2: value, slope and
    curvature vanish at the cutoff). ``width = 0``: the hard step ``r < cutoff``."""
    if width <= 0.0:
        return (r < cutoff).to(r.dtype)
    x = ((r - (cutoff - width)) / width).clamp(0.0, 1.0)
    return 1.0 - x * x * x * (10.0 + x * (-15.0 + 6.0 * x))


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


def _interpolation_stencil(interpolator, positions: torch.Tensor, mesh_shape) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(flat mesh indices [n, p^3], weights [n, p^3])`` of every atom's ``p^3`` interpolation
    stencil on a torch-pme ``MeshInterpolator``'s mesh (its ``update`` called with the cell and
    mesh sizes), differentiable in positions and cell like the 1D weights it is built from.

    The same stencil as torch-pme 0.5.0's ``compute_weights`` (same nearest mesh point, shifts
    and Lagrange weights, meshgrid "ij" order) without its three ``[p^3, n]`` 64-bit index
    arrays: one flat index per point, 32-bit when the mesh allows. Atom-major: an atom's p^3
    points are contiguous (runs of p consecutive mesh points along z), which makes the gathers
    and scatters cache-friendly (2x faster than point-major on CPU).
    """
    p = interpolator.interpolation_nodes
    nx, ny, nz = mesh_shape
    relative = interpolator.ns_mesh * (positions @ interpolator.inverse_cell)  # mesh units, [n, 3]
    if p % 2 == 0:  # even Lagrange: the midpoint of the two nearest mesh points
        nearest = torch.floor(relative.detach())
        offsets = relative - (nearest + 0.5)
    else:  # odd: the nearest mesh point
        nearest = torch.round(relative.detach())
        offsets = relative - nearest
    w = interpolator._compute_1d_weights(offsets).permute(1, 0, 2).contiguous()  # [n, p, 3]
    shifts = torch.arange(1 - (p + 1) // 2, 1 + p // 2, device=positions.device)
    index = (nearest.long().unsqueeze(1) + shifts[None, :, None]) % interpolator.ns_mesh  # [n, p, 3]
    index = index.to(_sparse_index_dtype(nx * ny * nz))
    ix, iy, iz = index[:, :, 0], index[:, :, 1], index[:, :, 2]
    flat = (ix[:, :, None, None] * ny + iy[:, None, :, None]) * nz + iz[:, None, None, :]
    weights = w[:, :, None, None, 0] * w[:, None, :, None, 1] * w[:, None, None, :, 2]
    n = positions.shape[0]
    return flat.reshape(n, p**3).contiguous(), weights.reshape(n, p**3).contiguous()


def _spatial_order(interpolator, positions: torch.Tensor) -> torch.Tensor:
    """Permutation of the atoms sorted by their mesh cell (x, then y, then z): atoms close in
    this order write to and read from nearby mesh points, so spreading and interpolation stay in
    cache (measured at 10^5 atoms in random order: 2x faster spreading, 4x faster interpolation)."""
    with torch.no_grad():
        ns = interpolator.ns_mesh
        cell = torch.floor(ns * (positions.detach() @ interpolator.inverse_cell)).long() % ns
        return torch.argsort((cell[:, 0] * ns[1] + cell[:, 1]) * ns[2] + cell[:, 2])


def _unsort(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Rows of ``values`` (in the order ``order``) back in the original atom order (differentiable)."""
    return torch.zeros_like(values).index_copy(0, order, values)


def _interpolation_matrix(flat: torch.Tensor, weights: torch.Tensor, mesh_size: int) -> torch.Tensor:
    """Sparse CSR matrix ``W [n, mesh_size]`` of an atom-major stencil (no gradient): ``W @ phi``
    interpolates mesh values to the atoms in one sparse product (MKL / cuSPARSE), several times
    faster than a gather + weighted sum; rows need no sorting, so it is built at no cost."""
    n, points = flat.shape
    crow = torch.arange(0, n * points + 1, points, device=flat.device)
    return _sparse_csr(crow, flat.reshape(-1), weights.detach().reshape(-1), (n, mesh_size))


def _spread(flat: torch.Tensor, weights: torch.Tensor, v: torch.Tensor, mesh_size: int) -> torch.Tensor:
    """Mesh ``[mesh_size, channels]`` of ``v [n, channels]`` spread with an atom-major stencil.

    (A cached transposed CSR matrix was measured: 2x faster per product at 10^5 atoms, but its
    build, a sort of the n p^3 indices, costs as much as ~20 products: no net gain.)"""
    if v.shape[1] == 1:  # 1-D index_add: faster than the 2-D (scatter) form
        return v.new_zeros(mesh_size).index_add_(0, flat.reshape(-1), (weights * v).reshape(-1)).unsqueeze(1)
    values = (weights.unsqueeze(2) * v.unsqueeze(1)).reshape(-1, v.shape[1])
    # (the 2-D index_add with 32-bit indices takes a slow path on the CPU: 20x slower than 64-bit)
    return v.new_zeros(mesh_size, v.shape[1]).index_add_(0, flat.reshape(-1).long(), values)


class _MeshConvolution:
    """``v [n] -> [n, 1]``: spread ``v`` with a stencil, multiply the mesh's spectrum by a real
    filter, transform back and interpolate to the atoms (CSR matrix), all in ``dtype`` and in
    the stencil's atom order; without autograd (CG iterations), into arrays allocated once.

    A new multi-MB array per product (the ``n p^3`` weighted values, the mesh, its spectrum, the
    potential) costs more in page faults than the arithmetic on it (measured 2x for the weighted
    values at 10^5 atoms), so every product of an operator reuses the same ones.
    """

    def __init__(self, flat: torch.Tensor, weights: torch.Tensor, mesh_shape, kfilter: torch.Tensor, norm: str,
                 dtype: torch.dtype, mesh_scale: Optional[torch.Tensor] = None):
        self.flat, self.weights, self.mesh_shape = flat.reshape(-1), weights.detach().to(dtype), tuple(mesh_shape)
        self.kfilter, self.norm = kfilter.detach().to(dtype).unsqueeze(-1), norm  # real, [nx, ny, nz // 2 + 1, 1]
        # optional diagonal mesh scaling applied after spreading and before interpolating
        # (S^T F^-1 h F S with S = scale * spread: still symmetric)
        self.mesh_scale = None if mesh_scale is None else mesh_scale.detach().to(dtype).reshape(-1)
        nx, ny, nz = self.mesh_shape
        self.interpolation = _interpolation_matrix(flat, self.weights, nx * ny * nz)
        self.values = torch.empty_like(self.weights)
        self.mesh = torch.empty(nx * ny * nz, dtype=dtype, device=flat.device)
        self.spectrum = torch.empty((nx, ny, nz // 2 + 1), dtype=torch.complex128 if dtype == torch.float64
                                    else torch.complex64, device=flat.device)
        self.potential = torch.empty(self.mesh_shape, dtype=dtype, device=flat.device)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """Values at the atoms ``[n, 1]`` (``dtype`` of the convolution) of ``v [n]`` (any float dtype)."""
        torch.mul(self.weights, v.to(self.weights.dtype).unsqueeze(1), out=self.values)
        self.mesh.zero_().index_add_(0, self.flat, self.values.reshape(-1))
        if self.mesh_scale is not None:
            self.mesh.mul_(self.mesh_scale)
        torch.fft.rfftn(self.mesh.reshape(self.mesh_shape), out=self.spectrum)
        torch.view_as_real(self.spectrum).mul_(self.kfilter)  # in place, as a real product
        torch.fft.irfftn(self.spectrum, s=self.mesh_shape, norm=self.norm, out=self.potential)
        if self.mesh_scale is not None:
            self.potential.reshape(-1).mul_(self.mesh_scale)
        return self.interpolation @ self.potential.reshape(-1, 1)


def ewald_kvectors(cell: torch.Tensor, k_max: float) -> torch.Tensor:
    """All reciprocal vectors ``0 < |k| <= k_max`` of ``cell`` (rows = lattice vectors), ``[K, 3]``.

    Differentiable with respect to ``cell`` (the integer set is chosen without gradients).
    """
    recip = 2.0 * math.pi * torch.linalg.inv(cell).transpose(0, 1)  # rows b_a, a_a . b_b = 2 pi delta
    lengths = cell.detach().norm(dim=1)
    n_max = [int(math.floor(k_max * float(length) / (2.0 * math.pi))) for length in lengths]
    ranges = [torch.arange(-n, n + 1, device=cell.device, dtype=cell.dtype) for n in n_max]
    m = torch.cartesian_prod(*ranges).reshape(-1, 3)
    k = m @ recip.detach()
    keep = (k.norm(dim=1) <= k_max) & (m.abs().sum(dim=1) > 0)
    return m[keep] @ recip


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


class PeriodicCoulomb:
    """Coulomb operator ``v -> C v`` of one periodic structure (Gaussian or point charges).

    ``C`` is the potential matrix of the module docstring (``C_ii`` holds the periodic
    images of atom i only, no self energy)::

        C v = [point-charge Ewald/PME potential of v, torch-pme]
              - sum_pairs k_e erfc(r/(sqrt2 gamma))/r v_j  + (2 pi k_e / V)(sigma_i^2 sum_j v_j + sum_j sigma_j^2 v_j)

    Everything that depends only on the geometry (real-space kernels, Ewald structure
    factors, PME mesh weights and k-space filter) is computed once at construction
    (differentiably in positions, cell, distances and widths) and reused by every product,
    e.g. all iterations of a CG solve.

    Parameters
    ----------
    positions : [n, 3] Å;  cell : [3, 3] Å (rows lattice vectors)
    pair_i, pair_j, distances : half list (each pair once) of all pairs closer than the
        real-space cutoff, local indices, ``[M]``, distances Å.
    sigma : [n] Å or None (point charges)
    params : EwaldParameters
    method : "ewald" (torch-pme's Coulomb kernels, explicit k-sum over ``|k| <= k_max``)
        or "pme" (torch-pme's PMECalculator k-space part)
    kspace_dtype : torch.dtype or None
        Precision of the PME k-space part (spreading, FFTs, interpolation) of products
        *without autograd* and of the k-space preconditioner; inputs and results keep their
        dtype. None: the input's dtype. ``torch.float32`` halves the memory traffic and makes
        the FFTs 2-3x faster on CPUs (k-space product 1.9x faster at 10^5 atoms) at a relative
        rounding error of ~1e-7, far below the PME error; meant for CG solves whose tolerance is
        well above it (:class:`~hybridpot.qeq.ChargeEquilibration` ``kspace_precision``).
        Products with autograd always use the operator's own dtype.
    """

    def __init__(self, positions, cell, pair_i, pair_j, distances, sigma, params: EwaldParameters, method: str,
                 kspace_dtype: Optional[torch.dtype] = None):
        if method not in ("ewald", "pme"):
            raise ValueError(f"periodic method must be 'ewald' or 'pme', got {method!r}")
        self.positions, self.cell = positions, cell
        self.pair_i, self.pair_j, self.distances = pair_i, pair_j, distances
        self.sigma, self.params, self.method = sigma, params, method
        self.kspace_dtype = kspace_dtype
        # PME products without autograd (CG): mesh convolutions into preallocated arrays with CSR
        # interpolation (several times faster than a gather + sum), made on first use; the
        # coarse one by coarse_matvec on the mesh that kspace_preconditioner leaves in _coarse_mesh
        self._convolution, self._coarse_convolution, self._coarse_shape = None, None, None
        dtype, device = positions.dtype, positions.device
        self.potential = torchpme.CoulombPotential(smearing=params.smearing, prefactor=COULOMB_CONSTANT).to(
            dtype=dtype, device=device
        )
        self.volume = torch.linalg.det(cell).abs()
        # real space: point-charge short-range part minus the Gaussian erfc correction
        self.real_kernel = self.potential.sr_from_dist(distances)
        if sigma is not None:
            gamma = torch.sqrt(sigma.index_select(0, pair_i) ** 2 + sigma.index_select(0, pair_j) ** 2)
            self.real_kernel = self.real_kernel - COULOMB_CONSTANT * erfc_coulomb_kernel(distances, gamma)
        if params.switch_width > 0.0:  # smooth to zero at the cutoff (EwaldParameters)
            self.real_kernel = self.real_kernel * cutoff_switch(distances, params.real_space_cutoff,
                                                                params.switch_width)
        self.self_term = self.potential.self_contribution()  # k_e sqrt(2/pi) / s
        self.background = 2.0 * self.potential.background_correction() / self.volume  # 2 pi k_e s^2 / V
        self.mesh_shape = None
        if method == "ewald":
            kvec = ewald_kvectors(cell, params.k_max)
            self.g = self.potential.lr_from_k_sq((kvec**2).sum(dim=1)) / self.volume  # [K]
            phase = kvec @ positions.T  # [K, n]
            self.cos, self.sin = torch.cos(phase), torch.sin(phase)
        else:
            self.calculator = torchpme.PMECalculator(
                self.potential, mesh_spacing=params.mesh_spacing, interpolation_nodes=params.interpolation_nodes
            ).to(dtype=dtype, device=device)
            self._setup_mesh()

    def _setup_mesh(self) -> None:
        """Prepare the PME mesh, k-space filter and interpolation weights once per operator.

        torch-pme 0.5.0 recomputes them on every call and rounds the mesh up to a power of
        two; here the mesh has the smallest FFT-friendly size (2^a 3^b 5^c) with spacing
        at most ``mesh_spacing / 2`` (torch-pme's own rule without the power-of-two
        rounding), computed once (differentiably in cell and positions) and reused by every
        product of this operator. Relies on torch-pme 0.5.0's ``MeshInterpolator.update`` and
        ``_compute_1d_weights``, ``KSpaceFilter.update`` and ``PMECalculator._compute_kspace``
        (which, called directly, still gives torch-pme's own result on this mesh: tests).
        """
        calc = self.calculator
        self.cell_lengths = self.cell.detach().norm(dim=1).tolist()  # one host read (GPU: one sync)
        self.mesh_shape = tuple(_fft_size(int(math.ceil(2.0 * length / self.params.mesh_spacing + 1.0)))
                                for length in self.cell_lengths)
        ns = torch.tensor(self.mesh_shape, device=self.cell.device)
        calc.mesh_interpolator.update(self.cell, ns)
        calc.kspace_filter.update(self.cell, ns)
        self._build_stencil()

        def _no_update(*args, **kwargs):
            return None

        calc.mesh_interpolator.update = _no_update
        calc.kspace_filter.update = _no_update

    def matvec(self, v: torch.Tensor, coarse: bool = False) -> torch.Tensor:
        """``C v`` for ``v`` of shape ``[n]`` or ``[n, channels]`` (potentials, V); ``coarse``: the
        approximation of :meth:`coarse_matvec` (PME, one channel, no autograd)."""
        squeeze = v.dim() == 1
        vv = v.unsqueeze(1) if squeeze else v
        out = self._pair_apply(self.real_kernel, vv)
        if self.method == "ewald":
            out = out + self.cos.T @ (self.g.unsqueeze(1) * (self.cos @ vv))
            out = out + self.sin.T @ (self.g.unsqueeze(1) * (self.sin @ vv))
            out = out - self.self_term * vv - self.background * vv.sum(dim=0, keepdim=True)
        else:
            out = out + self._pme_kspace(vv, coarse)
        if self.sigma is not None:
            # k = 0 part of the erfc correction (neutralising background, Gaussian part)
            s2 = (self.sigma**2).unsqueeze(1)
            factor = 2.0 * math.pi * COULOMB_CONSTANT / self.volume
            out = out + factor * (s2 * vv.sum(dim=0, keepdim=True) + (s2 * vv).sum(dim=0, keepdim=True))
        return out.squeeze(1) if squeeze else out

    def _build_stencil(self) -> None:
        """Flat mesh indices ``[n, p^3]`` and interpolation weights ``[n, p^3]`` of every atom's
        ``p^3`` stencil, made once per operator (with autograd when the operator is built with it,
        like torch-pme's 1D weights they come from), rows in the spatial order of
        :func:`_spatial_order` (``self._order``).

        The 3D weights are built as an outer product of torch-pme's 1D weights and the mesh is
        addressed by one flat index, so spreading is a single ``index_add`` and interpolation a
        single ``index_select`` (torch-pme 0.5.0 indexes with three index tensors, several
        times slower on CPU, and spends most of a large PME call there).
        """
        interpolator = self.calculator.mesh_interpolator
        self._order = _spatial_order(interpolator, self.positions)
        self._stencil = _interpolation_stencil(interpolator, self.positions.index_select(0, self._order),
                                               self.mesh_shape)

    def _mesh_stencil(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(flat indices, weights)`` of the stencil; the weights without their graph under no_grad."""
        flat, weights = self._stencil
        return flat, (weights if torch.is_grad_enabled() else weights.detach())

    def _pme_kspace(self, v: torch.Tensor, coarse: bool = False) -> torch.Tensor:
        """PME k-space potential (full, not halved) of ``v`` ``[n, channels]``, differentiable in
        ``v``, positions and cell: spread, k-space filter, interpolate / V, minus the self term and
        the background (torch-pme's ``PMECalculator._compute_kspace`` for a 3D-periodic cell).
        """
        flat, weights = self._mesh_stencil()
        nx, ny, nz = self.mesh_shape
        channels = v.shape[1]
        # torch-pme's KSpaceFilter.forward without its per-call NaN check (a host sync on GPUs)
        kfilter = self.calculator.kspace_filter._kfilter
        sorted_v = v.index_select(0, self._order)
        if channels == 1 and not torch.is_grad_enabled():  # CG iterations: preallocated arrays
            dtype = self.kspace_dtype or v.dtype
            if self._convolution is None or self._convolution.values.dtype != dtype:
                self._convolution = _MeshConvolution(flat, weights, self.mesh_shape, kfilter, "forward", dtype)
            convolution = self._coarse_convolution if coarse else self._convolution
            at_atoms = convolution(sorted_v.squeeze(1)).to(v.dtype)
        else:
            if coarse:
                raise ValueError("the coarse operator has one channel and no autograd")
            rho = _spread(flat, weights, sorted_v, nx * ny * nz)
            rho_hat = torch.fft.rfftn(rho.T.reshape(channels, nx, ny, nz), dim=(1, 2, 3)) * kfilter
            phi = torch.fft.irfftn(rho_hat, s=(nx, ny, nz), dim=(1, 2, 3), norm="forward")
            phi = phi.reshape(-1, 1) if channels == 1 else phi.reshape(channels, -1).T  # [mesh, channels]
            at_atoms = self._interpolate(flat, weights, phi)
        potential = _unsort(at_atoms, self._order)
        return potential / self.volume - self.self_term * v - self.background * v.sum(dim=0, keepdim=True)

    def _interpolate(self, flat: torch.Tensor, weights: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        """``sum_p w_ip phi[flat_ip]`` ``[n, channels]`` for mesh values ``phi [mesh, channels]``."""
        n, points = flat.shape
        if phi.shape[1] == 1:  # 1-D gather (its backward, a 1-D index_add, is fast with 32-bit indices)
            return (phi.squeeze(1).index_select(0, flat.reshape(-1)).reshape(n, points) * weights).sum(1, keepdim=True)
        gathered = phi.index_select(0, flat.reshape(-1).long()).reshape(n, points, phi.shape[1])
        return (gathered * weights.unsqueeze(2)).sum(1)

    def kspace_preconditioner(self, diag: torch.Tensor):
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
        if self.method != "pme":
            raise ValueError("the k-space preconditioner needs the PME operator")
        from torchpme.lib.kvectors import generate_kvectors_for_mesh

        with torch.no_grad():
            cell = self.cell.detach()
            d = diag.detach()
            sigma_sq = torch.zeros_like(d) if self.sigma is None else self.sigma.detach() ** 2
            # the three scalars in one host read (one GPU sync)
            sigma2, volume, d_h = torch.stack([sigma_sq.mean(), self.volume.detach().to(d.dtype),
                                              1.0 / (1.0 / d).mean()]).tolist()
            shape = self._preconditioner_shape(sigma2, volume)
            self._coarse_shape = self._coarse_operator_shape(sigma2)  # for coarse_matvec
            flat, weights = self._coarse_stencil(shape, "P3M")
            nx, ny, nz = shape
            dtype = self.kspace_dtype or d.dtype
            # (torch-pme wants the mesh sizes on the cell's device: one GPU sync per preconditioner)
            kvec = generate_kvectors_for_mesh(cell, torch.tensor([nx, ny, nz], device=cell.device))
            k2 = (kvec**2).sum(dim=-1)
            n = self.positions.shape[0]
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
            order = self._order
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

    def coarse_matvec(self):
        """``v -> C' v`` (no gradients, ``v`` ``[n]``): this operator with its k-space part on the
        coarse mesh of :meth:`kspace_preconditioner` (built first), 4-point Lagrange
        interpolation, same smearing, real-space part and corrections.

        About 4x cheaper than :meth:`matvec` and accurate to a few 1e-3 (relative), it gives CG a
        cheap first approximation: :class:`~hybridpot.qeq.ChargeEquilibration` solves with it
        to ``coarse_tol`` before the exact operator takes over, so fewer exact products are
        needed for the same final tolerance.
        """
        if self._coarse_shape is None:
            raise ValueError("coarse_matvec needs the mesh of kspace_preconditioner: build that first")
        if self._coarse_convolution is None:  # once per operator (forward and adjoint solves)
            shape = self._coarse_shape
            with torch.no_grad():
                flat, weights = self._coarse_stencil(shape, "Lagrange")
                kspace_filter = torchpme.lib.KSpaceFilter(self.cell.detach(), torch.tensor(shape, device=self.cell.device),
                                                          kernel=self.potential, fft_norm="backward", ifft_norm="forward")
                self._coarse_convolution = _MeshConvolution(flat, weights, shape, kspace_filter._kfilter, "forward",
                                                            self.kspace_dtype or self.positions.dtype)
        return functools.partial(self.matvec, coarse=True)

    def _preconditioner_shape(self, sigma2: float, volume: float) -> Tuple[int, int, int]:
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
        lengths = self.cell_lengths
        own_spacing = min(length / n for length, n in zip(lengths, self.mesh_shape))
        per_atom = (volume / self.positions.shape[0]) ** (1.0 / 3.0)
        spacing = max(PRECONDITIONER_SPACING * math.sqrt(sigma2), PRECONDITIONER_DENSITY_SPACING * per_atom,
                      own_spacing)
        return tuple(_fft_size(max(int(math.ceil(length / spacing)), PRECONDITIONER_NODES)) for length in lengths)

    def _coarse_operator_shape(self, sigma2: float) -> Tuple[int, int, int]:
        """Mesh of the coarse operator of :meth:`coarse_matvec`: spacing
        ``PRECONDITIONER_SPACING * sigma_rms`` with 4-point Lagrange interpolation (64 stencil
        points per atom instead of the operator's p^3 on a finer mesh, accurate to a few 1e-3),
        never finer than the operator's mesh. Point charges (no widths): the operator's mesh.
        """
        lengths = self.cell_lengths
        if sigma2 <= 0.0:
            return tuple(self.mesh_shape)
        own_spacing = min(length / n for length, n in zip(lengths, self.mesh_shape))
        spacing = max(PRECONDITIONER_SPACING * math.sqrt(sigma2), own_spacing)
        return tuple(_fft_size(max(int(math.ceil(length / spacing)), PRECONDITIONER_NODES)) for length in lengths)

    def _coarse_stencil(self, shape, method: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(flat, weights)`` of a ``PRECONDITIONER_NODES``-point stencil on the mesh ``shape``
        (no gradients; rows in the operator's spatial order ``self._order``): ``"P3M"``
        (B-spline, non-negative weights: the preconditioner) or ``"Lagrange"`` (the coarse operator)."""
        interpolator = torchpme.lib.MeshInterpolator(
            self.cell.detach(), torch.tensor(shape, device=self.cell.device), PRECONDITIONER_NODES, method
        )
        return _interpolation_stencil(interpolator, self.positions.detach().index_select(0, self._order), shape)

    def _pair_apply(self, kernel: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``sum_j K_ij v_j`` for a symmetric pair kernel given on the half list.

        Without autograd (e.g. inside CG iterations) a cached sparse CSR matrix is used.
        """
        if not torch.is_grad_enabled() and kernel is self.real_kernel and v.device.type == "cpu":
            if getattr(self, "_csr", None) is None:
                n = self.positions.shape[0]
                rows = torch.cat([self.pair_i, self.pair_j])
                cols = torch.cat([self.pair_j, self.pair_i])
                vals = torch.cat([kernel, kernel]).detach()
                self._csr = _csr(torch.stack([rows, cols]), vals, (n, n))
            return self._csr @ v
        out = torch.zeros_like(v)
        out = out.index_add(0, self.pair_i, kernel.unsqueeze(1) * v[self.pair_j])
        out = out.index_add(0, self.pair_j, kernel.unsqueeze(1) * v[self.pair_i])
        return out

    def dense(self) -> torch.Tensor:
        """The matrix ``C`` ``[n, n]`` (Ewald, with this operator's real-space pairs; differentiable)."""
        n = self.positions.shape[0]
        mat = self.positions.new_zeros(n, n)
        mat = mat.index_put((self.pair_i, self.pair_j), self.real_kernel, accumulate=True)
        mat = mat.index_put((self.pair_j, self.pair_i), self.real_kernel, accumulate=True)
        if self.method == "ewald":
            c, s, g = self.cos, self.sin, self.g
        else:
            kvec = ewald_kvectors(self.cell, self.params.k_max)
            g = self.potential.lr_from_k_sq((kvec**2).sum(dim=1)) / self.volume
            phase = kvec @ self.positions.T
            c, s = torch.cos(phase), torch.sin(phase)
        mat = mat + (c.T * g) @ c + (s.T * g) @ s
        mat = mat - torch.diag(self.self_term.expand(n)) - self.background
        if self.sigma is not None:
            s2 = self.sigma**2
            mat = mat + (2.0 * math.pi * COULOMB_CONSTANT / self.volume) * (s2.unsqueeze(0) + s2.unsqueeze(1))
        return mat


# ---------------------------------------------------------------------------- the term
class Electrostatics(nn.Module):
    """Per-atom Coulomb energies of Gaussian (or point) charges.

    Parameters
    ----------
    method : {"auto", "direct", "ewald", "pme"}
        Periodic structures: ``"ewald"`` or ``"pme"`` (``"auto"``: Ewald up to
        ``ewald_max_atoms`` atoms, PME above). Finite structures always use the exact
        direct sum; ``"direct"`` refuses periodic structures.
    accuracy : float
        Target error of periodic structures: potentials relative to the mean |V_i|, forces
        relative to the largest force (measured 0.15-0.5 x accuracy for 1e-3 ... 1e-9 in
        tests/test_electrostatics.py and validation/long_range.py). Finite structures are exact.
    real_space_cutoff : float, optional
        Real-space cutoff of Ewald/PME and range of the erfc correction (Å, default 10).
        It must exceed the range of the Gaussian correction: ``erfc(r_c/(2 sigma_max))``
        must be below ``0.1 accuracy`` (checked at run time).
    screening : (float, float) or (float, float, str), optional
        n2p2 ``screen_electrostatics r_inner r_outer [core]`` (Å); the core function
        (:func:`screening_function`) defaults to ``"p2"``; n2p2 input files default to ``"c"``
        (``hybridpot.from_n2p2`` passes the file's choice). See the module docstring.
    interpolation_nodes : int
        PME interpolation nodes (4-7).
    ewald_max_atoms : int
        Largest structure handled by Ewald under ``method="auto"``.
    """

    def __init__(
        self,
        method: str = "auto",
        accuracy: float = 1e-6,
        real_space_cutoff: Optional[float] = None,
        screening: Optional[Tuple] = None,
        interpolation_nodes: int = 7,
        ewald_max_atoms: int = 300,
    ):
        super().__init__()
        if method not in ("auto", "direct", "ewald", "pme"):
            raise ValueError(f"unknown method {method!r}; choose 'auto', 'direct', 'ewald' or 'pme'")
        self.method = method
        self.real_space_cutoff = 10.0 if real_space_cutoff is None else float(real_space_cutoff)
        self.params = EwaldParameters.for_accuracy(float(accuracy), self.real_space_cutoff, interpolation_nodes)
        self.accuracy = float(accuracy)
        if screening is not None:
            inner, outer = float(screening[0]), float(screening[1])
            core = str(screening[2]) if len(screening) > 2 else "p2"
            if not 0.0 <= inner < outer:
                raise ValueError(f"screening needs 0 <= r_inner < r_outer, got {screening}")
            if core not in SCREENING_CORES:
                raise ValueError(f"unknown screening core function {core!r}; choose one of {SCREENING_CORES}")
            screening = (inner, outer, core)
        self.screening = screening
        self.ewald_max_atoms = int(ewald_max_atoms)

    def __setstate__(self, state):
        if "params" in state:
            state["params"] = _upgraded(state["params"])
        super().__setstate__(state)

    @property
    def cutoff(self) -> float:
        """Neighbour range needed (Å): the real-space cutoff and the screening radius."""
        c = 0.0 if self.method == "direct" else self.real_space_cutoff
        if self.screening is not None:
            c = max(c, self.screening[1])
        return c

    def extra_repr(self) -> str:
        return f"method={self.method!r}, accuracy={self.accuracy:g}, real_space_cutoff={self.real_space_cutoff}, screening={self.screening}"

    # ------------------------------------------------------------------ public
    def forward(self, system: AtomicSystem, graph: Graph, charges: torch.Tensor, sigma: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-atom energies ``q_i V_i / 2`` (eV), ``[N]``."""
        potential = self.potential(system, graph, charges, sigma)
        return 0.5 * charges * potential

    def potential(self, system: AtomicSystem, graph: Graph, charges: torch.Tensor, sigma: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Electrostatic potential at each atom ``V_i = dE_elec/dq_i`` (V = eV/e), ``[N]``."""
        if charges is None:
            raise ValueError("Electrostatics needs charges (a charge model: FixedCharges or ChargeEquilibration)")
        if charges.shape != (system.n_atoms,):
            raise ValueError(f"charges must have shape [{system.n_atoms}], got {list(charges.shape)}")
        if sigma is not None and sigma.shape != (system.n_atoms,):
            raise ValueError(f"sigma must have shape [{system.n_atoms}], got {list(sigma.shape)}")
        if sigma is not None and bool((sigma <= 0).any()):
            raise ValueError("Gaussian widths sigma must be positive")
        charges = charges.to(system.dtype)
        out = torch.zeros_like(charges)
        periodic = system.periodic
        pbc = system.pbc
        mixed = periodic & ~pbc.all(dim=1)
        if bool(mixed.any()):
            raise ValueError("Electrostatics supports fully periodic or finite structures, not mixed boundary conditions")
        finite_atoms = ~periodic[system.batch]
        if bool(finite_atoms.any()):
            out = out + self._finite_potential(system, charges, sigma, finite_atoms)
        for s in torch.nonzero(periodic).flatten().tolist():
            if self.method == "direct":
                raise ValueError("method='direct' cannot treat periodic structures; use 'ewald', 'pme' or 'auto'")
            out = out + self._periodic_potential(system, graph, charges, sigma, s)
        if self.screening is not None:
            out = out + self._screening_potential(system, graph, charges, sigma, finite_atoms)
        return out

    def periodic_method(self, n_atoms: int) -> str:
        if self.method in ("ewald", "pme"):
            return self.method
        return "ewald" if n_atoms <= self.ewald_max_atoms else "pme"

    def periodic_operator(self, system: AtomicSystem, graph: Graph, sigma: Optional[torch.Tensor], s: int,
                          method: Optional[str] = None) -> Tuple[PeriodicCoulomb, int, int]:
        """The :class:`PeriodicCoulomb` operator of structure ``s`` and its atom range."""
        return periodic_operator(system, graph, sigma, s, self.params, method or self.periodic_method(
            int(system.ptr[s + 1] - system.ptr[s])))

    # ------------------------------------------------------------------ internals
    def _finite_potential(self, system, charges, sigma, atom_mask) -> torch.Tensor:
        i, j = finite_pairs(system.ptr, system.batch, atom_mask)
        r = (system.positions[j] - system.positions[i]).norm(dim=1)
        gamma = None if sigma is None else torch.sqrt(sigma[i] ** 2 + sigma[j] ** 2)
        kernel = COULOMB_CONSTANT * gaussian_coulomb_kernel(r, gamma)
        out = torch.zeros_like(charges)
        out = out.index_add(0, i, kernel * charges[j]).index_add(0, j, kernel * charges[i])
        return out

    def _periodic_potential(self, system, graph, charges, sigma, s) -> torch.Tensor:
        op, a, b = self.periodic_operator(system, graph, sigma, s)
        v = op.matvec(charges[a:b])
        return torch.nn.functional.pad(v, (a, system.n_atoms - b))

    def _screening_potential(self, system, graph, charges, sigma, finite_atoms) -> torch.Tensor:
        """Potential of ``(f_s(r) - 1) k_e erf(..)/r`` for all pairs within r_outer."""
        inner, outer, core = self.screening
        # finite structures: from the all-pairs list; periodic: from the neighbour list
        i, j = finite_pairs(system.ptr, system.batch, finite_atoms)
        r = (system.positions[j] - system.positions[i]).norm(dim=1)
        close = torch.nonzero(r.detach() < outer).flatten()
        i, j, r = i[close], j[close], r[close]
        g = graph.within(outer)
        half = g.half()
        keep = torch.nonzero(~finite_atoms[half.i]).flatten()
        i = torch.cat([i, half.i[keep]])
        j = torch.cat([j, half.j[keep]])
        r = torch.cat([r, half.distances[keep]])
        gamma = None if sigma is None else torch.sqrt(sigma[i] ** 2 + sigma[j] ** 2)
        kernel = COULOMB_CONSTANT * gaussian_coulomb_kernel(r, gamma) * (screening_function(r, inner, outer, core) - 1.0)
        out = torch.zeros_like(charges)
        return out.index_add(0, i, kernel * charges[j]).index_add(0, j, kernel * charges[i])


def periodic_operator(system: AtomicSystem, graph: Graph, sigma: Optional[torch.Tensor], s: int,
                      params: EwaldParameters, method: str) -> Tuple[PeriodicCoulomb, int, int]:
    """Build the Coulomb operator of periodic structure ``s`` from the model's neighbour graph.

    Checks that the graph reaches the real-space cutoff and that the Gaussian erfc
    correction has decayed (below ``0.1 accuracy``) at the cutoff. Dilute structures get
    parameters scaled to their density (:meth:`EwaldParameters.for_structure`; the operator's
    ``params``).
    """
    inputs, a, b, structure_params = periodic_operator_inputs(system, graph, sigma, s, params)
    return PeriodicCoulomb(*inputs, structure_params, method), a, b


def periodic_operator_inputs(system: AtomicSystem, graph: Graph, sigma: Optional[torch.Tensor], s: int,
                             params: EwaldParameters) -> Tuple[tuple, int, int, EwaldParameters]:
    """``((positions, cell, pair_i, pair_j, distances, sigma), a, b, params_s)`` of periodic
    structure ``s`` for :class:`PeriodicCoulomb`, with the checks of :func:`periodic_operator`
    (no operator built). ``params_s = params.for_structure(n, V)``: when it has a longer
    real-space cutoff than the model's graph (a dilute structure), the pairs come from a
    neighbour list of this structure at that cutoff (differentiable like the graph's)."""
    a, b = int(system.ptr[s]), int(system.ptr[s + 1])
    volume = float(torch.linalg.det(system.cell[s].detach()).abs())
    structure_params = params.for_structure(b - a, volume)
    rc = structure_params.real_space_cutoff
    if graph.cutoff < params.real_space_cutoff - 1e-9:
        raise ValueError(f"neighbour graph cutoff {graph.cutoff} Å is below the electrostatic real-space cutoff "
                         f"{params.real_space_cutoff} Å")
    sig = None
    if sigma is not None:
        sig = sigma[a:b]
        smax = float(sig.detach().max())
        tail = math.erfc(structure_params.switch_start / (2.0 * smax))
        if tail > 0.1 * params.accuracy and params.truncation is None:  # (n2p2's truncation: as n2p2 does)
            raise ValueError(
                f"Gaussian width {smax:.3f} Å is too wide for the real-space cutoff {params.real_space_cutoff} Å at "
                f"accuracy {params.accuracy:g} (erfc tail {tail:.1e}); increase real_space_cutoff to at least "
                f"{minimum_real_space_cutoff(smax, params.accuracy):.2f} Å"
            )
    if rc > graph.cutoff + 1e-9:  # dilute: this structure's own pairs up to the longer cutoff
        pair_i, pair_j, distances = _structure_pairs(system, s, rc)
    else:
        half = graph.within(rc).half()
        if a == 0 and b == system.n_atoms:  # the only structure: all pairs are its own
            pair_i, pair_j, distances = half.i, half.j, half.distances
        else:
            sel = torch.nonzero((half.i >= a) & (half.i < b)).flatten()
            pair_i, pair_j = half.i.index_select(0, sel) - a, half.j.index_select(0, sel) - a
            distances = half.distances.index_select(0, sel)
    return (system.positions[a:b], system.cell[s], pair_i, pair_j, distances, sig), a, b, structure_params


def _structure_pairs(system: AtomicSystem, s: int, cutoff: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Half list ``(i, j, distances)`` (local indices) of structure ``s`` within ``cutoff`` (Å),
    all periodic images included, distances differentiable in the system's positions and cell."""
    from .neighbors import build_graph, compute_neighbors

    a, b = int(system.ptr[s]), int(system.ptr[s + 1])
    n = b - a
    device = system.positions.device
    one = AtomicSystem(positions=system.positions[a:b], numbers=system.numbers[a:b], cell=system.cell[s:s + 1],
                       pbc=system.pbc[s:s + 1], charge=system.charge[s:s + 1],
                       batch=torch.zeros(n, dtype=torch.long, device=device),
                       ptr=torch.tensor([0, n], dtype=torch.long, device=device))
    half = build_graph(one, compute_neighbors(one, cutoff), check_distance=False).half()
    return half.i, half.j, half.distances
