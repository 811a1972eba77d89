"""Drive a hybridpot model from i-PI (path-integral and classical MD) through its socket protocol.

i-PI (https://ipi-code.org, ``pip install ipi``) is a server that integrates the equations of
motion (replicas of a ring polymer, thermostats, barostats) and asks clients for energies,
forces and virials over a UNIX or TCP socket. :func:`run_client` is such a client: ASE's
:class:`~ase.calculators.socketio.SocketClient` with a :class:`~hybridpot.HybridCalculator`,
so every i-PI step is one calculator call (neighbour list reused within its skin, QEq solves
warm-started from the previous step, the structure's total charge and fragments kept).

Periodic cells send the virial ``-V sigma`` (from the autograd stress); finite structures
(``pbc`` all False: a cluster or molecule in i-PI's box, which i-PI needs but hybridpot
ignores) send a zero virial, so i-PI's box must not be barostatted for them.

Command line (the server first, then the client)::

    i-pi input.xml &                       # an <ffsocket mode="unix"><address>NAME</address> ...
    hybridpot ipi model.pt structure.xyz --address NAME        [--inet HOST:PORT] [--charge Q]

``examples/ipi/`` has an input file for NVE MD of the shipped molten-NaCl model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

__all__ = ["run_client"]


def run_client(model, atoms, address: str, unix: bool = True, port: int = 31415, charge: Optional[float] = None,
               calculator_options: Optional[dict] = None) -> None:
    """Serve ``model`` to a running i-PI server until it says EXIT.

    Parameters
    ----------
    model : HybridPotential or str or Path or ase.calculators.calculator.Calculator
        The model, or a model file (:func:`hybridpot.load`); or an ASE calculator used as it is (e.g.
        metatomic-ase's ``MetatomicCalculator`` of a model written by ``hybridpot export``).
    atoms : ase.Atoms
        The structure i-PI integrates, in the same atom order as i-PI's initial file (its
        numbers, ``pbc``, ``info["charge"]``, fragments; i-PI sends positions and cell, Å).
    address : str
        The ``<address>`` of i-PI's ``<ffsocket>``: a UNIX socket name (``unix=True``, i-PI
        puts it in ``/tmp/ipi_<address>``) or a host name (``unix=False``, TCP with ``port``).
    charge : float, optional
        Total charge (e), stored as ``atoms.info["charge"]``; default: what ``atoms`` holds (0).
    calculator_options : dict, optional
        Keyword arguments of :class:`~hybridpot.HybridCalculator` (e.g. ``skin``).
    """
    from ase.calculators.socketio import SocketClient

    from .calculator import HybridCalculator

    atoms = atoms.copy()
    if charge is not None:
        atoms.info["charge"] = float(charge)
    from ase.calculators.calculator import BaseCalculator

    atoms.calc = model if isinstance(model, BaseCalculator) else HybridCalculator(model, **(calculator_options or {}))
    where = f"UNIX socket /tmp/ipi_{address}" if unix else f"{address}:{port}"
    try:
        client = SocketClient(unixsocket=address) if unix else SocketClient(host=address, port=int(port))
    except (FileNotFoundError, ConnectionRefusedError) as error:
        raise ConnectionError(f"no i-PI server at {where} ({error}); start i-pi with an <ffsocket> whose "
                              f"<address> is {address!r} first, and wait until it says it is listening") from None
    # use_stress: the virial for periodic cells only (a finite structure has no stress)
    client.run(atoms, use_stress=bool(atoms.pbc.any()))


def _configure(parser) -> None:
    parser.add_argument("model", type=Path, help="model file (hybridpot save format)")
    parser.add_argument("structure", type=Path, help="ASE-readable structure: atom order, pbc, charge of i-PI's system")
    parser.add_argument("--address", required=True, help="i-PI ffsocket address (UNIX socket name, or host with --inet)")
    parser.add_argument("--inet", action="store_true", help="TCP socket to --address at --port instead of UNIX")
    parser.add_argument("--port", type=int, default=31415)
    parser.add_argument("--charge", type=float, default=None, help="total charge (e); default: the file's or 0")


def _run(args) -> int:
    from ase.io import read

    from .model import load

    if not args.model.is_file():
        raise FileNotFoundError(f"model file {args.model} not found")
    if not args.structure.is_file():
        raise FileNotFoundError(f"structure file {args.structure} not found")
    run_client(load(args.model), read(args.structure), args.address, unix=not args.inet, port=args.port,
               charge=args.charge)
    return 0
