"""The :class:`SymmetryFunctions` module: a set of functions, its scaling, and the torch reference.

Evaluation is dispatched by :attr:`SymmetryFunctions.engine`: the compiled kernels
(:mod:`hybridpot.descriptors.engine`) by default, or the vectorised torch implementation
below (``engine = "reference"``), which tests compare the kernels against, ``torch.jit.trace``
export uses, and the kernels' second-derivative fallback calls. In the reference, pair terms
for every distinct parameter set are accumulated with ``index_add`` into per-(atom, neighbour
element) channels, triplet terms (explicit triplet tensors, or per-atom moment tensors for
type 9 with integer zeta) into per-(atom, element pair) channels, and each element's feature
vector is a gather from those channels. Features are padded to the longest element's length;
``feature_mask`` says which entries are real.
"""

from __future__ import annotations

import math
from typing import Iterable, List, Optional, Sequence

import torch
from ase.data import chemical_symbols
from torch import nn

from ..cutoff import cutoff_function, cutoff_type_number
from ..neighbors import Graph
from ..polynomials import polynomial_step
from .families import SymmetryFunction, element_number, parse_subtype as _parse_subtype

__all__ = ["SymmetryFunctions", "triplet_indices", "compact_core", "ENGINES"]

#: descriptor engines: "auto" (compiled kernels where available), "kernel", "reference" (torch)
ENGINES = ("auto", "kernel", "reference")


def compact_core(x: torch.Tensor, kind: torch.Tensor | int, asymmetric: torch.Tensor | bool = False,
                 kinds: Optional[Sequence[int]] = None) -> torch.Tensor:
    """n2p2 compact core function of ``x`` in ``[0, 1)`` (dimensionless).

    ``kind`` 1-4: polynomials ``p1``-``p4`` (1 at 0, 0 at 1, 1-4 vanishing derivatives
    at both ends); 0: ``e * exp(1 / (x^2 - 1))``. ``asymmetric`` replaces ``x`` by
    ``(2 - x) x`` first (n2p2 ``p?a``). ``kind`` and ``asymmetric`` broadcast against ``x``.
    Arguments outside ``[0, 1)`` must be masked by the caller. ``kinds`` (optional) lists
    the kinds that occur, so that only those are evaluated.
    """
    if kinds is None:
        kinds = sorted(set(torch.as_tensor(kind).flatten().tolist()))
    kind = torch.as_tensor(kind, device=x.device)
    if isinstance(asymmetric, bool):
        if asymmetric:
            x = (2.0 - x) * x
    else:
        asymmetric = torch.as_tensor(asymmetric, device=x.device)
        if bool(asymmetric.any()):
            x = torch.where(asymmetric, (2.0 - x) * x, x)
    x2 = x * x
    out = None
    for k in kinds:
        if 1 <= k <= 4:
            value = polynomial_step(x, k)
        elif k == 0:
            x_safe = torch.where(x2 < 1.0, x, torch.zeros_like(x))
            value = math.e * torch.exp(1.0 / (x_safe * x_safe - 1.0))
        else:
            raise ValueError(f"unknown compact core kind {k}")
        out = value if out is None else torch.where(kind == k, value, out)
    return out


def triplet_indices(centers: torch.Tensor, n_atoms: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Enumerate pairs of pairs sharing a centre, each unordered pair once.

    Parameters
    ----------
    centers : torch.Tensor
        Central atom of each pair, ``[M]``, sorted ascending.
    n_atoms : int

    Returns
    -------
    (p, q) : tuple of torch.Tensor
        Pair indices with ``centers[p] == centers[q]`` and ``p < q``, ``[T]`` each.
    """
    device = centers.device
    m = centers.shape[0]
    if m == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    counts = torch.bincount(centers, minlength=n_atoms)
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(m, device=device) - start[centers]
    n_after = counts[centers] - local - 1
    p = torch.repeat_interleave(torch.arange(m, device=device), n_after)
    group_start = torch.cumsum(n_after, 0) - n_after
    within = torch.arange(p.shape[0], device=device) - torch.repeat_interleave(group_start, n_after)
    q = p + 1 + within
    return p, q


def _compact(a: torch.Tensor, left: torch.Tensor, right: torch.Tensor, kind, asym, inclusive: bool = False,
             kinds: Optional[Sequence[int]] = None) -> torch.Tensor:
    """n2p2 compact function of ``a`` on ``(left, right)``, zero outside (n2p2 ``CompactFunction``).

    ``inclusive`` keeps the end points (the angular part, whose support is checked by the
    caller); the value there is the core's value at 1, i.e. 0.
    """
    center = (right + left) / 2.0
    scale = 1.0 / ((right - left) / 2.0)
    x = ((a - center) * scale).abs()
    inside = (a >= left) & (a <= right) if inclusive else (a > left) & (a < right)
    inside = inside & (x < 1.0)
    x_safe = torch.where(inside, x, torch.zeros_like(x))
    value = compact_core(x_safe, kind, asym, kinds=kinds)
    return torch.where(inside, value, torch.zeros_like(value))


def _sorted_triplets(slots: torch.Tensor, graph: Graph, n_atoms: int):
    """Pairs sorted by centre and the triplets over them (reference evaluation).

    Returns ``(order, centers, vectors, distances, neighbor_slot, p, q)``: the sort order of the
    graph's pairs, their centres, vectors ``[M, 3]``, distances and neighbour element slots in that
    order, and the pair indices ``p < q`` of every triplet (:func:`triplet_indices`).
    """
    order = torch.argsort(graph.i, stable=True)
    centers = graph.i[order]
    p, q = triplet_indices(centers, n_atoms)
    return order, centers, graph.vectors[order], graph.distances[order], slots[graph.j[order]], p, q


class SymmetryFunctions(nn.Module):
    """Element-resolved symmetry-function descriptors with stored feature scaling.

    Parameters
    ----------
    functions : sequence of SymmetryFunction
        All functions; each element's features are its functions in the given order.
    cutoff_type : int or str
        n2p2 cutoff type (default 2, ``tanhu``), shared by all functions.
    cutoff_alpha : float
        n2p2 inner cutoff shift alpha (types 1, 4-8).
    elements : iterable of int or str, optional
        Elements to support (default: all elements named by ``functions``).
    """

    def __init__(
        self,
        functions: Sequence[SymmetryFunction],
        cutoff_type: int | str = 2,
        cutoff_alpha: float = 0.0,
        elements: Optional[Iterable[int | str]] = None,
    ):
        super().__init__()
        if not functions:
            raise ValueError("no symmetry functions given")
        self.functions: List[SymmetryFunction] = list(functions)
        self.cutoff_type = cutoff_type_number(cutoff_type)
        self.cutoff_alpha = float(cutoff_alpha)
        named = {f.center for f in functions} | {z for f in functions for z in f.neighbors}
        if elements is not None:
            named |= {element_number(e) for e in elements}
        self.elements: List[int] = sorted(named)
        centers = {f.center for f in functions}
        missing = [chemical_symbols[z] for z in self.elements if z not in centers]
        if missing:
            raise ValueError(f"no symmetry functions centred on element(s) {missing}")
        n_el = len(self.elements)
        slot = {z: s for s, z in enumerate(self.elements)}
        lookup = torch.full((119,), -1, dtype=torch.long)
        lookup[self.elements] = torch.arange(n_el)
        self.register_buffer("element_slot", lookup, persistent=False)
        pair_slot = torch.zeros(n_el, n_el, dtype=torch.long)
        n_pairs = 0
        for a in range(n_el):
            for b in range(a, n_el):
                pair_slot[a, b] = pair_slot[b, a] = n_pairs
                n_pairs += 1
        self.register_buffer("pair_slot", pair_slot, persistent=False)
        self.n_pair_channels = n_pairs

        # distinct parameter sets (Gaussian radial/angular, compact radial/angular)
        radial_sets, angular_sets, cradial_sets, cangular_sets, wradial_sets, wangular_sets = [], [], [], [], [], []

        def set_key(f: SymmetryFunction):
            if f.is_compact:
                kind, asym = _parse_subtype(f.subtype)
                if f.is_radial:
                    return (wradial_sets if f.is_weighted else cradial_sets), (f.r_left, f.r_cut, float(kind), float(asym))
                return (wangular_sets if f.is_weighted else cangular_sets), (
                    float(f.type in (22, 25)), f.r_left, f.r_cut, f.angle_left, f.angle_right, float(kind), float(asym))
            if f.is_radial:
                return radial_sets, (f.eta, f.r_shift, f.r_cut)
            return angular_sets, (float(f.type == 9), f.eta, f.r_shift, f.r_cut, f.lam, f.zeta)

        for f in self.functions:
            sets, key = set_key(f)
            if key not in sets:
                sets.append(key)
        self.n_radial_sets, self.n_angular_sets = len(radial_sets), len(angular_sets)
        self.n_cradial_sets, self.n_cangular_sets = len(cradial_sets), len(cangular_sets)
        self.n_wradial_sets, self.n_wangular_sets = len(wradial_sets), len(wangular_sets)
        self._cradial_kinds = sorted({int(k[2]) for k in cradial_sets})
        self._cangular_kinds = sorted({int(k[5]) for k in cangular_sets})
        self._wradial_kinds = sorted({int(k[2]) for k in wradial_sets})
        self._wangular_kinds = sorted({int(k[5]) for k in wangular_sets})
        as_buffer = lambda sets, width: torch.tensor(sets, dtype=torch.float64).reshape(-1, width)
        self.register_buffer("radial_params", as_buffer(radial_sets, 3), persistent=False)
        self.register_buffer("angular_params", as_buffer(angular_sets, 6), persistent=False)
        self.register_buffer("cradial_params", as_buffer(cradial_sets, 4), persistent=False)
        self.register_buffer("cangular_params", as_buffer(cangular_sets, 7), persistent=False)
        self.register_buffer("wradial_params", as_buffer(wradial_sets, 4), persistent=False)
        self.register_buffer("wangular_params", as_buffer(wangular_sets, 7), persistent=False)
        self.radial_cutoff = max([k[2] for k in radial_sets] + [k[1] for k in cradial_sets + wradial_sets], default=0.0)
        self.angular_cutoff = max([k[3] for k in angular_sets] + [k[2] for k in cangular_sets + wangular_sets],
                                  default=0.0)
        self.cutoff = max(self.radial_cutoff, self.angular_cutoff)

        # gather table: element slot x feature -> column of the flat channel buffer
        # layout: [Gaussian radial | Gaussian angular | compact radial | compact angular | zero]
        offsets = [0]
        for width in (n_el * self.n_radial_sets, n_pairs * self.n_angular_sets, n_el * self.n_cradial_sets,
                      n_pairs * self.n_cangular_sets, self.n_wradial_sets, self.n_wangular_sets):
            offsets.append(offsets[-1] + width)
        zero_col = offsets[-1]
        per_element = [[f for f in self.functions if f.center == z] for z in self.elements]
        self.n_features = [len(fs) for fs in per_element]
        self.max_features = max(self.n_features)
        table = torch.full((n_el, self.max_features), zero_col, dtype=torch.long)
        for e, fs in enumerate(per_element):
            for k, f in enumerate(fs):
                sets, key = set_key(f)
                block = [id(x) for x in (radial_sets, angular_sets, cradial_sets, cangular_sets, wradial_sets,
                                         wangular_sets)].index(id(sets))
                if f.is_weighted:
                    channel = 0
                elif f.is_radial:
                    channel = slot[f.neighbors[0]]
                else:
                    channel = int(pair_slot[slot[f.neighbors[0]], slot[f.neighbors[1]]])
                table[e, k] = offsets[block] + channel * len(sets) + sets.index(key)
        self.register_buffer("gather_table", table, persistent=False)
        mask = torch.zeros(n_el, self.max_features, dtype=torch.bool)
        for e, n in enumerate(self.n_features):
            mask[e, :n] = True
        self.register_buffer("element_feature_mask", mask, persistent=False)

        # scaling: scaled = (G - shift) * factor + offset, per element and feature
        self.register_buffer("scale_shift", torch.zeros(n_el, self.max_features, dtype=torch.float64))
        self.register_buffer("scale_factor", torch.ones(n_el, self.max_features, dtype=torch.float64))
        self.register_buffer("scale_offset", torch.zeros(n_el, self.max_features, dtype=torch.float64))
        self.scaling_mode = "none"

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_n2p2(cls, lines: str | Iterable[str], cutoff_type: int | str = 2, cutoff_alpha: float = 0.0,
                  length_unit: float = 1.0, elements=None) -> "SymmetryFunctions":
        """Build from n2p2 ``symfunction_short`` (or ``symfunction``) lines (other lines are ignored).

        The functions keep the order of the lines; :func:`hybridpot.from_n2p2` sorts them
        as n2p2 does (:meth:`SymmetryFunction.n2p2_sort_key`) to match n2p2's weights.

        ``lines`` may be one string (e.g. an ``input.nn`` text) or an iterable of lines.
        A ``cutoff_type`` line among them overrides the arguments.
        """
        if isinstance(lines, str):
            lines = lines.splitlines()
        functions = []
        for line in lines:
            words = line.split("#")[0].split()
            if not words:
                continue
            if words[0] in ("symfunction_short", "symfunction"):
                functions.append(SymmetryFunction.from_n2p2(" ".join(["symfunction_short"] + words[1:]),
                                                            length_unit=length_unit))
            elif words[0] == "cutoff_type":
                cutoff_type = int(words[1])
                cutoff_alpha = float(words[2]) if len(words) > 2 else 0.0
        return cls(functions, cutoff_type=cutoff_type, cutoff_alpha=cutoff_alpha, elements=elements)

    def to_n2p2(self, length_unit: float = 1.0) -> List[str]:
        """The functions as n2p2 lines, preceded by the ``cutoff_type`` line."""
        head = f"cutoff_type {self.cutoff_type} {self.cutoff_alpha!r}"
        return [head] + [f.to_n2p2(length_unit) for f in self.functions]

    @classmethod
    def default(
        cls,
        elements: Iterable[int | str],
        r_cut: float = 6.0,
        n_radial: int = 8,
        angular_r_cut: Optional[float] = None,
        angular_etas: Sequence[float] = (0.005, 0.03),
        zetas: Sequence[float] = (1.0, 4.0),
        angular_type: int = 9,
        r_min: float = 0.8,
        cutoff_type: int | str = 6,
    ) -> "SymmetryFunctions":
        """A general-purpose set for ``elements``.

        Radial: ``n_radial`` shifted Gaussians per neighbour element, centres evenly spaced
        from ``r_min`` to ``r_cut`` with widths equal to the spacing. Angular (type 9 by
        default): per element pair, ``eta`` in ``angular_etas``, ``lambda = +-1``, ``zeta``
        in ``zetas``, centred at 0, cutoff ``angular_r_cut`` (default ``r_cut``).
        Cutoff function: poly2 (type 6), twice continuously differentiable.
        """
        zs = sorted({element_number(e) for e in elements})
        angular_r_cut = r_cut if angular_r_cut is None else angular_r_cut
        spacing = (r_cut - r_min) / max(n_radial - 1, 1)
        eta_radial = 1.0 / (2.0 * spacing**2)
        functions = []
        for c in zs:
            for e in zs:
                for k in range(n_radial):
                    functions.append(SymmetryFunction(c, 2, (e,), eta_radial, r_cut, r_min + k * spacing))
            for a_i, a in enumerate(zs):
                for b in zs[a_i:]:
                    for eta in angular_etas:
                        for zeta in zetas:
                            for lam in (-1.0, 1.0):
                                functions.append(SymmetryFunction(c, angular_type, (a, b), eta, angular_r_cut, 0.0, lam, zeta))
        return cls(functions, cutoff_type=cutoff_type)

    # ------------------------------------------------------------------ evaluation
    def slots(self, numbers: torch.Tensor) -> torch.Tensor:
        """Element slot (index into ``self.elements``) of every atom; raises for unknown elements."""
        s = self.element_slot[numbers]
        if bool((s < 0).any()):
            bad = torch.nonzero(s < 0).flatten().tolist()
            raise ValueError(
                f"atom(s) {bad[:20]} have element(s) {sorted(set(numbers[s < 0].tolist()))} without symmetry functions"
            )
        return s

    def feature_mask(self, numbers: torch.Tensor) -> torch.Tensor:
        """Which padded feature entries are real, ``[N, max_features]`` bool."""
        return self.element_feature_mask[self.slots(numbers)]

    def forward(self, numbers: torch.Tensor, graph: Graph, scaled: bool = True) -> torch.Tensor:
        """Symmetry functions of every atom.

        Parameters
        ----------
        numbers : torch.Tensor
            Atomic numbers ``[N]``.
        graph : Graph
            Neighbour graph with cutoff >= ``self.cutoff``.
        scaled : bool
            Apply the stored feature scaling (default) or return raw values.

        Returns
        -------
        torch.Tensor
            ``[N, max_features]``; entries beyond an element's own count are zero.
        """
        cache = graph.feature_cache
        if cache is not None:
            key = (id(self), scaled, torch.is_grad_enabled())
            hit = cache.get(key)
            if hit is not None and hit[0] is numbers:
                return hit[1]
        features = self._compute(numbers, graph, scaled)
        if cache is not None:
            cache[key] = (numbers, features)
        return features

    #: which implementation computes the features: "auto" (default: the compiled kernels on
    #: CPU, numba-cuda kernels on a GPU when importable, else the torch reference with a
    #: one-time warning), "kernel" (compiled, error if unavailable) or "reference" (torch).
    #: A class attribute: set it on an instance to choose per descriptor.
    engine: str = "auto"

    def resolved_engine(self, device: torch.device) -> str:
        """The engine ("kernel" or "reference") that a call on ``device`` uses."""
        from . import engine as _engine

        choice = getattr(self, "engine", "auto")
        if choice not in ENGINES:
            raise ValueError(f"unknown descriptor engine {choice!r}; choose one of {ENGINES}")
        if choice == "reference" or torch.jit.is_tracing() or torch.jit.is_scripting():
            return "reference"
        device = torch.device(device)
        if device.type == "cpu":
            ok, what = _engine.kernel_available(), "numba"
        elif device.type == "cuda":
            ok, what = _engine.cuda_kernel_available(), "numba-cuda (pip install 'hybridpot[cuda]') and a GPU"
        else:
            ok, what = False, f"a kernel for device type {device.type!r}"
        if ok:
            return "kernel"
        if choice == "kernel":
            raise RuntimeError(f"descriptor engine 'kernel' needs {what}; set engine='reference' or 'auto'")
        _engine._warn_once(device.type, f"symmetry-function kernels unavailable on {device.type} (need {what}); "
                                        "using the slower torch reference implementation")
        return "reference"

    def _compute(self, numbers: torch.Tensor, graph: Graph, scaled: bool) -> torch.Tensor:
        slots = self.slots(numbers)
        if self.resolved_engine(graph.vectors.device) == "kernel":
            from .engine import kernel_features

            # a graph built for this cutoff holds no farther pairs: within() would only copy
            sub = graph if graph.cutoff <= self.cutoff else graph.within(self.cutoff)
            features = kernel_features(self, numbers, slots, sub)
        else:
            features = self._reference_raw(numbers, graph, slots=slots)
        if scaled and self.scaling_mode != "none":
            dtype = features.dtype
            features = (features - self.scale_shift[slots].to(dtype)) * self.scale_factor[slots].to(dtype) + self.scale_offset[
                slots
            ].to(dtype)
            features = features * self.element_feature_mask[slots].to(dtype)
        return features

    def _reference_raw(self, numbers: torch.Tensor, graph: Graph, symmetric_pairs: bool = True,
                       slots: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Raw (unscaled) features ``[N, max_features]`` by the torch reference implementation.

        ``symmetric_pairs`` lets the radial part evaluate each unordered pair once and add
        it to both atoms (a full list is assumed symmetric); False keeps every feature of
        atom i a function of the pairs centred on i only (what the kernels' dG/dr_ij means).
        """
        n_atoms = numbers.shape[0]
        dtype = graph.vectors.dtype
        slots = self.slots(numbers) if slots is None else slots
        n_el = len(self.elements)
        columns = []
        if self.n_radial_sets:
            columns.append(self._radial(slots, graph.within(self.radial_cutoff), n_atoms, n_el, dtype,
                                        symmetric_pairs))
        if self.n_angular_sets:
            columns.append(self._angular(slots, graph.within(self.angular_cutoff), n_atoms, dtype))
        if self.n_cradial_sets:
            columns.append(self._compact_radial(slots, graph.within(self.radial_cutoff), n_atoms, n_el, dtype))
        if self.n_cangular_sets:
            columns.append(self._compact_angular(slots, graph.within(self.angular_cutoff), n_atoms, dtype))
        if self.n_wradial_sets:
            columns.append(self._compact_radial(slots, graph.within(self.radial_cutoff), n_atoms, n_el, dtype,
                                                weighted=True, numbers=numbers))
        if self.n_wangular_sets:
            columns.append(self._compact_angular(slots, graph.within(self.angular_cutoff), n_atoms, dtype,
                                                 weighted=True, numbers=numbers))
        columns.append(torch.zeros(n_atoms, 1, dtype=dtype, device=numbers.device))
        flat = torch.cat(columns, dim=1)
        return torch.gather(flat, 1, self.gather_table[slots])

    def _cutoff_columns(self, r: torch.Tensor, rc: torch.Tensor, dtype) -> torch.Tensor:
        """``f_c(r; rc_s)`` for every set ``s`` ``[M, S]``, evaluated once per distinct cutoff."""
        key = tuple(rc.detach().cpu().tolist())
        cache = self.__dict__.setdefault("_cutoff_plan_cache", {})
        if key not in cache:
            unique = sorted(set(key))
            cache[key] = (unique, [unique.index(v) for v in key])
        unique, inverse = cache[key]
        if len(unique) == 1:
            return cutoff_function(r, unique[0], self.cutoff_type, self.cutoff_alpha)  # [M, 1], broadcasts
        rcu = torch.tensor(unique, dtype=dtype, device=r.device)
        fc = cutoff_function(r, rcu, self.cutoff_type, self.cutoff_alpha)
        return fc[:, torch.tensor(inverse, device=r.device)]

    def _radial(self, slots, graph: Graph, n_atoms: int, n_el: int, dtype, symmetric_pairs: bool = True) -> torch.Tensor:
        params = self.radial_params.to(dtype)
        eta, rs = params[:, 0], params[:, 1]
        # the list holds both directions of every pair: evaluate each unordered pair once and
        # add it to both atoms (i < j, or i == j with the first non-zero shift positive)
        i, j, sh = graph.i, graph.j, graph.shifts
        first_nonzero = torch.where(sh[:, 0] != 0, sh[:, 0], torch.where(sh[:, 1] != 0, sh[:, 1], sh[:, 2]))
        keep = torch.nonzero((i < j) | ((i == j) & (first_nonzero > 0))).flatten()
        if not symmetric_pairs or 2 * keep.shape[0] != i.shape[0]:  # every entry as given
            keep = None
        if keep is None:
            r = graph.distances.unsqueeze(1)
            channel = i * n_el + slots[j]
        else:
            r = graph.distances.index_select(0, keep).unsqueeze(1)  # [H, 1]
            i_h, j_h = i[keep], j[keep]
            channel = torch.cat([i_h * n_el + slots[j_h], j_h * n_el + slots[i_h]])
        values = torch.exp(-eta * (r - rs) ** 2) * self._cutoff_columns(r, self.radial_params[:, 2], dtype)
        if keep is not None:
            values = torch.cat([values, values])
        out = torch.zeros(n_atoms * n_el, self.n_radial_sets, dtype=dtype, device=values.device)
        out = out.index_add(0, channel, values)
        return out.reshape(n_atoms, n_el * self.n_radial_sets)

    #: type-9 (wide) angular sets with integer zeta up to this value are summed through
    #: per-atom moment tensors (O(neighbours) per atom); 0 always uses the triplet sum.
    moment_max_zeta: int = 8

    def _angular_plan(self):
        """Split the Gaussian angular sets into moment-summable and triplet-summed ones (cached)."""
        rows = self.angular_params.detach().cpu().tolist()
        # keyed by the parameter values: a dtype round trip of the buffers must rebuild it
        key = (tuple(map(tuple, rows)), int(self.moment_max_zeta))
        plan = self.__dict__.get("_angular_plan_cache")
        if plan is not None and plan[0] == key:
            return plan[1]
        moment, triplet = [], []
        for k, (wide, eta, rs, rc, lam, zeta) in enumerate(rows):
            ok = wide > 0.5 and float(zeta).is_integer() and 1 <= zeta <= self.moment_max_zeta and abs(lam) == 1.0
            (moment if ok else triplet).append(k)
        radial_keys = sorted({tuple(rows[k][1:4]) for k in moment})
        lmax = max([int(rows[k][5]) for k in moment], default=0)
        # multi-indices alpha (a, b, c), |alpha| = n <= lmax, multinomial weights n! / (a! b! c!)
        alphas = [(a, b, n - a - b) for n in range(lmax + 1) for a in range(n, -1, -1) for b in range(n - a, -1, -1)]
        weights = [math.factorial(sum(al)) / (math.factorial(al[0]) * math.factorial(al[1]) * math.factorial(al[2]))
                   for al in alphas]
        degree = [sum(al) for al in alphas]
        # coefficients of (1 + lam c)^zeta 2^(1 - zeta) in powers c^n, and its value at c = 1
        coef = torch.zeros(len(moment), lmax + 1, dtype=torch.float64)
        diag = torch.zeros(len(moment), dtype=torch.float64)
        for m, k in enumerate(moment):
            lam, zeta = rows[k][4], int(rows[k][5])
            for n in range(zeta + 1):
                coef[m, n] = 2.0 ** (1 - zeta) * math.comb(zeta, n) * lam**n
            diag[m] = 2.0 ** (1 - zeta) * (1.0 + lam) ** zeta
        n_el = self.pair_slot.shape[0]
        pa, pb = torch.zeros(self.n_pair_channels, dtype=torch.long), torch.zeros(self.n_pair_channels, dtype=torch.long)
        for a in range(n_el):
            for b in range(a, n_el):
                pa[int(self.pair_slot[a, b])], pb[int(self.pair_slot[a, b])] = a, b
        plan = {
            "moment": moment, "triplet": triplet, "radial_keys": radial_keys, "lmax": lmax,
            "radial_of_set": torch.tensor([radial_keys.index(tuple(rows[k][1:4])) for k in moment], dtype=torch.long),
            "alphas": torch.tensor(alphas, dtype=torch.long).reshape(-1, 3),
            "weights": torch.tensor(weights, dtype=torch.float64),
            "degree": torch.tensor(degree, dtype=torch.long), "coef": coef, "diag": diag, "pa": pa, "pb": pb,
        }
        self.__dict__["_angular_plan_cache"] = (key, plan)
        return plan

    def _angular(self, slots, graph: Graph, n_atoms: int, dtype) -> torch.Tensor:
        plan = self._angular_plan()
        device = graph.vectors.device
        n_sets = self.n_angular_sets
        if not plan["moment"]:
            out = self._angular_triplets(slots, graph, n_atoms, dtype, list(range(n_sets)))
            return out.reshape(n_atoms, self.n_pair_channels * n_sets)
        parts = [(plan["moment"], self._angular_moments(slots, graph, n_atoms, dtype, plan))]
        if plan["triplet"]:
            parts.append((plan["triplet"], self._angular_triplets(slots, graph, n_atoms, dtype, plan["triplet"])))
        sets = torch.tensor([k for idx, _ in parts for k in idx], dtype=torch.long, device=device)
        values = torch.cat([v for _, v in parts], dim=2)  # [N, P, n_sets] in the order of `sets`
        out = torch.empty_like(values).index_copy(2, sets, values)
        return out.reshape(n_atoms, self.n_pair_channels * n_sets)

    def _angular_moments(self, slots, graph: Graph, n_atoms: int, dtype, plan) -> torch.Tensor:
        """Wide (type 9) angular sets with integer zeta through moment tensors, ``[N, P, S_m]``.

        With unit vectors ``u_j`` and pair factors ``h_j = exp(-eta (r_ij - rs)^2) f_c(r_ij)``,
        ``(1 + lam u_j.u_k)^zeta = sum_n C(zeta, n) lam^n (u_j.u_k)^n`` and
        ``(u_j.u_k)^n = sum_{|alpha| = n} n!/alpha! u_j^alpha u_k^alpha``, so the sum over
        neighbour pairs of elements (a, b) is ``sum_alpha w_alpha M_a^alpha M_b^alpha`` with
        per-atom moments ``M_e^alpha = sum_{j in e} h_j u_j^alpha``: O(neighbours) per atom.
        Same-element channels count each unordered pair once: (full sum - the ``j = k``
        terms ``(1 + lam)^zeta h_j^2``) / 2.
        """
        device = graph.vectors.device
        n_el = self.pair_slot.shape[0]
        keys = torch.tensor(plan["radial_keys"], dtype=dtype, device=device)  # [R, 3]
        eta, rs, rc = keys[:, 0], keys[:, 1], keys[:, 2]
        r = graph.distances.unsqueeze(1)
        h = torch.exp(-eta * (r - rs) ** 2) * self._cutoff_columns(r, keys[:, 2], dtype)  # [M, R]
        u = graph.vectors / graph.distances.unsqueeze(1)
        lmax = plan["lmax"]
        alphas = plan["alphas"].to(device)
        powers = [torch.ones_like(u)]
        for _ in range(lmax):
            powers.append(powers[-1] * u)
        pw = torch.stack(powers, dim=2)  # [M, 3, lmax + 1]
        mono = (pw[:, 0].index_select(1, alphas[:, 0]) * pw[:, 1].index_select(1, alphas[:, 1])
                * pw[:, 2].index_select(1, alphas[:, 2]))  # [M, A]
        n_r, n_a = h.shape[1], mono.shape[1]
        channel = graph.i * n_el + slots[graph.j]
        moments = torch.zeros(n_atoms * n_el, n_r, n_a, dtype=dtype, device=device)
        moments = moments.index_add(0, channel, h.unsqueeze(2) * mono.unsqueeze(1)).reshape(n_atoms, n_el, n_r, n_a)
        diag_sum = torch.zeros(n_atoms * n_el, n_r, dtype=dtype, device=device)
        diag_sum = diag_sum.index_add(0, channel, h * h).reshape(n_atoms, n_el, n_r)
        # neighbours per (atom, element): a same-element channel with fewer than two has no
        # pair at all, and (full - diagonal) / 2 would leave rounding noise (~1e-18) instead of
        # the exact zero of the triplet sum (noise that min/max feature scaling would amplify)
        counts = torch.zeros(n_atoms * n_el, dtype=dtype, device=device)
        counts = counts.index_add(0, channel, torch.ones_like(graph.distances)).reshape(n_atoms, n_el)
        pa, pb = plan["pa"].to(device), plan["pb"].to(device)
        weighted = moments * plan["weights"].to(device=device, dtype=dtype)
        prod = moments[:, pa] * weighted[:, pb]  # [N, P, R, A]
        by_degree = torch.nn.functional.one_hot(plan["degree"].to(device), lmax + 1).to(dtype)  # [A, L+1]
        powers_sum = prod @ by_degree  # [N, P, R, L+1]: sum_{j in a, k in b} h_j h_k (u_j.u_k)^n
        r_of_set = plan["radial_of_set"].to(device)
        coef = plan["coef"].to(device=device, dtype=dtype)  # [S_m, L+1]
        full = (powers_sum[:, :, r_of_set, :] * coef).sum(-1)  # [N, P, S_m]
        same = (pa == pb).to(dtype).view(1, -1, 1)
        diag = diag_sum[:, pa][:, :, r_of_set] * plan["diag"].to(device=device, dtype=dtype)  # [N, P, S_m]
        values = full * (1.0 - 0.5 * same) - 0.5 * same * diag
        no_pair = ((counts[:, pa] < 2) & (pa == pb).view(1, -1)).unsqueeze(2)  # [N, P, 1]
        return torch.where(no_pair, torch.zeros_like(values), values)

    def _angular_triplets(self, slots, graph: Graph, n_atoms: int, dtype, set_index) -> torch.Tensor:
        """Gaussian angular sets ``set_index`` by the explicit triplet sum, ``[N, P, len(set_index)]``."""
        order, centers, vectors, distances, neighbor_slot, p, q = _sorted_triplets(slots, graph, n_atoms)
        all_params = self.angular_params[set_index]
        params = all_params.to(dtype)
        n_sets = params.shape[0]
        wide, eta, rs, rc, lam, zeta = (params[:, k] for k in range(6))
        # pair factors exp(-eta (r - rs)^2) f_c(r), [M, S]: the (ij, ik) part of every triplet
        r = distances.unsqueeze(1)
        h = torch.exp(-eta * (r - rs) ** 2) * cutoff_function(r, rc, self.cutoff_type, self.cutoff_alpha)
        radial = h[p] * h[q]
        narrow_sets = torch.nonzero(wide < 0.5).flatten()
        if narrow_sets.numel():
            v_jk = vectors[q] - vectors[p]
            r_jk = v_jk.norm(dim=1).unsqueeze(1)
            eta_n, rs_n, rc_n = eta[narrow_sets], rs[narrow_sets], rc[narrow_sets]
            k = torch.exp(-eta_n * (r_jk - rs_n) ** 2) * cutoff_function(r_jk, rc_n, self.cutoff_type, self.cutoff_alpha)
            factor = torch.ones(1, n_sets, dtype=dtype, device=k.device).expand(k.shape[0], -1)
            radial = radial * factor.index_copy(1, narrow_sets, k)
        cos = (vectors[p] * vectors[q]).sum(1) / (distances[p] * distances[q])
        # angular factor 2^(1-zeta) (1 + lambda cos)^zeta for each distinct (lambda, zeta)
        lz = [(float(a), float(b)) for a, b in zip(all_params[:, 4].tolist(), all_params[:, 5].tolist())]
        combos = sorted(set(lz))
        # n2p2: a triplet with 1 + lambda cos <= 0 contributes 0 (any zeta, negative ones too)
        columns = []
        for l, z in combos:
            plam = 1.0 + l * cos
            positive = plam > 0.0
            power = torch.pow(torch.where(positive, plam, torch.ones_like(plam)), z)
            columns.append(2.0 ** (1.0 - z) * torch.where(positive, power, torch.zeros_like(power)))
        combo_of_set = torch.tensor([combos.index(c) for c in lz], device=cos.device)
        angular = torch.stack(columns, dim=1)[:, combo_of_set]
        values = angular * radial
        pair_channel = self.pair_slot[neighbor_slot[p], neighbor_slot[q]]
        channel = centers[p] * self.n_pair_channels + pair_channel
        out = torch.zeros(n_atoms * self.n_pair_channels, n_sets, dtype=dtype, device=values.device)
        out = out.index_add(0, channel, values)
        return out.reshape(n_atoms, self.n_pair_channels, n_sets)

    def _compact_radial(self, slots, graph: Graph, n_atoms: int, n_el: int, dtype, weighted: bool = False,
                        numbers: Optional[torch.Tensor] = None) -> torch.Tensor:
        params = (self.wradial_params if weighted else self.cradial_params).to(dtype)
        kinds = self._wradial_kinds if weighted else self._cradial_kinds
        rl, rc, kind, asym = params[:, 0], params[:, 1], params[:, 2].round().long(), params[:, 3] > 0.5
        r = graph.distances.unsqueeze(1)  # [M, 1]
        values = _compact(r, rl, rc, kind, asym, kinds=kinds)
        if weighted:  # n2p2 types 23: every neighbour, weighted by its atomic number
            values = values * numbers[graph.j].to(dtype).unsqueeze(1)
            n_el, channel = 1, graph.i
        else:
            channel = graph.i * n_el + slots[graph.j]
        out = torch.zeros(n_atoms * n_el, params.shape[0], dtype=dtype, device=values.device)
        out = out.index_add(0, channel, values)
        return out.reshape(n_atoms, n_el * params.shape[0])

    def _compact_angular(self, slots, graph: Graph, n_atoms: int, dtype, weighted: bool = False,
                         numbers: Optional[torch.Tensor] = None) -> torch.Tensor:
        order, centers, vectors, distances, neighbor_slot, p, q = _sorted_triplets(slots, graph, n_atoms)
        params = (self.wangular_params if weighted else self.cangular_params).to(dtype)
        wide, rl, rc = params[:, 0] > 0.5, params[:, 1], params[:, 2]
        kind, asym = params[:, 5].round().long(), params[:, 6] > 0.5
        # angle support in radians, computed as n2p2 does (degrees * pi / 180)
        a_left, a_right = params[:, 3] * math.pi / 180.0, params[:, 4] * math.pi / 180.0
        r_ij, r_ik = distances[p].unsqueeze(1), distances[q].unsqueeze(1)
        v_ij, v_ik = vectors[p], vectors[q]
        r_jk = (v_ik - v_ij).norm(dim=1).unsqueeze(1)
        cos = ((v_ij * v_ik).sum(1) / (distances[p] * distances[q])).unsqueeze(1)
        # n2p2 skips |cos| >= 1 (acos has an infinite derivative there)
        proper = cos.abs() < 1.0
        theta = torch.acos(torch.where(proper, cos, torch.zeros_like(cos)))
        in_angle = proper & (theta >= a_left) & (theta <= a_right)
        kinds = self._wangular_kinds if weighted else self._cangular_kinds
        ang = _compact(theta, a_left, a_right, kind, False, inclusive=True, kinds=kinds)
        radial = _compact(r_ij, rl, rc, kind, asym, kinds=kinds) * _compact(r_ik, rl, rc, kind, asym, kinds=kinds)
        if not bool(wide.all()):
            rl_jk = rl.clamp_min(0.0)
            narrow = _compact(r_jk, rl, rc, kind, asym, kinds=kinds) * ((r_jk > rl_jk) & (r_jk < rc)).to(dtype)
            radial = torch.where(wide, radial, radial * narrow)
        values = torch.where(in_angle, ang * radial, torch.zeros_like(radial))
        if weighted:  # n2p2 types 24, 25: all neighbour pairs, weighted by Z_j Z_k
            z = numbers[graph.j[order]].to(dtype)
            values = values * (z[p] * z[q]).unsqueeze(1)
            n_channels, channel = 1, centers[p]
        else:
            n_channels = self.n_pair_channels
            channel = centers[p] * n_channels + self.pair_slot[neighbor_slot[p], neighbor_slot[q]]
        out = torch.zeros(n_atoms * n_channels, params.shape[0], dtype=dtype, device=values.device)
        out = out.index_add(0, channel, values)
        return out.reshape(n_atoms, n_channels * params.shape[0])

    # ------------------------------------------------------------------ scaling
    def set_scaling(self, mode: str, g_min, g_max, g_mean, g_sigma, s_min: float = 0.0, s_max: float = 1.0) -> None:
        """Set n2p2-style scaling from per-element statistics (each ``[n_elements, max_features]``).

        Modes (n2p2 keywords): ``"none"``; ``"scale"`` (scale_symmetry_functions):
        ``S_min + (S_max-S_min)(G-G_min)/(G_max-G_min)``; ``"center"``: ``G - G_mean``;
        ``"scalecenter"`` (both keywords): ``S_min + (S_max-S_min)(G-G_mean)/(G_max-G_min)``;
        ``"sigma"`` (scale_symmetry_functions_sigma): ``S_min + (S_max-S_min)(G-G_mean)/G_sigma``.
        Features with zero range keep a factor of 1 instead of dividing by zero.
        """
        as_t = lambda x: torch.as_tensor(x, dtype=torch.float64).reshape(len(self.elements), self.max_features)
        g_min, g_max, g_mean, g_sigma = (as_t(x) for x in (g_min, g_max, g_mean, g_sigma))
        span = s_max - s_min
        zero = torch.zeros_like(g_min)
        one = torch.ones_like(g_min)

        def safe_div(den):
            return torch.where(den.abs() > 0, span / torch.where(den.abs() > 0, den, one), one)

        if mode == "none":
            shift, factor, offset = zero, one, zero
        elif mode == "scale":
            shift, factor, offset = g_min, safe_div(g_max - g_min), zero + s_min
        elif mode == "center":
            shift, factor, offset = g_mean, one, zero
        elif mode == "scalecenter":
            shift, factor, offset = g_mean, safe_div(g_max - g_min), zero + s_min
        elif mode == "sigma":
            shift, factor, offset = g_mean, safe_div(g_sigma), zero + s_min
        else:
            raise ValueError(f"unknown scaling mode {mode!r} (none, scale, center, scalecenter, sigma)")
        self.scale_shift.copy_(shift)
        self.scale_factor.copy_(factor)
        self.scale_offset.copy_(offset)
        self.scaling_mode = mode

    @torch.no_grad()
    def fit_scaling(self, raw_features: torch.Tensor, numbers: torch.Tensor, mode: str = "scalecenter",
                    s_min: float = -1.0, s_max: float = 1.0) -> None:
        """Compute scaling statistics from raw features ``[N, max_features]`` of a training set."""
        slots = self.slots(numbers)
        n_el = len(self.elements)
        stats = torch.zeros(4, n_el, self.max_features, dtype=torch.float64)
        stats[1] = 1.0
        for e in range(n_el):
            g = raw_features[slots == e].to(torch.float64)
            if g.shape[0] == 0:
                continue
            g_min, g_max, g_mean = g.min(0).values, g.max(0).values, g.mean(0)
            # a feature that varies by rounding noise only over the training set is constant:
            # dividing by its range would turn noise into O(1) inputs
            constant = (g_max - g_min) <= 1e-12 + 1e-10 * torch.maximum(g_max.abs(), g_min.abs())
            stats[0, e] = torch.where(constant, g_mean, g_min)
            stats[1, e] = torch.where(constant, g_mean, g_max)
            stats[2, e] = g_mean
            stats[3, e] = torch.where(constant, torch.zeros_like(g_mean), g.std(0, unbiased=False))
        self.set_scaling(mode, *stats, s_min=s_min, s_max=s_max)

    def extra_repr(self) -> str:
        return (
            f"elements={[chemical_symbols[z] for z in self.elements]}, n_features={self.n_features}, "
            f"cutoff={self.cutoff}, cutoff_type={self.cutoff_type}, scaling={self.scaling_mode!r}"
        )

    #: derived caches kept in ``__dict__``; rebuilt on demand, never pickled (a saved model must
    #: not carry a kernel plan of another hybridpot version)
    _CACHE_KEYS = ("_kernel_plan", "_angular_plan_cache", "_cutoff_plan_cache")

    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        return {k: v for k, v in state.items() if k not in self._CACHE_KEYS}

    # scaling mode is plain Python state: keep it in the state dict
    def get_extra_state(self):
        return {"scaling_mode": self.scaling_mode}

    def set_extra_state(self, state):
        self.scaling_mode = state.get("scaling_mode", "none")
