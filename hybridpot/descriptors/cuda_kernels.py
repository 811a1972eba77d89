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


def _launch(plan, arrays, G, dG, want_dG, to_device, empty, stream):
    """Run the kernel: ``G [N, F]`` and ``dG [M, W, 3]`` (float64 device arrays) are filled."""
    n_atoms = arrays["offsets"].shape[0] - 1
    m = arrays["vectors"].shape[0]
    n_keys = int(np.diff(plan.key_off).max()) if plan.key_off.shape[0] > 1 else 0
    n_cols = 1 + 2 * plan.rc_table.shape[0] + 2 * n_keys
    scratch = empty((max(m, 1), n_cols), np.float64)
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


def run_cuda(plan, vectors: torch.Tensor, layout, want_dG: bool):
    """``(G [N, F], dG [M, W, 3] or None)`` on the GPU of ``vectors`` (torch tensors, input dtype)."""
    device = vectors.device
    stream = cuda.external_stream(torch.cuda.current_stream(device).cuda_stream)
    keep = []  # device tensors alive until the kernel has run (torch's allocator, torch's stream)

    def to_device(x):
        t = torch.from_numpy(np.ascontiguousarray(x)).to(device)
        keep.append(t)
        return cuda.as_cuda_array(t)

    def empty(shape, dtype):
        t = torch.empty(shape, dtype=torch.int64 if dtype == np.int64 else torch.float64, device=device)
        keep.append(t)
        return cuda.as_cuda_array(t)

    vec = layout.vectors.to(device=device, dtype=torch.float64).contiguous()
    arrays = {"vectors": cuda.as_cuda_array(vec),
              **{k: cuda.as_cuda_array(getattr(layout, k).to(device).contiguous())
                 for k in ("offsets", "center_slot", "neighbor_slot", "neighbor_z")}}
    n_atoms, m = layout.offsets.shape[0] - 1, vec.shape[0]
    G = torch.empty((n_atoms, plan.n_features), dtype=torch.float64, device=device)
    dG = torch.empty((m, plan.width, 3) if want_dG else (1, 1, 3), dtype=torch.float64, device=device)
    _launch(plan, arrays, cuda.as_cuda_array(G), cuda.as_cuda_array(dG), want_dG, to_device, empty, stream)
    # sums in float64 (as on the CPU); results in the input dtype
    return G.to(vectors.dtype), (dG.to(vectors.dtype) if want_dG else None)


def run_cuda_arrays(plan, layout, want_dG: bool):
    """The CUDA kernel on CPU-side layout arrays (copies; for tests, e.g. in the CUDA simulator)."""
    arrays = {"vectors": cuda.to_device(layout.vectors.double().numpy()),
              **{k: cuda.to_device(getattr(layout, k).numpy()) for k in ("offsets", "center_slot", "neighbor_slot",
                                                                         "neighbor_z")}}
    n_atoms, m = layout.offsets.shape[0] - 1, layout.vectors.shape[0]
    G = cuda.device_array((n_atoms, plan.n_features), dtype=np.float64)
    dG = cuda.device_array((m, plan.width, 3) if want_dG else (1, 1, 3), dtype=np.float64)
    _launch(plan, arrays, G, dG, want_dG, cuda.to_device, lambda shape, dtype: cuda.device_array(shape, dtype),
            None)
    return torch.from_numpy(G.copy_to_host()), (torch.from_numpy(dG.copy_to_host()) if want_dG else None)
