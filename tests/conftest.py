"""Shared fixtures: small structures and random-weight models built with the public API."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

import hybridpot as hp


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


def random_periodic(n_atoms=12, symbols=("Na", "Cl", "O"), seed=1, min_distance=1.6, cell=None) -> Atoms:
    """A random triclinic periodic structure with no two atoms closer than ``min_distance``."""
    rng = np.random.default_rng(seed)
    if cell is None:
        cell = np.array([[6.2, 0.0, 0.0], [1.1, 5.8, 0.0], [-0.7, 0.9, 6.5]])
    frac = []
    while len(frac) < n_atoms:
        f = rng.random(3)
        ok = True
        for g in frac:
            d = f - g
            d -= np.round(d)
            if np.linalg.norm(d @ cell) < min_distance:
                ok = False
                break
        if ok:
            frac.append(f)
    numbers = [symbols[k % len(symbols)] for k in range(n_atoms)]
    return Atoms(numbers, scaled_positions=np.array(frac), cell=cell, pbc=True)


def random_cluster(n_atoms=10, symbols=("Na", "Cl", "O"), seed=2, box=5.0, min_distance=1.6) -> Atoms:
    rng = np.random.default_rng(seed)
    pos = []
    while len(pos) < n_atoms:
        p = rng.random(3) * box
        if all(np.linalg.norm(p - q) >= min_distance for q in pos):
            pos.append(p)
    return Atoms([symbols[k % len(symbols)] for k in range(n_atoms)], positions=np.array(pos))


def make_short_range_model(elements=("Na", "Cl", "O"), r_cut=4.5, hidden=(12, 12), activation="tanh", dtype=torch.float64,
                           angular_type=9, seed=0):
    torch.manual_seed(seed)
    desc = hp.SymmetryFunctions.default(list(elements), r_cut=r_cut, n_radial=4, angular_type=angular_type)
    short = hp.ShortRange(list(elements), desc, hidden=hidden, activation=activation)
    # non-trivial scaling so that the scaled path is exercised
    n_el, f = len(desc.elements), desc.max_features
    g = torch.Generator().manual_seed(seed)
    lo = torch.rand(n_el, f, generator=g, dtype=torch.float64) * 0.1
    hi = lo + 0.5 + torch.rand(n_el, f, generator=g, dtype=torch.float64)
    desc.set_scaling("scalecenter", lo, hi, 0.5 * (lo + hi), hi - lo, s_min=-1.0, s_max=1.0)
    model = hp.HybridPotential(short_range=short)
    return model.to(dtype)


def one_torch_thread():
    """Generator for a module fixture: run on one torch thread, restore afterwards. Multi-threaded
    FFTs and small kernels were measured to be many times slower on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def dense_parameters(monkeypatch):
    """Small test boxes are below DILUTE_DENSITY: keep the given Ewald cutoff (no density scaling)."""
    monkeypatch.setattr("hybridpot.electrostatics.parameters.DILUTE_DENSITY", 0.0)
