"""Direct sums of finite structures (hybridpot.electrostatics.direct)."""

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from scipy.special import erf

import hybridpot as hp
from conftest import one_torch_thread
from hybridpot.electrostatics import (
    Electrostatics,
)
from hybridpot.neighbors import build_graph, compute_neighbors
from electrostatics_helpers import (
    KE,
    _term,
)

# float() of results that carry autograd graphs is intended in these checks
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True")


_one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


def test_finite_pair_energy():
    elec = Electrostatics()
    for r in (0.3, 1.0, 4.0, 25.0):
        atoms = Atoms("NaCl", positions=[[0, 0, 0], [r, 0, 0]])
        energy, _, _ = _term(atoms, elec, [0.7, -0.4], [0.5, 0.8])
        gamma = math.sqrt(0.5**2 + 0.8**2)
        assert float(energy) == pytest.approx(KE * 0.7 * -0.4 * erf(r / (math.sqrt(2) * gamma)) / r, rel=1e-12)
    energy, _, _ = _term(atoms, elec, [0.7, -0.4])  # point charges
    assert float(energy) == pytest.approx(KE * 0.7 * -0.4 / 25.0, rel=1e-12)


def test_finite_batch_direct_sum():
    rng = np.random.default_rng(0)
    mols = []
    for n in (3, 5, 1, 4):
        atoms = Atoms("C" * n, positions=rng.normal(scale=2.0, size=(n, 3)))
        atoms.set_initial_charges(rng.normal(size=n))
        mols.append(atoms)
    system = hp.AtomicSystem.from_ase(mols)
    graph = build_graph(system, compute_neighbors(system, 1.0))
    sig = torch.as_tensor(rng.uniform(0.5, 1.0, size=system.n_atoms))
    e = Electrostatics()(system, graph, system.initial_charges, sig)
    per_structure = torch.zeros(4, dtype=e.dtype).index_add(0, system.batch, e)
    s = sig.numpy()
    for k, atoms in enumerate(mols):
        a = int(system.ptr[k])
        q, x = atoms.get_initial_charges(), atoms.positions
        ref = 0.0
        for i in range(len(atoms)):
            for j in range(i + 1, len(atoms)):
                r = np.linalg.norm(x[i] - x[j])
                g = math.sqrt(s[a + i] ** 2 + s[a + j] ** 2)
                ref += KE * q[i] * q[j] * erf(r / (math.sqrt(2) * g)) / r
        assert float(per_structure[k]) == pytest.approx(ref, rel=1e-12, abs=1e-14)
