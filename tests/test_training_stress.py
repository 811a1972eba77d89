"""Stress (virial) references and loss for periodic training data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator

import hybridpot as hp
from hybridpot.io import read_structures
from hybridpot.io.extxyz import write_extxyz
from hybridpot.training import AtomsDataset, SchedulerConfig, Trainer, TrainingConfig, collate, compute_loss, evaluate_model
from hybridpot.training.losses import LossWeights

CUTOFF = 4.0


def lj_crystals(n=6, seed=0):
    """Strained, rattled fcc cells with Lennard-Jones energies, forces and stresses (eV, Å)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        a = bulk("Ar", "fcc", a=1.6, cubic=True)
        a.set_cell(a.cell @ (np.eye(3) + 0.04 * rng.normal(size=(3, 3))), scale_atoms=True)
        a.rattle(0.05, seed=int(rng.integers(1 << 30)))
        a.calc = LennardJones(sigma=1.0, epsilon=0.1, rc=CUTOFF, smooth=True)
        results = dict(energy=a.get_potential_energy(), forces=a.get_forces(), stress=a.get_stress())
        a.calc = SinglePointCalculator(a, **results)
        images.append(a)
    return images


def model(seed=0):
    torch.manual_seed(seed)
    fs = [hp.SymmetryFunction(18, 2, (18,), eta, CUTOFF, rs) for eta, rs in [(4.0, 0.9), (4.0, 1.3), (2.0, 1.8), (1.0, 2.6)]]
    desc = hp.SymmetryFunctions(fs, cutoff_type=6)
    return hp.HybridPotential(short_range=hp.ShortRange([18], desc, hidden=(6,))).double()


def test_stress_reference_round_trip_through_extxyz(tmp_path):
    images = lj_crystals(2)
    write_extxyz(tmp_path / "s.xyz", images)
    back = read_structures(tmp_path / "s.xyz")
    ds = AtomsDataset.from_atoms(back, CUTOFF)
    batch = collate(ds.samples)
    assert batch.has_stress.tolist() == [True, True]
    expected = images[0].calc.results["stress"]  # Voigt xx yy zz yz xz xy
    s = batch.stress[0].numpy()
    np.testing.assert_allclose([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]], expected, rtol=1e-12, atol=1e-14)


def test_stress_in_the_training_loss_is_the_finite_strain_derivative():
    """The stress the loss sees (create_graph=True, as in training) equals (1/V) dE/d(strain) by
    central differences of the energy under symmetric strains."""
    m = model()
    atoms = lj_crystals(1)[0]
    system = hp.AtomicSystem.from_ase(atoms)
    stress = m(system, compute_stress=True, create_graph=True)["stress"][0].detach().numpy()
    volume = atoms.get_volume()
    h = 1e-5
    for a, b in [(0, 0), (1, 2), (0, 1)]:
        e = []
        for sign in (1, -1):
            strain = np.eye(3)
            strain[a, b] += sign * h / (1 if a == b else 2)
            strain[b, a] += 0 if a == b else sign * h / 2
            s = atoms.copy()
            s.set_cell(atoms.cell @ strain, scale_atoms=True)
            e.append(float(m(hp.AtomicSystem.from_ase(s), compute_forces=False)["energy"][0]))
        assert stress[a, b] == pytest.approx((e[0] - e[1]) / (2 * h) / volume, rel=1e-6, abs=1e-10)


def test_stress_loss_term_and_training_on_stress():
    ds = AtomsDataset.from_atoms(lj_crystals(6), CUTOFF)
    batch = collate(ds.samples)
    m = model()
    pred = m(batch.system, compute_stress=True, create_graph=True, neighbors=batch.neighbors)
    loss, parts = compute_loss(pred, batch, LossWeights(energy=0.0, forces=0.0, stress=1.0))
    mse = float(((pred["stress"].detach() - batch.stress) ** 2).mean())
    assert parts["stress"] == pytest.approx(mse, rel=1e-12)
    loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in m.parameters())

    def trained_stress_rmse(stress_weight):
        cfg = TrainingConfig(epochs=40, batch_size=6, lr=2e-2, dtype="float64", early_stopping_patience=0,
                             weights={"energy": 1.0, "forces": 1.0, "stress": stress_weight},
                             scheduler=SchedulerConfig(kind="none"))
        return evaluate_model(Trainer(model(), ds, None, cfg, progress=False).fit(), ds).compute()["stress_rmse"]

    start = evaluate_model(model(), ds).compute()["stress_rmse"]
    with_stress, without = trained_stress_rmse(1e3), trained_stress_rmse(0.0)
    assert with_stress < 0.7 * start and with_stress < 0.7 * without


def test_stress_of_a_finite_structure_is_refused(tmp_path):
    from ase import Atoms

    from hybridpot.io.extxyz import canonicalize

    a = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.8]])
    a.calc = SinglePointCalculator(a, energy=0.0, stress=np.zeros(6))
    with pytest.raises(ValueError, match="periodic"):
        canonicalize(a)


def test_learning_curve_png_is_written_at_the_end(tmp_path):
    from PIL import Image

    ds = AtomsDataset.from_atoms(lj_crystals(3), CUTOFF)
    cfg = TrainingConfig(epochs=3, batch_size=3, dtype="float64", scheduler=SchedulerConfig(kind="none"))
    Trainer(model(), ds, ds, cfg, directory=tmp_path / "run", progress=False).fit()
    with Image.open(tmp_path / "run" / "learning_curve.png") as image:
        assert image.size[0] > 2 * image.size[1]  # energy and forces panels side by side
