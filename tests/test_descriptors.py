"""Symmetry functions against a plain-Python implementation of the n2p2 formulas."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import hybridpot as hp
from hybridpot.descriptors import SymmetryFunction, triplet_indices
from hybridpot.neighbors import build_graph, compute_neighbors

from conftest import random_cluster, random_periodic


# ----------------------------------------------------------------------------- reference (plain loops)
def ref_cutoff(r, rc, ctype, alpha):
    if r >= rc:
        return 0.0
    if ctype == 2:
        return math.tanh(1 - r / rc) ** 3
    if ctype == 3:
        return math.tanh(1 - r / rc) ** 3 / math.tanh(1.0) ** 3
    rci = alpha * rc
    if r < rci:
        return 1.0
    x = (r - rci) / (rc - rci)
    if ctype == 1:
        return 0.5 * (math.cos(math.pi * x) + 1)
    if ctype == 4:
        return math.exp(1 - 1 / (1 - x * x))
    # poly1-poly4 as (1 - x)^(n+1) sum_k C(n+k, k) x^k: the smoothstep identity, exact in
    # relative terms near x = 1 where the expanded 1 - 10x^3 + ... loses ~1e-12 to cancellation
    if 5 <= ctype <= 8:
        n = ctype - 4
        return (1 - x) ** (n + 1) * sum(math.comb(n + k, k) * x**k for k in range(n + 1))
    raise ValueError(ctype)


def ref_neighbors(atoms, i, rc):
    """All (index, position) of atoms within rc of atom i, images included (brute force)."""
    pos = atoms.get_positions()
    cell = atoms.get_cell().array
    ranges = [range(-3, 4) if p else range(1) for p in atoms.get_pbc()]
    out = []
    for j in range(len(atoms)):
        for s in itertools.product(*ranges):
            rj = pos[j] + np.array(s) @ cell
            d = np.linalg.norm(rj - pos[i])
            if d < 1e-10:
                continue
            if d < rc:
                out.append((j, rj))
    return out


def ref_function(atoms, i, f: SymmetryFunction, ctype, alpha):
    z = atoms.get_atomic_numbers()
    ri = atoms.get_positions()[i]
    nb = ref_neighbors(atoms, i, f.r_cut)
    total = 0.0
    if f.type == 2:
        for j, rj in nb:
            if z[j] != f.neighbors[0]:
                continue
            r = np.linalg.norm(rj - ri)
            total += math.exp(-f.eta * (r - f.r_shift) ** 2) * ref_cutoff(r, f.r_cut, ctype, alpha)
        return total
    for a in range(len(nb)):
        for b in range(a + 1, len(nb)):
            j, rj = nb[a]
            k, rk = nb[b]
            if sorted((z[j], z[k])) != sorted(f.neighbors):
                continue
            rij, rik = rj - ri, rk - ri
            dij, dik, djk = np.linalg.norm(rij), np.linalg.norm(rik), np.linalg.norm(rk - rj)
            cos = rij @ rik / (dij * dik)
            ang = 2 ** (1 - f.zeta) * max(0.0, 1 + f.lam * cos) ** f.zeta  # cos = -1 exactly for collinear images
            expo = (dij - f.r_shift) ** 2 + (dik - f.r_shift) ** 2
            fc = ref_cutoff(dij, f.r_cut, ctype, alpha) * ref_cutoff(dik, f.r_cut, ctype, alpha)
            if f.type == 3:
                expo += (djk - f.r_shift) ** 2
                fc *= ref_cutoff(djk, f.r_cut, ctype, alpha)
            total += ang * math.exp(-f.eta * expo) * fc
    return total


def some_functions():
    na, cl, o = 11, 17, 8
    fs = []
    for c in (na, cl, o):
        fs += [
            SymmetryFunction(c, 2, (na,), 0.3, 4.2, 1.5),
            SymmetryFunction(c, 2, (cl,), 0.05, 4.6, 0.0),
            SymmetryFunction(c, 2, (o,), 1.1, 3.9, 2.2),
            SymmetryFunction(c, 3, (na, cl), 0.02, 4.5, 0.0, 1.0, 2.0),
            SymmetryFunction(c, 3, (o, o), 0.1, 4.1, 0.7, -1.0, 1.0),
            SymmetryFunction(c, 9, (cl, na), 0.04, 4.4, 0.0, -1.0, 4.0),
            SymmetryFunction(c, 9, (na, na), 0.01, 4.6, 1.2, 1.0, 3.5),
            SymmetryFunction(c, 9, (cl, o), 0.2, 3.8, 0.3, 1.0, 1.0),
        ]
    return fs


@pytest.mark.parametrize("ctype,alpha", [(2, 0.0), (6, 0.0), (6, 0.3), (1, 0.2), (4, 0.0), (3, 0.0), (8, 0.1)])
@pytest.mark.parametrize("kind", ["periodic", "cluster"])
def test_matches_reference_implementation(ctype, alpha, kind):
    atoms = random_periodic(10, seed=3) if kind == "periodic" else random_cluster(9, seed=4, box=4.5)
    # a small triclinic cell: neighbours through several images
    functions = some_functions()
    desc = hp.SymmetryFunctions(functions, cutoff_type=ctype, cutoff_alpha=alpha)
    system = hp.AtomicSystem.from_ase(atoms)
    graph = build_graph(system, compute_neighbors(system, desc.cutoff))
    got = desc(system.numbers, graph).numpy()
    z = atoms.get_atomic_numbers()
    for i in range(len(atoms)):
        own = [f for f in functions if f.center == z[i]]
        want = np.array([ref_function(atoms, i, f, ctype, alpha) for f in own])
        assert np.abs(want).max() > 1e-3  # the environment is not empty
        np.testing.assert_allclose(got[i, : len(own)], want, rtol=1e-12, atol=1e-14)
        assert np.all(got[i, len(own):] == 0.0)


def test_small_cell_many_images():
    """A cell with edges shorter than the cutoff: each atom sees many images of itself."""
    from ase import Atoms

    atoms = Atoms("NaCl", scaled_positions=[[0, 0, 0], [0.5, 0.45, 0.55]], cell=[[2.9, 0, 0], [0.4, 3.0, 0], [0.3, -0.2, 3.1]], pbc=True)
    functions = some_functions()
    desc = hp.SymmetryFunctions(functions, cutoff_type=6)
    system = hp.AtomicSystem.from_ase(atoms)
    got = desc(system.numbers, build_graph(system, compute_neighbors(system, desc.cutoff))).numpy()
    for i in range(2):
        own = [f for f in functions if f.center == atoms.numbers[i]]
        want = [ref_function(atoms, i, f, 6, 0.0) for f in own]
        np.testing.assert_allclose(got[i, : len(own)], want, rtol=1e-12)


def test_n2p2_lines_round_trip():
    desc = hp.SymmetryFunctions(some_functions(), cutoff_type=6, cutoff_alpha=0.25)
    lines = desc.to_n2p2()
    again = hp.SymmetryFunctions.from_n2p2(lines)
    assert again.functions == desc.functions
    assert again.cutoff_type == 6 and again.cutoff_alpha == 0.25


def test_reads_n2p2_lines_with_units():
    lines = """
    cutoff_type 2
    symfunction_short H  2 O  0.001 0.0 12.0    # comment
    symfunction_short O  3 H H 0.2 -1.0 1.0 12.0
    symfunction_short O  9 H O 0.2 1.0 4.0 12.0 1.5
    """
    bohr = 0.52917721
    desc = hp.SymmetryFunctions.from_n2p2(lines, length_unit=bohr)
    f0, f1, f2 = desc.functions
    assert (f0.center, f0.type, f0.neighbors) == (1, 2, (8,))
    assert f0.r_cut == pytest.approx(12.0 * bohr) and f0.eta == pytest.approx(0.001 / bohr**2)
    assert (f1.type, f1.lam, f1.zeta, f1.r_shift) == (3, -1.0, 1.0, 0.0)
    assert f2.type == 9 and f2.neighbors == (1, 8) and f2.r_shift == pytest.approx(1.5 * bohr)
    assert desc.n_features == [1, 2]


@pytest.mark.parametrize(
    "line,match",
    [
        ("symfunction_short H 7 O 0.1 0 6", "not supported"),
        ("symfunction_short H 2 O 0.1", "cannot parse"),
        ("symfunction_short Xx 2 O 0.1 0 6", "unknown element"),
        ("symfunction_short H 3 O O 0.1 2.0 1.0 6", "lambda"),
    ],
)
def test_bad_lines_are_clear_errors(line, match):
    with pytest.raises(ValueError, match=match):
        SymmetryFunction.from_n2p2(line)


def test_triplet_enumeration_counts_each_pair_once():
    centers = torch.tensor([0, 0, 0, 2, 2, 3, 3, 3, 3])
    p, q = triplet_indices(centers, 5)
    pairs = set(zip(p.tolist(), q.tolist()))
    expected = {(a, b) for a in range(9) for b in range(a + 1, 9) if centers[a] == centers[b]}
    assert pairs == expected and len(p) == len(expected)


def test_default_set_and_scaling_from_data():
    atoms = random_periodic(12, seed=5)
    desc = hp.SymmetryFunctions.default(["Na", "Cl", "O"], r_cut=4.5, n_radial=5)
    assert desc.n_features == [5 * 3 + 8 * 6] * 3
    system = hp.AtomicSystem.from_ase(atoms)
    graph = build_graph(system, compute_neighbors(system, desc.cutoff))
    raw = desc(system.numbers, graph, scaled=False)
    desc.fit_scaling(raw, system.numbers, mode="scale", s_min=-1.0, s_max=1.0)
    scaled = desc(system.numbers, graph)
    mask = desc.feature_mask(system.numbers)
    for e in range(3):
        rows = desc.slots(system.numbers) == e
        vals = scaled[rows][:, mask[rows][0]]
        varying = (raw[rows][:, mask[rows][0]].max(0).values - raw[rows][:, mask[rows][0]].min(0).values) > 0
        assert torch.allclose(vals[:, varying].min(0).values, torch.tensor(-1.0, dtype=vals.dtype))
        assert torch.allclose(vals[:, varying].max(0).values, torch.tensor(1.0, dtype=vals.dtype))
    # scaling lives in the state dict
    clone = hp.SymmetryFunctions.default(["Na", "Cl", "O"], r_cut=4.5, n_radial=5)
    clone.load_state_dict(desc.state_dict())
    assert clone.scaling_mode == "scale"
    assert torch.equal(clone(system.numbers, graph), scaled)


def test_moment_and_triplet_paths_agree_including_exact_zeros():
    """Type-9 sets with integer zeta go through moment tensors; an atom without any neighbour pair
    in a channel must get an exact zero there (as the triplet sum), not rounding noise."""
    from ase import Atoms

    desc = hp.SymmetryFunctions.default(["H", "He"], r_cut=3.0, n_radial=3, angular_etas=[0.01], zetas=[1.0, 2.0])
    rng = np.random.default_rng(3)
    for _ in range(5):
        atoms = Atoms("HHeH", positions=rng.uniform(0, 3.2, (3, 3)))
        system = hp.AtomicSystem.from_ase(atoms)
        graph = build_graph(system, compute_neighbors(system, desc.cutoff))
        desc.moment_max_zeta = 8
        moments = desc(system.numbers, graph, scaled=False)
        desc.moment_max_zeta = 0
        triplets = desc(system.numbers, graph, scaled=False)
        np.testing.assert_allclose(moments, triplets, rtol=1e-12, atol=1e-15)
        assert torch.equal(moments == 0, triplets == 0)


def test_scaling_treats_noise_level_features_as_constant():
    desc = hp.SymmetryFunctions.default(["Na"], r_cut=4.0, n_radial=2)
    raw = torch.zeros(5, desc.max_features, dtype=torch.float64)
    raw[:, 0] = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    raw[:, 1] = torch.tensor([1e-18, -8e-19, 0.0, 2e-18, 0.0])  # rounding noise around zero
    desc.fit_scaling(raw, torch.full((5,), 11), mode="scale", s_min=-1.0, s_max=1.0)
    assert float(desc.scale_factor[0, 0]) == pytest.approx(2.0 / 0.4)
    assert float(desc.scale_factor[0, 1]) == 1.0  # not 2 / 2.8e-18
