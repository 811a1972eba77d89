"""CUDA symmetry-function kernels (optional: ``pip install 'hybridpot[cuda]'``, package numba-cuda).

One thread per centre atom runs the same per-centre function as the CPU kernel
(:func:`hybridpot.descriptors.kernels.centre_kernel`, compiled for the device by numba-cuda),
so both targets compute the same sums in the same order. Work space is indexed by pair
(``scratch [M, 1 + 2 n_rc + 2 n_keys]``, ``ang_list [M]``): the rows of a centre's own pairs, no
padding to the largest neighbour count. Torch tensors are passed without copies through
``__cuda_array_interface__`` on torch's current stream. With ``NUMBA_ENABLE_CUDASIM=1``
numba's CUDA simulator runs these kernels on the CPU (slowly), which is how the tests check
their logic on machines without a GPU.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import cuda

from .kernels import centre_kernel

__all__ = ["run_cuda", "run_cuda_arrays", "THREADS_PER_BLOCK"]

#: threads per block (one thread per centre atom; measured choice pending a GPU run)
THREADS_PER_BLOCK = 64


@cuda.jit
def _features_kernel(vectors, offsets, center_slot, neighbor_slot, neighbor_z, n_el, n_pairs, cut_kind, cut_alpha,
                     rc_table, fpar, ipar, rad_off, rad_fn, wrad_off, wrad_fn, ang_off, ang_fn, wang_off, wang_fn,
                     pair_slot, pair_first, ang_rc_max, ang_jk_limit, wang_jk_limit, key_off, key_par, G, dG, want_dG,
                     scratch, ang_list):
    i = cuda.grid(1)
    if i >= offsets.shape[0] - 1:
        return
    start = offsets[i]
    end = offsets[i + 1]
    centre_kernel(i, vectors, offsets, center_slot, neighbor_slot, neighbor_z, n_el, n_pairs, cut_kind, cut_alpha,
                  rc_table, fpar, ipar, rad_off, rad_fn, wrad_off, wrad_fn, ang_off, ang_fn, wang_off, wang_fn,
                  pair_slot, pair_first, ang_rc_max, ang_jk_limit, wang_jk_limit, key_off, key_par, G, dG, want_dG,
                  scratch[start:end], ang_list[start:end])


def _launch(plan, arrays, n_atoms, m, to_device, empty, want_dG, stream):
    n_keys = int(np.diff(plan.key_off).max()) if plan.key_off.shape[0] > 1 else 0
    n_cols = 1 + 2 * plan.rc_table.shape[0] + 2 * n_keys
    G = empty((n_atoms, plan.n_features))
    dG = empty((m, plan.width, 3)) if want_dG else empty((1, 1, 3))
    scratch = empty((max(m, 1), n_cols))
    ang_list = empty((max(m, 1),), np.int64)
    blocks = max(1, (n_atoms + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK)
    p = plan
    args = [arrays["vectors"], arrays["offsets"], arrays["center_slot"], arrays["neighbor_slot"],
            arrays["neighbor_z"], p.n_el, p.n_pairs, p.cut_kind, p.cut_alpha] + [
        to_device(getattr(p, n)) for n in ("rc_table", "fpar", "ipar", "rad_off", "rad_fn", "wrad_off", "wrad_fn",
                                           "ang_off", "ang_fn", "wang_off", "wang_fn", "pair_slot", "pair_first",
                                           "ang_rc_max", "ang_jk_limit", "wang_jk_limit", "key_off", "key_par")] + [
        G, dG, bool(want_dG), scratch, ang_list]
    if stream is None:
        _features_kernel[blocks, THREADS_PER_BLOCK](*args)
    else:
        _features_kernel[blocks, THREADS_PER_BLOCK, stream](*args)
    return G, dG


def run_cuda(plan, vectors: torch.Tensor, layout, want_dG: bool):
    """``(G [N, F] , dG [M, W, 3] or None)`` on the GPU of ``vectors`` (torch tensors, input dtype)."""
    device = vectors.device
    stream = cuda.external_stream(torch.cuda.current_stream(device).cuda_stream)
    keep = []  # device copies of the plan, alive until the kernel has run

    def to_device(x):
        t = torch.from_numpy(np.ascontiguousarray(x)).to(device)
        keep.append(t)
        return cuda.as_cuda_array(t)

    def empty(shape, dtype=np.float64):
        t = torch.empty(shape, dtype=torch.int64 if dtype == np.int64 else torch.float64, device=device)
        keep.append(t)
        return t

    vec = layout.vectors.to(device).contiguous()
    arrays = {"vectors": cuda.as_cuda_array(vec),
              **{k: cuda.as_cuda_array(getattr(layout, k).to(device).contiguous())
                 for k in ("offsets", "center_slot", "neighbor_slot", "neighbor_z")}}
    n_atoms, m = layout.offsets.shape[0] - 1, vec.shape[0]
    G_t = empty((n_atoms, plan.n_features))
    dG_t = empty((m, plan.width, 3)) if want_dG else empty((1, 1, 3))

    def empty_view(shape, dtype=np.float64):
        if shape == (n_atoms, plan.n_features):
            return cuda.as_cuda_array(G_t)
        if dtype == np.float64 and len(shape) == 3:
            return cuda.as_cuda_array(dG_t)
        return cuda.as_cuda_array(empty(shape, dtype))

    _launch(plan, arrays, n_atoms, m, to_device, empty_view, want_dG, stream)
    G_out = G_t.to(vectors.dtype)
    dG_out = dG_t.to(vectors.dtype) if want_dG else None
    return G_out, dG_out


def run_cuda_arrays(plan, layout, want_dG: bool):
    """The CUDA kernel on CPU-side layout arrays (copies; for tests, e.g. in the CUDA simulator)."""
    arrays = {"vectors": cuda.to_device(layout.vectors.double().numpy()),
              **{k: cuda.to_device(getattr(layout, k).numpy()) for k in ("offsets", "center_slot", "neighbor_slot",
                                                                         "neighbor_z")}}
    n_atoms, m = layout.offsets.shape[0] - 1, layout.vectors.shape[0]

    def empty(shape, dtype=np.float64):
        return cuda.device_array(shape, dtype=dtype)

    G, dG = _launch(plan, arrays, n_atoms, m, cuda.to_device, empty, want_dG, None)
    return torch.from_numpy(G.copy_to_host()), (torch.from_numpy(dG.copy_to_host()) if want_dG else None)
