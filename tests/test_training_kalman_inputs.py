"""Kalman observations from frozen short-range inputs equal the full-model observations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from test_training import CUTOFF, _na_cl_4g_setup, lj_clusters, small_model  # noqa: E402  (shared fixtures)

from hybridpot.training import AtomsDataset
from hybridpot.training.kalman_fit import KalmanEpochs, KalmanSettings
from hybridpot.training.kalman_inputs import FrozenInputs, short_range_term_name


def _epochs(model, data, frozen: bool) -> KalmanEpochs:
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.terms()["short_range"].nets.parameters())
    for p in params:
        p.requires_grad_(True)
    offsets = torch.zeros(119, dtype=torch.float64)
    offsets[11], offsets[17] = -1.5, -2.5  # reference energies are shifted: the errors must agree too
    epochs = KalmanEpochs(model, params, data, "energy", KalmanSettings(force_fraction=0.5, energy_unit=2.0,
                                                                        length_unit=0.5), offsets, torch.float64,
                          torch.Generator().manual_seed(0))
    if not frozen:
        epochs.frozen_term = None
    return epochs


def _assert_same_observations(model, data):
    fast, full = _epochs(model, data, True), _epochs(model, data, False)
    assert fast.frozen_term == "short_range"
    for index in range(len(data)):
        for a, b in zip(fast.energy_observation(index), full.energy_observation(index)):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)
        n_comp = 3 * data.samples[index].n_atoms
        components = torch.randperm(n_comp, generator=torch.Generator().manual_seed(index))[:3]
        for a, b in zip(fast.force_observation(index, components), full.force_observation(index, components)):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)
    # and after the weights moved (the stored inputs do not depend on them)
    with torch.no_grad():
        for p in model.terms()["short_range"].nets.parameters():
            p.add_(0.1 * torch.randn_like(p))
    for a, b in zip(fast.force_observation(0, torch.tensor([0, 4])), full.force_observation(0, torch.tensor([0, 4]))):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


def test_2g_clusters():
    data = AtomsDataset.from_atoms(lj_clusters(4), CUTOFF)
    _assert_same_observations(small_model(), data)


def test_4g_clusters_charges_enter_the_inputs():
    """4G: the charge is a network input, and its position dependence (dq/dr of QEq) is in D."""
    make_model, train, _ = _na_cl_4g_setup()
    model = make_model(0)
    _assert_same_observations(model, train[:4])
    frozen = FrozenInputs(model, "short_range", _epochs(model, train, True)._batch(0), need_forces=True)
    charge_column = frozen.derivatives[:, :, -1]  # dq_i / dr_k: QEq couples every atom to every other
    assert bool((charge_column.abs() > 1e-8).all())


def test_4g_periodic_box():
    """Periodic: Ewald electrostatics and QEq (the Gaussians need an 8 Å real-space cutoff)."""
    import hybridpot as hp

    torch.manual_seed(0)
    desc = hp.SymmetryFunctions([hp.SymmetryFunction(c, 2, (e,), 1.0, CUTOFF, 2.5) for c in (11, 17) for e in (11, 17)],
                                cutoff_type=6)
    model = hp.HybridPotential(
        short_range=hp.ShortRange([11, 17], desc, hidden=(4,), use_charges=True),
        charges=hp.ChargeEquilibration([11, 17], desc, hidden=(3,), real_space_cutoff=8.0, accuracy=1e-6),
        electrostatics=hp.Electrostatics(real_space_cutoff=8.0, accuracy=1e-6),
    ).double()
    rng = np.random.default_rng(1)
    images = []
    for k in range(2):
        a = Atoms("Na4Cl4", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5],
                                               [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [0.5, 0.5, 0.5]],
                  cell=[5.8] * 3, pbc=True)
        a.positions += rng.normal(scale=0.1, size=a.positions.shape)
        a.calc = SinglePointCalculator(a, energy=-10.0 - k, forces=rng.normal(size=(8, 3)))
        images.append(a)
    _assert_same_observations(model, AtomsDataset.from_atoms(images, model.cutoff))


def test_not_used_when_other_parameters_learn():
    make_model, train, _ = _na_cl_4g_setup()
    model = make_model(0)
    every = list(model.parameters())
    assert short_range_term_name(model, every) is None  # the charge model's weights would change the inputs
    assert short_range_term_name(model, list(model.short_range.nets.parameters())) == "short_range"
