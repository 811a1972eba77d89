"""The Electrostatics term: Madelung constants, Gaussian-charge lattice sums, neutralising background, screening, gradients, bad input (hybridpot.electrostatics.term)."""

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from scipy.special import erf

import hybridpot as hp
from conftest import one_torch_thread
from hybridpot.electrostatics import (
    COULOMB_CONSTANT,
    Electrostatics,
    screening_function,
)
from hybridpot.qeq import FixedCharges
from electrostatics_helpers import (
    KE,
    MADELUNG_NACL,
    _model_energy,
    _term,
    _smooth_image_sum,
    _fourier_energy,
    _random_cell,
)

# float() of results that carry autograd graphs is intended in these checks
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True")


_one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


@pytest.mark.parametrize("method", ["ewald", "pme"])
@pytest.mark.parametrize("cell_kind", ["primitive", "cubic", "supercell"])
def test_madelung_nacl(method, cell_kind):
    a = 5.64
    atoms = bulk("NaCl", "rocksalt", a=a, cubic=cell_kind != "primitive")
    if cell_kind == "supercell":
        atoms = atoms * (3, 3, 3)
    atoms.set_initial_charges(np.where(atoms.numbers == 11, 1.0, -1.0))
    energy = _model_energy(atoms, Electrostatics(method=method, accuracy=1e-6))
    madelung = -float(energy) / (len(atoms) / 2) / COULOMB_CONSTANT * (a / 2)
    assert madelung == pytest.approx(MADELUNG_NACL, rel=1e-6)


def test_madelung_float32():
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    atoms.set_initial_charges(np.where(atoms.numbers == 11, 1.0, -1.0))
    for method in ("ewald", "pme"):
        energy = _model_energy(atoms, Electrostatics(method=method, accuracy=1e-5), dtype=torch.float32)
        assert energy.dtype == torch.float32
        madelung = -float(energy) / 4 / COULOMB_CONSTANT * 2.82
        assert madelung == pytest.approx(MADELUNG_NACL, rel=2e-5)


@pytest.mark.parametrize("method", ["ewald", "pme"])
def test_periodic_gaussian_energy_equals_image_sum(method):
    pos, cell, q, sig = _random_cell()
    atoms = Atoms("H4", positions=pos, cell=cell, pbc=True)
    energy, _, _ = _term(atoms, Electrostatics(method=method, accuracy=1e-8), q, sig)
    direct = _smooth_image_sum(pos, cell, q, sig, radius=80.0, width=20.0)
    fourier = _fourier_energy(pos, cell, q, sig)
    assert direct == pytest.approx(fourier, rel=1e-7)  # the two references agree
    assert float(energy) == pytest.approx(fourier, rel=1e-8)
    assert float(energy) == pytest.approx(direct, rel=1e-7)


@pytest.mark.parametrize("method", ["ewald", "pme"])
def test_charged_cell_neutralising_background(method):
    pos, cell, q, sig = _random_cell(charge=1.0)
    assert q.sum() == pytest.approx(1.0)
    atoms = Atoms("H4", positions=pos, cell=cell, pbc=True)
    ref = _fourier_energy(pos, cell, q, sig)
    for rc in (8.0, 11.0):  # different Ewald splittings give the same energy
        energy, _, _ = _term(atoms, Electrostatics(method=method, accuracy=1e-8, real_space_cutoff=rc), q, sig)
        assert float(energy) == pytest.approx(ref, rel=1e-8)


def test_screened_energy_finite_and_periodic():
    inner, outer = 1.5, 4.0
    rng = np.random.default_rng(2)
    # finite: every pair multiplied by f_s
    pos = rng.normal(scale=1.5, size=(5, 3))
    q, sig = rng.normal(size=5), rng.uniform(0.4, 0.8, size=5)
    atoms = Atoms("C5", positions=pos)
    energy, _, _ = _term(atoms, Electrostatics(screening=(inner, outer)), q, sig)
    ref = 0.0
    for i in range(5):
        for j in range(i + 1, 5):
            r = np.linalg.norm(pos[i] - pos[j])
            g = math.sqrt(sig[i] ** 2 + sig[j] ** 2)
            fs = float(screening_function(torch.tensor(r), inner, outer))
            ref += KE * q[i] * q[j] * erf(r / (math.sqrt(2) * g)) / r * fs
    assert float(energy) == pytest.approx(ref, rel=1e-12)
    # periodic: screened - unscreened = sum over image pairs within r_outer of (f_s - 1) pair energy
    pos, cell, q, sig = _random_cell(n=4, seed=7)
    atoms = Atoms("H4", positions=pos, cell=cell, pbc=True)
    e_scr, _, _ = _term(atoms, Electrostatics(method="ewald", accuracy=1e-8, screening=(inner, outer)), q, sig)
    e_raw, _, _ = _term(atoms, Electrostatics(method="ewald", accuracy=1e-8), q, sig)
    n = np.arange(-2, 3)
    shifts = np.stack(np.meshgrid(n, n, n, indexing="ij"), -1).reshape(-1, 3) @ cell
    corr = 0.0
    for i in range(4):
        for j in range(4):
            r = np.linalg.norm(pos[j] - pos[i] + shifts, axis=1)
            r = r[(r > 1e-9) & (r < outer)]
            g = math.sqrt(sig[i] ** 2 + sig[j] ** 2)
            fs = screening_function(torch.as_tensor(r), inner, outer).numpy()
            corr += 0.5 * KE * q[i] * q[j] * np.sum(erf(r / (math.sqrt(2) * g)) / r * (fs - 1))
    assert float(e_scr - e_raw) == pytest.approx(corr, rel=1e-10)


@pytest.mark.parametrize("periodic", [False, True])
def test_potential_is_energy_derivative(periodic):
    pos, cell, q, sig = _random_cell(n=5, seed=11)
    atoms = Atoms("H5", positions=pos, cell=cell, pbc=periodic)
    elec = Electrostatics(accuracy=1e-8, screening=(1.0, 3.0))
    _, system, graph = _term(atoms, elec, q, sig)
    qt = torch.as_tensor(q).requires_grad_(True)
    st = torch.as_tensor(sig)
    energy = elec(system, graph, qt, st).sum()
    (dedq,) = torch.autograd.grad(energy, qt)
    assert torch.allclose(elec.potential(system, graph, qt.detach(), st), dedq, atol=1e-10)


@pytest.mark.parametrize("method", ["direct", "ewald", "pme"])
def test_forces_and_stress_finite_differences(method):
    pos, cell, q, sig = _random_cell(n=4, seed=13)
    periodic = method != "direct"
    atoms = Atoms("H2O2", positions=pos, cell=cell, pbc=periodic)
    atoms.set_initial_charges(q)
    model = hp.HybridPotential(charges=FixedCharges(sigma={"H": 0.7, "O": 0.9}), electrostatics=Electrostatics(method=method, accuracy=1e-9))
    out = model(hp.AtomicSystem.from_ase(atoms))

    def energy(a):
        return float(model(hp.AtomicSystem.from_ase(a), compute_forces=False, compute_stress=False)["energy"])

    h = 1e-5
    for i, k in [(0, 0), (1, 2), (3, 1)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, k] += h
        minus.positions[i, k] -= h
        fd = -(energy(plus) - energy(minus)) / (2 * h)
        assert float(out["forces"][i, k]) == pytest.approx(fd, abs=1e-6)
    assert float(out["forces"].sum(0).abs().max()) < 1e-8
    if periodic:
        volume = atoms.get_volume()
        for a, b in [(0, 0), (1, 2), (2, 2)]:
            es = []
            for sgn in (1, -1):
                strained = atoms.copy()
                eps = np.eye(3)
                eps[a, b] += sgn * h / 2
                eps[b, a] += sgn * h / 2
                strained.set_cell(atoms.cell.array @ eps, scale_atoms=True)
                es.append(energy(strained))
            fd = (es[0] - es[1]) / (2 * h) / volume
            assert float(out["stress"][0, a, b]) == pytest.approx(fd, abs=1e-7)


def test_bad_input():
    with pytest.raises(ValueError, match="unknown method"):
        Electrostatics(method="p3m")
    with pytest.raises(ValueError, match="accuracy"):
        Electrostatics(accuracy=2.0)
    with pytest.raises(ValueError, match="screening"):
        Electrostatics(screening=(5.0, 3.0))
    pos, cell, q, sig = _random_cell()
    periodic = Atoms("H4", positions=pos, cell=cell, pbc=True)
    with pytest.raises(ValueError, match="direct"):
        _term(periodic, Electrostatics(method="direct"), q, sig)
    with pytest.raises(ValueError, match="too wide"):
        _term(periodic, Electrostatics(method="ewald", real_space_cutoff=6.0), q, sig * 3)
    # partially periodic: slabs only (tests/electrostatics/test_slab.py), c along z
    slab = Atoms("H4", positions=pos, cell=cell, pbc=[True, True, False])
    with pytest.raises(ValueError, match="xy plane"):
        _term(slab, Electrostatics(), q, sig)
    wire = Atoms("H4", positions=pos, cell=cell, pbc=[True, False, True])
    with pytest.raises(ValueError, match=r"slabs with pbc=\(True, True, False\)"):
        _term(wire, Electrostatics(), q, sig)
    elec = Electrostatics()
    _, system, graph = _term(periodic, elec, q, sig)
    with pytest.raises(ValueError, match="needs charges"):
        elec(system, graph, None, None)
    with pytest.raises(ValueError, match="shape"):
        elec(system, graph, torch.zeros(3, dtype=torch.float64), None)
    with pytest.raises(ValueError, match="positive"):
        elec(system, graph, torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
