"""Structures shared by the MD-engine tests (test_ipi, test_lammps, test_engines_exported)."""

from __future__ import annotations

from typing import Optional

import numpy as np
from ase import Atoms
from ase.io import read

from hybridpot.data import molten_nacl_model_md_path


def melt_box(charge: float = 0.0) -> Atoms:
    """The first 64-ion frame of the shipped model's molten-NaCl MD (periodic); ``info["charge"]`` a
    Python float (metatomic-ase 0.1.4 recomputes on every property request for numpy scalars)."""
    atoms = read(molten_nacl_model_md_path(), index=0)
    atoms.calc = None
    atoms.info = {"charge": float(charge)}
    return atoms


def nacl_cube_cluster(seed: int, offset: float, box: Optional[float]) -> Atoms:
    """A rattled Na4Cl4 cube (2.8 Å edges) shifted by ``offset`` Å, in a ``box`` Å cubic cell (None: no
    cell), not periodic, neutral."""
    rng = np.random.default_rng(seed)
    cube = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], float) * 2.8
    numbers = [11 if (i + j + k) % 2 == 0 else 17 for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    atoms = Atoms(numbers=numbers, positions=cube + offset + rng.normal(scale=0.08, size=(8, 3)), pbc=False)
    if box is not None:
        atoms.cell = [box, box, box]
    atoms.info = {"charge": 0.0}
    return atoms
