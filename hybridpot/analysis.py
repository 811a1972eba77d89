"""Trajectory analysis for liquids: radial distribution functions, shells, diffusion, energy drift.

Small numpy functions for what users compute from molecular dynamics with a potential: g(r) between
groups of atoms, the first coordination shell, centre-of-mass mean squared displacements and
Einstein diffusion coefficients (with the Yeh–Hummer finite-size correction), and the drift of the
total energy in NVE. Units: Å, ps, eV; frames are :class:`ase.Atoms`.

References
----------
.. [YH] I.-C. Yeh and G. Hummer, J. Phys. Chem. B 108, 15873 (2004): D(L) = D(inf) - k_B T xi / (6 pi eta L),
   xi = 2.837297 for a cubic box.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from ase import Atoms
from ase.geometry import get_distances

__all__ = [
    "radial_distribution",
    "FirstShell",
    "first_shell",
    "unwrapped_positions",
    "mean_squared_displacement",
    "Diffusion",
    "diffusion_coefficient",
    "yeh_hummer_correction",
    "energy_drift",
    "YEH_HUMMER_XI",
]

#: Yeh–Hummer constant of a cubic periodic lattice (dimensionless)
YEH_HUMMER_XI = 2.837297
_BOLTZMANN_J_PER_K = 1.380649e-23

Selection = Union[int, Sequence[int], np.ndarray]


def _indices(atoms: Atoms, selection: Selection) -> np.ndarray:
    """Atom indices of ``selection``: an atomic number (int) or an index array."""
    if isinstance(selection, (int, np.integer)):
        found = np.nonzero(atoms.numbers == int(selection))[0]
        if len(found) == 0:
            raise ValueError(f"no atom with atomic number {int(selection)} in the frame")
        return found
    found = np.asarray(selection, dtype=np.int64).ravel()
    if len(found) == 0:
        raise ValueError("empty atom selection: give an atomic number or a non-empty index array")
    if found.min() < 0 or found.max() >= len(atoms):
        raise ValueError(f"atom indices out of range for a frame of {len(atoms)} atoms")
    return found


def radial_distribution(
    frames: Sequence[Atoms], a: Selection, b: Selection, r_max: float, n_bins: int = 100
) -> Tuple[np.ndarray, np.ndarray]:
    """Radial distribution function g_ab(r), averaged over frames (minimum image).

    Parameters
    ----------
    frames : sequence of ase.Atoms
        Periodic frames (fully periodic); the volume is taken per frame, so NPT frames work.
    a, b : int or array of int
        The two groups: an atomic number, or atom indices (e.g. only the cations' nitrogen).
        Pairs of an atom with itself are left out where the groups overlap.
    r_max : float
        Largest distance, Å. Beyond half the shortest box height the minimum image misses pairs; this is
        refused.
    n_bins : int
        Number of bins of width ``r_max / n_bins``.

    Returns
    -------
    r : numpy.ndarray
        Bin centres, shape ``[n_bins]``, Å.
    g : numpy.ndarray
        g(r), shape ``[n_bins]``, normalised by the ideal-gas pair count of b around a
        (``g -> 1`` for uncorrelated positions).
    """
    if len(frames) == 0:
        raise ValueError("radial_distribution needs at least one frame")
    edges = np.linspace(0.0, float(r_max), int(n_bins) + 1)
    shell_volumes = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    g = np.zeros(int(n_bins))
    for atoms in frames:
        if not np.all(atoms.pbc):
            raise ValueError("radial_distribution needs fully periodic frames (pbc=True)")
        cell = atoms.cell
        heights = atoms.get_volume() / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
        if r_max > 0.5 * heights.min() + 1e-12:
            raise ValueError(
                f"r_max = {r_max} Å exceeds half the shortest box height ({0.5 * heights.min():.3f} Å): "
                "lower r_max or use a larger box"
            )
        ia, ib = _indices(atoms, a), _indices(atoms, b)
        _, d = get_distances(atoms.positions[ia], atoms.positions[ib], cell=cell, pbc=True)
        same = ia[:, None] == ib[None, :]
        distances = d[~same]
        n_pairs = same.size - same.sum()
        counts = np.histogram(distances, bins=edges)[0]
        g += counts / (n_pairs / atoms.get_volume() * shell_volumes)
    return 0.5 * (edges[1:] + edges[:-1]), g / len(frames)


@dataclass(frozen=True)
class FirstShell:
    """The first coordination shell of a g(r).

    Attributes
    ----------
    r_peak : float
        Position of the first maximum, Å.
    g_peak : float
        g at the first maximum.
    r_min : float
        Position of the first minimum after the peak, Å (the shell's outer radius).
    coordination : float
        Mean number of b atoms within ``r_min`` of an a atom, ``4 pi rho_b int_0^r_min g r^2 dr``.
    """

    r_peak: float
    g_peak: float
    r_min: float
    coordination: float


def first_shell(r: np.ndarray, g: np.ndarray, number_density_b: float) -> FirstShell:
    """First peak, first minimum and coordination number of ``g(r)``.

    Parameters
    ----------
    r, g : numpy.ndarray
        Bin centres (Å, uniform spacing) and g(r), as returned by :func:`radial_distribution`.
    number_density_b : float
        Number density of the b atoms, Å^-3 (``n_b / volume``; for like pairs ``(n - 1) / volume``
        matches the normalisation of :func:`radial_distribution`).

    Returns
    -------
    FirstShell
        The peak is the largest g before the first minimum; the minimum is the lowest g between the
        peak and the next point where g rises above 1 again after falling below it (or the end).
    """
    r, g = np.asarray(r, dtype=float), np.asarray(g, dtype=float)
    if r.shape != g.shape or r.ndim != 1 or len(r) < 3:
        raise ValueError("r and g must be 1-d arrays of the same length (at least 3 bins)")
    nonzero = np.nonzero(g > 0)[0]
    if len(nonzero) == 0:
        raise ValueError("g(r) is zero everywhere: no pairs within r_max")
    # the first peak: the first local maximum above 1 (the contact peak of a liquid)
    start = nonzero[0]
    above = np.nonzero(g[start:] > 1.0)[0]
    if len(above) == 0:
        raise ValueError("g(r) never exceeds 1: no coordination shell to find")
    i = start + above[0]
    while i + 1 < len(g) and g[i + 1] >= g[i]:
        i += 1
    peak = i
    # the first minimum: lowest point before g climbs back above 1 (or the end of the range)
    j = peak
    while j + 1 < len(g) and not (g[j] < 1.0 and g[j + 1] > 1.0):
        j += 1
    minimum = peak + int(np.argmin(g[peak : j + 1]))
    dr = r[1] - r[0]
    coordination = 4.0 * np.pi * number_density_b * float(np.sum(g[: minimum + 1] * r[: minimum + 1] ** 2) * dr)
    return FirstShell(float(r[peak]), float(g[peak]), float(r[minimum]), coordination)


def unwrapped_positions(frames: Sequence[Atoms]) -> np.ndarray:
    """Positions made continuous across periodic boundaries, frame to frame.

    Each step's displacement is taken by the minimum image, so frames must be close enough in time that no
    atom moves half a box between consecutive frames.

    Parameters
    ----------
    frames : sequence of ase.Atoms
        Consecutive frames of one trajectory (same atoms, same order).

    Returns
    -------
    numpy.ndarray
        Shape ``[n_frames, n_atoms, 3]``, Å.
    """
    if len(frames) == 0:
        raise ValueError("unwrapped_positions needs at least one frame")
    out = np.empty((len(frames), len(frames[0]), 3))
    out[0] = frames[0].positions
    for k in range(1, len(frames)):
        previous, atoms = frames[k - 1], frames[k]
        if len(atoms) != len(previous):
            raise ValueError(f"frame {k} has {len(atoms)} atoms, frame {k - 1} has {len(previous)}")
        step = atoms.positions - previous.positions
        if np.any(atoms.pbc):
            cell = atoms.cell.array
            fractional = np.linalg.solve(cell.T, step.T).T
            fractional[:, atoms.pbc] -= np.round(fractional[:, atoms.pbc])
            step = fractional @ cell
        out[k] = out[k - 1] + step
    return out


def mean_squared_displacement(
    positions: np.ndarray,
    groups: Optional[Sequence[Sequence[int]]] = None,
    masses: Optional[np.ndarray] = None,
    max_lag: Optional[int] = None,
) -> np.ndarray:
    """Mean squared displacement, averaged over time origins and particles.

    Parameters
    ----------
    positions : numpy.ndarray
        Unwrapped positions, shape ``[n_frames, n_atoms, 3]``, Å (:func:`unwrapped_positions`).
    groups : list of index arrays, optional
        Molecules or ions: the MSD is that of their centres of mass (then ``masses`` is required).
        Without groups, every atom is a particle.
    masses : numpy.ndarray, optional
        Atomic masses, shape ``[n_atoms]`` (any unit).
    max_lag : int, optional
        Largest lag in frames (default ``n_frames // 2``, so that every lag has many origins).

    Returns
    -------
    numpy.ndarray
        ``msd[k]`` for lags ``k = 0 .. max_lag``, Å^2.
    """
    positions = np.asarray(positions, dtype=float)
    if positions.ndim != 3 or positions.shape[2] != 3:
        raise ValueError(f"positions must have shape [n_frames, n_atoms, 3], got {positions.shape}")
    if groups is not None:
        if masses is None:
            raise ValueError("centre-of-mass MSD needs masses (e.g. atoms.get_masses())")
        masses = np.asarray(masses, dtype=float)
        centres = []
        for group in groups:
            index = np.asarray(group, dtype=np.int64)
            w = masses[index] / masses[index].sum()
            centres.append(np.einsum("tai,a->ti", positions[:, index], w))
        positions = np.stack(centres, axis=1)
    n_frames = positions.shape[0]
    max_lag = n_frames // 2 if max_lag is None else int(max_lag)
    if not 0 <= max_lag < n_frames:
        raise ValueError(f"max_lag must lie in [0, {n_frames - 1}], got {max_lag}")
    msd = np.zeros(max_lag + 1)
    for lag in range(1, max_lag + 1):
        displacement = positions[lag:] - positions[:-lag]
        msd[lag] = np.mean(np.sum(displacement**2, axis=-1))
    return msd


@dataclass(frozen=True)
class Diffusion:
    """An Einstein self-diffusion coefficient.

    Attributes
    ----------
    D_A2_per_ps : float
        D in Å^2/ps.
    D_m2_per_s : float
        D in m^2/s (1 Å^2/ps = 1e-8 m^2/s).
    D_stderr_m2_per_s : float
        Standard error of the fitted slope / 6, m^2/s (from the fit residuals; MSD points are correlated,
        so this underestimates the statistical error of a short run).
    """

    D_A2_per_ps: float
    D_m2_per_s: float
    D_stderr_m2_per_s: float


def diffusion_coefficient(times_ps: np.ndarray, msd: np.ndarray, fit: Tuple[float, float]) -> Diffusion:
    """D from the Einstein relation ``msd = 6 D t + c``, a least-squares line on ``fit[0] <= t <= fit[1]``.

    Parameters
    ----------
    times_ps : numpy.ndarray
        Lag times, ps, shape ``[n_lags]``.
    msd : numpy.ndarray
        Mean squared displacements at those lags, Å^2.
    fit : (float, float)
        Time window of the fit, ps (leave out the ballistic start).
    """
    t, y = np.asarray(times_ps, dtype=float), np.asarray(msd, dtype=float)
    window = (t >= fit[0]) & (t <= fit[1])
    if window.sum() < 3:
        raise ValueError(f"the fit window {fit} ps holds {int(window.sum())} points; need at least 3")
    t, y = t[window], y[window]
    design = np.stack([t, np.ones_like(t)], axis=1)
    (slope, _), residuals, _, _ = np.linalg.lstsq(design, y, rcond=None)
    dof = len(t) - 2
    sigma2 = float(residuals[0]) / dof if dof > 0 and len(residuals) else 0.0
    slope_err = np.sqrt(sigma2 / np.sum((t - t.mean()) ** 2))
    d = slope / 6.0
    return Diffusion(float(d), float(d * 1e-8), float(slope_err / 6.0 * 1e-8))


def yeh_hummer_correction(temperature_K: float, viscosity_Pa_s: float, box_length_A: float) -> float:
    """Finite-size correction of a diffusion coefficient from a cubic periodic box [YH]_.

    Returns ``k_B T xi / (6 pi eta L)`` in m^2/s, to be **added** to the D measured in the box of edge
    ``box_length_A`` (Å) to estimate the infinite-system value; ``viscosity_Pa_s`` is the shear viscosity
    (Pa s) of the liquid (the model's, ideally; the experimental one gives an estimate).
    """
    if viscosity_Pa_s <= 0 or box_length_A <= 0 or temperature_K <= 0:
        raise ValueError("temperature, viscosity and box length must be positive")
    return _BOLTZMANN_J_PER_K * temperature_K * YEH_HUMMER_XI / (6.0 * np.pi * viscosity_Pa_s * box_length_A * 1e-10)


def energy_drift(times_ps: np.ndarray, total_energies_eV: np.ndarray, n_atoms: int) -> float:
    """Drift of the total energy in NVE: least-squares slope, meV/atom/ps.

    Parameters
    ----------
    times_ps : numpy.ndarray
        Times, ps.
    total_energies_eV : numpy.ndarray
        Total (kinetic + potential) energies at those times, eV.
    n_atoms : int
        Number of atoms.
    """
    t, e = np.asarray(times_ps, dtype=float), np.asarray(total_energies_eV, dtype=float)
    if len(t) < 2 or t.shape != e.shape:
        raise ValueError("energy_drift needs at least two (time, energy) points of equal shapes")
    slope = np.polyfit(t, e, 1)[0]
    return float(slope / n_atoms * 1000.0)
