"""The Electrostatics energy term (finite: direct sums; periodic and slabs: Ewald/PME; n2p2 screening)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ..neighbors import Graph
from ..system import AtomicSystem
from .direct import finite_pairs
from .kernels import COULOMB_CONSTANT, SCREENING_CORES, gaussian_coulomb_kernel, screening_function
from .operator import PeriodicCoulomb, periodic_operator
from .parameters import EwaldParameters, _upgraded

__all__ = ["Electrostatics"]


class Electrostatics(nn.Module):
    """Per-atom Coulomb energies of Gaussian (or point) charges.

    Parameters
    ----------
    method : {"auto", "direct", "ewald", "pme"}
        Periodic structures (fully periodic, or slabs with pbc ``(True, True, False)``: the 3D sum
        of the vacuum-padded cell with the dipole correction of
        :mod:`hybridpot.electrostatics.slab`): ``"ewald"`` or ``"pme"`` (``"auto"``: Ewald up to
        ``ewald_max_atoms`` atoms, PME above). Finite structures always use the exact
        direct sum; ``"direct"`` refuses periodic structures.
    accuracy : float
        Target error of periodic structures: potentials relative to the mean |V_i|, forces
        relative to the largest force (measured 0.15-0.5 x accuracy for 1e-3 ... 1e-9 in
        tests/test_electrostatics_parameters.py and validation/long_range.py). Finite structures are exact.
    real_space_cutoff : float, optional
        Real-space cutoff of Ewald/PME and range of the erfc correction (Å, default 10).
        It must exceed the range of the Gaussian correction: ``erfc(r_c/(2 sigma_max))``
        must be below ``0.1 accuracy`` (checked at run time).
    screening : (float, float) or (float, float, str), optional
        n2p2 ``screen_electrostatics r_inner r_outer [core]`` (Å); the core function
        (:func:`screening_function`) defaults to ``"p2"``; n2p2 input files default to ``"c"``
        (``hybridpot.from_n2p2`` passes the file's choice). See the module docstring.
    interpolation_nodes : int
        PME interpolation nodes (4-7).
    ewald_max_atoms : int
        Largest structure handled by Ewald under ``method="auto"``.
    """

    def __init__(
        self,
        method: str = "auto",
        accuracy: float = 1e-6,
        real_space_cutoff: Optional[float] = None,
        screening: Optional[Tuple] = None,
        interpolation_nodes: int = 7,
        ewald_max_atoms: int = 300,
    ):
        super().__init__()
        if method not in ("auto", "direct", "ewald", "pme"):
            raise ValueError(f"unknown method {method!r}; choose 'auto', 'direct', 'ewald' or 'pme'")
        self.method = method
        self.real_space_cutoff = 10.0 if real_space_cutoff is None else float(real_space_cutoff)
        self.params = EwaldParameters.for_accuracy(float(accuracy), self.real_space_cutoff, interpolation_nodes)
        self.accuracy = float(accuracy)
        if screening is not None:
            inner, outer = float(screening[0]), float(screening[1])
            core = str(screening[2]) if len(screening) > 2 else "p2"
            if not 0.0 <= inner < outer:
                raise ValueError(f"screening needs 0 <= r_inner < r_outer, got {screening}")
            if core not in SCREENING_CORES:
                raise ValueError(f"unknown screening core function {core!r}; choose one of {SCREENING_CORES}")
            screening = (inner, outer, core)
        self.screening = screening
        self.ewald_max_atoms = int(ewald_max_atoms)

    def __setstate__(self, state):
        if "params" in state:
            state["params"] = _upgraded(state["params"])
        super().__setstate__(state)

    @property
    def cutoff(self) -> float:
        """Neighbour range needed (Å): the real-space cutoff and the screening radius."""
        c = 0.0 if self.method == "direct" else self.real_space_cutoff
        if self.screening is not None:
            c = max(c, self.screening[1])
        return c

    def extra_repr(self) -> str:
        return f"method={self.method!r}, accuracy={self.accuracy:g}, real_space_cutoff={self.real_space_cutoff}, screening={self.screening}"

    # ------------------------------------------------------------------ public
    def forward(self, system: AtomicSystem, graph: Graph, charges: torch.Tensor, sigma: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-atom energies ``q_i V_i / 2`` (eV), ``[N]``."""
        potential = self.potential(system, graph, charges, sigma)
        return 0.5 * charges * potential

    def potential(self, system: AtomicSystem, graph: Graph, charges: torch.Tensor, sigma: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Electrostatic potential at each atom ``V_i = dE_elec/dq_i`` (V = eV/e), ``[N]``."""
        if charges is None:
            raise ValueError("Electrostatics needs charges (a charge model: FixedCharges or ChargeEquilibration)")
        if charges.shape != (system.n_atoms,):
            raise ValueError(f"charges must have shape [{system.n_atoms}], got {list(charges.shape)}")
        if sigma is not None and sigma.shape != (system.n_atoms,):
            raise ValueError(f"sigma must have shape [{system.n_atoms}], got {list(sigma.shape)}")
        if sigma is not None and bool((sigma <= 0).any()):
            raise ValueError("Gaussian widths sigma must be positive")
        charges = charges.to(system.dtype)
        out = torch.zeros_like(charges)
        periodic = system.periodic  # slabs (pbc True, True, False) included: PeriodicCoulomb with slab=True
        finite_atoms = ~periodic[system.batch]
        if bool(finite_atoms.any()):
            out = out + self._finite_potential(system, charges, sigma, finite_atoms)
        for s in torch.nonzero(periodic).flatten().tolist():
            if self.method == "direct":
                raise ValueError("method='direct' cannot treat periodic structures; use 'ewald', 'pme' or 'auto'")
            out = out + self._periodic_potential(system, graph, charges, sigma, s)
        if self.screening is not None:
            out = out + self._screening_potential(system, graph, charges, sigma, finite_atoms)
        return out

    def periodic_method(self, n_atoms: int) -> str:
        if self.method in ("ewald", "pme"):
            return self.method
        return "ewald" if n_atoms <= self.ewald_max_atoms else "pme"

    def periodic_operator(self, system: AtomicSystem, graph: Graph, sigma: Optional[torch.Tensor], s: int,
                          method: Optional[str] = None) -> Tuple[PeriodicCoulomb, int, int]:
        """The :class:`PeriodicCoulomb` operator of structure ``s`` and its atom range."""
        return periodic_operator(system, graph, sigma, s, self.params, method or self.periodic_method(
            int(system.ptr[s + 1] - system.ptr[s])))

    # ------------------------------------------------------------------ internals
    def _finite_potential(self, system, charges, sigma, atom_mask) -> torch.Tensor:
        i, j = finite_pairs(system.ptr, system.batch, atom_mask)
        r = (system.positions[j] - system.positions[i]).norm(dim=1)
        gamma = None if sigma is None else torch.sqrt(sigma[i] ** 2 + sigma[j] ** 2)
        kernel = COULOMB_CONSTANT * gaussian_coulomb_kernel(r, gamma)
        out = torch.zeros_like(charges)
        out = out.index_add(0, i, kernel * charges[j]).index_add(0, j, kernel * charges[i])
        return out

    def _periodic_potential(self, system, graph, charges, sigma, s) -> torch.Tensor:
        op, a, b = self.periodic_operator(system, graph, sigma, s)
        v = op.matvec(charges[a:b])
        return torch.nn.functional.pad(v, (a, system.n_atoms - b))

    def _screening_potential(self, system, graph, charges, sigma, finite_atoms) -> torch.Tensor:
        """Potential of ``(f_s(r) - 1) k_e erf(..)/r`` for all pairs within r_outer."""
        inner, outer, core = self.screening
        # finite structures: from the all-pairs list; periodic: from the neighbour list
        i, j = finite_pairs(system.ptr, system.batch, finite_atoms)
        r = (system.positions[j] - system.positions[i]).norm(dim=1)
        close = torch.nonzero(r.detach() < outer).flatten()
        i, j, r = i[close], j[close], r[close]
        g = graph.within(outer)
        half = g.half()
        keep = torch.nonzero(~finite_atoms[half.i]).flatten()
        i = torch.cat([i, half.i[keep]])
        j = torch.cat([j, half.j[keep]])
        r = torch.cat([r, half.distances[keep]])
        gamma = None if sigma is None else torch.sqrt(sigma[i] ** 2 + sigma[j] ** 2)
        kernel = COULOMB_CONSTANT * gaussian_coulomb_kernel(r, gamma) * (screening_function(r, inner, outer, core) - 1.0)
        out = torch.zeros_like(charges)
        return out.index_add(0, i, kernel * charges[j]).index_add(0, j, kernel * charges[i])
