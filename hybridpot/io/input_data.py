"""n2p2 / RuNNer ``input.data`` reading and writing.

Format (one block per structure; keywords first on a line, ``#`` starts a comment)::

    begin
    comment <free text>                         (any number, optional)
    lattice <ax> <ay> <az>                      (0 or 3 lines; 3 = periodic in all directions)
    atom <x> <y> <z> <element> <charge> <n> <fx> <fy> <fz>    (one per atom)
    energy <E>
    charge <Q>
    end

``charge`` on an atom line is its reference charge, ``n`` an unused per-atom value
(n2p2 ignores it; kept in ``atoms.arrays["n2p2_n"]`` so that writing round-trips),
``charge`` after the atoms the total charge. Files in atomic units (Bohr, Hartree, as in
the n2p2 examples) are converted to Å and eV with ``units="bohr_hartree"``.

Structures are returned as canonical ``ase.Atoms`` (see :mod:`hybridpot.io.extxyz`).
Malformed files raise :class:`InputDataError` (a ``ValueError``) naming the file, the line
number and the problem.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers, chemical_symbols
from ase.units import Bohr, Hartree

from .extxyz import reference_values

__all__ = ["InputDataError", "read_input_data", "write_input_data", "unit_factors", "UNIT_SYSTEMS"]

#: Unit systems: (length unit in Å, energy unit in eV).
UNIT_SYSTEMS = {"angstrom_ev": (1.0, 1.0), "bohr_hartree": (Bohr, Hartree)}


class InputDataError(ValueError):
    """A malformed ``input.data`` file; the message names file, line and problem."""

    def __init__(self, path, line: int, problem: str):
        self.path, self.line, self.problem = str(path), line, problem
        super().__init__(f"{path}, line {line}: {problem}")


def unit_factors(units: str) -> Tuple[float, float]:
    """(length factor to Å, energy factor to eV) of a unit-system name."""
    key = units.lower().replace("-", "_").replace("/", "_")
    if key not in UNIT_SYSTEMS:
        raise ValueError(f"unknown unit system {units!r}; choose one of {sorted(UNIT_SYSTEMS)}")
    return UNIT_SYSTEMS[key]


def _floats(words: Sequence[str], path, lineno: int, what: str) -> List[float]:
    out = []
    for w in words:
        try:
            v = float(w)
        except ValueError:
            raise InputDataError(path, lineno, f"{what}: {w!r} is not a number") from None
        if not np.isfinite(v):
            raise InputDataError(path, lineno, f"{what}: non-finite value {w!r}")
        out.append(v)
    return out


def _text_lines(fh, path):
    """The file's lines; a binary (not UTF-8) file is an :class:`InputDataError` naming the line."""
    lineno = 0
    while True:
        try:
            raw = fh.readline()
        except UnicodeDecodeError as err:
            raise InputDataError(path, lineno + 1, f"not a text file (byte 0x{err.object[err.start]:02x} is not UTF-8 "
                                 "text); input.data files are plain text") from None
        if not raw:
            return
        lineno += 1
        yield raw


def read_input_data(path: str | Path, units: str = "angstrom_ev") -> List[Atoms]:
    """Read all structures of an n2p2/RuNNer ``input.data`` file.

    Parameters
    ----------
    path : str or Path
    units : str
        Units of the file: ``"angstrom_ev"`` (no conversion) or ``"bohr_hartree"``
        (lengths times ``ase.units.Bohr``, energies times ``ase.units.Hartree``, forces
        times ``Hartree / Bohr``; charges are in e either way).

    Returns
    -------
    list of ase.Atoms
        Canonical atoms: energy, forces, charges in a ``SinglePointCalculator``, total
        charge in ``info["charge"]``, comments in ``info["comment"]`` (lines joined by newline).
    """
    length, energy_unit = unit_factors(units)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    structures: List[Atoms] = []
    current = None
    begin_line = 0
    lineno = 0
    with open(path, "r", encoding="utf-8") as fh:
        lines = _text_lines(fh, path)
        for lineno, raw in enumerate(lines, start=1):
            words = raw.split("#")[0].split()
            if not words:
                continue
            key = words[0].lower()
            if key == "begin":
                if current is not None:
                    raise InputDataError(path, lineno, f"'begin' inside the structure begun on line {begin_line} (missing 'end')")
                current = {"comment": [], "lattice": [], "atoms": [], "energy": None, "charge": None}
                begin_line = lineno
                continue
            if current is None:
                raise InputDataError(path, lineno, f"{words[0]!r} outside a begin ... end block")
            if key == "comment":
                current["comment"].append(raw.split(None, 1)[1].rstrip("\n") if len(raw.split(None, 1)) > 1 else "")
            elif key == "lattice":
                if len(words) != 4:
                    raise InputDataError(path, lineno, f"'lattice' needs 3 numbers, got {len(words) - 1}")
                if len(current["lattice"]) == 3:
                    raise InputDataError(path, lineno, "more than 3 'lattice' lines")
                current["lattice"].append(_floats(words[1:], path, lineno, "lattice"))
            elif key == "atom":
                if len(words) != 10:
                    raise InputDataError(
                        path, lineno, f"'atom' needs 9 fields (x y z element charge n fx fy fz), got {len(words) - 1}"
                    )
                element = words[4]
                if element not in atomic_numbers or element == "X":
                    raise InputDataError(path, lineno, f"unknown element {element!r}")
                values = _floats(words[1:4] + words[5:10], path, lineno, "atom")
                current["atoms"].append((atomic_numbers[element], values))
            elif key in ("energy", "charge"):
                if len(words) != 2:
                    raise InputDataError(path, lineno, f"{key!r} needs one number, got {len(words) - 1}")
                if current[key] is not None:
                    raise InputDataError(path, lineno, f"second {key!r} line in the structure begun on line {begin_line}")
                current[key] = _floats(words[1:], path, lineno, key)[0]
            elif key == "end":
                if not current["atoms"]:
                    raise InputDataError(path, lineno, f"structure begun on line {begin_line} has no atoms")
                if len(current["lattice"]) not in (0, 3):
                    raise InputDataError(path, lineno, f"structure begun on line {begin_line} has "
                                         f"{len(current['lattice'])} lattice lines (need 0 or 3)")
                structures.append(_make_atoms(current, length, energy_unit, path, lineno))
                current = None
            else:
                raise InputDataError(path, lineno, f"unknown keyword {words[0]!r}")
    if current is not None:
        raise InputDataError(path, lineno, f"file ends inside the structure begun on line {begin_line} (missing 'end')")
    if not structures:
        raise InputDataError(path, lineno, "no structures (no begin ... end block)")
    return structures


def _make_atoms(block: dict, length: float, energy_unit: float, path, lineno: int) -> Atoms:
    numbers = np.array([z for z, _ in block["atoms"]], dtype=np.int64)
    values = np.array([v for _, v in block["atoms"]], dtype=np.float64)  # x y z q n fx fy fz
    positions = values[:, 0:3] * length
    atoms = Atoms(numbers=numbers, positions=positions)
    if block["lattice"]:
        cell = np.array(block["lattice"]) * length
        if abs(np.linalg.det(cell)) < 1e-10:
            raise InputDataError(path, lineno, "lattice vectors are linearly dependent (zero volume)")
        atoms.set_cell(cell)
        atoms.set_pbc(True)
    if block["comment"]:
        atoms.info["comment"] = "\n".join(block["comment"])
    atoms.new_array("n2p2_n", values[:, 4].copy())
    results = {"charges": values[:, 3].copy(), "forces": values[:, 5:8] * (energy_unit / length)}
    if block["energy"] is not None:
        results["energy"] = block["energy"] * energy_unit
    atoms.info["charge"] = 0.0 if block["charge"] is None else block["charge"]
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def write_input_data(path: str | Path, images: Atoms | Sequence[Atoms], units: str = "angstrom_ev") -> None:
    """Write canonical ``ase.Atoms`` as ``input.data`` (values with 17 significant digits).

    Missing forces and charges are written as zero, a missing energy as 0 (n2p2 needs the
    line). Structures must be periodic in all or no directions. ``units`` as in
    :func:`read_input_data` (the file is written in those units), so reading the file
    back with the same ``units`` round-trips (to float64 rounding of the unit conversion).
    """
    length, energy_unit = unit_factors(units)
    if isinstance(images, Atoms):
        images = [images]
    fmt = lambda x: f"{float(x): .16e}"
    lines: List[str] = []
    for k, atoms in enumerate(images):
        pbc = atoms.get_pbc()
        if pbc.any() and not pbc.all():
            raise ValueError(f"structure {k}: input.data supports only full or no periodicity, got pbc={pbc.tolist()}")
        ref = reference_values(atoms)
        n = len(atoms)
        forces = ref.get("forces", np.zeros((n, 3))) / (energy_unit / length)
        charges = ref.get("charges", np.zeros(n))
        extra = atoms.arrays["n2p2_n"] if "n2p2_n" in atoms.arrays else np.zeros(n)
        lines.append("begin")
        comment = atoms.info.get("comment")
        if comment is not None:
            lines.extend(f"comment {c}" for c in str(comment).split("\n"))
        if pbc.all():
            for v in atoms.get_cell().array / length:
                lines.append("lattice " + " ".join(fmt(x) for x in v))
        positions = atoms.get_positions() / length
        symbols = [chemical_symbols[z] for z in atoms.get_atomic_numbers()]
        for a in range(n):
            lines.append(
                "atom " + " ".join(fmt(x) for x in positions[a]) + f" {symbols[a]:2s} "
                + " ".join(fmt(x) for x in (charges[a], extra[a], *forces[a]))
            )
        lines.append("energy " + fmt(ref.get("energy", 0.0) / energy_unit))
        lines.append("charge " + fmt(ref.get("total_charge", 0.0)))
        lines.append("end")
    Path(path).write_text("\n".join(lines) + "\n")
