"""NEB (ase.mep.NEB) with HybridCalculator.

System: a Na+ ion between two Cl- ions held fixed 7 Å apart (total charge -1), with a
Born-Mayer ionic model written here (fixed charges +1/-1 as Gaussian charges, direct Coulomb
sum, pairwise repulsion A exp(-r/rho)). Na+ has two symmetric minima, one next to each Cl-, and a
barrier at the midpoint: by symmetry the climbing image must end there, and its energy must be
the energy of the midpoint structure evaluated directly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.constraints import FixAtoms
from ase.mep import NEB
from ase.optimize import BFGS, FIRE
from torch import nn

import hybridpot as hp
from hybridpot.cutoff import cutoff_function


class BornMayer(nn.Module):
    """Short-range term ``sum_{i<j} A exp(-r_ij/rho) f_c(r_ij)`` (eV), split half to each atom."""

    def __init__(self, amplitude: float = 1500.0, rho: float = 0.3, cutoff: float = 6.0):
        super().__init__()
        self.amplitude, self.rho, self.cutoff = amplitude, rho, cutoff

    def forward(self, system, graph, charges=None):
        g = graph.within(self.cutoff)
        pair = self.amplitude * torch.exp(-g.distances / self.rho) * cutoff_function(g.distances, self.cutoff, 6)
        return torch.zeros_like(system.positions[:, 0]).index_add(0, g.i, 0.5 * pair)


def ionic_model():
    return hp.HybridPotential(
        short_range=BornMayer(),
        charges=hp.FixedCharges(sigma=0.5),
        electrostatics=hp.Electrostatics(method="direct"),
    ).double()


def cl_na_cl(x_na: float, separation: float = 7.0) -> Atoms:
    atoms = Atoms("ClNaCl", positions=[[0.0, 0.0, 0.0], [x_na, 0.0, 0.0], [separation, 0.0, 0.0]])
    atoms.set_initial_charges([-1.0, 1.0, -1.0])
    atoms.info["charge"] = -1.0
    atoms.set_constraint(FixAtoms(indices=[0, 2]))
    return atoms


def relaxed_endpoint(model, x_start):
    atoms = cl_na_cl(x_start)
    atoms.calc = hp.HybridCalculator(model)
    assert BFGS(atoms, logfile=None).run(fmax=1e-4, steps=200)
    return atoms


def test_neb_converges_to_the_symmetric_saddle_and_uses_the_calculator_forces():
    model = ionic_model()
    initial = relaxed_endpoint(model, 2.6)
    final = relaxed_endpoint(model, 7.0 - 2.6)
    x0, x1 = initial.positions[1, 0], final.positions[1, 0]
    # the two minima are mirror images about the midpoint
    assert x0 + x1 == pytest.approx(7.0, abs=1e-3)
    assert initial.get_potential_energy() == pytest.approx(final.get_potential_energy(), abs=1e-6)

    n_inner = 5
    images = [initial] + [initial.copy() for _ in range(n_inner)] + [final]
    for image in images[1:-1]:
        image.calc = hp.HybridCalculator(model)
    # move Na off the axis in the middle images, so that the path must relax back to it
    neb = NEB(images, climb=True, k=0.5, method="improvedtangent")
    neb.interpolate()
    for k, image in enumerate(images[1:-1], start=1):
        pos = image.get_positions()
        pos[1, 1] += 0.1 * np.sin(np.pi * k / (n_inner + 1))
        image.set_positions(pos)
    opt = FIRE(neb, logfile=None)
    assert opt.run(fmax=1e-3, steps=2000), "NEB did not converge"

    energies = np.array([image.get_potential_energy() for image in images])
    assert np.all(np.isfinite(energies))
    top = int(np.argmax(energies))
    assert top == (n_inner + 1) // 2  # the middle image climbs
    saddle = images[top]
    # by symmetry the saddle is Na at the midpoint of the two Cl, on the axis (off-axis
    # curvature ~0.7 eV/Å^2 there, so fmax = 1e-3 eV/Å leaves |y| below ~1.5e-3 Å)
    assert saddle.positions[1] == pytest.approx([3.5, 0.0, 0.0], abs=2e-3)
    midpoint = cl_na_cl(3.5)
    midpoint.calc = hp.HybridCalculator(model)
    assert energies[top] == pytest.approx(midpoint.get_potential_energy(), abs=1e-4)
    barrier = energies[top] - energies[0]
    assert barrier > 0.1
    # energies rise monotonically to the saddle and fall after it (a single barrier)
    assert np.all(np.diff(energies[: top + 1]) > 0) and np.all(np.diff(energies[top:]) < 0)

    # the forces NEB used are those of the calculator on each image's positions
    for k, image in enumerate(images[1:-1], start=1):
        fresh = image.copy()
        fresh.calc = hp.HybridCalculator(model)
        expected = fresh.get_forces(apply_constraint=False)
        np.testing.assert_allclose(neb.real_forces[k], expected, rtol=0, atol=1e-10)
        np.testing.assert_allclose(image.get_forces(apply_constraint=False), expected, rtol=0, atol=1e-10)
        assert fresh.get_potential_energy() == pytest.approx(energies[k], abs=1e-10)
