"""Central finite differences of a model's energy: forces and stress to check autograd against."""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

import hybridpot as hp


def model_energy(model, atoms) -> float:
    """Total energy (eV) of one ``ase.Atoms`` structure, no derivatives."""
    return float(model(hp.AtomicSystem.from_ase(atoms), compute_forces=False, compute_stress=False)["energy"][0])


def strained(atoms, eps: np.ndarray):
    """A copy of ``atoms`` deformed by ``1 + eps`` (cell and positions, ``eps`` [3, 3])."""
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return out


def fd_forces(model, atoms, h: float = 1e-5, indices: Optional[Iterable[int]] = None) -> np.ndarray:
    """``-dE/dr`` (eV/Å) ``[N, 3]`` by central differences; rows outside ``indices`` stay zero."""
    forces = np.zeros((len(atoms), 3))
    for a in range(len(atoms)) if indices is None else indices:
        for k in range(3):
            p, m = atoms.copy(), atoms.copy()
            p.positions[a, k] += h
            m.positions[a, k] -= h
            forces[a, k] = -(model_energy(model, p) - model_energy(model, m)) / (2 * h)
    return forces


def fd_stress(model, atoms, h: float = 1e-5) -> np.ndarray:
    """``(1/V) dE/d(strain)`` (eV/Å^3, ASE sign convention) ``[3, 3]`` by central differences of symmetric strains."""
    volume = atoms.get_volume()
    stress = np.zeros((3, 3))
    for x in range(3):
        for y in range(3):
            eps = np.zeros((3, 3))
            eps[x, y] = eps[y, x] = 0.5 * h if x != y else h
            stress[x, y] = (model_energy(model, strained(atoms, eps)) - model_energy(model, strained(atoms, -eps))) / (
                2 * h * volume)
    return stress
