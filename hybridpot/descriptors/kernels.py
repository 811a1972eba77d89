"""Compiled symmetry-function kernels (numba): values G and derivatives dG/dr_ij in one pass.

Layout (built by :mod:`hybridpot.descriptors.engine`):

* pairs sorted by centre atom, CSR ``offsets [N + 1]``; ``vectors [M, 3]`` = r_j - r_i (Å);
* every function of the set is one row of ``fpar [n_fn, 10]`` (float, columns
  ``families.F_*``) and ``ipar [n_fn, 10]`` (int: family code, feature index, slot in the
  (centre, first element) channel, slot in the (centre, second element) channel, index of
  its cutoff radius in ``rc_table``, compact core kind, asymmetric, integer zeta?, zeta, index of its
  pair key among the centre element's ``key_par`` rows ``key_off[c]:key_off[c + 1]``, index of its
  compact angle key ``(angle_left, angle_right, kind)`` among the centre element's);
* ``key_par [n_keys, 5]``: the distinct pair factors of each centre element's angular functions,
  computed once per neighbour: Gaussian ``(eta, r_s, rc index, 0, 0)`` for
  ``exp(-eta (r - r_s)^2) f_c(r)``, compact ``(r_left, r_cut, asymmetric, kind, 1)`` for the
  radial compact function of types 21, 22, 24 and 25;
* functions are listed per channel: radial ones per (centre element, neighbour element)
  ``rad_off/rad_fn``, element-weighted radial ones per centre element ``wrad_off/wrad_fn``,
  angular ones per (centre element, element pair) ``ang_off/ang_fn`` and weighted angular
  ones per centre element ``wang_off/wang_fn``; ``ang_jk_limit`` (per angular channel) and
  ``wang_jk_limit`` (per centre element): the r_jk beyond which no function of the channel
  contributes (the largest r_c if all are narrow, infinity otherwise);
* outputs ``G [N, F_max]`` and, when ``want_dG``, ``dG [M, W, 3]``: the derivative of
  feature ``slot_features[c, e, w]`` of centre ``i`` with respect to pair vector ``p``
  (centre ``i``, neighbour of element ``e``). ``W`` is the largest number of functions of
  one centre element that one neighbour element can touch (its radial functions, the
  angular ones whose pair contains it, the weighted ones), so memory is ``O(pairs x W)``,
  not ``O(pairs x F_max)`` and never ``O(triplets)`` (triplets are looped over inside).

One centre atom is the unit of work (:func:`centre_kernel`, plain Python compiled by numba
for both targets through ``register_jitable``): a parallel ``prange`` over centres on the
CPU (:func:`symmetry_functions_cpu`), one CUDA thread per centre on a GPU
(:mod:`hybridpot.descriptors.cuda_kernels`). Work shared between functions as in n2p2's
symmetry-function groups: distances and cutoff values/derivatives once per neighbour and
distinct cutoff radius; the Gaussian pair factors ``exp(-eta (r - r_s)^2) f_c(r)`` and
their derivatives once per neighbour and distinct (eta, r_s, r_c) of the centre element's
angular functions; cos theta, r_jk and their derivatives once per triplet; the r_jk
factor once per triplet and (eta, r_s, r_c), reused by the functions that differ only in
lambda and zeta (adjacent in the channel lists); triplets whose r_jk is beyond every
function of a narrow-only channel are skipped before any angle work. Sums are
accumulated in float64 whatever the input dtype.
"""

from __future__ import annotations

import math

import os

import numpy as np
import numba
from numba import njit, prange
from numba.extending import register_jitable

# numba's default threading layer here is OpenMP, whose worker threads spin after each parallel
# kernel: on a busy 2-core machine that made the kernel path 5-10x slower than the torch
# reference (and slowed the torch ops after it), measured on Carbon_chain_4G training updates
# (78 ms vs 8 ms CPU per call). The workqueue layer has no spinning threads; a user's explicit
# NUMBA_THREADING_LAYER wins.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

from ..cutoff import cutoff_fdf
from ..polynomials import polynomial_step_fdf
from .families import (F_AL, F_AR, F_DNORM, F_ETA, F_LAM, F_NORM, F_RC, F_RL, F_RS, F_ZETA, K_COMPACT_NARROW,
                       K_COMPACT_WIDE, K_NARROW, K_RADIAL, K_RADIAL_WEIGHTED, K_WEIGHTED_NARROW,
                       K_WEIGHTED_WIDE, K_WIDE)

__all__ = ["centre_kernel", "symmetry_functions_cpu", "contract_cpu", "recompute_contract_cpu", "compact_fdf", "sort_by_centre",
           "N_SCRATCH_BASE"]

# integer parameter columns
I_CODE, I_FEATURE, I_SLOT_A, I_SLOT_B, I_RC, I_KIND, I_ASYM, I_USE_INT, I_ZETA, I_KEY, I_AKEY = range(11)
N_INT_PARAMS = 11
# key_par columns
KEY_A, KEY_B, KEY_C, KEY_KIND, KEY_COMPACT = range(5)
N_KEY_PARAMS = 5
#: scratch columns per neighbour: r, then (f_c, df_c) per distinct cutoff radius
N_SCRATCH_BASE = 1


@register_jitable
def compact_core_fdf(x, kind, asym):
    """n2p2 compact core and its derivative at ``x`` in ``[0, 1)``; kind 0 = ``e``, 1-4 = p1-p4."""
    dy = 1.0
    y = x
    if asym:
        y = (2.0 - x) * x
        dy = 2.0 - 2.0 * x
    if kind == 0:
        den = y * y - 1.0
        value = math.e * math.exp(1.0 / den)
        return value, value * (-2.0 * y / (den * den)) * dy
    f, df = polynomial_step_fdf(y, kind)
    return f, df * dy


@register_jitable
def compact_fdf(a, left, right, kind, asym, inclusive):
    """n2p2 compact function on ``(left, right)`` (``[left, right]`` if inclusive) and its derivative."""
    center = (right + left) / 2.0
    scale = 1.0 / ((right - left) / 2.0)
    if inclusive:
        if a < left or a > right:
            return 0.0, 0.0
    elif a <= left or a >= right:
        return 0.0, 0.0
    d = (a - center) * scale
    x = abs(d)
    if x >= 1.0:
        return 0.0, 0.0
    f, df = compact_core_fdf(x, kind, asym)
    if d < 0.0:
        df = -df
    return f, df * scale


@register_jitable
def _pow_int(x, n):
    """``x**n`` for integer ``n`` by squaring (n2p2 ``pow_int``; negative ``n`` inverts ``x``)."""
    if n < 0:
        x = 1.0 / x
        m = -n
    else:
        m = n
    result = 1.0
    while True:
        if m & 1:
            result *= x
        m >>= 1
        if m == 0:
            break
        x *= x
    return result


@register_jitable
def _add_pair_gradient(dG, p, slot, gx, gy, gz):
    dG[p, slot, 0] += gx
    dG[p, slot, 1] += gy
    dG[p, slot, 2] += gz


@register_jitable
def centre_kernel(i, vectors, offsets, center_slot, neighbor_slot, neighbor_z, n_el, n_pairs, cut_kind,
                  cut_alpha, rc_table, fpar, ipar, rad_off, rad_fn, wrad_off, wrad_fn, ang_off, ang_fn, wang_off,
                  wang_fn, pair_slot, pair_first, ang_rc_max, ang_jk_limit, wang_jk_limit, key_off, key_par, G, dG, want_dG,
                  scratch, ang_list):
    """Features of centre atom ``i`` (row ``G[i]``) and, if ``want_dG``, ``dG`` of its pairs.

    ``scratch [>= n_neighbours, 1 + 2 n_rc + 2 n_keys]`` and ``ang_list [>= n_neighbours]`` are work
    space of this centre only.
    """
    c = center_slot[i]
    start = offsets[i]
    end = offsets[i + 1]
    n_rc = rc_table.shape[0]
    n_feat = G.shape[1]
    for f in range(n_feat):
        G[i, f] = 0.0
    if want_dG:
        for p in range(start, end):
            for w in range(dG.shape[1]):
                dG[p, w, 0] = 0.0
                dG[p, w, 1] = 0.0
                dG[p, w, 2] = 0.0
    # per neighbour: distance and cutoff value/derivative for each distinct radius
    for p in range(start, end):
        q = p - start
        x = vectors[p, 0]
        y = vectors[p, 1]
        z = vectors[p, 2]
        r = math.sqrt(x * x + y * y + z * z)
        scratch[q, 0] = r
        for t in range(n_rc):
            fc, dfc = cutoff_fdf(r, rc_table[t], cut_kind, cut_alpha)
            scratch[q, 1 + 2 * t] = fc
            scratch[q, 2 + 2 * t] = dfc

    # ------------------------------------------------------------------ radial
    for p in range(start, end):
        q = p - start
        r = scratch[q, 0]
        e = neighbor_slot[p]
        ch = c * n_el + e
        inv_r = 1.0 / r
        ux = vectors[p, 0] * inv_r
        uy = vectors[p, 1] * inv_r
        uz = vectors[p, 2] * inv_r
        for pass_ in range(2):
            if pass_ == 0:
                lo = rad_off[ch]
                hi = rad_off[ch + 1]
            else:
                lo = wrad_off[c]
                hi = wrad_off[c + 1]
            for a in range(lo, hi):
                fn = rad_fn[a] if pass_ == 0 else wrad_fn[a]
                code = ipar[fn, I_CODE]
                if code == K_RADIAL:
                    if r >= fpar[fn, F_RC]:
                        continue
                    t = ipar[fn, I_RC]
                    fc = scratch[q, 1 + 2 * t]
                    dfc = scratch[q, 2 + 2 * t]
                    eta = fpar[fn, F_ETA]
                    drs = r - fpar[fn, F_RS]
                    g = math.exp(-eta * drs * drs)
                    value = g * fc
                    deriv = g * (dfc - 2.0 * eta * drs * fc)
                else:
                    value, deriv = compact_fdf(r, fpar[fn, F_RL], fpar[fn, F_RC], ipar[fn, I_KIND],
                                               ipar[fn, I_ASYM] != 0, False)
                    if value == 0.0 and deriv == 0.0:
                        continue
                    if code == K_RADIAL_WEIGHTED:
                        wz = float(neighbor_z[p])
                        value *= wz
                        deriv *= wz
                G[i, ipar[fn, I_FEATURE]] += value
                if want_dG:
                    _add_pair_gradient(dG, p, ipar[fn, I_SLOT_A], deriv * ux, deriv * uy, deriv * uz)

    # ------------------------------------------------------------------ angular
    r_ang = ang_rc_max[c]
    if r_ang <= 0.0:
        return
    n_ang = 0
    k_lo = key_off[c]
    k_hi = key_off[c + 1]
    key_base = 1 + 2 * n_rc
    for p in range(start, end):
        q = p - start
        r = scratch[q, 0]
        if r < r_ang:
            ang_list[n_ang] = p
            n_ang += 1
            # pair factors h(r) and dh/dr of every distinct pair key of this element's angular
            # functions, computed once per neighbour, not once per triplet: Gaussian
            # exp(-eta (r - r_s)^2) f_c(r) (type 9 then needs no exponential per triplet) and the
            # radial compact function of the compact angular types (DMABN_SCAN: 9 keys shared by
            # the 54 functions of a channel, which evaluated it 2 x 54 times per triplet)
            for k in range(k_lo, k_hi):
                col = key_base + 2 * (k - k_lo)
                if key_par[k, KEY_COMPACT] != 0.0:
                    h, dh = compact_fdf(r, key_par[k, KEY_A], key_par[k, KEY_B], int(key_par[k, KEY_KIND]),
                                        key_par[k, KEY_C] != 0.0, False)
                    scratch[q, col] = h
                    scratch[q, col + 1] = dh
                    continue
                eta = key_par[k, KEY_A]
                d = r - key_par[k, KEY_B]
                t = int(key_par[k, KEY_C])
                fc = scratch[q, 1 + 2 * t]
                g = math.exp(-eta * d * d)
                scratch[q, col] = g * fc
                scratch[q, col + 1] = g * (scratch[q, 2 + 2 * t] - 2.0 * eta * d * fc)
    wlo = wang_off[c]
    whi = wang_off[c + 1]
    for aj in range(n_ang):
        pj = ang_list[aj]
        qj = pj - start
        rj = scratch[qj, 0]
        ej = neighbor_slot[pj]
        xj = vectors[pj, 0]
        yj = vectors[pj, 1]
        zj = vectors[pj, 2]
        inv_rj = 1.0 / rj
        for ak in range(aj + 1, n_ang):
            pk = ang_list[ak]
            ek = neighbor_slot[pk]
            ch = c * n_pairs + pair_slot[ej, ek]
            lo = ang_off[ch]
            hi = ang_off[ch + 1]
            if lo == hi and wlo == whi:
                continue
            # r_jk = r_k - r_j (from j to k) first: channels whose functions all need r_jk < r_c
            # (narrow types) skip the triplet here, before any angle work (about half of them
            # at n2p2's 6 Å cutoffs)
            xk = vectors[pk, 0]
            yk = vectors[pk, 1]
            zk = vectors[pk, 2]
            xjk = xk - xj
            yjk = yk - yj
            zjk = zk - zj
            rjk = math.sqrt(xjk * xjk + yjk * yjk + zjk * zjk)
            jk_limit = 0.0
            if hi > lo:
                jk_limit = ang_jk_limit[ch]
            if whi > wlo:
                jk_limit = max(jk_limit, wang_jk_limit[c])
            if rjk >= jk_limit:
                continue
            qk = pk - start
            rk = scratch[qk, 0]
            inv_rk = 1.0 / rk
            inv_rjk = 1.0 / rjk if rjk > 0.0 else 0.0
            inv_rjrk = inv_rj * inv_rk
            # dot / (rj rk) (not dot * (1/rj) (1/rk)): the rounding of the torch reference, which
            # matters where a compact core is evaluated close to its root
            cos = (xj * xk + yj * yk + zj * zk) / (rj * rk)
            # d cos / d r_j = r_k / (rj rk) - cos r_j / rj^2 (and j <-> k)
            cj = cos * inv_rj * inv_rj
            ck = cos * inv_rk * inv_rk
            dcjx = xk * inv_rjrk - cj * xj
            dcjy = yk * inv_rjrk - cj * yj
            dcjz = zk * inv_rjrk - cj * zj
            dckx = xj * inv_rjrk - ck * xk
            dcky = yj * inv_rjrk - ck * yk
            dckz = zj * inv_rjrk - ck * zk
            # which slot column of each function belongs to j: the pair channel's first element
            j_first = ej == pair_first[pair_slot[ej, ek]]
            zjzk = float(neighbor_z[pj]) * float(neighbor_z[pk])
            theta = -1.0
            dtheta = 0.0
            last_t = -1
            fcjk = 0.0
            dfcjk = 0.0
            # radial part of the Gaussian functions, shared by consecutive functions with equal
            # (type, r_c, eta, r_s) (pairs lambda = +-1 in n2p2's sets: half the r_jk exponentials)
            last_code = -1  # nothing cached yet for this triplet
            last_key = -1
            # angular compact value shared by consecutive compact functions with equal
            # (angle_left, angle_right, kind) (the plan orders them so)
            last_akey = -1
            ca = 0.0
            dca = 0.0
            rad = 0.0
            r_rj = 0.0
            r_rk = 0.0
            r_rjk = 0.0
            for pass_ in range(2):
                if pass_ == 0:
                    alo = lo
                    ahi = hi
                else:
                    alo = wlo
                    ahi = whi
                for a in range(alo, ahi):
                    fn = ang_fn[a] if pass_ == 0 else wang_fn[a]
                    code = ipar[fn, I_CODE]
                    rc = fpar[fn, F_RC]
                    if rj >= rc or rk >= rc:
                        continue
                    if code == K_NARROW or code == K_WIDE:
                        narrow = code == K_NARROW
                        if narrow and rjk >= rc:
                            continue
                        lam = fpar[fn, F_LAM]
                        plam = 1.0 + lam * cos
                        if plam <= 0.0:
                            continue
                        t = ipar[fn, I_RC]
                        eta = fpar[fn, F_ETA]
                        rs = fpar[fn, F_RS]
                        key = ipar[fn, I_KEY]
                        if code != last_code or key != last_key:
                            col = key_base + 2 * key
                            hj = scratch[qj, col]
                            dhj = scratch[qj, col + 1]
                            hk = scratch[qk, col]
                            dhk = scratch[qk, col + 1]
                            rad = hj * hk
                            r_rj = dhj * hk
                            r_rk = hj * dhk
                            r_rjk = 0.0
                            if narrow:
                                if t != last_t:
                                    fcjk, dfcjk = cutoff_fdf(rjk, rc_table[t], cut_kind, cut_alpha)
                                    last_t = t
                                djk = rjk - rs
                                gjk = math.exp(-eta * djk * djk)
                                hjk = gjk * fcjk
                                r_rjk = rad * gjk * (dfcjk - 2.0 * eta * djk * fcjk)
                                r_rj *= hjk
                                r_rk *= hjk
                                rad *= hjk
                            last_code = code
                            last_key = key
                        if ipar[fn, I_USE_INT] != 0:
                            zm1 = ipar[fn, I_ZETA] - 1
                            if zm1 == 0:  # zeta = 1, the most common value: no power at all
                                pzm1 = 1.0
                            else:
                                pzm1 = _pow_int(plam, zm1)
                        else:
                            pzm1 = plam ** (fpar[fn, F_ZETA] - 1.0)
                        ang = fpar[fn, F_NORM] * pzm1 * plam
                        value = ang * rad
                        d_cos = fpar[fn, F_DNORM] * pzm1 * rad
                        d_rj = ang * r_rj
                        d_rk = ang * r_rk
                        d_rjk = ang * r_rjk
                    else:
                        # compact angular (21, 22, 24, 25); n2p2 skips |cos| >= 1
                        if abs(cos) >= 1.0:
                            continue
                        if theta < 0.0:
                            theta = math.acos(cos)
                            dtheta = -1.0 / math.sqrt(1.0 - cos * cos)
                        narrow = code == K_COMPACT_NARROW or code == K_WEIGHTED_NARROW
                        rl = fpar[fn, F_RL]
                        kind = ipar[fn, I_KIND]
                        asym = ipar[fn, I_ASYM] != 0
                        # angle factor first: cached per angle support, and where it vanishes every
                        # contribution of the function is an exact zero (so are those of a vanishing
                        # radial factor below)
                        akey = ipar[fn, I_AKEY]
                        if akey != last_akey:
                            ca, dca = compact_fdf(theta, fpar[fn, F_AL], fpar[fn, F_AR], kind, False, True)
                            last_akey = akey
                        if ca == 0.0 and dca == 0.0:
                            continue
                        col = key_base + 2 * ipar[fn, I_KEY]
                        cj_ = scratch[qj, col]
                        dcj_ = scratch[qj, col + 1]
                        ck_ = scratch[qk, col]
                        dck_ = scratch[qk, col + 1]
                        if (cj_ == 0.0 and dcj_ == 0.0) or (ck_ == 0.0 and dck_ == 0.0):
                            continue
                        cjk = 1.0
                        dcjk = 0.0
                        if narrow:
                            if not (rjk > max(rl, 0.0) and rjk < rc):
                                continue
                            cjk, dcjk = compact_fdf(rjk, rl, rc, kind, asym, False)
                        weight = zjzk if (code == K_WEIGHTED_NARROW or code == K_WEIGHTED_WIDE) else 1.0
                        rad = weight * cj_ * ck_ * cjk
                        value = ca * rad
                        d_cos = dca * dtheta * rad
                        d_rj = weight * ca * dcj_ * ck_ * cjk
                        d_rk = weight * ca * cj_ * dck_ * cjk
                        d_rjk = weight * ca * cj_ * ck_ * dcjk
                    G[i, ipar[fn, I_FEATURE]] += value
                    if want_dG:
                        gj = d_rj * inv_rj
                        gk = d_rk * inv_rk
                        gjk = d_rjk * inv_rjk
                        # d/d r_j: d_cos dcos/dr_j + d_rj u_j - d_rjk u_jk ; d/d r_k: ... + d_rjk u_jk
                        jx = d_cos * dcjx + gj * xj - gjk * xjk
                        jy = d_cos * dcjy + gj * yj - gjk * yjk
                        jz = d_cos * dcjz + gj * zj - gjk * zjk
                        kx = d_cos * dckx + gk * xk + gjk * xjk
                        ky = d_cos * dcky + gk * yk + gjk * yjk
                        kz = d_cos * dckz + gk * zk + gjk * zjk
                        if j_first:
                            sj = ipar[fn, I_SLOT_A]
                            sk = ipar[fn, I_SLOT_B]
                        else:
                            sj = ipar[fn, I_SLOT_B]
                            sk = ipar[fn, I_SLOT_A]
                        _add_pair_gradient(dG, pj, sj, jx, jy, jz)
                        _add_pair_gradient(dG, pk, sk, kx, ky, kz)


@njit(parallel=True, cache=True)
def symmetry_functions_cpu(vectors, offsets, center_slot, neighbor_slot, neighbor_z, n_el, n_pairs, cut_kind,
                           cut_alpha, rc_table, fpar, ipar, rad_off, rad_fn, wrad_off, wrad_fn, ang_off, ang_fn,
                           wang_off, wang_fn, pair_slot, pair_first, ang_rc_max, ang_jk_limit, wang_jk_limit, key_off,
                           key_par, G, dG, want_dG):
    """All centres in parallel (numba ``prange``); see :func:`centre_kernel` for the arguments."""
    n_atoms = offsets.shape[0] - 1
    n_keys = 0
    for c in range(key_off.shape[0] - 1):
        n_keys = max(n_keys, key_off[c + 1] - key_off[c])
    n_cols = 1 + 2 * rc_table.shape[0] + 2 * n_keys
    for i in prange(n_atoms):
        n_nb = max(offsets[i + 1] - offsets[i], 1)
        scratch = np.empty((n_nb, n_cols), dtype=np.float64)
        ang_list = np.empty(n_nb, dtype=np.int64)
        centre_kernel(i, vectors, offsets, center_slot, neighbor_slot, neighbor_z, n_el, n_pairs, cut_kind,
                      cut_alpha, rc_table, fpar, ipar, rad_off, rad_fn, wrad_off, wrad_fn, ang_off, ang_fn, wang_off,
                      wang_fn, pair_slot, pair_first, ang_rc_max, ang_jk_limit, wang_jk_limit, key_off, key_par, G, dG,
                      want_dG, scratch, ang_list)


@register_jitable
def contract_centre(i, grad_G, dG, offsets, center_slot, neighbor_slot, slot_features, n_el, order, out):
    """``out[order[p]] = sum_w grad_G[i, slot_features[c, e_p, w]] dG[p, w]`` for the pairs of centre ``i``.

    ``order`` maps the sorted pairs back to the graph's order (the gradient lands there).
    """
    c = center_slot[i]
    width = dG.shape[1]
    for p in range(offsets[i], offsets[i + 1]):
        row = c * n_el + neighbor_slot[p]
        sx = 0.0
        sy = 0.0
        sz = 0.0
        for w in range(width):
            f = slot_features[row, w]
            if f < 0:
                break
            g = grad_G[i, f]
            sx += g * dG[p, w, 0]
            sy += g * dG[p, w, 1]
            sz += g * dG[p, w, 2]
        o = order[p]
        out[o, 0] = sx
        out[o, 1] = sy
        out[o, 2] = sz


@njit(parallel=True, cache=True)
def contract_cpu(grad_G, dG, offsets, center_slot, neighbor_slot, slot_features, n_el, order, out):
    """Backward of the features: ``dE/dr_p`` from ``dE/dG`` and the stored ``dG/dr_p``, in parallel."""
    for i in prange(offsets.shape[0] - 1):
        contract_centre(i, grad_G, dG, offsets, center_slot, neighbor_slot, slot_features, n_el, order, out)


@njit(parallel=True, cache=True)
def recompute_contract_cpu(vectors, offsets, center_slot, neighbor_slot, neighbor_z, n_el, n_pairs, cut_kind,
                           cut_alpha, rc_table, fpar, ipar, rad_off, rad_fn, wrad_off, wrad_fn, ang_off, ang_fn,
                           wang_off, wang_fn, pair_slot, pair_first, ang_rc_max, ang_jk_limit, wang_jk_limit, key_off,
                           key_par, width, n_features, grad_G, slot_features, order, out):
    """Backward of the features without a stored ``dG``: ``out[order[p]] = dE/dr_p`` ``[M, 3]``.

    Every centre recomputes its own ``dG`` ``[n_neighbours, width, 3]`` in work space of its
    own (:func:`centre_kernel` called on the centre's slice of the pair arrays) and contracts it
    at once with ``grad_G[i]`` (:func:`contract_centre`), so memory stays ``O(pairs)``: the
    large-system path of the engine (see ``STORED_DERIVATIVES_LIMIT`` there).
    """
    n_atoms = offsets.shape[0] - 1
    n_keys = 0
    for c in range(key_off.shape[0] - 1):
        n_keys = max(n_keys, key_off[c + 1] - key_off[c])
    n_cols = 1 + 2 * rc_table.shape[0] + 2 * n_keys
    for i in prange(n_atoms):
        start = offsets[i]
        end = offsets[i + 1]
        n_nb = max(end - start, 1)
        scratch = np.empty((n_nb, n_cols), dtype=np.float64)
        ang_list = np.empty(n_nb, dtype=np.int64)
        local_offsets = np.zeros(2, dtype=np.int64)
        local_offsets[1] = end - start
        G_row = np.empty((1, n_features), dtype=np.float64)
        dG_local = np.empty((n_nb, width, 3), dtype=np.float64)
        centre_kernel(0, vectors[start:end], local_offsets, center_slot[i:i + 1], neighbor_slot[start:end],
                      neighbor_z[start:end], n_el, n_pairs, cut_kind, cut_alpha, rc_table, fpar, ipar, rad_off,
                      rad_fn, wrad_off, wrad_fn, ang_off, ang_fn, wang_off, wang_fn, pair_slot, pair_first,
                      ang_rc_max, ang_jk_limit, wang_jk_limit, key_off, key_par, G_row, dG_local, True, scratch,
                      ang_list)
        contract_centre(0, grad_G[i:i + 1], dG_local, local_offsets, center_slot[i:i + 1], neighbor_slot[start:end],
                        slot_features, n_el, order[start:end], out)


@njit(cache=True)
def sort_by_centre(centers, neighbors, vectors, atom_slot, atom_z, n_atoms):
    """Stable counting sort of the pairs by centre, O(M + N), and the per-pair data of the kernels.

    Returns ``(order, offsets, sorted vectors [M, 3] float64-or-input dtype, neighbour slot,
    neighbour Z, sorted centres, sorted neighbours)``; pair ``p`` of the sorted list is pair
    ``order[p]`` of the input. Why: vesin's full list is not ordered by centre, and
    ``torch.argsort(stable=True)`` plus the gathers cost ~0.1 s per call at 1e5 pairs
    (a third of the kernel) where this costs ~2 ms.
    """
    m = centers.shape[0]
    offsets = np.zeros(n_atoms + 1, dtype=np.int64)
    for p in range(m):
        offsets[centers[p] + 1] += 1
    for a in range(n_atoms):
        offsets[a + 1] += offsets[a]
    fill = offsets[:-1].copy()
    order = np.empty(m, dtype=np.int64)
    sorted_vectors = np.empty((m, 3), dtype=vectors.dtype)
    neighbor_slot = np.empty(m, dtype=np.int64)
    neighbor_z = np.empty(m, dtype=np.int64)
    sorted_centers = np.empty(m, dtype=np.int64)
    sorted_neighbors = np.empty(m, dtype=np.int64)
    for p in range(m):
        c = centers[p]
        q = fill[c]
        fill[c] += 1
        order[q] = p
        j = neighbors[p]
        sorted_vectors[q, 0] = vectors[p, 0]
        sorted_vectors[q, 1] = vectors[p, 1]
        sorted_vectors[q, 2] = vectors[p, 2]
        neighbor_slot[q] = atom_slot[j]
        neighbor_z[q] = atom_z[j]
        sorted_centers[q] = c
        sorted_neighbors[q] = j
    return order, offsets, sorted_vectors, neighbor_slot, neighbor_z, sorted_centers, sorted_neighbors


def _flush_stale_caches() -> None:
    """Drop numba's on-disk kernels when a source they inline has changed.

    Why: numba's cache (``cache=True``) is keyed by this file's time stamp only, so an edit
    of :mod:`hybridpot.polynomials`, :mod:`hybridpot.cutoff` or the families' constants
    would silently keep the old compiled code (seen while developing: the kernels kept an
    old polynomial form). A digest of all those sources is stored beside the cache; when it
    differs, the cache is flushed and the kernels compile once more.
    """
    import hashlib
    from pathlib import Path

    from .. import cutoff, polynomials
    from . import families

    digest = hashlib.sha256()
    for module in (polynomials, cutoff, families):
        digest.update(Path(module.__file__).read_bytes())
    stamp = digest.hexdigest()
    for dispatcher in (symmetry_functions_cpu, contract_cpu, sort_by_centre):
        cache = getattr(dispatcher, "_cache", None)
        path = getattr(cache, "_cache_path", None)
        if cache is None or path is None:  # pragma: no cover  (numba internals moved)
            continue
        mark = Path(path) / f"{dispatcher.__name__}.sources"
        try:
            if mark.exists() and mark.read_text() == stamp:
                continue
            cache.flush()
            mark.parent.mkdir(parents=True, exist_ok=True)
            mark.write_text(stamp)
        except OSError:  # read-only installation: numba then caches elsewhere or not at all
            pass


_flush_stale_caches()
