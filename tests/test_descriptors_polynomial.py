"""n2p2 polynomial ("compact") symmetry functions, types 20-22.

Checked against a plain-loop transcription of the formulas of Bircher, Singraber and
Dellago (arXiv:2010.14414) as n2p2 defines them (SymFncCompRad, SymFncCompAngn/Angw,
CompactFunction, CoreFunction), against closed-form values for hand-placed atoms, by
finite differences of the forces, and for the n2p2 ordering and line round trip.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from ase import Atoms

import hybridpot as hp
from hybridpot.descriptors import SymmetryFunction, compact_core
from hybridpot.neighbors import build_graph, compute_neighbors

from conftest import random_cluster, random_periodic


# ----------------------------------------------------------------------------- plain-loop reference
def ref_core(x, kind, asym=False):
    if asym:
        x = (2.0 - x) * x
    if kind == "e":
        return math.e * math.exp(1.0 / (x * x - 1.0))
    k = int(kind)
    if not 1 <= k <= 4:
        raise ValueError(kind)
    # p_k = 1 - 3x^2 + 2x^3, 1 - 10x^3 + 15x^4 - 6x^5, ... written as the smoothstep identity
    # (1 - x)^(k+1) sum_m C(k+m, m) x^m: the same polynomials, without the expanded form's
    # cancellation near x = 1 (up to 1e-12 relative there)
    return (1 - x) ** (k + 1) * sum(math.comb(k + m, m) * x**m for m in range(k + 1))


def ref_compact(a, left, right, subtype, angular=False):
    kind = subtype[1] if subtype[0] == "p" else "e"
    asym = (not angular) and subtype.endswith("a")
    center, half = 0.5 * (left + right), 0.5 * (right - left)
    return ref_core(abs(a - center) / half, kind, asym)


def ref_neighbors(atoms, i, rc):
    pos, cell = atoms.get_positions(), atoms.get_cell().array
    ranges = [range(-3, 4) if p else range(1) for p in atoms.get_pbc()]
    out = []
    for j in range(len(atoms)):
        for s in itertools.product(*ranges):
            rj = pos[j] + np.array(s) @ cell
            d = np.linalg.norm(rj - pos[i])
            if 1e-10 < d < rc:
                out.append((j, rj))
    return out


def ref_function(atoms, i, f: SymmetryFunction):
    z = atoms.get_atomic_numbers()
    ri = atoms.get_positions()[i]
    nb = ref_neighbors(atoms, i, f.r_cut)
    rl, rc = f.r_left, f.r_cut
    total = 0.0
    if f.type in (20, 23):
        for j, rj in nb:
            r = np.linalg.norm(rj - ri)
            if f.type == 20 and z[j] == f.neighbors[0] and rl < r < rc:
                total += ref_compact(r, rl, rc, f.subtype)
            elif f.type == 23 and rl < r < rc:
                total += z[j] * ref_compact(r, rl, rc, f.subtype)
        return total
    al, ar = math.radians(f.angle_left), math.radians(f.angle_right)
    for a in range(len(nb)):
        for b in range(a + 1, len(nb)):
            (j, rj), (k, rk) = nb[a], nb[b]
            weight = z[j] * z[k] if f.type in (24, 25) else 1.0
            if f.type in (21, 22) and sorted((z[j], z[k])) != sorted(f.neighbors):
                continue
            dij, dik, djk = np.linalg.norm(rj - ri), np.linalg.norm(rk - ri), np.linalg.norm(rk - rj)
            if not (rl < dij < rc and rl < dik < rc):
                continue
            if f.type in (21, 24) and not (max(rl, 0.0) < djk < rc):
                continue
            cos = (rj - ri) @ (rk - ri) / (dij * dik)
            if abs(cos) >= 1.0:
                continue
            theta = math.acos(cos)
            if not al <= theta <= ar:
                continue
            rad = ref_compact(dij, rl, rc, f.subtype) * ref_compact(dik, rl, rc, f.subtype)
            if f.type in (21, 24):
                rad *= ref_compact(djk, rl, rc, f.subtype)
            total += weight * rad * ref_compact(theta, al, ar, f.subtype, angular=True)
    return total


def polynomial_functions():
    na, cl, o = 11, 17, 8
    fs = []
    for c in (na, cl, o):
        fs += [
            SymmetryFunction(c, 20, (na,), 0.0, 4.2, r_left=-4.2, subtype="p2"),
            SymmetryFunction(c, 20, (cl,), 0.0, 4.6, r_left=1.3, subtype="p3"),
            SymmetryFunction(c, 20, (o,), 0.0, 3.9, r_left=0.0, subtype="p1a"),
            SymmetryFunction(c, 20, (na,), 0.0, 4.4, r_left=2.0, subtype="e"),
            SymmetryFunction(c, 21, (na, cl), 0.0, 4.5, r_left=-4.5, angle_left=0.0, angle_right=180.0, subtype="p2"),
            SymmetryFunction(c, 21, (o, o), 0.0, 4.3, r_left=0.5, angle_left=40.0, angle_right=150.0, subtype="p4"),
            SymmetryFunction(c, 22, (cl, na), 0.0, 4.4, r_left=-4.4, angle_left=-60.0, angle_right=60.0, subtype="p2"),
            SymmetryFunction(c, 22, (na, na), 0.0, 4.6, r_left=1.0, angle_left=90.0, angle_right=270.0, subtype="p3a"),
            SymmetryFunction(c, 22, (cl, o), 0.0, 3.8, r_left=0.0, angle_left=30.0, angle_right=120.0, subtype="e"),
            SymmetryFunction(c, 23, (), 0.0, 4.1, r_left=-4.1, subtype="p2"),
            SymmetryFunction(c, 23, (), 0.0, 4.5, r_left=1.5, subtype="p3a"),
            SymmetryFunction(c, 24, (), 0.0, 4.4, r_left=-4.4, angle_left=0.0, angle_right=180.0, subtype="p2"),
            SymmetryFunction(c, 25, (), 0.0, 4.2, r_left=0.5, angle_left=30.0, angle_right=150.0, subtype="e"),
            # a Gaussian function mixed in: both kinds share one descriptor
            SymmetryFunction(c, 9, (na, o), 0.04, 4.4, 0.0, -1.0, 2.0),
        ]
    return fs


@pytest.mark.parametrize("kind", ["periodic", "cluster"])
def test_matches_reference_implementation(kind):
    atoms = random_periodic(10, seed=3) if kind == "periodic" else random_cluster(9, seed=4, box=4.5)
    functions = [f for f in polynomial_functions() if f.is_compact]
    desc = hp.SymmetryFunctions(functions, cutoff_type=6)
    system = hp.AtomicSystem.from_ase(atoms)
    got = desc(system.numbers, build_graph(system, compute_neighbors(system, desc.cutoff))).numpy()
    z = atoms.get_atomic_numbers()
    nonzero = 0
    for i in range(len(atoms)):
        own = [f for f in functions if f.center == z[i]]
        want = np.array([ref_function(atoms, i, f) for f in own])
        nonzero += int(np.sum(np.abs(want) > 1e-6))
        np.testing.assert_allclose(got[i, : len(own)], want, rtol=1e-12, atol=1e-14)
    assert nonzero > 0.6 * sum(len([f for f in functions if f.center == zi]) for zi in z)


def test_closed_form_values():
    """Hand-placed atoms: O at the origin, H at 1 Å on x, H at 2 Å on y (90 degrees)."""
    atoms = Atoms("OHH", positions=[[0, 0, 0], [1.0, 0, 0], [0, 2.0, 0]])
    fs = [
        SymmetryFunction(8, 20, (1,), 0.0, 4.0, r_left=-4.0, subtype="p2"),  # x = r/4
        SymmetryFunction(8, 22, (1, 1), 0.0, 4.0, r_left=-4.0, angle_left=0.0, angle_right=180.0, subtype="p2"),
        SymmetryFunction(8, 21, (1, 1), 0.0, 4.0, r_left=-4.0, angle_left=0.0, angle_right=180.0, subtype="p2"),
        SymmetryFunction(8, 20, (1,), 0.0, 3.0, r_left=1.0, subtype="p1"),  # centre 2, half width 1
        SymmetryFunction(1, 20, (8,), 0.0, 4.0, r_left=-4.0, subtype="p2"),
    ]
    desc = hp.SymmetryFunctions(fs, cutoff_type=2)
    system = hp.AtomicSystem.from_ase(atoms)
    g = desc(system.numbers, build_graph(system, compute_neighbors(system, desc.cutoff)))[0].numpy()
    p2 = lambda x: 1 - 10 * x**3 + 15 * x**4 - 6 * x**5
    np.testing.assert_allclose(g[0], p2(0.25) + p2(0.5), rtol=1e-14)
    # 90 degrees is the centre of (0, 180): angular factor 1
    np.testing.assert_allclose(g[1], p2(0.25) * p2(0.5), rtol=1e-14)
    np.testing.assert_allclose(g[2], p2(0.25) * p2(0.5) * p2(math.sqrt(5.0) / 4.0), rtol=1e-14)
    # r = 1 is the left end (excluded, 0), r = 2 the centre (1)
    np.testing.assert_allclose(g[3], 1.0, rtol=1e-14)


def test_core_functions_and_smoothness():
    x = torch.linspace(0.0, 0.999, 50, dtype=torch.float64)
    for kind, sub in [(1, "1"), (2, "2"), (3, "3"), (4, "4"), (0, "e")]:
        for asym in (False, True):
            got = compact_core(x, kind, asym).numpy()
            want = [ref_core(float(v), sub, asym) for v in x]
            # the expanded reference polynomials cancel near x = 1 (coefficients up to 540): atol 1e-12
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # value 1 at the centre, 0 with vanishing slope at the edge (p2: two vanishing derivatives)
    t = torch.tensor([0.0, 1.0 - 1e-6], dtype=torch.float64, requires_grad=True)
    v = compact_core(t, 2)
    (d,) = torch.autograd.grad(v.sum(), t)
    v = v.detach()
    assert float(v[0]) == 1.0 and abs(float(v[1])) < 1e-14 and abs(float(d[1])) < 1e-9


def test_forces_match_finite_differences():
    atoms = random_periodic(8, seed=5)
    functions = polynomial_functions()
    desc = hp.SymmetryFunctions(functions, cutoff_type=6)
    system0 = hp.AtomicSystem.from_ase(atoms)
    raw = desc(system0.numbers, build_graph(system0, compute_neighbors(system0, desc.cutoff)), scaled=False)
    # weighted functions are large: divide each feature by its largest value (no tiny ranges)
    g_max = torch.ones(len(desc.elements), desc.max_features, dtype=torch.float64)
    for e in range(len(desc.elements)):
        g_max[e] = raw[desc.slots(system0.numbers) == e].abs().max(0).values.clamp_min(1e-3)
    desc.set_scaling("scale", torch.zeros_like(g_max), g_max, g_max, g_max, s_min=0.0, s_max=1.0)
    torch.manual_seed(0)
    short = hp.ShortRange(["Na", "Cl", "O"], desc, hidden=(8,), activation="tanh")
    model = hp.HybridPotential(short_range=short).double()
    system = hp.AtomicSystem.from_ase(atoms)
    out = model(system)
    forces = out["forces"].numpy()
    assert np.abs(forces).max() > 1e-3
    h = 1e-5
    for i in range(len(atoms)):
        for a in range(3):
            e = []
            for sgn in (1, -1):
                at = atoms.copy()
                at.positions[i, a] += sgn * h
                e.append(float(model(hp.AtomicSystem.from_ase(at), compute_forces=False)["energy"][0]))
            fd = -(e[0] - e[1]) / (2 * h)
            assert abs(fd - forces[i, a]) < 1e-7 * max(1.0, abs(forces[i, a])), (i, a, fd, forces[i, a])


def test_line_round_trip_and_validation():
    lines = [
        "symfunction_short C 20 H -1.50E+01 1.50E+01 p2",
        "symfunction_short C 21 N H 0.0 6.0 -180.0 180.0 p3",
        "symfunction_short C 22 H H 3.0 9.0 60.0 120.0 p2a",
        "symfunction_short N 20 C 0.0 6.0 e",
        "symfunction_short N 23 -6.0 6.0 p2",
        "symfunction_short N 24 0.0 6.0 0.0 180.0 p4",
        "symfunction_short H 25 1.0 7.0 -90.0 90.0 p1",
    ]
    for line in lines:
        f = SymmetryFunction.from_n2p2(line)
        g = SymmetryFunction.from_n2p2(f.to_n2p2())
        assert f == g
    f = SymmetryFunction.from_n2p2(lines[0], length_unit=0.5)
    assert f.r_left == -7.5 and f.r_cut == 7.5 and f.subtype == "p2"
    with pytest.raises(ValueError, match="subtype"):
        SymmetryFunction.from_n2p2("symfunction_short C 20 H 0.0 6.0 q2")
    with pytest.raises(ValueError, match="r_left < r_cut"):
        SymmetryFunction.from_n2p2("symfunction_short C 20 H 6.0 5.0 p2")
    with pytest.raises(ValueError, match="angle"):
        SymmetryFunction.from_n2p2("symfunction_short C 22 H H 0.0 6.0 120.0 60.0 p2")
    with pytest.raises(ValueError, match="not supported"):
        SymmetryFunction.from_n2p2("symfunction_short C 13 H H 0.1 1 1 6.0 0.0")


def test_n2p2_sort_key_orders_like_n2p2():
    """SymFncCompRad::operator<: type, subtype, e1, rc, rl; SymFncExpRad: rc, eta, rs, e1."""
    fs = [SymmetryFunction.from_n2p2(l) for l in [
        "symfunction_short C 22 H H 0.0 6.0 0.0 180.0 p2",
        "symfunction_short C 20 N 0.0 9.0 p2",
        "symfunction_short C 20 H 3.0 9.0 p2",
        "symfunction_short C 20 H -9.0 9.0 p2",
        "symfunction_short C 20 H 0.0 6.0 p2",
        "symfunction_short C 20 H 0.0 6.0 p1",
        "symfunction_short C 2 H 0.5 0.0 6.0",
        "symfunction_short C 2 H 0.1 1.0 6.0",
        "symfunction_short C 2 N 0.1 0.0 6.0",
        "symfunction_short C 2 H 0.1 0.0 6.0",
    ]]
    got = [f.to_n2p2() for f in sorted(fs, key=SymmetryFunction.n2p2_sort_key)]
    want = [fs[k].to_n2p2() for k in (9, 8, 7, 6, 5, 4, 3, 2, 1, 0)]
    assert got == want
