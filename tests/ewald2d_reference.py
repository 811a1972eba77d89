"""Independent references for slabs: the 2D Ewald sum (Parry; Heyes, Barber & Clarke) of Gaussian
charges periodic in x and y only, and a direct sum over a disc of in-plane images (numpy/scipy,
nothing from hybridpot or torch-pme)."""

from __future__ import annotations

import math

import numpy as np
from ase import units
from scipy.special import erf, erfc, erfcx

#: Coulomb constant (eV Å / e^2) from ASE's Hartree and Bohr
KE = units.Hartree * units.Bohr


def _in_plane_images(a: np.ndarray, b: np.ndarray, radius: float) -> np.ndarray:
    """All 2D lattice vectors ``n_a a + n_b b`` with length below ``radius``, ``[M, 3]``."""
    height_a = abs(np.cross(a, b)[2]) / np.linalg.norm(b)
    height_b = abs(np.cross(a, b)[2]) / np.linalg.norm(a)
    na, nb = int(math.ceil(radius / height_a)) + 1, int(math.ceil(radius / height_b)) + 1
    ia, ib = np.meshgrid(np.arange(-na, na + 1), np.arange(-nb, nb + 1), indexing="ij")
    vectors = ia.reshape(-1, 1) * a + ib.reshape(-1, 1) * b
    return vectors[np.linalg.norm(vectors, axis=1) < radius]


def ewald_2d_energy(positions, charges, sigma, a, b, alpha: float = 0.4, tol: float = 1e-15) -> float:
    """Electrostatic energy (eV) of Gaussian charges (widths ``sigma``, Å; None: point charges),
    periodic along the in-plane vectors ``a``, ``b`` (z components 0) and not along z; no self
    energy. For a charged slab this is the 2D sum with the conventional ``k = 0`` term
    ``-(pi/A) sum_ij q_i q_j [z_ij erf(alpha z_ij) + exp(-alpha^2 z_ij^2)/(alpha sqrt(pi))]``
    (the 2D energy with a neutralising background at the slab's centre of charge, finite).

    Point-charge part: real-space sum of ``erfc(alpha r)/r`` over all in-plane images, the
    reciprocal sum ``(pi/(2A)) sum_ij q_i q_j sum_{G != 0} cos(G.rho_ij)/G [e^{G z} erfc(G/(2 alpha)
    + alpha z) + e^{-G z} erfc(G/(2 alpha) - alpha z)]``, the ``k = 0`` term above and the self
    term ``-alpha/sqrt(pi) sum q^2``. Gaussian charges subtract ``erfc(r/(sqrt2 gamma))/r`` over
    the same real-space images.
    """
    positions = np.asarray(positions, float)
    q = np.asarray(charges, float)
    a, b = np.asarray(a, float), np.asarray(b, float)
    area = abs(np.cross(a, b)[2])
    gamma = None if sigma is None else np.sqrt(np.asarray(sigma, float)[:, None] ** 2 + np.asarray(sigma, float)[None, :] ** 2)
    # real space: erfc(alpha r) < tol beyond r_max (and the Gaussian erfc decays faster for gamma < 1/(sqrt2 alpha))
    r_max = 6.5 / alpha if gamma is None else max(6.5 / alpha, 6.5 * math.sqrt(2.0) * float(gamma.max()))
    images = _in_plane_images(a, b, r_max + np.ptp(positions[:, :2], axis=0).max() + 1.0)
    d = positions[None, :, :] - positions[:, None, :]  # r_j - r_i, [n, n, 3]
    real = 0.0
    for shift in images:
        r = np.linalg.norm(d + shift, axis=2)
        self_pair = r < 1e-12
        r = np.where(self_pair, 1.0, r)
        kernel = erfc(alpha * r) / r
        if gamma is not None:
            kernel = kernel - erfc(r / (math.sqrt(2.0) * gamma)) / r
        real += 0.5 * np.sum(np.where(self_pair, 0.0, q[:, None] * q[None, :] * kernel))
    # reciprocal space: in-plane reciprocal vectors, exp(-(G/2alpha)^2) < tol beyond g_max
    recip_a = 2.0 * math.pi * np.cross(b, [0.0, 0.0, 1.0]) / np.dot(a, np.cross(b, [0.0, 0.0, 1.0]))
    recip_b = 2.0 * math.pi * np.cross([0.0, 0.0, 1.0], a) / np.dot(b, np.cross([0.0, 0.0, 1.0], a))
    g_max = 2.0 * alpha * math.sqrt(-math.log(tol))
    gvecs = _in_plane_images(recip_a, recip_b, g_max)
    gvecs = gvecs[np.linalg.norm(gvecs, axis=1) > 0]
    z = d[:, :, 2]
    recip = 0.0
    for g in gvecs:
        gn = np.linalg.norm(g)
        phase = np.cos(d[:, :, :2] @ g[:2])
        # e^{+-G z} erfc(G/(2 alpha) +- alpha z) = exp(-(G/2alpha)^2 - (alpha z)^2) erfcx(G/(2 alpha) +- alpha z)
        damp = np.exp(-((gn / (2.0 * alpha)) ** 2) - (alpha * z) ** 2)
        both = damp * (erfcx(gn / (2.0 * alpha) + alpha * z) + erfcx(gn / (2.0 * alpha) - alpha * z))
        recip += math.pi / (2.0 * area) * np.sum(q[:, None] * q[None, :] * phase * both) / gn
    k0 = -math.pi / area * np.sum(q[:, None] * q[None, :] * (z * erf(alpha * z) + np.exp(-(alpha * z) ** 2)
                                                             / (alpha * math.sqrt(math.pi))))
    self_term = -alpha / math.sqrt(math.pi) * np.sum(q * q)
    return KE * (real + recip + k0 + self_term)


def disc_direct_energy(positions, charges, sigma, a, b, radius: float) -> float:
    """``1/2 sum_{i,j} sum_n' w(|n|/radius) q_i q_j erf(r/(sqrt2 gamma))/r`` (eV): the direct sum over
    the in-plane images ``n`` of a neutral cell inside a disc, with a smooth (C-infinity) window
    ``w`` that is 1 up to ``radius/2`` and 0 from ``radius`` on. With the window the lattice sum
    has no edge noise and converges as ``E + c1/radius + c3/radius^3 + ...`` (the images'
    multipole expansion: no monopole for a neutral cell, no even powers by the symmetry n <-> -n),
    so Richardson extrapolation in ``1/radius`` converges fast."""
    positions = np.asarray(positions, float)
    q = np.asarray(charges, float)
    gamma = np.sqrt(np.asarray(sigma, float)[:, None] ** 2 + np.asarray(sigma, float)[None, :] ** 2)
    images = _in_plane_images(np.asarray(a, float), np.asarray(b, float), radius)
    t = np.clip((np.linalg.norm(images, axis=1) / radius - 0.5) / 0.5, 0.0, 1.0)
    inside = (t > 0.0) & (t < 1.0)
    window = np.where(t <= 0.0, 1.0, 0.0)
    ti = t[inside]
    window[inside] = 1.0 / (1.0 + np.exp(np.minimum(1.0 / (1.0 - ti) - 1.0 / ti, 700.0)))
    d = positions[None, :, :] - positions[:, None, :]
    qq = q[:, None] * q[None, :]
    total = 0.0
    for start in range(0, len(images), 2048):
        shifts, weights = images[start:start + 2048], window[start:start + 2048]
        r = np.linalg.norm(d[None] + shifts[:, None, None, :], axis=3)  # [m, n, n]
        self_pair = r < 1e-12
        r = np.where(self_pair, 1.0, r)
        pair = np.where(self_pair, 0.0, qq[None] * erf(r / (math.sqrt(2.0) * gamma[None])) / r)
        total += 0.5 * np.sum(weights[:, None, None] * pair)
    return KE * total
