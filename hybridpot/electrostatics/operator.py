"""The Coulomb operator ``v -> C v`` of one periodic structure (Ewald or PME, Gaussian or point
charges) and its construction from the model's neighbour graph."""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from ..neighbors import Graph
from ..system import AtomicSystem
from . import _torchpme
from .ewald import ewald_kvectors
from .kernels import COULOMB_CONSTANT, real_space_kernel
from .mesh import _MeshConvolution, _csr, _interpolation_stencil, _spatial_order, _spread, _unsort
from .parameters import EwaldParameters, _fft_size, minimum_real_space_cutoff
from .preconditioner import coarse_matvec, kspace_preconditioner
from .slab import check_slab, is_slab, slab_constrained_terms

__all__ = ["PeriodicCoulomb", "periodic_operator", "periodic_operator_inputs"]


class PeriodicCoulomb:
    """Coulomb operator ``v -> C v`` of one periodic structure (Gaussian or point charges).

    ``C`` is the potential matrix of the module docstring (``C_ii`` holds the periodic
    images of atom i only, no self energy)::

        C v = [point-charge Ewald/PME potential of v, torch-pme]
              - sum_pairs k_e erfc(r/(sqrt2 gamma))/r v_j  + (2 pi k_e / V)(sigma_i^2 sum_j v_j + sum_j sigma_j^2 v_j)

    (slabs: plus the dipole correction, without the last, Gaussian background, term: see ``slab``).

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
    slab : bool
        A slab (pbc ``(True, True, False)``, c along z, checked by :func:`periodic_operator_inputs`):
        the 3D sum of the vacuum-padded cell plus the dipole correction of
        :mod:`hybridpot.electrostatics.slab` (in :meth:`matvec` and :meth:`dense`). The pairs must
        then come from a neighbour list without images along z.
    """

    def __init__(self, positions, cell, pair_i, pair_j, distances, sigma, params: EwaldParameters, method: str,
                 kspace_dtype: Optional[torch.dtype] = None, slab: bool = False):
        if method not in ("ewald", "pme"):
            raise ValueError(f"periodic method must be 'ewald' or 'pme', got {method!r}")
        self.positions, self.cell = positions, cell
        self.pair_i, self.pair_j, self.distances = pair_i, pair_j, distances
        self.sigma, self.params, self.method = sigma, params, method
        self.kspace_dtype = kspace_dtype
        self.slab = bool(slab)
        # PME products without autograd (CG): mesh convolutions into preallocated arrays with CSR
        # interpolation (several times faster than a gather + sum), made on first use; the
        # coarse one by coarse_matvec on the mesh that kspace_preconditioner leaves in _coarse_mesh
        self._convolution, self._coarse_convolution, self._coarse_shape = None, None, None
        dtype, device = positions.dtype, positions.device
        self.potential = _torchpme.coulomb_potential(params.smearing, dtype, device)
        self.volume = torch.linalg.det(cell).abs()
        # real space: point-charge short-range part minus the Gaussian erfc correction
        # (torch-pme's sr_from_dist, the erfc correction, the smooth switch to zero at the cutoff of
        # EwaldParameters; one autograd node with closed-form derivatives)
        gamma = None
        if sigma is not None:
            gamma = torch.sqrt(sigma.index_select(0, pair_i) ** 2 + sigma.index_select(0, pair_j) ** 2)
        self.real_kernel = real_space_kernel(distances, gamma, float(params.smearing), params.real_space_cutoff,
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
            self.calculator = _torchpme.pme_calculator(self.potential, params.mesh_spacing,
                                                       params.interpolation_nodes, dtype, device)
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
        _torchpme.fix_pme_mesh(calc, self.cell, self.mesh_shape)
        self._build_stencil()

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
        if self.sigma is not None and not self.slab:
            # k = 0 part of the erfc correction (neutralising background, Gaussian part); not for
            # slabs: there it is an O(1/L_z) artifact of the 3D background that the dipole correction
            # does not remove (charged slabs converge to the 2D sum only without it, tests)
            s2 = (self.sigma**2).unsqueeze(1)
            factor = 2.0 * math.pi * COULOMB_CONSTANT / self.volume
            out = out + factor * (s2 * vv.sum(dim=0, keepdim=True) + (s2 * vv).sum(dim=0, keepdim=True))
        if self.slab:  # dipole correction of the vacuum-padded 3D sum (O(n) per channel)
            out = out + _torchpme.slab_correction_potential(self.potential, self.positions, self.cell, vv)
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
        interpolator = _torchpme.mesh_interpolator_of(self.calculator)
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
        kfilter = _torchpme.kspace_filter_values(self.calculator)
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
        """SPD approximate inverse of ``C + diag(diag)`` for CG, ``r -> M^-1 r`` (no gradients):
        :func:`hybridpot.electrostatics.preconditioner.kspace_preconditioner`."""
        return kspace_preconditioner(self, diag)

    def coarse_matvec(self):
        """``v -> C' v``, this operator's k-space part on the preconditioner's coarse mesh (no
        gradients): :func:`hybridpot.electrostatics.preconditioner.coarse_matvec`."""
        return coarse_matvec(self)

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
        """The matrix ``C`` ``[n, n]`` (Ewald, with this operator's real-space pairs; differentiable);
        for a slab with the full dipole correction matrix (as :meth:`matvec`)."""
        mat = self._dense_3d()
        if self.slab:
            eye = torch.eye(mat.shape[0], dtype=mat.dtype, device=mat.device)
            mat = mat + _torchpme.slab_correction_potential(self.potential, self.positions, self.cell, eye)
        return mat

    def dense_constrained(self, total_charge: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(matrix [n, n], linear [n], constant)`` with ``1/2 q.C.q = 1/2 q.matrix.q + linear.q +
        constant`` for every ``q`` summing to ``total_charge`` (e), for constrained solves.

        Fully periodic: ``(C, 0, 0)``. Slab: the 3D part plus only the PSD rank-1 dipole Hessian;
        the correction's total-charge terms move into ``linear`` and ``constant``
        (:func:`~hybridpot.electrostatics.slab.slab_constrained_terms`), so ``matrix`` plus the
        QEq diagonal stays positive definite (the full slab matrix has a large negative
        ``1 1^T`` part)."""
        mat = self._dense_3d()
        if not self.slab:
            zero = mat.new_zeros(())
            return mat, mat.new_zeros(mat.shape[0]), zero
        hessian, linear, constant = slab_constrained_terms(self.positions, self.cell, total_charge.to(mat.dtype))
        return mat + hessian, linear, constant

    def _dense_3d(self) -> torch.Tensor:
        """The 3D-periodic part of :meth:`dense`."""
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
        if self.sigma is not None and not self.slab:  # (as matvec)
            s2 = self.sigma**2
            mat = mat + (2.0 * math.pi * COULOMB_CONSTANT / self.volume) * (s2.unsqueeze(0) + s2.unsqueeze(1))
        return mat


def periodic_operator(system: AtomicSystem, graph: Graph, sigma: Optional[torch.Tensor], s: int,
                      params: EwaldParameters, method: str) -> Tuple[PeriodicCoulomb, int, int]:
    """Build the Coulomb operator of periodic structure ``s`` from the model's neighbour graph.

    Checks that the graph reaches the real-space cutoff and that the Gaussian erfc
    correction has decayed (below ``0.1 accuracy``) at the cutoff. Dilute structures get
    parameters scaled to their density (:meth:`EwaldParameters.for_structure`; the operator's
    ``params``).
    """
    inputs, a, b, structure_params = periodic_operator_inputs(system, graph, sigma, s, params)
    return PeriodicCoulomb(*inputs, structure_params, method, slab=is_slab(system.pbc[s])), a, b


def periodic_operator_inputs(system: AtomicSystem, graph: Graph, sigma: Optional[torch.Tensor], s: int,
                             params: EwaldParameters) -> Tuple[tuple, int, int, EwaldParameters]:
    """``((positions, cell, pair_i, pair_j, distances, sigma), a, b, params_s)`` of periodic
    structure ``s`` for :class:`PeriodicCoulomb`, with the checks of :func:`periodic_operator`
    (no operator built). ``params_s = params.for_structure(n, V)``: when it has a longer
    real-space cutoff than the model's graph (a dilute structure), the pairs come from a
    neighbour list of this structure at that cutoff (differentiable like the graph's).

    Partially periodic structures must be slabs (:func:`~hybridpot.electrostatics.slab.check_slab`:
    pbc ``(True, True, False)``, c along z, vacuum at least the real-space cutoff); the operator of
    one then needs ``slab=True`` (:func:`periodic_operator` sets it)."""
    a, b = int(system.ptr[s]), int(system.ptr[s + 1])
    slab = not bool(system.pbc[s].all())
    if slab:  # layout and orientation first (a slab without a c vector has no volume)
        check_slab(system.positions[a:b], system.cell[s], system.pbc[s], None, s)
    volume = float(torch.linalg.det(system.cell[s].detach()).abs())
    structure_params = params.for_structure(b - a, volume)
    rc = structure_params.real_space_cutoff
    if slab:  # then the vacuum, against this structure's real-space cutoff
        check_slab(system.positions[a:b], system.cell[s], system.pbc[s], rc, s)
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
        # computed once per model call (the graph's per-call store): QEq, its adjoint and the
        # electrostatics term all ask for them, and a neighbour search at the Ewald cutoff
        # cost 0.14 s of a 0.9 s H2O_RPBE-D3_4G call each time (benchmarks/vs_n2p2.py)
        store = graph.feature_cache
        key = ("structure_pairs", s, float(rc), bool(torch.is_grad_enabled()))
        hit = store.get(key) if store is not None else None
        if hit is None or hit[0] is not system.positions:
            hit = (system.positions, _structure_pairs(system, s, rc))
            if store is not None:
                store[key] = hit
        pair_i, pair_j, distances = hit[1]
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
    from ..neighbors import build_graph, compute_neighbors

    a, b = int(system.ptr[s]), int(system.ptr[s + 1])
    n = b - a
    device = system.positions.device
    one = AtomicSystem(positions=system.positions[a:b], numbers=system.numbers[a:b], cell=system.cell[s:s + 1],
                       pbc=system.pbc[s:s + 1], charge=system.charge[s:s + 1],
                       batch=torch.zeros(n, dtype=torch.long, device=device),
                       ptr=torch.tensor([0, n], dtype=torch.long, device=device))
    # a half list straight from the search: at n2p2's Ewald cutoffs (18.9 Å for the 384-atom
    # H2O_RPBE-D3_4G box, 10^6 full-list pairs) the full search + halving cost 0.23 s per call
    half = build_graph(one, compute_neighbors(one, cutoff, full_list=False), check_distance=False)
    return half.i, half.j, half.distances
