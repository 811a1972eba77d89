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


def _charge_epochs(model, data, frozen: bool) -> KalmanEpochs:
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.charges.parameters())
    for p in params:
        p.requires_grad_(True)
    epochs = KalmanEpochs(model, params, data, "charges", KalmanSettings(charge_observations="atoms"),
                          torch.zeros(119, dtype=torch.float64), torch.float64, torch.Generator().manual_seed(0))
    if not frozen:
        epochs.frozen_charges = None
    return epochs


def _assert_same_charge_observations(model, data):
    fast, full = _charge_epochs(model, data, True), _charge_epochs(model, data, False)
    assert fast.frozen_charges is model.charges
    for index in range(len(data)):
        for a, b in zip(fast.charge_observation(index), full.charge_observation(index)):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)
    with torch.no_grad():  # after the weights and the hardness moved
        for p in model.charges.parameters():
            p.mul_(1.2)
    for a, b in zip(fast.charge_observation(0), full.charge_observation(0)):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)


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


def _fixed_width_na_cl_model(seed=0):
    """The 4G Na/Cl model of test_training with fixed Gaussian widths (as n2p2's)."""
    import hybridpot as hp

    model = _na_cl_4g_setup()[0](seed)
    widths = {11: 1.0, 17: 1.0}
    fixed = hp.ChargeEquilibration([11, 17], model.charges.descriptor, hidden=(3,), sigma=widths, learn_sigma=False,
                                   real_space_cutoff=CUTOFF)
    fixed.load_state_dict(model.charges.state_dict())
    model.charges = fixed
    return model.double()


def test_4g_charge_stage_clusters():
    make_model, train, _ = _na_cl_4g_setup()
    model = _fixed_width_na_cl_model()
    _assert_same_charge_observations(model, train[:4])
    # n2p2's single observation per structure (the norm of the charge errors)
    fast, full = _charge_epochs(model, train, True), _charge_epochs(model, train, False)
    fast.settings.charge_observations = full.settings.charge_observations = "norm"
    for a, b in zip(fast.charge_observation(1), full.charge_observation(1)):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)


def test_charge_stage_with_learned_widths_uses_the_full_model():
    make_model, train, _ = _na_cl_4g_setup()
    model = make_model(0)  # learn_sigma=True: the Coulomb matrix changes with every update
    assert _charge_epochs(model, train, True).frozen_charges is None


def test_4g_periodic_box():
    """Periodic: Ewald electrostatics and QEq (the Gaussians need an 8 Å real-space cutoff)."""
    import hybridpot as hp

    torch.manual_seed(0)
    desc = hp.SymmetryFunctions([hp.SymmetryFunction(c, 2, (e,), 1.0, CUTOFF, 2.5) for c in (11, 17) for e in (11, 17)],
                                cutoff_type=6)
    model = hp.HybridPotential(
        short_range=hp.ShortRange([11, 17], desc, hidden=(4,), use_charges=True),
        charges=hp.ChargeEquilibration([11, 17], desc, hidden=(3,), real_space_cutoff=8.0, accuracy=1e-6,
                                       learn_sigma=False),
        electrostatics=hp.Electrostatics(real_space_cutoff=8.0, accuracy=1e-6),
    ).double()
    rng = np.random.default_rng(1)
    images = []
    for k in range(2):
        a = Atoms("Na4Cl4", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5],
                                               [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [0.5, 0.5, 0.5]],
                  cell=[5.8] * 3, pbc=True)
        a.positions += rng.normal(scale=0.1, size=a.positions.shape)
        a.calc = SinglePointCalculator(a, energy=-10.0 - k, forces=rng.normal(size=(8, 3)),
                                       charges=np.tile([0.5, -0.5], 4) + rng.normal(scale=0.05, size=8))
        images.append(a)
    data = AtomsDataset.from_atoms(images, model.cutoff)
    _assert_same_observations(model, data)
    _assert_same_charge_observations(model, data)


def test_not_used_when_other_parameters_learn():
    make_model, train, _ = _na_cl_4g_setup()
    model = make_model(0)
    every = list(model.parameters())
    assert short_range_term_name(model, every) is None  # the charge model's weights would change the inputs
    assert short_range_term_name(model, list(model.short_range.nets.parameters())) == "short_range"


def test_loop_fallback_where_the_backward_cannot_be_batched(monkeypatch):
    """Without a batching rule (is_grads_batched raises), D comes from one reverse pass per component."""
    grad = torch.autograd.grad

    def unbatchable(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("no batching rule")
        return grad(*args, **kwargs)

    make_model, train, _ = _na_cl_4g_setup()
    model = make_model(0)
    batch = _epochs(model, train, True)._batch(0)
    batched = FrozenInputs(model, "short_range", batch, need_forces=True).derivatives
    monkeypatch.setattr(torch.autograd, "grad", unbatchable)
    looped = FrozenInputs(model, "short_range", batch, need_forces=True).derivatives
    torch.testing.assert_close(looped, batched, rtol=1e-13, atol=1e-15)
