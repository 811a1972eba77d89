"""PME mesh machinery: sparse CSR helpers, the atom-major interpolation stencil, spatial order of
the atoms, spreading, and mesh convolutions into preallocated arrays (CG products)."""

from __future__ import annotations

import warnings
from typing import Optional, Tuple

import torch

from . import _torchpme



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
    w = _torchpme.one_d_weights(interpolator, offsets).permute(1, 0, 2).contiguous()  # [n, p, 3]
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
