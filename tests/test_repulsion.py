"""PairRepulsion: the pair formula, C2 smoothness at the cutoff, forces and stress against finite
differences, zero on the data it was placed below, and the model-file round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

import hybridpot as hp
from hybridpot.repulsion import PairRepulsion, closest_contacts

from finite_differences import fd_forces, fd_stress, model_energy as _energy


def _walls():
    return PairRepulsion({("Na", "O"): 1.9, ("O", "H"): 1.0, (1, 1): 1.4}, {("O", "Na"): 100.0, ("H", "O"): 40.0,
                                                                            ("H", "H"): 25.0})


def test_pair_energy_formula_and_missing_pairs():
    rep = _walls()
    r = torch.tensor([1.5, 1.5, 0.8, 1.2, 1.5, 2.5], dtype=torch.float64)
    zi = torch.tensor([11, 8, 8, 1, 11, 17])
    zj = torch.tensor([8, 11, 1, 1, 11, 1])
    e = rep.pair_energy(r, zi, zj).numpy()
    expected = [100 * (1.9 / 1.5 - 1) ** 3, 100 * (1.9 / 1.5 - 1) ** 3, 40 * (1.0 / 0.8 - 1) ** 3,
                25 * (1.4 / 1.2 - 1) ** 3, 0.0, 0.0]  # Na-Na and Cl-H have no wall
    np.testing.assert_allclose(e, expected, rtol=1e-14)
    assert rep.cutoff == 1.9
    with pytest.raises(ValueError, match="no strength"):
        PairRepulsion({("Na", "O"): 1.9}, {("H", "O"): 1.0})


def test_c2_at_the_cutoff():
    """Value, first and second derivative vanish at r_c from inside (C2), exactly zero beyond."""
    rep = _walls()
    rc = 1.9
    for dr in (1e-2, 1e-3):
        r = torch.tensor([rc - dr], dtype=torch.float64, requires_grad=True)
        e = rep.pair_energy(r, torch.tensor([11]), torch.tensor([8]))
        (g,) = torch.autograd.grad(e.sum(), r, create_graph=True)
        (g2,) = torch.autograd.grad(g.sum(), r)
        x = rc / (rc - dr) - 1
        # leading orders: E ~ eps x^3, E' ~ 3 eps x^2 rc/r^2, E'' ~ 6 eps x rc^2/r^4
        assert float(e.detach()) == pytest.approx(100 * x**3, rel=1e-12)
        assert abs(float(g)) == pytest.approx(3 * 100 * x**2 * rc / (rc - dr) ** 2, rel=1e-12)
        assert abs(float(g2)) < 7 * 100 * x * rc**2 / (rc - dr) ** 4
    r = torch.tensor([rc, rc + 1e-9, 3.0], dtype=torch.float64, requires_grad=True)
    e = rep.pair_energy(r, torch.full((3,), 11), torch.full((3,), 8))
    (g,) = torch.autograd.grad(e.sum(), r)
    assert torch.all(e == 0) and torch.all(g == 0)


def test_periodic_forces_and_stress_match_finite_differences():
    rng = np.random.default_rng(7)
    cell = np.array([[4.6, 0.0, 0.0], [0.4, 4.3, 0.0], [-0.3, 0.5, 4.8]])
    symbols = ["Na", "O", "H", "H", "O", "H", "Cl", "H"]
    atoms = Atoms(symbols, scaled_positions=rng.random((len(symbols), 3)), cell=cell, pbc=True)
    # put a few pairs inside their walls
    atoms.positions[1] = atoms.positions[0] + [1.6, 0.3, 0.0]
    atoms.positions[2] = atoms.positions[1] + [0.0, 0.85, 0.1]
    atoms.positions[3] = atoms.positions[2] + [0.5, 0.0, 1.0]
    model = hp.HybridPotential(terms={"repulsion": _walls()})
    out = model(hp.AtomicSystem.from_ase(atoms))
    forces, stress = out["forces"].numpy(), out["stress"][0].numpy()
    assert _energy(model, atoms) > 0.1 and np.abs(forces).max() > 0.5
    np.testing.assert_allclose(forces, fd_forces(model, atoms, h=1e-5), rtol=0, atol=1e-7)
    reference_stress = fd_stress(model, atoms, h=1e-5)
    assert np.abs(reference_stress).max() > 1e-3
    np.testing.assert_allclose(stress, reference_stress, atol=1e-8)


def test_below_data_is_zero_on_the_data_and_positive_closer():
    rng = np.random.default_rng(3)
    images = []
    for _ in range(4):
        a = Atoms("NaOHH", positions=[[0, 0, 0], [2.2, 0, 0], [2.5, 0.9, 0], [2.5, -0.9, 0]], cell=np.eye(3) * 8,
                  pbc=True)
        a.positions += rng.normal(0.0, 0.05, a.positions.shape)
        images.append(a)
    closest = closest_contacts(images, [("Na", "O"), ("O", "H"), ("H", "H")])
    d = images[0].get_all_distances(mic=True)
    assert closest[(8, 11)] <= d[0, 1] and closest[(1, 8)] <= min(d[1, 2], d[1, 3])
    rep = PairRepulsion.below_data(images, [("Na", "O"), ("O", "H"), ("H", "H")], margin=0.05)
    model = hp.HybridPotential(terms={"repulsion": rep})
    assert all(_energy(model, a) == 0.0 for a in images)
    close = images[0].copy()
    close.positions[1:] -= [0.5, 0.0, 0.0]  # the water 0.5 Å nearer the Na
    assert _energy(model, close) > 0.0


def test_model_file_round_trip(tmp_path):
    model = hp.HybridPotential(terms={"repulsion": _walls()})
    hp.save(model, tmp_path / "rep.pt")
    loaded = hp.load(tmp_path / "rep.pt")
    assert loaded.repulsion.pairs == model.repulsion.pairs
    atoms = Atoms("NaOH", positions=[[0, 0, 0], [1.7, 0, 0], [1.7, 0.8, 0]])
    assert _energy(loaded, atoms) == _energy(model, atoms) > 0
