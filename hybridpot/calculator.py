"""ASE calculator for hybridpot models.

Units as in ASE: eV, Å, e; stress in eV/Å^3 (Voigt order xx, yy, zz, yz, xz, xy).
"""

from __future__ import annotations

import copy
from typing import Optional, Sequence

import numpy as np
import torch
from ase.calculators.calculator import (
    CalculationFailed,
    Calculator,
    CalculatorSetupError,
    PropertyNotImplementedError,
    all_changes,
)
from ase.stress import full_3x3_to_voigt_6_stress

from .model import load
from .neighbors import NeighborList, compute_neighbors
from .system import AtomicSystem

__all__ = ["HybridCalculator", "HybridCalculatorSetupError", "HybridCalculationFailed", "CHARGE_INFO_KEYS"]

#: ``atoms.info`` keys the results depend on (compared by :meth:`HybridCalculator.check_state`)
CHARGE_INFO_KEYS = ("charge", "fragments", "fragment_charges")


class HybridCalculatorSetupError(CalculatorSetupError, ValueError):
    """Invalid calculator options (an ASE ``CalculatorSetupError`` and a ``ValueError``)."""


class HybridCalculationFailed(CalculationFailed):
    """The model could not evaluate the structure (e.g. the charge solver did not converge);
    the message says what happened and the original error is its ``__cause__``."""


def _canonical(value):
    """Nested plain-Python form of an info value (arrays, tuples, numpy scalars), for comparison."""
    if isinstance(value, np.ndarray):
        return _canonical(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _same_info_value(a, b) -> bool:
    return _canonical(a) == _canonical(b)


_DTYPES = {"float64": torch.float64, "float32": torch.float32, "double": torch.float64, "float": torch.float32}


def _as_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float64):
            raise HybridCalculatorSetupError(f"dtype must be float32 or float64, got {dtype}")
        return dtype
    if dtype not in _DTYPES:
        raise HybridCalculatorSetupError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    return _DTYPES[dtype]


class HybridCalculator(Calculator):
    """ASE calculator wrapping a :class:`hybridpot.HybridPotential`.

    Properties: ``energy`` and ``free_energy`` (eV, equal: the model has no electronic
    entropy), ``energies`` (per atom, eV), ``forces`` (eV/Å), ``stress`` (eV/Å^3, periodic
    structures only), ``charges`` (e, models with a charge term) and ``dipole`` (e·Å, about
    the origin, finite structures with a charge term only).

    Boundary conditions: finite, fully periodic, or slabs with ``pbc=(True, True, False)``
    (a, b in the xy plane, c along +z, vacuum at least the Coulomb real-space cutoff:
    :mod:`hybridpot.electrostatics.slab`). A slab's stress is divided by the whole cell volume,
    vacuum included; only its in-plane components (xx, yy, xy) are physical (mask the others in
    cell filters, e.g. ``FrechetCellFilter(atoms, mask=[1, 1, 0, 0, 0, 1])``).

    The total charge is read from ``atoms.info["charge"]`` (default 0). Fragment charge
    constraints come from the ``fragments``/``fragment_charges`` arguments or, when these
    are not given, from ``atoms.info["fragments"]`` and ``atoms.info["fragment_charges"]``
    (see :meth:`hybridpot.AtomicSystem.from_ase`). A change of any of these, or of the
    initial charges, between calls is a system change (:meth:`check_state`): the results are
    recomputed, equal to those of a fresh calculator.

    Properties the model does not provide (``stresses``, ``magmom``, ...) raise ASE's
    ``PropertyNotImplementedError``, also when passed to :meth:`calculate` directly; bad
    options raise :class:`HybridCalculatorSetupError` (an ASE ``CalculatorSetupError`` and a
    ``ValueError``); a failed charge solve :class:`HybridCalculationFailed` (ASE's
    ``CalculationFailed``). :meth:`todict` gives the options (ASE convention).

    The warm start of an iterative charge solve (the previous step's charges) is kept by the
    calculator, not by the model (two calculators sharing a model do not mix their states),
    and dropped by :meth:`reset` and whenever the atoms' numbers change.

    The neighbour list is built at ``model.cutoff + skin`` and reused while atomic numbers,
    cell and pbc are unchanged and no atom has moved more than ``skin / 2`` since it was
    built (then every pair within ``model.cutoff`` is still in the list). Any change of atom
    count, numbers, cell or pbc rebuilds it.

    Parameters
    ----------
    model : torch.nn.Module or str or path
        A HybridPotential, or a file saved with :func:`hybridpot.save`.
    device : str or torch.device
        Where to evaluate.
    dtype : {"float64", "float32"} or torch.dtype
        Evaluation precision. The model is copied when it must be converted (the caller's
        model is left as it is).
    skin : float
        Verlet skin (Å) of the reused neighbour list; 0 rebuilds it at every call.
    fragments : sequence of sequences of int, optional
        Atom indices of each fragment (each atom in exactly one).
    fragment_charges : sequence of float, optional
        Total charge (e) of each fragment (default 0 for each).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "charges", "dipole"]

    def __init__(
        self,
        model,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float64",
        skin: float = 0.5,
        fragments: Optional[Sequence[Sequence[int]]] = None,
        fragment_charges: Optional[Sequence[float]] = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        model_file = None
        if not isinstance(model, torch.nn.Module):
            model_file = str(model)
            model = load(model, map_location=device)
        if skin < 0:
            raise HybridCalculatorSetupError(f"skin must be >= 0 Å, got {skin}")
        self.device = torch.device(device)
        self.dtype = _as_dtype(dtype)
        self.parameters.update(
            model=model_file, device=str(self.device), dtype=str(self.dtype).replace("torch.", ""), skin=float(skin),
            fragments=None if fragments is None else [list(map(int, f)) for f in fragments],
            fragment_charges=None if fragment_charges is None else [float(q) for q in fragment_charges],
        )
        if model.dtype != self.dtype or model.device != self.device:
            model = copy.deepcopy(model).to(device=self.device, dtype=self.dtype)
        self.model = model.eval()
        self.skin = float(skin)
        self.fragments = fragments
        self.fragment_charges = fragment_charges
        #: number of neighbour-list builds so far (for diagnostics)
        self.n_neighbor_builds = 0
        self._nl: Optional[NeighborList] = None
        self._nl_key = None
        self._nl_positions: Optional[np.ndarray] = None
        #: per-term state kept between calls (warm starts), see HybridPotential.forward
        self._term_state: dict = {}

    @classmethod
    def from_file(cls, path, **kwargs) -> "HybridCalculator":
        """Calculator for a model file saved with :func:`hybridpot.save`."""
        return cls(load(path, map_location=kwargs.get("device", "cpu")), **kwargs)

    # ------------------------------------------------------------------ neighbour list
    def _neighbors(self, atoms, system: AtomicSystem) -> NeighborList:
        positions = atoms.get_positions()
        key = (
            len(atoms),
            atoms.get_atomic_numbers().tobytes(),
            np.asarray(atoms.get_cell().array, dtype=np.float64).tobytes(),
            np.asarray(atoms.get_pbc(), dtype=bool).tobytes(),
        )
        if self._nl is not None and self._nl_key == key and self.skin > 0:
            moved = np.linalg.norm(positions - self._nl_positions, axis=1).max()
            if moved < 0.5 * self.skin:
                return self._nl
        self._nl = compute_neighbors(system, self.model.cutoff + self.skin)
        self._nl_key = key
        self._nl_positions = positions.copy()
        self.n_neighbor_builds += 1
        return self._nl

    def reset(self):
        super().reset()
        self._nl = None
        self._nl_key = None
        self._nl_positions = None
        self._term_state = {}

    def check_state(self, atoms, tol: float = 1e-15) -> list:
        """ASE's system changes plus changes of ``atoms.info`` charge, fragments and fragment charges."""
        changes = super().check_state(atoms, tol=tol)
        if self.atoms is not None:
            for key in CHARGE_INFO_KEYS:
                if not _same_info_value(self.atoms.info.get(key), atoms.info.get(key)):
                    changes.append(f"info[{key!r}]")
        return changes

    def todict(self, skip_default: bool = True) -> dict:
        """The calculator's options (ASE convention): model file (None for an in-memory model),
        device, dtype, skin, fragments, fragment charges."""
        return {k: v for k, v in self.parameters.items() if not (skip_default and v is None)}

    # ------------------------------------------------------------------ calculation
    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        missing = [p for p in properties if p not in self.implemented_properties]
        if missing:
            raise PropertyNotImplementedError(
                f"HybridCalculator does not compute {missing}; it computes {self.implemented_properties} "
                "(no per-atom stresses: the model's stress is a whole-cell virial)"
            )
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        system = AtomicSystem.from_ase(
            atoms,
            dtype=self.dtype,
            device=self.device,
            fragments=self.fragments,
            fragment_charges=self.fragment_charges,
        )
        periodic = bool(np.any(atoms.get_pbc()))
        neighbors = self._neighbors(atoms, system)
        # forces and stress come from one backward pass: computing the stress costs little, and
        # a cell filter asks for both (a second call would repeat the whole evaluation)
        want_stress = periodic
        from .qeq import QEqConvergenceError

        try:
            out = self.model(system, compute_forces=True, compute_stress=want_stress, neighbors=neighbors,
                             state=self._term_state)
        except QEqConvergenceError as err:
            raise HybridCalculationFailed(f"charge equilibration failed: {err}") from err
        energy = float(out["energy"][0])
        results = {
            "energy": energy,
            "free_energy": energy,
            "energies": out["energies"].detach().cpu().double().numpy(),
            "forces": out["forces"].detach().cpu().double().numpy(),
        }
        if want_stress:
            stress = out["stress"][0].detach().cpu().double().numpy()
            results["stress"] = full_3x3_to_voigt_6_stress(stress)
        if "charges" in out:
            results["charges"] = out["charges"].detach().cpu().double().numpy()
            if not periodic:
                results["dipole"] = out["dipole"][0].detach().cpu().double().numpy()
        self.results = results
