"""Symmetry-function families: one small class per n2p2 family, and the function record.

Each family (modelled on n2p2's ``SymFnc*`` classes) owns, for its n2p2 type numbers:

* ``parse(center, type, words, length_unit)``: the fields of a ``symfunction_short`` line;
* ``write(f, length_unit)``: the line back (round trip exact);
* ``sort_key(f)``: n2p2's ``SymFnc*::operator<`` order of an element's functions;
* ``validate(f)``: what n2p2 accepts (and the physically required checks);
* ``kernel_code`` and ``kernel_row(f)``: the parameter row of the compiled kernels
  (:mod:`hybridpot.descriptors.kernels`);
* ``reference``: which block of the torch reference (:mod:`hybridpot.descriptors.reference`)
  evaluates it.

:data:`FAMILIES` maps each type number to its family; :class:`SymmetryFunction` dispatches
through it, so a new family is one class and one registry entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Dict, List, Tuple

from ase.data import atomic_numbers, chemical_symbols

__all__ = ["SymmetryFunction", "FAMILIES", "family_of", "element_number", "parse_subtype", "SUPPORTED_TYPES"]

#: compact core kinds: 1-4 polynomials p1-p4, 0 exponential ``e``
_COMPACT_KINDS = {"p1": 1, "p2": 2, "p3": 3, "p4": 4}

# kernel family codes (the compiled kernels switch on them)
K_RADIAL, K_RADIAL_COMPACT, K_RADIAL_WEIGHTED = 0, 1, 2
K_NARROW, K_WIDE, K_COMPACT_NARROW, K_COMPACT_WIDE, K_WEIGHTED_NARROW, K_WEIGHTED_WIDE = 3, 4, 5, 6, 7, 8
#: float parameter columns of a kernel row
F_ETA, F_RS, F_RC, F_LAM, F_ZETA, F_RL, F_AL, F_AR, F_NORM, F_DNORM = range(10)
N_FLOAT_PARAMS = 10


def element_number(element: int | str) -> int:
    """Atomic number of an element given as symbol or number."""
    if isinstance(element, str):
        if element not in atomic_numbers:
            raise ValueError(f"unknown element symbol {element!r}")
        return atomic_numbers[element]
    z = int(element)
    if not 0 < z < len(chemical_symbols):
        raise ValueError(f"invalid atomic number {element}")
    return z


def parse_subtype(subtype: str) -> Tuple[int, bool]:
    """(core kind, asymmetric) of an n2p2 compact subtype string (p1-p4, p1a-p4a, e...)."""
    if not 1 <= len(subtype) <= 3:
        raise ValueError(f"invalid compact function subtype {subtype!r}")
    if subtype[0] == "e":
        return 0, False
    if subtype[0] == "p":
        if subtype[:2] not in _COMPACT_KINDS:
            raise ValueError(f"invalid polynomial subtype {subtype!r} (p1, p2, p3, p4, optionally + 'a')")
        if len(subtype) == 3 and subtype[2] != "a":
            raise ValueError(f"invalid polynomial specifier in subtype {subtype!r} (only 'a', asymmetric)")
        return _COMPACT_KINDS[subtype[:2]], len(subtype) == 3
    raise ValueError(f"unknown compact function subtype {subtype!r} (p1-p4, p1a-p4a or e)")


def _sym(z: int) -> str:
    return chemical_symbols[z]


class Family:
    """Base of the families: what every family provides (see the module docstring)."""

    types: ClassVar[Tuple[int, ...]] = ()
    radial: ClassVar[bool] = True
    weighted: ClassVar[bool] = False
    compact: ClassVar[bool] = False
    #: number of neighbour elements named on the line
    n_neighbors: ClassVar[int] = 1
    #: reference block: "radial", "angular", "compact_radial", "compact_angular"
    reference: ClassVar[str] = ""

    @classmethod
    def kernel_code(cls, f: "SymmetryFunction") -> int:
        raise NotImplementedError

    @classmethod
    def parse(cls, center: int, ftype: int, words: List[str], length_unit: float) -> "SymmetryFunction":
        raise NotImplementedError

    @classmethod
    def write(cls, f: "SymmetryFunction", length_unit: float) -> str:
        raise NotImplementedError

    @classmethod
    def sort_key(cls, f: "SymmetryFunction") -> tuple:
        raise NotImplementedError

    @classmethod
    def validate(cls, f: "SymmetryFunction") -> None:
        if f.r_cut <= 0:
            raise ValueError(f"cutoff radius must be positive, got {f.r_cut}")

    @classmethod
    def kernel_row(cls, f: "SymmetryFunction") -> Tuple[List[float], int, bool, bool, int]:
        """(float parameters [N_FLOAT_PARAMS], core kind, asymmetric, integer zeta?, integer zeta)."""
        row = [0.0] * N_FLOAT_PARAMS
        row[F_ETA], row[F_RS], row[F_RC] = f.eta, f.r_shift, f.r_cut
        return row, 0, False, False, 0


class GaussianRadial(Family):
    """n2p2 type 2 (``SymFncExpRad``): ``sum_{j in e1} exp(-eta (r_ij - r_s)^2) f_c(r_ij)``."""

    types = (2,)
    reference = "radial"

    @classmethod
    def kernel_code(cls, f):
        return K_RADIAL

    @classmethod
    def parse(cls, center, ftype, words, length_unit):
        e1, eta, rs, rc = words[0], float(words[1]), float(words[2]), float(words[3])
        return SymmetryFunction(center, 2, (element_number(e1),), eta / length_unit**2, rc * length_unit,
                                rs * length_unit)

    @classmethod
    def write(cls, f, length_unit):
        eta, rc, rs = f.eta * length_unit**2, f.r_cut / length_unit, f.r_shift / length_unit
        return f"symfunction_short {_sym(f.center)} 2 {_sym(f.neighbors[0])} {eta!r} {rs!r} {rc!r}"

    @classmethod
    def sort_key(cls, f):
        return (f.center, f.type, f.r_cut, f.eta, f.r_shift, f.neighbors[0])


class GaussianAngular(Family):
    """n2p2 types 3 (narrow, ``SymFncExpAngn``) and 9 (wide, ``SymFncExpAngw``).

    ``2^(1-zeta) sum_{j<k} (1 + lambda cos theta_ijk)^zeta exp(-eta sum (r - r_s)^2) prod f_c``,
    the narrow one with the ``r_jk`` terms. As in n2p2, a triplet with ``1 + lambda cos <= 0``
    contributes 0 and any real ``zeta`` is accepted: integer ``zeta`` (n2p2's ``useIntegerPow``,
    negative ones included, e.g. n2p2's AlAuMgO_4G example with zeta = -1, -2) by repeated
    multiplication, other values by ``pow``. For ``zeta < 1`` the function (``zeta < 0``:
    the function itself) is unbounded or kinked where ``1 + lambda cos -> 0``; n2p2 computes
    it anyway, and so does this.
    """

    types = (3, 9)
    radial = False
    n_neighbors = 2
    reference = "angular"

    @classmethod
    def kernel_code(cls, f):
        return K_NARROW if f.type == 3 else K_WIDE

    @classmethod
    def parse(cls, center, ftype, words, length_unit):
        e1, e2 = element_number(words[0]), element_number(words[1])
        eta, lam, zeta, rc = (float(w) for w in words[2:6])
        rs = float(words[6]) if len(words) > 6 else 0.0
        return SymmetryFunction(center, ftype, (e1, e2), eta / length_unit**2, rc * length_unit, rs * length_unit,
                                lam, zeta)

    @classmethod
    def write(cls, f, length_unit):
        eta, rc, rs = f.eta * length_unit**2, f.r_cut / length_unit, f.r_shift / length_unit
        e1, e2 = (_sym(z) for z in f.neighbors)
        return f"symfunction_short {_sym(f.center)} {f.type} {e1} {e2} {eta!r} {f.lam:g} {f.zeta!r} {rc!r} {rs!r}"

    @classmethod
    def sort_key(cls, f):
        return (f.center, f.type, f.r_cut, f.eta, f.r_shift, f.zeta, f.lam, f.neighbors[0], f.neighbors[1])

    @classmethod
    def validate(cls, f):
        super().validate(f)
        if f.lam not in (-1.0, 1.0):
            raise ValueError(f"angular lambda must be +1 or -1, got {f.lam}")
        if not math.isfinite(f.zeta):
            raise ValueError(f"angular zeta must be finite, got {f.zeta}")

    @classmethod
    def kernel_row(cls, f):
        row, _, _, _, _ = super().kernel_row(f)
        row[F_LAM], row[F_ZETA], row[F_NORM] = f.lam, f.zeta, 2.0 ** (1.0 - f.zeta)
        row[F_DNORM] = row[F_NORM] * f.zeta * f.lam  # d(norm plam^zeta)/dcos = F_DNORM plam^(zeta - 1)
        zeta_int = round(f.zeta)
        # n2p2 SymFncBaseExpAng: integer power when |zeta - round(zeta)| <= DBL_MIN
        use_int = abs(f.zeta - zeta_int) <= 2.2250738585072014e-308
        return row, 0, False, use_int, int(zeta_int) if use_int else 0


class _Compact(Family):
    compact = True

    @classmethod
    def validate(cls, f):
        super().validate(f)
        parse_subtype(f.subtype)
        if f.r_left >= f.r_cut:
            raise ValueError(f"compact function needs r_left < r_cut, got {f.r_left} >= {f.r_cut}")
        if not f.is_radial:
            al, ar = f.angle_left, f.angle_right
            if al >= ar:
                raise ValueError(f"compact angular function needs angle_left < angle_right, got {al}, {ar}")
            centre = 0.5 * (al + ar)
            if (al < 0.0 and centre != 0.0) or (ar > 180.0 and centre != 180.0):
                raise ValueError(f"angle range ({al}, {ar}) leaves [0, 180] with a centre other than 0 or 180")
            if ar - al > 360.0:
                raise ValueError(f"angle range ({al}, {ar}) spans more than 360 degrees")

    @classmethod
    def kernel_row(cls, f):
        row = [0.0] * N_FLOAT_PARAMS
        row[F_RC], row[F_RL] = f.r_cut, f.r_left
        # angle support in radians, computed as n2p2 does (degrees * pi / 180)
        row[F_AL], row[F_AR] = f.angle_left * math.pi / 180.0, f.angle_right * math.pi / 180.0
        kind, asym = parse_subtype(f.subtype)
        return row, kind, asym, False, 0


class CompactRadial(_Compact):
    """n2p2 types 20 (``SymFncCompRad``) and 23 (``SymFncCompRadWeighted``, all neighbours x Z_j)."""

    types = (20, 23)
    reference = "compact_radial"

    @classmethod
    def kernel_code(cls, f):
        return K_RADIAL_WEIGHTED if f.type == 23 else K_RADIAL_COMPACT

    @classmethod
    def parse(cls, center, ftype, words, length_unit):
        if ftype == 20:
            e1, rl, rc, sub = words[0], float(words[1]), float(words[2]), words[3]
            return SymmetryFunction(center, 20, (element_number(e1),), 0.0, rc * length_unit, r_left=rl * length_unit,
                                    subtype=sub)
        rl, rc, sub = float(words[0]), float(words[1]), words[2]
        return SymmetryFunction(center, 23, (), 0.0, rc * length_unit, r_left=rl * length_unit, subtype=sub)

    @classmethod
    def write(cls, f, length_unit):
        rl, rc = f.r_left / length_unit, f.r_cut / length_unit
        if f.type == 23:
            return f"symfunction_short {_sym(f.center)} 23 {rl!r} {rc!r} {f.subtype}"
        return f"symfunction_short {_sym(f.center)} 20 {_sym(f.neighbors[0])} {rl!r} {rc!r} {f.subtype}"

    @classmethod
    def sort_key(cls, f):
        if f.type == 23:
            return (f.center, f.type, f.subtype, f.r_cut, f.r_left)
        return (f.center, f.type, f.subtype, f.neighbors[0], f.r_cut, f.r_left)


class CompactAngular(_Compact):
    """n2p2 types 21/22 (``SymFncCompAngn``/``SymFncCompAngw``) and 24/25 (weighted by Z_j Z_k)."""

    types = (21, 22, 24, 25)
    radial = False
    n_neighbors = 2
    reference = "compact_angular"

    @classmethod
    def kernel_code(cls, f):
        return {21: K_COMPACT_NARROW, 22: K_COMPACT_WIDE, 24: K_WEIGHTED_NARROW, 25: K_WEIGHTED_WIDE}[f.type]

    @classmethod
    def parse(cls, center, ftype, words, length_unit):
        if ftype in (24, 25):
            rl, rc, al, ar = (float(w) for w in words[0:4])
            return SymmetryFunction(center, ftype, (), 0.0, rc * length_unit, r_left=rl * length_unit, angle_left=al,
                                    angle_right=ar, subtype=words[4])
        e1, e2 = element_number(words[0]), element_number(words[1])
        rl, rc, al, ar = (float(w) for w in words[2:6])
        return SymmetryFunction(center, ftype, (e1, e2), 0.0, rc * length_unit, r_left=rl * length_unit,
                                angle_left=al, angle_right=ar, subtype=words[6])

    @classmethod
    def write(cls, f, length_unit):
        rl, rc = f.r_left / length_unit, f.r_cut / length_unit
        tail = f"{rl!r} {rc!r} {f.angle_left!r} {f.angle_right!r} {f.subtype}"
        if f.type in (24, 25):
            return f"symfunction_short {_sym(f.center)} {f.type} {tail}"
        e1, e2 = (_sym(z) for z in f.neighbors)
        return f"symfunction_short {_sym(f.center)} {f.type} {e1} {e2} {tail}"

    @classmethod
    def sort_key(cls, f):
        if f.type in (24, 25):
            return (f.center, f.type, f.subtype, f.r_cut, f.r_left, f.angle_left, f.angle_right)
        return (f.center, f.type, f.subtype, f.neighbors[0], f.neighbors[1], f.r_cut, f.r_left, f.angle_left,
                f.angle_right)


#: n2p2 type number -> family
FAMILIES: Dict[int, type] = {t: fam for fam in (GaussianRadial, GaussianAngular, CompactRadial, CompactAngular)
                             for t in fam.types}
SUPPORTED_TYPES = ", ".join(str(t) for t in sorted(FAMILIES))
WEIGHTED_TYPES = (23, 24, 25)


def family_of(ftype: int) -> type:
    """The family class of n2p2 type ``ftype``; ``ValueError`` for unsupported types."""
    if ftype not in FAMILIES:
        raise ValueError(f"symmetry function type {ftype} is not supported (supported: {SUPPORTED_TYPES})")
    return FAMILIES[ftype]


@dataclass(frozen=True)
class SymmetryFunction:
    """One symmetry function of one central element.

    Attributes
    ----------
    center : int
        Atomic number of the central atom.
    type : int
        n2p2 type (2, 3, 9, 20-25; see :data:`FAMILIES`).
    neighbors : tuple of int
        Neighbour element(s): one for radial, a sorted pair for angular functions, none for
        the element-weighted types 23-25.
    eta : float
        Gaussian exponent, 1/Å^2.
    r_cut : float
        Cutoff radius, Å.
    r_shift : float
        Gaussian centre, Å.
    lam : float
        Angular lambda (+1 or -1); unused for radial functions.
    zeta : float
        Angular exponent (any real number, as in n2p2); unused for radial functions.
    r_left : float
        Compact types 20-25: left end of the radial support, Å (may be negative).
    angle_left, angle_right : float
        Compact angular types 21, 22, 24, 25: support of the angular part, degrees.
    subtype : str
        Compact types: core function (``p1``-``p4``, ``p1a``-``p4a``, ``e``).
    """

    center: int
    type: int
    neighbors: tuple
    eta: float
    r_cut: float
    r_shift: float = 0.0
    lam: float = 0.0
    zeta: float = 0.0
    r_left: float = 0.0
    angle_left: float = 0.0
    angle_right: float = 0.0
    subtype: str = ""

    def __post_init__(self):
        fam = family_of(self.type)
        n_expected = 0 if self.type in WEIGHTED_TYPES else fam.n_neighbors
        if len(self.neighbors) != n_expected:
            raise ValueError(f"type {self.type} needs {n_expected} neighbour element(s), got {self.neighbors}")
        fam.validate(self)
        if not fam.radial:
            object.__setattr__(self, "neighbors", tuple(sorted(self.neighbors)))

    @property
    def family(self) -> type:
        """The family class (parser, writer, sort key, kernel row) of this function."""
        return FAMILIES[self.type]

    @property
    def is_radial(self) -> bool:
        return FAMILIES[self.type].radial

    @property
    def is_weighted(self) -> bool:
        """Element-weighted compact function (types 23-25): neighbours weighted by atomic number."""
        return self.type in WEIGHTED_TYPES

    @property
    def is_compact(self) -> bool:
        """Polynomial (compact-support) function, n2p2 types 20-25."""
        return FAMILIES[self.type].compact

    def n2p2_sort_key(self) -> tuple:
        """The key by which n2p2 sorts an element's functions (``SymFnc*::operator<``).

        n2p2 orders the functions of each central element by type, then by type-specific
        parameters; element indices are in atomic-number order. Features, ``scaling.data``
        rows and network inputs follow this order. (Cutoff type and alpha are shared by
        all functions here, so they do not change the order.)
        """
        return FAMILIES[self.type].sort_key(self)

    @classmethod
    def from_n2p2(cls, line: str, length_unit: float = 1.0) -> "SymmetryFunction":
        """Parse one ``symfunction_short`` line.

        ``length_unit`` multiplies lengths (e.g. ``ase.units.Bohr`` to read a Bohr file
        into Å); eta is divided by its square.
        """
        words = line.split("#")[0].split()
        if words and words[0] == "symfunction_short":
            words = words[1:]
        if len(words) < 3:
            raise ValueError(f"not a symmetry function line: {line!r}")
        try:
            center, ftype = element_number(words[0]), int(words[1])
        except ValueError as err:
            raise ValueError(f"cannot parse symmetry function line {line!r}: {err}") from None
        if ftype not in FAMILIES:
            raise ValueError(
                f"symmetry function type {ftype} in line {line!r} is not supported (supported: {SUPPORTED_TYPES})"
            )
        try:
            return FAMILIES[ftype].parse(center, ftype, words[2:], length_unit)
        except (IndexError, ValueError) as err:
            if isinstance(err, ValueError) and "not supported" in str(err):
                raise
            raise ValueError(f"cannot parse symmetry function line {line!r}: {err}") from None

    def to_n2p2(self, length_unit: float = 1.0) -> str:
        """The n2p2 ``symfunction_short`` line (lengths divided by ``length_unit``)."""
        return FAMILIES[self.type].write(self, length_unit)
