"""Tests of the damped C6 dispersion term (hybridpot.dispersion)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.constants as sc
import torch
from ase import Atoms
from scipy.integrate import quad

import hybridpot as hp
from hybridpot.dispersion import Dispersion

from finite_differences import fd_forces, fd_stress

# 1 J nm^6 mol^-1 in eV Å^6 from CODATA constants (independent of ase.units). ase.units uses
# CODATA 2014 and scipy CODATA 2018: they differ by ~1e-8 relative, hence REL below.
J_NM6_MOL = 1.0 / (sc.N_A * sc.e) * 1e6
REL = 1e-7
C6_NA, C6_CL = 5.71 * J_NM6_MOL, 5.07 * J_NM6_MOL  # Grimme 2006, Table 1
R0_NA, R0_CL = 1.144, 1.639


def _model(**kw):
    kw.setdefault("damping", "bj")
    return hp.HybridPotential(dispersion=Dispersion(["Na", "Cl", "O"], **kw))


def _energy(model, atoms):
    return float(model(hp.AtomicSystem.from_ase(atoms), compute_forces=False, compute_stress=False)["energy"][0])


def _dimer(r, symbols="NaCl"):
    return Atoms(symbols, positions=[[0, 0, 0], [r, 0, 0]])


def _random_cluster(n=8, box=6.0, seed=3):
    rng = np.random.default_rng(seed)
    pos = []
    while len(pos) < n:
        p = rng.random(3) * box
        if all(np.linalg.norm(p - q) > 1.5 for q in pos):
            pos.append(p)
    return Atoms(["Na", "Cl", "O"] * (n // 3) + ["Na", "Cl", "O"][: n % 3], positions=pos)


def _random_periodic(n=10, seed=4):
    rng = np.random.default_rng(seed)
    cell = np.array([[6.2, 0.0, 0.0], [1.1, 5.8, 0.0], [-0.7, 0.9, 6.5]])
    frac = []
    while len(frac) < n:
        f = rng.random(3)
        if all(np.linalg.norm((f - g - np.round(f - g)) @ cell) > 1.6 for g in frac):
            frac.append(f)
    return Atoms((["Na", "Cl", "O"] * n)[:n], scaled_positions=frac, cell=cell, pbc=True)


def test_d2_table_and_units():
    from hybridpot.dispersion import d2_c6, d2_r0

    assert d2_c6("Na") == pytest.approx(C6_NA, rel=1e-6)
    assert d2_c6(17) == pytest.approx(C6_CL, rel=1e-6)
    assert d2_r0("Cl") == R0_CL
    # H..Xe covered, everything beyond needs an explicit value
    assert all(d2_c6(z) > 0 and d2_r0(z) > 0 for z in range(1, 55))
    with pytest.raises(ValueError, match="H-Xe"):
        Dispersion(["Cs"])
    d = Dispersion(["Cs"], c6={"Cs": 400.0}, r0={55: 1.8})
    assert float(d.c6[55]) == 400.0
    with pytest.raises(ValueError):
        Dispersion(["Na"], damping="d3")


def test_long_range_limit_and_pair_formula():
    model = _model(cutoff=40.0, tail_correction=False)
    c6 = math.sqrt(C6_NA * C6_CL)
    r0 = R0_NA + R0_CL
    for r in (2.5, 4.0, 7.0):
        assert _energy(model, _dimer(r)) == pytest.approx(-c6 / (r**6 + r0**6), rel=REL)
    # -> -C6/r^6 at long range
    for r in (15.0, 25.0, 35.0):
        e = _energy(model, _dimer(r))
        assert abs(e / (-c6 / r**6) - 1.0) < 1.01 * (r0 / r) ** 6 + REL
    assert abs(_energy(model, _dimer(35.0)) / (-c6 / 35.0**6) - 1.0) < 1e-6


def test_fermi_damping_matches_d2_formula():
    model = _model(damping="fermi", cutoff=40.0, tail_correction=False)
    c6 = math.sqrt(C6_NA * C6_CL)
    rr = 1.1 * (R0_NA + R0_CL)
    for r in (2.0, 3.0, 5.0, 12.0):
        ref = -c6 / r**6 / (1.0 + math.exp(-20.0 * (r / rr - 1.0)))
        assert _energy(model, _dimer(r)) == pytest.approx(ref, rel=REL)


def test_finite_at_zero_distance():
    d = Dispersion(["Na", "Cl"])
    r = torch.tensor([0.0, 1e-3], dtype=torch.float64, requires_grad=True)
    z1, z2 = torch.tensor([11, 11]), torch.tensor([17, 17])
    e = d.pair_energy(r, z1, z2)
    (grad,) = torch.autograd.grad(e.sum(), r)
    limit = -math.sqrt(C6_NA * C6_CL) / (R0_NA + R0_CL) ** 6
    assert torch.isfinite(e).all() and torch.isfinite(grad).all()
    assert float(e[0].detach()) == pytest.approx(limit, rel=REL)
    assert abs(float(grad[0])) < 1e-12
    # through the model at the closest allowed approach
    model = _model()
    out = model(hp.AtomicSystem.from_ase(_dimer(0.15)))
    assert torch.isfinite(out["energy"]).all() and torch.isfinite(out["forces"]).all()
    assert float(out["energy"][0]) == pytest.approx(limit, rel=1e-3)


@pytest.mark.parametrize("damping", ["bj", "fermi"])
def test_forces_match_finite_differences_finite(damping):
    # short cutoff so that pairs lie in the switching region
    model = _model(damping=damping, cutoff=5.0, switch_width=2.0)
    atoms = _random_cluster()
    forces = model(hp.AtomicSystem.from_ase(atoms))["forces"].numpy()
    h = 1e-5
    fd = np.zeros_like(forces)
    for a in range(len(atoms)):
        for k in range(3):
            p = atoms.copy()
            p.positions[a, k] += h
            m = atoms.copy()
            m.positions[a, k] -= h
            fd[a, k] = -(_energy(model, p) - _energy(model, m)) / (2 * h)
    assert np.abs(fd).max() > 1e-3
    np.testing.assert_allclose(forces, fd, atol=1e-8 * max(1.0, np.abs(fd).max()), rtol=1e-6)


def test_periodic_forces_and_stress_match_finite_differences():
    model = _model(cutoff=7.0, switch_width=2.5, tail_correction=True)
    atoms = _random_periodic()
    out = model(hp.AtomicSystem.from_ase(atoms))
    forces, stress = out["forces"].numpy(), out["stress"][0].numpy()
    rows = [0, 3, 7]
    np.testing.assert_allclose(forces[rows], fd_forces(model, atoms, h=1e-5, indices=rows)[rows], rtol=0, atol=1e-8)
    reference_stress = fd_stress(model, atoms, h=1e-5)
    assert np.abs(reference_stress).max() > 1e-5
    np.testing.assert_allclose(stress, reference_stress, atol=1e-9)


def test_energy_and_force_continuous_at_cutoff():
    d = Dispersion(["Na", "Cl"], cutoff=10.0, switch_width=2.0)
    rc = 10.0
    r = torch.tensor([rc - 1e-7, rc, rc + 1e-7, 8.0 - 1e-9, 8.0 + 1e-9], dtype=torch.float64, requires_grad=True)
    z1, z2 = torch.full((5,), 11), torch.full((5,), 17)
    e = d.pair_energy(r, z1, z2)
    (g,) = torch.autograd.grad(e.sum(), r, create_graph=True)
    (g2,) = torch.autograd.grad(g.sum(), r)
    e, g = e.detach(), g.detach()
    c6 = math.sqrt(C6_NA * C6_CL)
    scale = c6 / rc**6  # energy scale at the cutoff, ~ 6e-5 eV
    assert abs(float(e[0])) < 1e-12 * scale and float(e[1]) == 0.0 and float(e[2]) == 0.0
    assert abs(float(g[0])) < 1e-9 * scale and abs(float(g2[0])) < 1e-5 * scale
    # unswitched inside r_on, continuous value and slope at r_on
    r0 = R0_NA + R0_CL
    assert float(e[3]) == pytest.approx(-c6 / (8.0**6 + r0**6), rel=REL)
    assert float(e[3]) == pytest.approx(float(e[4]), rel=1e-7)
    assert float(g[3]) == pytest.approx(float(g[4]), rel=1e-6)
    # along a dimer scan through the model: the energy approaches zero smoothly
    model = hp.HybridPotential(dispersion=d)
    rs = np.linspace(9.9, 10.1, 21)
    es = np.array([_energy(model, _dimer(r)) for r in rs])
    inside = rs < rc
    # poly2 switch near x = 1: S = (1 - x)^3 (6x^2 + 3x + 1) <= 10 (1 - x)^3
    bound = 10 * ((rc - rs[inside]) / 2.0) ** 3 * c6 / rs[inside] ** 6
    assert np.all(np.abs(es[inside]) <= bound * (1 + 1e-6)) and np.all(es[~inside] == 0.0)
    assert np.all(np.diff(es[inside]) > 0)


def test_tail_integral_against_closed_form_and_quadrature():
    # hard cutoff: int_rc^inf r^2/(r^6 + R^6) dr = (pi/2 - atan(rc^3/R^3)) / (3 R^3)
    d = Dispersion(["Na", "Cl"], cutoff=9.0, switch_width=0.0)
    slot = {11: 0, 17: 1}
    for za, zb, r0 in ((11, 11, 2 * R0_NA), (11, 17, R0_NA + R0_CL), (17, 17, 2 * R0_CL)):
        ref = (math.pi / 2 - math.atan(9.0**3 / r0**3)) / (3 * r0**3)
        assert float(d.tail_integrals[slot[za], slot[zb]]) == pytest.approx(ref, rel=1e-10)
    # smooth switch: compare with scipy quad of (1 - S) f r^2
    d = Dispersion(["Na", "Cl"], cutoff=9.0, switch_width=3.0)

    def integrand(r):
        x = (r - 6.0) / 3.0
        s = 1.0 if x <= 0 else (0.0 if x >= 1 else 1 - 10 * x**3 + 15 * x**4 - 6 * x**5)
        return (1 - s) * r**2 / (r**6 + (R0_NA + R0_CL) ** 6)

    ref = quad(integrand, 6.0, 9.0, epsabs=1e-16)[0] + quad(integrand, 9.0, np.inf, epsabs=1e-16)[0]
    assert float(d.tail_integrals[0, 1]) == pytest.approx(ref, rel=1e-9)


def test_tail_correction_converges_a_homogeneous_system():
    # a random "gas" of 60 atoms in a 16 Å box: the truncated sum converges faster with the tail
    rng = np.random.default_rng(7)
    cell = np.eye(3) * 16.0
    atoms = Atoms(["Na", "Cl"] * 30, positions=rng.random((60, 3)) * 16.0, cell=cell, pbc=True)
    rng_pos = atoms.positions
    d2 = ((rng_pos[:, None] - rng_pos[None]) ** 2).sum(-1) + np.eye(60) * 100
    assert d2.min() > 0.1**2

    def e(cutoff, tail):
        m = hp.HybridPotential(dispersion=Dispersion(["Na", "Cl"], cutoff=cutoff, switch_width=2.0, tail_correction=tail))
        return _energy(m, atoms)

    e_ref = e(30.0, True)
    err_tail = abs(e(8.0, True) - e_ref)
    err_plain = abs(e(8.0, False) - e_ref)
    assert err_tail < 0.2 * err_plain
    # and the reference itself is converged: 30 Å with and without tail differ by the tail only
    assert abs(e(30.0, False) - e_ref) < 0.05 * err_plain


def test_periodic_cell_equals_supercell():
    model = _model(cutoff=9.0)
    atoms = _random_periodic(n=6)
    out1 = model(hp.AtomicSystem.from_ase(atoms))
    big = atoms.repeat((2, 1, 3))
    out6 = model(hp.AtomicSystem.from_ase(big))
    assert float(out6["energy"][0]) == pytest.approx(6 * float(out1["energy"][0]), rel=1e-11)
    np.testing.assert_allclose(out6["energies"].numpy().reshape(6, -1), np.tile(out1["energies"].numpy(), (6, 1)),
                               rtol=1e-10)
    np.testing.assert_allclose(out6["stress"][0].numpy(), out1["stress"][0].numpy(), atol=1e-12)


def test_per_atom_energies_split_pairs_and_scale():
    model = _model(cutoff=40.0, tail_correction=False)
    out = model(hp.AtomicSystem.from_ase(_dimer(3.0)))
    e = out["energies"].numpy()
    assert e[0] == pytest.approx(e[1], rel=1e-14) and e.sum() == pytest.approx(float(out["energy"][0]), rel=1e-14)
    d = Dispersion(["Na", "Cl"], learnable_scale=True, s6=0.75, cutoff=40.0)
    assert any(p.requires_grad for p in d.parameters())
    with torch.no_grad():
        d.scale.fill_(2.0)
    e2 = _energy(hp.HybridPotential(dispersion=d), _dimer(3.0))
    assert e2 == pytest.approx(1.5 * float(out["energy"][0]), rel=1e-12)


def test_float32_and_unknown_element():
    model = _model(cutoff=6.0).to(torch.float32)
    atoms = _random_cluster()
    e32 = model(hp.AtomicSystem.from_ase(atoms))
    e64 = _model(cutoff=6.0)(hp.AtomicSystem.from_ase(atoms))
    assert e32["energy"].dtype == torch.float32
    assert float(e32["energy"][0]) == pytest.approx(float(e64["energy"][0]), rel=1e-5)
    d = Dispersion(["Na"])
    system = hp.AtomicSystem.from_ase(_dimer(3.0))
    graph = hp.build_graph(system, hp.compute_neighbors(system, 12.0))
    with pytest.raises(ValueError, match="no parameters"):
        d(system, graph)
