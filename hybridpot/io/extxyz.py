"""Extended XYZ reading and writing (through ``ase.io``) with configurable reference keys.

Every reader of :mod:`hybridpot.io` returns ``ase.Atoms`` in one canonical form, which the
training code understands:

* reference energy (eV), forces (eV/Å), per-atom charges (e) and dipole (e·Å) in a
  ``SinglePointCalculator`` (``atoms.get_potential_energy()``, ``get_forces()``,
  ``get_charges()``, ``get_dipole_moment()``); absent quantities are simply not there;
* the total charge (e) in ``atoms.info["charge"]`` (what :meth:`AtomicSystem.from_ase` reads).

Files may name these quantities differently (``REF_energy``, ``DFT_forces`` ...): the key
names are arguments. A key is looked up in the calculator results first, then in
``atoms.info`` (per-structure) or ``atoms.arrays`` (per-atom).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress

__all__ = ["ReferenceKeys", "read_extxyz", "write_extxyz", "canonicalize", "reference_values"]


@dataclass(frozen=True)
class ReferenceKeys:
    """Names of the reference quantities in a file.

    Attributes
    ----------
    energy : str
        Per-structure total energy (eV).
    forces : str
        Per-atom forces (eV/Å), 3 columns.
    charges : str
        Per-atom reference charges (e).
    total_charge : str
        Per-structure total charge (e).
    dipole : str
        Per-structure dipole moment (e·Å), 3 values.
    stress : str
        Per-structure stress (eV/Å^3, ASE's sign convention), 6 Voigt values (xx yy zz yz xz xy)
        or 9 (a 3x3 matrix).
    """

    energy: str = "energy"
    forces: str = "forces"
    charges: str = "charges"
    total_charge: str = "charge"
    dipole: str = "dipole"
    stress: str = "stress"

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> "ReferenceKeys":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown reference key name(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)


# ase's extxyz reader renames some columns (e.g. a per-atom column "charge" becomes "charges")
_ASE_ALIASES = {"charge": "charges", "charges": "charges", "forces": "forces", "force": "forces"}


def _pop(atoms: Atoms, key: str, per_atom: bool):
    """Take a quantity out of calc results / info / arrays (``None`` if absent)."""
    results = atoms.calc.results if atoms.calc is not None else {}
    candidates = [key]
    if per_atom and key in _ASE_ALIASES:
        candidates.append(_ASE_ALIASES[key])
    for k in candidates:
        if k in results:
            value = np.asarray(results[k], dtype=np.float64)
            if per_atom == (value.ndim >= 1 and value.shape[0] == len(atoms) and k != "dipole"):
                return value
    if per_atom:
        if key in atoms.arrays and key not in ("positions", "numbers"):
            return np.asarray(atoms.arrays.pop(key), dtype=np.float64)
    elif key in atoms.info:
        return np.asarray(atoms.info.pop(key), dtype=np.float64)
    return None


def canonicalize(atoms: Atoms, keys: ReferenceKeys = ReferenceKeys(), source: str = "structure") -> Atoms:
    """Return a copy of ``atoms`` in the canonical form described in the module docstring.

    Raises ``ValueError`` (naming ``source``) for arrays of the wrong shape.
    """
    energy = _pop(atoms, keys.energy, per_atom=False)
    forces = _pop(atoms, keys.forces, per_atom=True)
    charges = _pop(atoms, keys.charges, per_atom=True)
    dipole = _pop(atoms, keys.dipole, per_atom=False)
    stress = _pop(atoms, keys.stress, per_atom=False)
    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    total = atoms.info.get(keys.total_charge, None)
    if total is None and "charge" in results and np.ndim(results["charge"]) == 0:
        total = results["charge"]
    out = Atoms(
        numbers=atoms.get_atomic_numbers(),
        positions=atoms.get_positions(),
        cell=atoms.get_cell(),
        pbc=atoms.get_pbc(),
    )
    if atoms.has("initial_charges"):
        out.set_initial_charges(atoms.get_initial_charges())
    out.info.update({k: v for k, v in atoms.info.items() if k != keys.total_charge})
    for k, v in atoms.arrays.items():
        if k not in out.arrays and k not in (keys.forces, keys.charges):
            out.new_array(k, np.copy(v))
    n = len(atoms)
    calc_results = {}
    if energy is not None:
        if energy.size != 1:
            raise ValueError(f"{source}: energy {keys.energy!r} must be one number, got shape {energy.shape}")
        calc_results["energy"] = float(energy.reshape(()))
    if forces is not None:
        if forces.shape != (n, 3):
            raise ValueError(f"{source}: forces {keys.forces!r} must have shape ({n}, 3), got {forces.shape}")
        calc_results["forces"] = forces
    if charges is not None:
        charges = charges.reshape(-1)
        if charges.shape != (n,):
            raise ValueError(f"{source}: charges {keys.charges!r} must have {n} entries, got {charges.shape}")
        calc_results["charges"] = charges
    if dipole is not None:
        dipole = dipole.reshape(-1)
        if dipole.shape != (3,):
            raise ValueError(f"{source}: dipole {keys.dipole!r} must have 3 components, got {dipole.shape}")
        calc_results["dipole"] = dipole
    if stress is not None:
        if stress.size == 9:
            stress = full_3x3_to_voigt_6_stress(stress.reshape(3, 3))
        if stress.size != 6:
            raise ValueError(f"{source}: stress {keys.stress!r} must have 6 (Voigt) or 9 components, got {stress.shape}")
        if not bool(np.all(atoms.get_pbc())):
            raise ValueError(f"{source}: a reference stress needs a periodic structure (pbc all True)")
        calc_results["stress"] = stress.reshape(6)
    if total is not None:
        out.info["charge"] = float(np.asarray(total, dtype=np.float64).reshape(()))
    if calc_results:
        out.calc = SinglePointCalculator(out, **calc_results)
    return out


def reference_values(atoms: Atoms) -> dict:
    """The reference quantities of a canonical ``atoms`` (missing ones are absent from the dict).

    Keys: ``energy`` (float, eV), ``forces`` ([n, 3], eV/Å), ``charges`` ([n], e),
    ``dipole`` ([3], e·Å), ``stress`` ([3, 3], eV/Å^3), ``total_charge`` (float, e).
    """
    out = {}
    results = atoms.calc.results if atoms.calc is not None else {}
    for k in ("energy", "forces", "charges", "dipole", "stress"):
        if k in results and results[k] is not None:
            out[k] = np.asarray(results[k], dtype=np.float64)
    if "stress" in out and out["stress"].size == 6:
        out["stress"] = voigt_6_to_full_3x3_stress(out["stress"])
    if "energy" in out:
        out["energy"] = float(out["energy"])
    if "charge" in atoms.info:
        out["total_charge"] = float(atoms.info["charge"])
    return out


def read_extxyz(
    path: str | Path,
    index: str | int | slice = ":",
    keys: ReferenceKeys | dict | None = None,
) -> List[Atoms]:
    """Read an extended XYZ file into canonical ``ase.Atoms``.

    Parameters
    ----------
    path : str or Path
    index : str, int or slice
        Which frames (``ase.io.read`` syntax), default all.
    keys : ReferenceKeys or dict, optional
        Names of the reference quantities in the file (defaults: ``energy``, ``forces``,
        ``charges``, ``charge``, ``dipole``).

    Returns
    -------
    list of ase.Atoms
    """
    keys = keys if isinstance(keys, ReferenceKeys) else ReferenceKeys.from_dict(keys)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        frames = ase.io.read(str(path), index=index, format="extxyz")
    except Exception as err:  # ase raises many types for malformed files
        raise ValueError(f"{path}: cannot read extended XYZ: {err}") from err
    if isinstance(frames, Atoms):
        frames = [frames]
    return [canonicalize(a, keys, source=f"{path}, frame {k}") for k, a in enumerate(frames)]


def write_extxyz(path: str | Path, images: Atoms | Sequence[Atoms], keys: ReferenceKeys | dict | None = None) -> None:
    """Write canonical ``ase.Atoms`` to an extended XYZ file.

    Reference quantities are written under ``keys`` names (default ase's names, which
    :func:`read_extxyz` reads back). Values are written with ase's ``%16.8f`` format.
    """
    keys = keys if isinstance(keys, ReferenceKeys) else ReferenceKeys.from_dict(keys)
    if isinstance(images, Atoms):
        images = [images]
    out = []
    for atoms in images:
        ref = reference_values(atoms)
        a = Atoms(numbers=atoms.get_atomic_numbers(), positions=atoms.get_positions(), cell=atoms.get_cell(),
                  pbc=atoms.get_pbc())
        if atoms.has("initial_charges"):
            a.set_initial_charges(atoms.get_initial_charges())
        a.info.update({k: v for k, v in atoms.info.items() if k != "charge"})
        for k, v in atoms.arrays.items():
            if k not in a.arrays:
                a.new_array(k, np.copy(v))
        if "total_charge" in ref:
            a.info[keys.total_charge] = ref["total_charge"]
        if "energy" in ref:
            a.info[keys.energy] = ref["energy"]
        if "dipole" in ref:
            a.info[keys.dipole] = ref["dipole"]
        if "stress" in ref:
            a.info[keys.stress] = ref["stress"]  # 3x3, eV/Å^3
        if "forces" in ref:
            a.new_array(keys.forces, ref["forces"])
        if "charges" in ref:
            name = keys.charges if keys.charges != "charge" or keys.total_charge != "charge" else "charges"
            a.new_array(name, ref["charges"])
        out.append(a)
    ase.io.write(str(path), out, format="extxyz", write_results=False)
