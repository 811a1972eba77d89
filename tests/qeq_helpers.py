"""Helpers shared by the charge-model tests (small QEq models, structures, references)."""

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from scipy.special import erf

import hybridpot as hp
from hybridpot.electrostatics import COULOMB_CONSTANT, Electrostatics
from hybridpot.neighbors import build_graph, compute_neighbors
from hybridpot.qeq import (
    ChargeEquilibration,
    FixedCharges,
    QEqConvergenceError,
    projected_cg,
    solve_qeq_dense,
)

KE = 14.399645478425667


def make_qeq(elements=("Na", "Cl"), seed=0, offsets=None, **kwargs):
    """A QEq term with small random chi networks plus per-element offsets (eV/e)."""
    torch.manual_seed(seed)
    desc = hp.SymmetryFunctions.default(list(elements), r_cut=4.0, n_radial=3, angular_etas=(0.01,), zetas=(1.0,))
    kwargs.setdefault("hardness", 2.0)
    kwargs.setdefault("sigma", 0.8)
    qeq = ChargeEquilibration(list(elements), desc, hidden=(6,), **kwargs).double()
    offsets = offsets if offsets is not None else {e: 2.0 * (k - 0.5) for k, e in enumerate(elements)}
    with torch.no_grad():
        for e, off in offsets.items():
            z = hp.descriptors.element_number(e)
            qeq.nets.linear_layers(z)[-1].bias.add_(off)
    return qeq


def graph_of(system, cutoff):
    return build_graph(system, compute_neighbors(system, cutoff))


def jittered_nacl(n_side, a=5.64, seed=0, jitter=0.15, charge=0.0):
    rng = np.random.default_rng(seed)
    d = a / 2
    g = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    pos = g * d + rng.normal(scale=jitter, size=g.shape)
    numbers = np.where(g.sum(1) % 2 == 0, 11, 17)
    atoms = Atoms(numbers=numbers, positions=pos, cell=[n_side * d] * 3, pbc=True)
    atoms.info["charge"] = charge
    return atoms


def reference_qeq(chi, hardness, sigma, pos, total, groups=None):
    """Independent numpy solution of the finite QEq problem (bordered KKT matrix)."""
    n = len(chi)
    a = np.zeros((n, n))
    for i in range(n):
        a[i, i] = hardness[i] + KE / (sigma[i] * math.sqrt(math.pi))
        for j in range(n):
            if i != j:
                r = np.linalg.norm(pos[i] - pos[j])
                g = math.sqrt(sigma[i] ** 2 + sigma[j] ** 2)
                a[i, j] = KE * erf(r / (math.sqrt(2) * g)) / r
    groups = np.zeros(n, dtype=int) if groups is None else np.asarray(groups)
    totals = np.atleast_1d(total)
    ng = len(totals)
    kkt = np.zeros((n + ng, n + ng))
    kkt[:n, :n] = a
    for g in range(ng):
        kkt[:n, n + g] = kkt[n + g, :n] = groups == g
    rhs = np.concatenate([-chi, totals])
    sol = np.linalg.solve(kkt, rhs)
    q = sol[:n]
    return q, chi @ q + 0.5 * q @ a @ q


def _shipped_melt_frames():
    from hybridpot.data import load_molten_nacl

    return [a for a in load_molten_nacl() if str(a.info.get("source", "")).startswith("model md")]


def _liquid_boxes():
    """Disordered periodic boxes: shipped melt frames (model MD, 64 atoms, 1200-2500 K), a
    replicated and rattled melt, uniformly random positions, and a box whose atoms crowd into
    one half (empty mesh regions)."""
    rng = np.random.default_rng(7)
    frames = _shipped_melt_frames()
    boxes = [frames[0], frames[15], frames[-1]]
    big = frames[3].repeat((2, 1, 1))
    big.positions += rng.normal(scale=0.2, size=big.positions.shape)
    boxes.append(big)
    for fraction in (1.0, 0.5):
        n, length = 64, 13.0
        pos = []
        while len(pos) < n:  # random positions, no two closer than 1.8 Å (minimum image)
            p = rng.uniform(0, length, 3) * np.array([fraction, 1.0, 1.0])
            if all(np.linalg.norm((p - q) - length * np.round((p - q) / length)) > 1.8 for q in pos):
                pos.append(p)
        boxes.append(Atoms(numbers=[11, 17] * (n // 2), positions=pos, cell=[length] * 3, pbc=True))
    return boxes


def warnings_as_errors(category):
    import contextlib
    import warnings

    @contextlib.contextmanager
    def manager():
        with warnings.catch_warnings():
            warnings.simplefilter("error", category)
            yield

    return manager()
