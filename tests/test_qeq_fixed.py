"""Fixed input charges (hybridpot.qeq.fixed)."""


import pytest
import torch
from ase import Atoms

import hybridpot as hp
from conftest import one_torch_thread
from hybridpot.qeq import (
    FixedCharges,
)

# float() of results that carry autograd graphs is intended in these checks
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True")


_one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


def test_fixed_charges():
    atoms = Atoms("NaClH", positions=[[0, 0, 0], [2.5, 0, 0], [0, 3, 0]])
    atoms.set_initial_charges([0.6, -0.9, 0.3])
    system = hp.AtomicSystem.from_ase(atoms)
    q, sigma = FixedCharges()(system)
    assert torch.equal(q, system.initial_charges) and sigma is None
    q, sigma = FixedCharges(sigma={"Na": 0.7, "Cl": 1.1, 1: 0.4})(system)
    assert sigma.tolist() == [0.7, 1.1, 0.4]
    _, sigma = FixedCharges(sigma=0.5)(system)
    assert sigma.tolist() == [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match="no Gaussian width"):
        FixedCharges(sigma={"Na": 0.7})(system)
    with pytest.raises(ValueError, match="positive"):
        FixedCharges(sigma=-1.0)
    neutral = hp.AtomicSystem.from_ase(Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]]))
    q, _ = FixedCharges()(neutral)
    assert torch.equal(q, torch.zeros(2, dtype=torch.float64))
