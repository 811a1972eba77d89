"""hybridpot.analysis against facts: ideal-gas g(r) = 1, fcc shells of 12, random walks of known D."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from hybridpot.analysis import (
    YEH_HUMMER_XI,
    diffusion_coefficient,
    energy_drift,
    first_shell,
    mean_squared_displacement,
    radial_distribution,
    unwrapped_positions,
    yeh_hummer_correction,
)


def test_ideal_gas_rdf_is_one():
    rng = np.random.default_rng(0)
    box = 12.0
    frames = [Atoms("Ar200", positions=rng.uniform(0, box, (200, 3)), cell=[box] * 3, pbc=True) for _ in range(40)]
    r, g = radial_distribution(frames, 18, 18, r_max=5.5, n_bins=20)
    # beyond the first bins each has thousands of pairs: Poisson noise of a few per cent
    assert np.allclose(g[5:], 1.0, atol=0.06)
    assert r[0] == pytest.approx(5.5 / 40)


def test_rdf_between_index_groups_of_the_same_element():
    rng = np.random.default_rng(1)
    box = 10.0
    frames = [Atoms("N100", positions=rng.uniform(0, box, (100, 3)), cell=[box] * 3, pbc=True) for _ in range(40)]
    _, g = radial_distribution(frames, np.arange(50), np.arange(50, 100), r_max=4.9, n_bins=10)
    assert np.allclose(g[3:], 1.0, atol=0.08)


def test_fcc_first_shell_has_twelve_neighbours():
    crystal = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(3)
    rng = np.random.default_rng(2)
    frames = []
    for _ in range(5):
        frame = crystal.copy()
        frame.positions += rng.normal(scale=0.05, size=frame.positions.shape)
        frames.append(frame)
    r, g = radial_distribution(frames, 29, 29, r_max=5.0, n_bins=200)
    shell = first_shell(r, g, number_density_b=(len(crystal) - 1) / crystal.get_volume())
    assert shell.r_peak == pytest.approx(3.6 / np.sqrt(2), abs=0.05)
    assert shell.coordination == pytest.approx(12.0, abs=0.05)
    assert 2.7 < shell.r_min < 3.5


def test_rdf_refuses_ranges_beyond_half_the_box():
    frame = Atoms("Ar2", positions=[[0, 0, 0], [1, 1, 1]], cell=[8.0] * 3, pbc=True)
    with pytest.raises(ValueError, match="half the shortest box height"):
        radial_distribution([frame], 18, 18, r_max=4.5)


def _random_walk(n_frames, n_atoms, sigma, box, seed):
    rng = np.random.default_rng(seed)
    steps = rng.normal(scale=sigma, size=(n_frames, n_atoms, 3))
    steps[0] = rng.uniform(0, box, (n_atoms, 3))
    return np.cumsum(steps, axis=0)


def test_unwrapping_recovers_a_walk_through_the_boundaries():
    box = 6.0
    path = _random_walk(300, 20, 0.3, box, seed=3)
    frames = [Atoms("He20", positions=p, cell=[box] * 3, pbc=True) for p in path]
    for f in frames:
        f.wrap()
    assert np.abs(path).max() > box  # the walk did cross the boundaries
    assert np.allclose(unwrapped_positions(frames), path - path[0] + frames[0].positions, atol=1e-10)


def test_random_walk_diffusion_coefficient():
    # Gaussian steps of sigma per component per frame: msd(k) = 3 sigma^2 k, D = sigma^2 / (2 dt)
    sigma, dt = 0.1, 0.01  # Å, ps
    path = _random_walk(2000, 100, sigma, 10.0, seed=4)
    msd = mean_squared_displacement(path, max_lag=100)
    lags = np.arange(101)
    assert np.allclose(msd[1:], 3 * sigma**2 * lags[1:], rtol=0.03)
    result = diffusion_coefficient(lags * dt, msd, fit=(0.1, 1.0))
    assert result.D_A2_per_ps == pytest.approx(sigma**2 / (2 * dt), rel=0.03)
    assert result.D_m2_per_s == pytest.approx(result.D_A2_per_ps * 1e-8)


def test_centre_of_mass_msd_of_rigid_pairs():
    path = _random_walk(500, 5, 0.2, 10.0, seed=5)
    offset = np.array([0.9, 0.0, 0.0])
    pairs = np.concatenate([path, path + offset], axis=1)  # atom i and i + 5 move together
    masses = np.array([1.0] * 5 + [16.0] * 5)
    groups = [[i, i + 5] for i in range(5)]
    com = mean_squared_displacement(pairs, groups=groups, masses=masses, max_lag=50)
    assert np.allclose(com, mean_squared_displacement(path, max_lag=50), rtol=1e-12)
    with pytest.raises(ValueError, match="masses"):
        mean_squared_displacement(pairs, groups=groups)


def test_yeh_hummer_correction_against_constants():
    from scipy.constants import Boltzmann, pi

    # water at 298 K (0.89 mPa s) in a 20 Å box
    expected = Boltzmann * 298.0 * YEH_HUMMER_XI / (6 * pi * 0.89e-3 * 20e-10)
    assert yeh_hummer_correction(298.0, 0.89e-3, 20.0) == pytest.approx(expected, rel=1e-12)
    assert 3e-10 < expected < 4e-10  # the ~0.35e-9 m^2/s of Yeh and Hummer's 20 Å boxes
    assert yeh_hummer_correction(298.0, 0.89e-3, 40.0) == pytest.approx(expected / 2)


def test_energy_drift_slope():
    t = np.linspace(0.0, 10.0, 101)
    rng = np.random.default_rng(6)
    energies = -100.0 + 0.002 * t + rng.normal(scale=1e-5, size=t.shape)  # 2 meV/ps over 4 atoms
    assert energy_drift(t, energies, n_atoms=4) == pytest.approx(0.5, rel=1e-2)
