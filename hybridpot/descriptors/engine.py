"""The compiled descriptor engine: kernel plan, autograd Functions, dispatch CPU / CUDA.

Why numba (decided for issue 13, measured in benchmarks/README.md): it is a PyPI wheel for
CPU (no compiler at install time, so ``pip install -e .`` still sets everything up on a fresh
machine), ``prange`` gives multi-threading, the kernel source is plain readable Python, one
per-centre function (:func:`~hybridpot.descriptors.kernels.centre_kernel`) compiles for the
CPU and, through the optional ``numba-cuda`` package (extra ``cuda``), for NVIDIA GPUs, whose
CUDA simulator lets the GPU kernels' logic be tested on a CPU-only machine. Compiled kernels
are cached on disk (``cache=True``): the first call after installation compiles them once.

Autograd: :class:`SymmetryFunctionsKernel` returns the raw features ``G [N, F_max]`` and the
per-pair derivatives ``dG [M, W, 3]`` (see :mod:`~hybridpot.descriptors.kernels`). Its
backward contracts ``dE/dG`` with the stored ``dG`` (``dE/dr_p = sum_w dE/dG[i_p, f(w)]
dG[p, w]``): a numba kernel, or torch operations when the backward itself is recorded
(``create_graph=True``, force training). Recorded, that contraction is linear in ``dE/dG``
(its gradient is the exact, cheap ``dG . w``) and in ``dG``; a gradient arriving at ``dG``
(second derivatives of G, e.g. Hessians, or a loss differentiating forces with respect
to positions) goes back through this Function's backward again, which then recomputes
``dG`` with the torch reference implementation and double autograd: exact, slow, only
when positions-second-derivatives are asked for. Force training asks only for parameter
gradients (``loss.backward(inputs=parameters)``), which never reach that fallback.

Large systems (CPU): when the stored ``dG`` would exceed :data:`STORED_DERIVATIVES_LIMIT`
bytes, :class:`SymmetryFunctionsRecompute` keeps only the pair layout between the passes:
its forward computes ``G`` alone, its backward recomputes every centre's ``dG`` in work space
of that centre and contracts it at once (:func:`~hybridpot.descriptors.kernels.recompute_contract_cpu`),
so memory is ``O(pairs)`` instead of ``O(pairs x W)``. A recorded backward (``create_graph``)
computes the full ``dG`` through :class:`SymmetryFunctionsKernel` instead, exactly as above.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .families import N_FLOAT_PARAMS

__all__ = ["KernelPlan", "build_plan", "kernel_features", "kernel_available", "cuda_kernel_available"]

_WARNED = set()

#: Bytes of stored derivatives ``dG [M, W, 3]`` (float64) above which the CPU engine recomputes
#: them in the backward pass instead of keeping them (:class:`SymmetryFunctionsRecompute`).
#: Measured on the 21952-atom NaCl melt (621k pairs, W = 24: 341 MB of dG): recomputing costs
#: 1.15-1.2x the stored path's CPU time for short-range energy + forces, and the peak memory of
#: that call drops from 370 to 12 MB (benchmarks/descriptor_memory.py). Below the limit the
#: stored path is faster (1.5x at 4096 atoms), so small systems and training keep it.
STORED_DERIVATIVES_LIMIT = 256 * 2**20


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def kernel_available() -> bool:
    """Whether the numba CPU kernels can be used (numba importable)."""
    try:
        from . import kernels  # noqa: F401
    except ImportError:  # pragma: no cover
        return False
    return True


def cuda_kernel_available() -> bool:
    """Whether numba-cuda is importable and sees a GPU (or its simulator is switched on)."""
    try:
        from numba import cuda
    except ImportError:  # pragma: no cover
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # pragma: no cover  (driver problems: treat as no GPU)
        return False


@dataclass
class KernelPlan:
    """Parameter arrays of one symmetry-function set for the kernels (numpy, CPU)."""

    n_el: int
    n_pairs: int
    n_features: int
    width: int
    cut_kind: int
    cut_alpha: float
    rc_table: np.ndarray
    fpar: np.ndarray
    ipar: np.ndarray
    rad_off: np.ndarray
    rad_fn: np.ndarray
    wrad_off: np.ndarray
    wrad_fn: np.ndarray
    ang_off: np.ndarray
    ang_fn: np.ndarray
    wang_off: np.ndarray
    wang_fn: np.ndarray
    pair_slot: np.ndarray
    pair_first: np.ndarray
    ang_rc_max: np.ndarray
    ang_jk_limit: np.ndarray
    wang_jk_limit: np.ndarray
    key_off: np.ndarray
    key_par: np.ndarray
    slot_features: np.ndarray
    key: tuple

    def device_arrays(self, device: torch.device) -> dict:
        """The arrays as torch tensors on ``device`` (cached per device)."""
        cache = self.__dict__.setdefault("_device_cache", {})
        if device not in cache:
            names = ("rc_table", "fpar", "ipar", "rad_off", "rad_fn", "wrad_off", "wrad_fn", "ang_off", "ang_fn",
                     "wang_off", "wang_fn", "pair_slot", "pair_first", "ang_rc_max", "ang_jk_limit", "wang_jk_limit",
                     "key_off", "key_par", "slot_features")
            cache[device] = {n: torch.from_numpy(getattr(self, n)).to(device) for n in names}
        return cache[device]


def build_plan(desc) -> KernelPlan:
    """The kernel plan of a :class:`~hybridpot.descriptors.SymmetryFunctions` (cached on it)."""
    from .kernels import N_INT_PARAMS, N_KEY_PARAMS, I_AKEY, I_ASYM, I_CODE, I_FEATURE, I_KEY, I_KIND, I_RC, \
        I_SLOT_A, I_SLOT_B, I_USE_INT, I_ZETA
    from .families import parse_subtype

    key = (tuple(desc.functions), desc.cutoff_type, desc.cutoff_alpha, tuple(desc.elements))
    cached = desc.__dict__.get("_kernel_plan")
    if cached is not None and cached.key == key:
        return cached
    elements = list(desc.elements)
    n_el = len(elements)
    slot = {z: s for s, z in enumerate(elements)}
    pair_slot = np.zeros((n_el, n_el), dtype=np.int64)
    pair_first = []
    for a in range(n_el):
        for b in range(a, n_el):
            pair_slot[a, b] = pair_slot[b, a] = len(pair_first)
            pair_first.append(a)
    n_pairs = len(pair_first)
    gaussian = [f for f in desc.functions if not f.is_compact]
    rc_table = sorted({f.r_cut for f in gaussian})

    rows, irows = [], []
    rad_lists = [[] for _ in range(n_el * n_el)]
    wrad_lists = [[] for _ in range(n_el)]
    ang_lists = [[] for _ in range(n_el * n_pairs)]
    wang_lists = [[] for _ in range(n_el)]
    slot_lists = [[[] for _ in range(n_el)] for _ in range(n_el)]  # [centre][neighbour element] -> features
    ang_rc_max = np.zeros(n_el)
    ang_jk_limit = np.zeros(n_el * n_pairs)
    wang_jk_limit = np.zeros(n_el)
    key_off = np.zeros(n_el + 1, dtype=np.int64)
    key_rows = []  # pair keys of each element's angular functions (kernels.key_par rows)
    for c, z in enumerate(elements):
        own = [f for f in desc.functions if f.center == z]
        keys = sorted({(f.eta, f.r_shift, rc_table.index(f.r_cut)) for f in own
                       if not f.is_radial and not f.is_compact})
        compact_keys = sorted({(f.r_left, f.r_cut) + parse_subtype(f.subtype) for f in own
                               if not f.is_radial and f.is_compact})
        angle_keys = sorted({(f.angle_left, f.angle_right, parse_subtype(f.subtype)[0]) for f in own
                             if not f.is_radial and f.is_compact})
        key_rows += [(eta, rs, float(t), 0.0, 0.0) for eta, rs, t in keys]
        key_rows += [(rl, rc, float(asym), float(kind), 1.0) for rl, rc, kind, asym in compact_keys]
        key_off[c + 1] = len(key_rows)
        # weighted functions first, in every neighbour element's slot list (slot independent of e)
        for k, f in enumerate(own):
            if f.is_weighted:
                for e in range(n_el):
                    slot_lists[c][e].append(k)
        for k, f in enumerate(own):
            if not f.is_weighted:
                for e in sorted({slot[x] for x in f.neighbors}):
                    slot_lists[c][e].append(k)
        for k, f in enumerate(own):
            fam = f.family
            row, kind, asym, use_int, zeta_int = fam.kernel_row(f)
            if f.is_weighted:
                sa = sb = slot_lists[c][0].index(k)
            else:
                es = [slot[x] for x in f.neighbors]
                sa = slot_lists[c][es[0]].index(k)
                sb = slot_lists[c][es[-1]].index(k)
            rc_index = rc_table.index(f.r_cut) if not f.is_compact else 0
            irow = [0] * N_INT_PARAMS
            irow[I_CODE], irow[I_FEATURE], irow[I_SLOT_A], irow[I_SLOT_B] = fam.kernel_code(f), k, sa, sb
            irow[I_RC], irow[I_KIND], irow[I_ASYM], irow[I_USE_INT], irow[I_ZETA] = (rc_index, kind, int(asym),
                                                                                     int(use_int), zeta_int)
            if not f.is_radial and not f.is_compact:
                irow[I_KEY] = keys.index((f.eta, f.r_shift, rc_index))
            elif not f.is_radial:
                irow[I_KEY] = len(keys) + compact_keys.index((f.r_left, f.r_cut, kind, asym))
                irow[I_AKEY] = angle_keys.index((f.angle_left, f.angle_right, kind))
            fn = len(rows)
            rows.append(row)
            irows.append(irow)
            # adjacent in a channel, so that the kernel reuses per-triplet work: Gaussian functions
            # with equal (type, eta, r_s, r_c), compact ones with equal angle support
            order = (irow[I_CODE], irow[I_AKEY], irow[I_KEY], fn)
            if f.is_radial:
                (wrad_lists[c] if f.is_weighted else rad_lists[c * n_el + slot[f.neighbors[0]]]).append((order, fn))
            else:
                ang_rc_max[c] = max(ang_rc_max[c], f.r_cut)
                # narrow functions (3, 21, 24) vanish for r_jk >= r_c; wide ones never do
                jk = f.r_cut if f.type in (3, 21, 24) else np.inf
                if f.is_weighted:
                    wang_lists[c].append((order, fn))
                    wang_jk_limit[c] = max(wang_jk_limit[c], jk)
                else:
                    a, b = (slot[x] for x in f.neighbors)
                    ch = c * n_pairs + pair_slot[a, b]
                    ang_lists[ch].append((order, fn))
                    ang_jk_limit[ch] = max(ang_jk_limit[ch], jk)

    def csr(lists):
        off = np.zeros(len(lists) + 1, dtype=np.int64)
        flat = []
        for n, lst in enumerate(lists):
            flat += [fn for _, fn in sorted(lst)]
            off[n + 1] = len(flat)
        return off, np.asarray(flat if flat else [0], dtype=np.int64)

    width = max(1, max(len(slot_lists[c][e]) for c in range(n_el) for e in range(n_el)))
    slot_features = np.full((n_el * n_el, width), -1, dtype=np.int64)
    for c in range(n_el):
        for e in range(n_el):
            lst = slot_lists[c][e]
            slot_features[c * n_el + e, : len(lst)] = lst
    rad_off, rad_fn = csr(rad_lists)
    wrad_off, wrad_fn = csr(wrad_lists)
    ang_off, ang_fn = csr(ang_lists)
    wang_off, wang_fn = csr(wang_lists)
    plan = KernelPlan(
        n_el=n_el, n_pairs=n_pairs, n_features=desc.max_features, width=width, cut_kind=int(desc.cutoff_type),
        cut_alpha=float(desc.cutoff_alpha), rc_table=np.asarray(rc_table if rc_table else [1.0], dtype=np.float64),
        fpar=np.asarray(rows, dtype=np.float64).reshape(-1, N_FLOAT_PARAMS),
        ipar=np.asarray(irows, dtype=np.int64).reshape(-1, N_INT_PARAMS),
        rad_off=rad_off, rad_fn=rad_fn, wrad_off=wrad_off, wrad_fn=wrad_fn, ang_off=ang_off, ang_fn=ang_fn,
        wang_off=wang_off, wang_fn=wang_fn, pair_slot=pair_slot, pair_first=np.asarray(pair_first, dtype=np.int64),
        ang_rc_max=ang_rc_max, ang_jk_limit=ang_jk_limit, wang_jk_limit=wang_jk_limit, key_off=key_off,
        key_par=np.asarray(key_rows if key_rows else [(0.0,) * N_KEY_PARAMS], dtype=np.float64).reshape(-1, N_KEY_PARAMS),
        slot_features=slot_features, key=key,
    )
    desc.__dict__["_kernel_plan"] = plan
    return plan


@dataclass
class PairLayout:
    """Pairs of one call sorted by centre: CSR offsets and per-pair element data.

    Sorted pair ``p`` is pair ``order[p]`` of the graph; the kernels read ``vectors``
    (sorted, detached) and gradients are written back in the graph's order.
    """

    offsets: torch.Tensor  # [N + 1] int64
    centers: torch.Tensor  # [M] int64, sorted
    center_slot: torch.Tensor  # [N] int64 (element slot of every atom)
    neighbor_slot: torch.Tensor  # [M] int64
    neighbor_z: torch.Tensor  # [M] int64
    order: torch.Tensor  # [M] int64
    neighbors: torch.Tensor  # [M] int64, j of each sorted pair
    vectors: torch.Tensor  # [M, 3] sorted pair vectors (no autograd history)


def pair_layout(desc, numbers: torch.Tensor, slots: torch.Tensor, graph) -> PairLayout:
    """Sort the graph's pairs by centre (stable) and collect the element data the kernels need."""
    i, j = graph.i, graph.j
    n_atoms = numbers.shape[0]
    vectors = graph.vectors.detach()
    if i.device.type == "cpu":
        from .kernels import sort_by_centre

        out = sort_by_centre(i.numpy(), j.numpy(), vectors.contiguous().numpy(), slots.numpy(),
                             numbers.long().numpy(), n_atoms)
        order, offsets, vec, nslot, nz, centers, neighbors = (torch.from_numpy(x) for x in out)
        return PairLayout(offsets, centers, slots, nslot, nz, order, neighbors, vec)
    order = torch.argsort(i, stable=True)
    counts = torch.bincount(i, minlength=n_atoms)
    offsets = torch.zeros(n_atoms + 1, dtype=torch.long, device=i.device)
    offsets[1:] = torch.cumsum(counts, 0)
    i, j = i[order], j[order]
    return PairLayout(offsets, i, slots, slots[j], numbers[j].long(), order, j, vectors[order].contiguous())


def _match_torch_threads() -> None:
    """One knob for both libraries: ``torch.set_num_threads(n)`` also limits the kernels.

    numba's thread count is per calling thread, so this runs before every kernel launch
    (forward and backward may run on different threads)."""
    from numba import config as numba_config, set_num_threads

    n_torch = torch.get_num_threads()
    set_num_threads(max(1, min(n_torch, numba_config.NUMBA_NUM_THREADS)))
    # measured: the first call starts numba's thread pool, and with its OpenMP layer (the
    # default next to torch's libgomp) that reset torch's own count from 1 back to the core
    # count; restore it, so that torch.set_num_threads(1) keeps meaning one thread for both
    if torch.get_num_threads() != n_torch:
        torch.set_num_threads(n_torch)


def _run_cpu(plan: KernelPlan, vectors: torch.Tensor, layout: PairLayout, want_dG: bool):
    from .kernels import symmetry_functions_cpu

    _match_torch_threads()
    n_atoms = layout.offsets.shape[0] - 1
    m = vectors.shape[0]
    G = np.empty((n_atoms, plan.n_features), dtype=np.float64)
    dG = np.empty((m, plan.width, 3), dtype=np.float64) if want_dG else np.empty((1, 1, 3), dtype=np.float64)
    vec = vectors.detach().contiguous().numpy()
    symmetry_functions_cpu(vec, layout.offsets.numpy(), layout.center_slot.numpy(), layout.neighbor_slot.numpy(),
                           layout.neighbor_z.numpy(), plan.n_el, plan.n_pairs, plan.cut_kind, plan.cut_alpha,
                           plan.rc_table, plan.fpar, plan.ipar, plan.rad_off, plan.rad_fn, plan.wrad_off, plan.wrad_fn,
                           plan.ang_off, plan.ang_fn, plan.wang_off, plan.wang_fn, plan.pair_slot, plan.pair_first,
                           plan.ang_rc_max, plan.ang_jk_limit, plan.wang_jk_limit, plan.key_off, plan.key_par, G, dG,
                           want_dG)
    G_t = torch.from_numpy(G)
    dG_t = torch.from_numpy(dG) if want_dG else None
    if vectors.dtype != torch.float64:  # sums are accumulated in float64; results in the input dtype
        G_t = G_t.to(vectors.dtype)
        dG_t = dG_t.to(vectors.dtype) if dG_t is not None else None
    return G_t, dG_t


def _run(plan, vectors, layout, want_dG):
    if vectors.device.type == "cuda":
        from .cuda_kernels import run_cuda

        return run_cuda(plan, vectors, layout, want_dG)
    return _run_cpu(plan, vectors, layout, want_dG)


def _contract(grad_G: torch.Tensor, dG: torch.Tensor, plan: KernelPlan, layout: PairLayout) -> torch.Tensor:
    """``dE/dr_p`` ``[M, 3]`` in the graph's pair order, from ``dE/dG`` ``[N, F]`` and ``dG`` ``[M, W, 3]``."""
    if torch.is_grad_enabled() or grad_G.device.type != "cpu":
        # recorded (create_graph) or on a GPU: torch operations, differentiable in grad_G and dG
        arrays = plan.device_arrays(grad_G.device)
        index = arrays["slot_features"][layout.center_slot[layout.centers] * plan.n_el + layout.neighbor_slot]
        padded = torch.cat([grad_G, grad_G.new_zeros(grad_G.shape[0], 1)], dim=1)  # column -1 -> zero
        index = torch.where(index < 0, torch.full_like(index, grad_G.shape[1]), index)
        g = padded[layout.centers.unsqueeze(1), index]  # [M, W]
        sorted_grad = torch.einsum("pw,pwc->pc", g, dG)
        return torch.zeros_like(sorted_grad).index_copy(0, layout.order, sorted_grad)
    from .kernels import contract_cpu

    _match_torch_threads()
    out = np.empty((dG.shape[0], 3), dtype=dG.numpy().dtype)
    contract_cpu(grad_G.detach().contiguous().numpy(), dG.numpy(), layout.offsets.numpy(),
                 layout.center_slot.numpy(), layout.neighbor_slot.numpy(), plan.slot_features, plan.n_el,
                 layout.order.numpy(), out)
    return torch.from_numpy(out)


def _second_derivative_fallback(desc, numbers, layout: PairLayout, vectors: torch.Tensor,
                                grad_dG: torch.Tensor) -> torch.Tensor:
    """Gradient of ``sum(grad_dG * dG(vectors))`` w.r.t. the sorted pair vectors, via the reference path.

    ``dG[p, w] = d G[i_p, f(p, w)] / d r_p`` is recomputed with the torch reference
    implementation (one backward per feature column, graphs kept) and differentiated once
    more: exact and slow, used only when second derivatives of G are requested.
    """
    from ..neighbors import Graph

    plan = build_plan(desc)
    with torch.enable_grad():
        v_graph = vectors.detach().requires_grad_(True)  # graph order
        v = v_graph.index_select(0, layout.order)  # sorted by centre
        dist = v.norm(dim=1)
        zeros = torch.zeros(v.shape[0], 3, dtype=torch.long, device=v.device)
        graph = Graph(None, None, layout.centers, layout.neighbors, zeros, v, dist, float(desc.cutoff))
        G = desc._reference_raw(numbers, graph, symmetric_pairs=False)
        arrays = plan.device_arrays(v.device)
        index = arrays["slot_features"][layout.center_slot[layout.centers] * plan.n_el + layout.neighbor_slot]
        total = v.new_zeros(())
        for f in range(G.shape[1]):
            weight = (grad_dG * (index == f).unsqueeze(2).to(grad_dG.dtype)).sum(1)  # [M, 3]
            if not bool(weight.any()):
                continue
            (dGf,) = torch.autograd.grad(G[:, f].sum(), v, create_graph=True)  # [M, 3] sorted
            total = total + (weight * dGf).sum()
        if not total.requires_grad:
            return torch.zeros_like(vectors)
        (grad_v,) = torch.autograd.grad(total, v_graph, create_graph=torch.is_grad_enabled())
    return grad_v


class SymmetryFunctionsKernel(torch.autograd.Function):
    """``(G, dG) = kernel(sorted pair vectors)``; backward contracts with ``dG`` (see the module docstring)."""

    @staticmethod
    def forward(ctx, vectors, desc, numbers, plan, layout, cached=None):
        # vectors: the graph's pair vectors (graph order); the kernel reads layout.vectors.
        # cached: (G, dG) of these very vectors from a descriptor store (training on fixed
        # structures): returned as views, so that the stored tensors never carry a graph
        if cached is None:
            G, dG = _run(plan, layout.vectors, layout, want_dG=True)
        else:
            G, dG = cached[0].view_as(cached[0]), cached[1].view_as(cached[1])
        ctx.set_materialize_grads(False)
        ctx.desc, ctx.numbers, ctx.plan, ctx.layout = desc, numbers, plan, layout
        ctx.save_for_backward(vectors, dG)
        return G, dG

    @staticmethod
    def backward(ctx, grad_G, grad_dG):
        vectors, dG = ctx.saved_tensors
        grad_v = None
        if grad_G is not None:
            grad_v = _contract(grad_G, dG, ctx.plan, ctx.layout)
        if grad_dG is not None:
            extra = _second_derivative_fallback(ctx.desc, ctx.numbers, ctx.layout, vectors, grad_dG)
            grad_v = extra if grad_v is None else grad_v + extra
        return grad_v, None, None, None, None, None


def _recompute_contract(grad_G: torch.Tensor, plan: KernelPlan, layout: PairLayout) -> torch.Tensor:
    """``dE/dr_p`` ``[M, 3]`` in the graph's pair order, recomputing ``dG`` per centre (CPU)."""
    from .kernels import recompute_contract_cpu

    _match_torch_threads()
    out = np.empty((layout.vectors.shape[0], 3), dtype=np.float64)
    recompute_contract_cpu(layout.vectors.detach().double().contiguous().numpy(), layout.offsets.numpy(),
                           layout.center_slot.numpy(), layout.neighbor_slot.numpy(), layout.neighbor_z.numpy(),
                           plan.n_el, plan.n_pairs, plan.cut_kind, plan.cut_alpha, plan.rc_table, plan.fpar,
                           plan.ipar, plan.rad_off, plan.rad_fn, plan.wrad_off, plan.wrad_fn, plan.ang_off,
                           plan.ang_fn, plan.wang_off, plan.wang_fn, plan.pair_slot, plan.pair_first,
                           plan.ang_rc_max, plan.ang_jk_limit, plan.wang_jk_limit, plan.key_off, plan.key_par,
                           plan.width, plan.n_features, grad_G.detach().double().contiguous().numpy(),
                           plan.slot_features, layout.order.numpy(), out)
    return torch.from_numpy(out).to(grad_G.dtype)


class SymmetryFunctionsRecompute(torch.autograd.Function):
    """``G = kernel(sorted pair vectors)`` keeping no ``dG``: the backward recomputes it per centre."""

    @staticmethod
    def forward(ctx, vectors, desc, numbers, plan, layout):
        G, _ = _run(plan, layout.vectors, layout, want_dG=False)
        ctx.set_materialize_grads(False)
        ctx.desc, ctx.numbers, ctx.plan, ctx.layout = desc, numbers, plan, layout
        ctx.save_for_backward(vectors)
        return G

    @staticmethod
    def backward(ctx, grad_G):
        if grad_G is None:
            return None, None, None, None, None
        (vectors,) = ctx.saved_tensors
        if torch.is_grad_enabled():
            # recorded backward (create_graph): the full dG with its own autograd node, so that the
            # contraction stays differentiable in grad_G and in the positions (SymmetryFunctionsKernel)
            _, dG = SymmetryFunctionsKernel.apply(vectors, ctx.desc, ctx.numbers, ctx.plan, ctx.layout)
            return _contract(grad_G, dG, ctx.plan, ctx.layout), None, None, None, None
        return _recompute_contract(grad_G, ctx.plan, ctx.layout), None, None, None, None


def stores_derivatives(plan: KernelPlan, n_pairs: int, device: torch.device) -> bool:
    """Whether the engine keeps ``dG`` between the passes (below :data:`STORED_DERIVATIVES_LIMIT`,
    or on a GPU, where the recomputing kernel does not exist) or recomputes it."""
    return device.type != "cpu" or n_pairs * plan.width * 3 * 8 <= STORED_DERIVATIVES_LIMIT


def kernel_features(desc, numbers: torch.Tensor, slots: torch.Tensor, graph) -> torch.Tensor:
    """Raw features ``[N, F_max]`` of ``graph`` (pairs within ``desc.cutoff``) by the compiled kernels."""
    if graph.vectors.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"symmetry-function kernels need float32 or float64 vectors, got {graph.vectors.dtype}")
    plan = build_plan(desc)
    store = getattr(graph, "descriptor_store", None)
    if store is not None:
        # a structure whose positions do not change between calls (training): the kernel runs
        # once, later calls reuse (layout, G, dG); keyed by descriptor, sub-graph and dtype
        key = (id(desc), float(graph.cutoff), int(graph.vectors.shape[0]), graph.vectors.dtype, graph.vectors.device)
        hit = store.get(key)
        if hit is None:
            layout = pair_layout(desc, numbers, slots, graph)
            G, dG = _run(plan, layout.vectors, layout, want_dG=True)
            hit = store[key] = (layout, G, dG)
        layout, G, dG = hit
        if torch.is_grad_enabled() and graph.vectors.requires_grad:
            return SymmetryFunctionsKernel.apply(graph.vectors, desc, numbers, plan, layout, (G, dG))[0]
        return G.view_as(G)
    layout = pair_layout(desc, numbers, slots, graph)
    if torch.is_grad_enabled() and graph.vectors.requires_grad:
        if not stores_derivatives(plan, layout.vectors.shape[0], graph.vectors.device):
            return SymmetryFunctionsRecompute.apply(graph.vectors, desc, numbers, plan, layout)
        G, _ = SymmetryFunctionsKernel.apply(graph.vectors, desc, numbers, plan, layout)
        return G
    G, _ = _run(plan, layout.vectors, layout, want_dG=False)
    return G
