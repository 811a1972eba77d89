"""Readers and writers of reference data.

All readers return canonical ``ase.Atoms`` (reference energy/forces/charges/dipole in a
``SinglePointCalculator``, total charge in ``info["charge"]``); see
:mod:`hybridpot.io.extxyz`.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from ase import Atoms

from .extxyz import ReferenceKeys, canonicalize, read_extxyz, reference_values, write_extxyz
from .input_data import InputDataError, read_input_data, write_input_data

__all__ = [
    "ReferenceKeys",
    "canonicalize",
    "reference_values",
    "read_extxyz",
    "write_extxyz",
    "InputDataError",
    "read_input_data",
    "write_input_data",
    "read_structures",
    "guess_format",
]


def guess_format(path: str | Path) -> str:
    """``"input.data"`` for files named ``*input.data`` or ``*.data``, else ``"extxyz"``."""
    name = Path(path).name.lower()
    if name.endswith("input.data") or name.endswith(".data"):
        return "input.data"
    return "extxyz"


def read_structures(
    path: str | Path,
    format: Optional[str] = None,
    keys: ReferenceKeys | dict | None = None,
    units: str = "angstrom_ev",
) -> List[Atoms]:
    """Read reference structures from ``path`` (format guessed from the name by default).

    Parameters
    ----------
    format : {"extxyz", "input.data"}, optional
    keys : ReferenceKeys or dict, optional
        Key names for extended XYZ files.
    units : str
        Units of an ``input.data`` file (``"angstrom_ev"`` or ``"bohr_hartree"``).
    """
    fmt = (format or guess_format(path)).lower()
    if fmt in ("extxyz", "xyz"):
        if units.lower() not in ("angstrom_ev", "angstrom-ev"):
            raise ValueError("extended XYZ files are read in Å and eV; unit conversion applies to input.data only")
        return read_extxyz(path, keys=keys)
    if fmt in ("input.data", "n2p2", "runner"):
        return read_input_data(path, units=units)
    raise ValueError(f"unknown data format {format!r} (extxyz, input.data)")
