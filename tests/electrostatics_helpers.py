"""Helpers shared by the electrostatics tests (reference sums, small structures)."""

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from scipy.special import erf, erfc

import hybridpot as hp
from hybridpot.electrostatics import (
    COULOMB_CONSTANT,
    Electrostatics,
    EwaldParameters,
    PeriodicCoulomb,
    gaussian_coulomb_kernel,
    screening_function,
)
from hybridpot.neighbors import build_graph, compute_neighbors
from hybridpot.qeq import FixedCharges

KE = 14.399645478425667  # eV Å / e^2, CODATA-based value used by ASE and torch-pme


MADELUNG_NACL = 1.747564594633182  # rock salt, per ion pair, nearest-neighbour distance


def _model_energy(atoms, elec, dtype=torch.float64, sigma=None):
    model = hp.HybridPotential(charges=FixedCharges(sigma=sigma), electrostatics=elec).to(dtype)
    system = hp.AtomicSystem.from_ase(atoms, dtype=dtype)
    return model(system, compute_forces=False, compute_stress=False)["energy"]


def _term(atoms, elec, q, sigma=None, dtype=torch.float64):
    """Energy, system and graph for charges q (numpy) via the term directly."""
    system = hp.AtomicSystem.from_ase(atoms, dtype=dtype)
    graph = build_graph(system, compute_neighbors(system, max(elec.cutoff, 1.0)))
    qt = torch.as_tensor(q, dtype=dtype)
    st = None if sigma is None else torch.as_tensor(sigma, dtype=dtype)
    return elec(system, graph, qt, st).sum(), system, graph


def _smooth_image_sum(pos, cell, q, sig, radius, width):
    """Direct Gaussian-charge sum over a large spherical cluster of cell images.

    Cells are weighted by a smooth window ``erfc((|n| - R)/w)/2`` (removes the noise of
    a sharp cluster boundary); the spherical-cluster surface term ``2 pi |D|^2 / (3V)``
    is removed to get the tin-foil (Ewald) value.
    """
    nmax = int((radius + 5 * width) / min(np.linalg.norm(cell, axis=1))) + 3
    n = np.arange(-nmax, nmax + 1)
    m = np.stack(np.meshgrid(n, n, n, indexing="ij"), -1).reshape(-1, 3)
    shift = m @ cell
    w = 0.5 * erfc((np.linalg.norm(shift + pos.mean(0), axis=1) - radius) / width)
    keep = w > 1e-17
    shift, w = shift[keep], w[keep]
    energy = 0.0
    for i in range(len(q)):
        for j in range(len(q)):
            r = np.linalg.norm(pos[j] - pos[i] + shift, axis=1)
            g = math.sqrt(sig[i] ** 2 + sig[j] ** 2)
            ok = r > 1e-12
            energy += 0.5 * KE * q[i] * q[j] * np.sum(w[ok] * erf(r[ok] / (math.sqrt(2) * g)) / r[ok])
    volume = abs(np.linalg.det(cell))
    dipole = q @ pos
    return energy - 2 * math.pi / (3 * volume) * KE * dipole @ dipole


def _fourier_energy(pos, cell, q, sig, k_max=14.0):
    """Gaussian charges with a neutralising background, summed in reciprocal space."""
    rec = 2 * math.pi * np.linalg.inv(cell).T
    nmax = [int(k_max * np.linalg.norm(a) / (2 * math.pi)) + 1 for a in cell]
    m = np.stack(np.meshgrid(*[np.arange(-x, x + 1) for x in nmax], indexing="ij"), -1).reshape(-1, 3)
    kv = m @ rec
    k2 = (kv**2).sum(1)
    keep = (k2 > 0) & (k2 < k_max**2)
    kv, k2 = kv[keep], k2[keep]
    rho = (q[None, :] * np.exp(-0.5 * k2[:, None] * sig[None, :] ** 2) * np.exp(1j * kv @ pos.T)).sum(1)
    volume = abs(np.linalg.det(cell))
    return KE * (2 * math.pi / volume * np.sum(np.abs(rho) ** 2 / k2) - np.sum(q**2 / (2 * sig * math.sqrt(math.pi))))


def _random_cell(n=4, seed=3, charge=0.0):
    rng = np.random.default_rng(seed)
    cell = np.array([[5.0, 0, 0], [0.5, 5.0, 0], [0.3, 0.2, 5.5]])
    pos = rng.random((n, 3)) @ cell
    q = rng.normal(size=n)
    q = q - q.mean() + charge / n
    sig = rng.uniform(0.6, 0.9, size=n)
    return pos, cell, q, sig


def _pair_across_cutoff(separation, method, params, sigma=1.0):
    """Energy (eV) and force on the second ion (eV/Å, x) of a Na+ Cl- pair ``separation`` Å apart
    (plus two spectator ions) in a 31 Å periodic box, Gaussian charges of width ``sigma``."""
    atoms = Atoms("NaClNaCl", positions=[[1.0, 1.0, 1.0], [1.0 + separation, 1.0, 1.0], [5.0, 17.0, 9.0],
                                         [9.0, 21.0, 13.0]], cell=[31.0] * 3, pbc=True)
    system = hp.AtomicSystem.from_ase(atoms)
    positions = system.positions.clone().requires_grad_(True)
    system.positions = positions
    graph = build_graph(system, compute_neighbors(system, params.real_space_cutoff))
    elec = Electrostatics(method=method, accuracy=params.accuracy, real_space_cutoff=params.real_space_cutoff)
    elec.params = params
    q = torch.tensor([1.0, -1.0, 0.7, -0.7], dtype=torch.float64)
    energy = elec(system, graph, q, torch.full((4,), sigma, dtype=torch.float64)).sum()
    (grad,) = torch.autograd.grad(energy, positions)
    return float(energy), float(-grad[1, 0])
