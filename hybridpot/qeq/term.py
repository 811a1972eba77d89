"""The 4G-HDNNP charge-equilibration term: electronegativity networks, hardness, widths, solvers."""

from __future__ import annotations

import functools
import math
import warnings
from typing import Dict, Iterable, Optional, Sequence, Tuple

import torch
from ase import units as ase_units
from torch import nn

from ..atomic_nets import ElementNets
from ..descriptors import SymmetryFunctions, element_number
from ..electrostatics import COULOMB_CONSTANT, EwaldParameters, direct_coulomb_matrix, periodic_operator, periodic_operator_inputs
from ..electrostatics.slab import is_slab
from ..neighbors import Graph
from ..system import AtomicSystem
from .constraints import _local_groups, constraint_groups
from .errors import TOTAL_CHARGE_MARGIN, TotalChargeWarning
from .matrix_free import DEFAULT_COARSE_TOL, KSPACE_FLOAT32_MIN_TOL, _matrix_free_energy, _MatrixFreeQEq, _MatrixFreeSetup
from .solvers import solve_qeq_dense

__all__ = ["ChargeEquilibration"]

_SQRT_PI = math.sqrt(math.pi)
#: unit of the learnable hardness parametrisation J = HARDNESS_UNIT s^2: one Hartree per e^2 (eV/e^2),
#: the scale of atomic hardnesses, so that s is of order one (as in n2p2)
HARDNESS_UNIT = ase_units.Hartree


def _element_table(values, elements: Sequence[int], name: str, default: Optional[float] = None) -> Dict[int, float]:
    """Per-element values from a float (all elements) or a dict keyed by symbol or number."""
    if isinstance(values, dict):
        table = {element_number(k): float(v) for k, v in values.items()}
        missing = [z for z in elements if z not in table]
        if missing and default is None:
            raise ValueError(f"{name} missing for element(s) {missing}")
        return {z: table.get(z, default) for z in elements}
    return {z: float(values) for z in elements}


def _inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


class ChargeEquilibration(nn.Module):
    """4G-HDNNP charge equilibration: ``(q, sigma) = QEq(chi_NN(G), J, sigma, Q)``.

    Parameters
    ----------
    elements : iterable of int or str
    descriptor : SymmetryFunctions
        Descriptors for the electronegativity networks.
    hidden, activation
        Electronegativity network shape (one network per element, linear output, eV/e).
    solver : {"auto", "dense", "matrix_free"}
    cg_tol, cg_maxiter
        Relative residual tolerance and iteration limit of the matrix-free solver, which
        solves in float64 whatever the model's dtype (the tolerance is raised to at least
        ``50 eps`` of float64).
    hardness : float or dict
        Initial hardness ``J_Z`` (eV/e^2), learnable (softplus parametrisation, always > 0).
    sigma : float or dict
        Initial Gaussian widths ``sigma_Z`` (Å), learnable if ``learn_sigma``.
    accuracy, real_space_cutoff, periodic_method, interpolation_nodes
        Coulomb operator of periodic structures, as in
        :class:`~hybridpot.electrostatics.Electrostatics` (``periodic_method`` is the
        matrix-free operator: "pme" or "ewald"; the dense solver always uses Ewald). Slabs
        (pbc ``(True, True, False)``) get the dipole correction of
        :mod:`hybridpot.electrostatics.slab` in both solvers (dense: its PSD part on the
        constraint space plus a linear term, :meth:`~hybridpot.electrostatics.PeriodicCoulomb.dense_constrained`).
    matrix_free_min_atoms : int
        ``solver="auto"`` uses the matrix-free solver for periodic structures at least this large
        (default 1000: the measured crossover, validation/README.md).
    preconditioner : {"auto", "kspace", "jacobi"}
        CG preconditioner of the matrix-free solver: ``"kspace"`` (PME operator only; see
        :meth:`~hybridpot.electrostatics.PeriodicCoulomb.kspace_preconditioner`; the CG
        iteration count then stays nearly constant with system size) or Jacobi;
        ``"auto"``: k-space with PME, Jacobi with Ewald.
    kspace_precision : {"auto", "float64", "float32"}
        Precision of the PME k-space part of the CG products and preconditioner (the CG itself,
        the real-space part and all derivatives stay in float64). ``"float32"`` makes each
        product about 1.9x faster on CPUs at 10^5 atoms; its rounding (~1e-7 relative) limits
        the reachable residual, so ``"auto"`` uses it only when ``cg_tol >= 1e-5``
        (measured: benchmarks/README.md 4c) and float64 otherwise (e.g. the default 1e-10).
    coarse_tol : float or None
        With the k-space preconditioner (PME, Gaussian charges), each CG solve first runs to
        this relative residual with a cheap approximate operator (the k-space part on the
        preconditioner's coarse mesh, ~4x cheaper per product, accurate to a few 1e-3) and
        then continues with the exact operator to ``cg_tol``: the same result and stopping
        rule, 40-50% fewer exact products (measured at 17576 atoms: 16/17 -> 7/8 exact iterations
        cold, 11/12 -> 7/7 warm; benchmarks/README.md 4c). None turns it off. Skipped when the
        start is already below ``coarse_tol`` (warm starts) or ``coarse_tol <= cg_tol``.
    training_charge_range : (float, float), optional
        Smallest and largest total charge (e) of the training structures, when known (a trainer
        sets it); a structure more than ``TOTAL_CHARGE_MARGIN`` (1 e) outside gets a
        :class:`TotalChargeWarning`. Non-finite total charges always raise ``ValueError``.
    warm_start : bool
        Start each matrix-free CG solve (charges and the adjoint solve for forces) from the
        previous call's solution for the same structure (same atoms in the same order, at
        the same position in the batch), e.g. the previous MD step. The stopping rule does
        not change (relative to the right-hand side), so results agree with cold starts to
        the CG tolerance; only the iteration count drops (benchmarks/README.md).

    After each call, ``last_energy`` holds ``E_QEq`` per structure ``[S]`` (eV,
    differentiable) and ``last_iterations`` the CG iteration counts.
    """

    def __init__(
        self,
        elements: Iterable[int | str],
        descriptor: SymmetryFunctions,
        hidden: Sequence[int] = (15, 15),
        activation: str | Sequence[str] = "tanh",
        solver: str = "auto",
        cg_tol: float = 1e-10,
        cg_maxiter: int = 1000,
        hardness: float | Dict = 1.0,
        sigma: float | Dict = 1.0,
        learn_sigma: bool = True,
        accuracy: float = 1e-6,
        real_space_cutoff: Optional[float] = None,
        periodic_method: str = "pme",
        interpolation_nodes: int = 7,
        matrix_free_min_atoms: int = 1000,
        preconditioner: str = "auto",
        warm_start: bool = True,
        kspace_precision: str = "auto",
        coarse_tol: Optional[float] = DEFAULT_COARSE_TOL,
        training_charge_range: Optional[Tuple[float, float]] = None,
    ):
        super().__init__()
        self.elements = sorted({element_number(e) for e in elements})
        missing = [z for z in self.elements if z not in descriptor.elements]
        if missing:
            raise ValueError(f"descriptor has no symmetry functions for element(s) {missing}")
        if solver not in ("auto", "dense", "matrix_free"):
            raise ValueError(f"unknown solver {solver!r}; choose 'auto', 'dense' or 'matrix_free'")
        if periodic_method not in ("pme", "ewald"):
            raise ValueError(f"periodic_method must be 'pme' or 'ewald', got {periodic_method!r}")
        if cg_tol <= 0:
            raise ValueError(f"cg_tol must be positive, got {cg_tol}")
        if preconditioner not in ("auto", "kspace", "jacobi"):
            raise ValueError(f"preconditioner must be 'auto', 'kspace' or 'jacobi', got {preconditioner!r}")
        if preconditioner == "kspace" and periodic_method != "pme":
            raise ValueError("the k-space preconditioner needs periodic_method='pme'")
        self.preconditioner = preconditioner
        if kspace_precision not in ("auto", "float64", "float32"):
            raise ValueError(f"kspace_precision must be 'auto', 'float64' or 'float32', got {kspace_precision!r}")
        self.kspace_precision = kspace_precision
        if coarse_tol is not None and not 0.0 < coarse_tol < 1.0:
            raise ValueError(f"coarse_tol must be in (0, 1) or None, got {coarse_tol}")
        self.coarse_tol = coarse_tol
        if training_charge_range is not None:
            low, high = (float(x) for x in training_charge_range)
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ValueError(f"training_charge_range must be (low, high) with low <= high, got {training_charge_range}")
            training_charge_range = (low, high)
        self.training_charge_range = training_charge_range
        self.warm_start = bool(warm_start)
        self._warm_cache: Dict[int, dict] = {}
        self.descriptor = descriptor
        n_inputs = {z: descriptor.n_features[descriptor.elements.index(z)] for z in self.elements}
        self.nets = ElementNets(self.elements, n_inputs, hidden=hidden, activation=activation)
        self.solver = solver
        self.cg_tol, self.cg_maxiter = float(cg_tol), int(cg_maxiter)
        self.periodic_method = periodic_method
        self.matrix_free_min_atoms = int(matrix_free_min_atoms)
        self.real_space_cutoff = 10.0 if real_space_cutoff is None else float(real_space_cutoff)
        self.params = EwaldParameters.for_accuracy(float(accuracy), self.real_space_cutoff, interpolation_nodes)

        j0 = _element_table(hardness, self.elements, "hardness")
        s0 = _element_table(sigma, self.elements, "sigma")
        if min(j0.values()) <= 0 or min(s0.values()) <= 0:
            raise ValueError("initial hardness and widths must be positive")
        lookup = torch.full((119,), -1, dtype=torch.long)
        lookup[self.elements] = torch.arange(len(self.elements))
        self.register_buffer("element_index", lookup, persistent=False)
        jt = torch.tensor([j0[z] for z in self.elements], dtype=torch.float64)
        st = torch.tensor([s0[z] for z in self.elements], dtype=torch.float64)
        # J = HARDNESS_UNIT * s^2 with s learnable (n2p2's parametrisation, in Hartree/e^2): the
        # softplus of an eV-scaled parameter used before moved too slowly from a start of
        # 272 eV (n2p2's initial_hardness 10 Ha) to the ~2 eV of a fit: the Kalman filter stalled
        # at 13.5 me (Carbon_chain_4G charges) where n2p2 reaches 7.7 me (validation/README.md)
        self.sqrt_hardness = nn.Parameter(torch.sqrt(jt / HARDNESS_UNIT))
        if learn_sigma:
            self.raw_sigma = nn.Parameter(_inverse_softplus(st))
        else:
            self.register_buffer("raw_sigma", _inverse_softplus(st))
        self._last_energies: list = []  # per structure: E_QEq, or a function computing it
        self._iteration_logs: list = []
        self._coarse_logs: list = []
        self._diagnostics: list = []

    def __getstate__(self):
        # the last call's results are graph tensors: not part of the model (copy, pickle, save)
        state = dict(self.__dict__)
        state["_last_energies"] = []
        state["_iteration_logs"] = []
        state["_coarse_logs"] = []
        state["_diagnostics"] = []
        state["_warm_cache"] = {}
        return state

    def __setstate__(self, state):
        params = state.get("_parameters", {})
        if "raw_hardness" in params:  # pickled with J = softplus(raw_hardness)
            raw = params.pop("raw_hardness")
            params["sqrt_hardness"] = nn.Parameter(torch.sqrt(nn.functional.softplus(raw.detach()) / HARDNESS_UNIT),
                                                   requires_grad=raw.requires_grad)
        state.setdefault("warm_start", True)  # models saved before warm starts existed
        state.pop("last_energy", None)  # models saved when it was a plain attribute
        state.setdefault("_last_energies", [])
        state.setdefault("_warm_cache", {})
        state.setdefault("_coarse_logs", [])
        state.setdefault("_diagnostics", [])
        # models saved before these options existed get today's defaults
        state.setdefault("kspace_precision", "auto")
        state.setdefault("coarse_tol", DEFAULT_COARSE_TOL)
        state.setdefault("training_charge_range", None)  # unknown for models saved before it existed
        if "params" in state:  # models saved before the real-space cutoff switch
            from ..electrostatics import _upgraded

            state["params"] = _upgraded(state["params"])
        super().__setstate__(state)

    def _warm_start_slot(self, s: int, numbers: torch.Tensor, cache: Optional[dict] = None) -> Optional[dict]:
        """The warm-start store of structure ``s`` of the batch (reset when its atoms change), in
        the caller's ``cache`` when given, else in this module's own one."""
        if not self.warm_start:
            return None
        cache = self._warm_cache if cache is None else cache
        slot = cache.get(s)
        if slot is None or slot["numbers"].shape != numbers.shape or not torch.equal(slot["numbers"], numbers):
            slot = {"numbers": numbers.detach().clone()}
            cache[s] = slot
        return slot

    def _kspace_dtype(self) -> torch.dtype:
        """dtype of the PME k-space part of the CG products (``kspace_precision``)."""
        precision = self.kspace_precision
        if precision == "auto":
            precision = "float32" if self.cg_tol >= KSPACE_FLOAT32_MIN_TOL else "float64"
        return getattr(torch, precision)

    def _preconditioner_kind(self) -> str:
        if self.preconditioner == "auto":
            return "kspace" if self.periodic_method == "pme" else "jacobi"
        return self.preconditioner

    @property
    def last_iterations(self) -> list:
        """CG iteration counts of the last call (forward solves, then adjoint solves once backward ran)."""
        return [n for log in self._iteration_logs for n in log]

    @property
    def last_diagnostics(self) -> list:
        """One dict per structure of the last call: ``solver`` ("dense" or "matrix_free"); for
        matrix-free ones also ``preconditioner`` (the one that produced the result: "kspace" or
        "jacobi"), ``iterations`` (forward, then adjoint once backward ran), ``coarse_iterations``
        and ``fallback`` (None, or why the k-space preconditioner was replaced by Jacobi; a
        :class:`PreconditionerFallbackWarning` is issued as well)."""
        return [dict(d, iterations=list(d["iterations"]), coarse_iterations=list(d["coarse_iterations"]))
                if d["solver"] == "matrix_free" else dict(d) for d in self._diagnostics]

    @property
    def last_coarse_iterations(self) -> list:
        """Iteration counts of the coarse-operator stages of the last call (``coarse_tol``), in the
        order of the solves that ran one (not counted in :attr:`last_iterations`)."""
        return [n for log in self._coarse_logs for n in log]

    @property
    def cutoff(self) -> float:
        """Neighbour range (Å): descriptors, and the real-space cutoff for periodic structures."""
        return max(self.descriptor.cutoff, self.real_space_cutoff)

    @property
    def hardness(self) -> torch.Tensor:
        """``J_Z`` per element of ``self.elements`` (eV/e^2), ``HARDNESS_UNIT * sqrt_hardness^2``."""
        return HARDNESS_UNIT * self.sqrt_hardness * self.sqrt_hardness

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # models saved with J = softplus(raw_hardness): the same J in today's parametrisation
        raw = state_dict.pop(prefix + "raw_hardness", None)
        if raw is not None and prefix + "sqrt_hardness" not in state_dict:
            state_dict[prefix + "sqrt_hardness"] = torch.sqrt(nn.functional.softplus(raw) / HARDNESS_UNIT)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def sigma(self) -> torch.Tensor:
        """``sigma_Z`` per element of ``self.elements`` (Å)."""
        return nn.functional.softplus(self.raw_sigma)

    def electronegativity(self, system: AtomicSystem, graph: Graph) -> torch.Tensor:
        """``chi_i`` (eV/e), ``[N]``."""
        features = self.descriptor(system.numbers, graph.within(self.descriptor.cutoff))
        return self.nets(features, system.numbers).squeeze(1)

    def forward(self, system: AtomicSystem, graph: Graph, warm_start_cache: Optional[dict] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(q [N] e, sigma [N] Å)``.

        ``warm_start_cache``: a dict owned by the caller that steps through time (a calculator or
        an MD driver; start with ``{}`` and pass the same dict at every step) holding the previous
        matrix-free solutions per structure; None uses this module's own store (as before).
        What the solves did is in :attr:`last_diagnostics`.
        """
        idx = self.element_index[system.numbers]
        if bool((idx < 0).any()):
            raise ValueError(f"ChargeEquilibration does not know element(s) {sorted(set(system.numbers[idx < 0].tolist()))}")
        chi = self.electronegativity(system, graph)
        dtype = chi.dtype
        hard = self.hardness.to(dtype)[idx]
        sigma = self.sigma.to(dtype)[idx]
        diag = hard + COULOMB_CONSTANT / (sigma * _SQRT_PI)
        groups, totals = constraint_groups(system)
        self._check_total_charges(system)
        charges, energies = [], []
        self._iteration_logs, self._coarse_logs, self._diagnostics = [], [], []
        for s in range(system.n_systems):
            a, b = int(system.ptr[s]), int(system.ptr[s + 1])
            g_local, t_local = _local_groups(groups[a:b], totals)
            # partially periodic: slabs only (pbc True, True, False; checked by periodic_operator_inputs)
            periodic = bool(system.periodic[s])
            slab = periodic and is_slab(system.pbc[s])
            use_mf = self.uses_matrix_free(system, s)
            if use_mf:
                inputs, _, _, params = periodic_operator_inputs(system, graph, sigma, s, self.params)
                positions, cell, pair_i, pair_j, distances, sig = inputs
                # the CG solve (and its adjoint) always runs in float64: in float32 the rounding
                # noise of a large PME product stalls CG above its tolerance (seen at 8000 atoms)
                # and can break its positive definiteness
                tol = max(self.cg_tol, 50.0 * torch.finfo(torch.float64).eps)
                setup = _MatrixFreeSetup(pair_i, pair_j, params, self.periodic_method, g_local,
                                         t_local.double(), tol, self.cg_maxiter, self._preconditioner_kind(),
                                         self._warm_start_slot(s, system.numbers[a:b], warm_start_cache),
                                         self._kspace_dtype(),
                                         self.coarse_tol, slab=slab)
                as64 = [None if t is None else t.double() for t in (chi[a:b], diag[a:b], positions, cell,
                                                                   distances, sig)]
                q = _MatrixFreeQEq.apply(setup, *as64).to(dtype)
                self._iteration_logs.append(setup.iterations)
                self._coarse_logs.append(setup.coarse_iterations)
                self._diagnostics.append(setup.record)
                # E_QEq costs one more (differentiable) PME product: computed only when asked for
                energy = functools.partial(_matrix_free_energy, inputs, params, self.periodic_method,
                                           chi[a:b], diag[a:b], q, slab)
            else:
                c, linear, constant = self.dense_coulomb(system, graph, sigma, s, t_local)
                if linear is None:
                    q, energy = solve_qeq_dense(c + torch.diag(diag[a:b]), chi[a:b], g_local, t_local)
                else:
                    q, energy = solve_qeq_dense(c + torch.diag(diag[a:b]), chi[a:b] + linear, g_local, t_local)
                    energy = energy + constant
                self._diagnostics.append({"solver": "dense"})
            charges.append(q)
            energies.append(energy)
        self._last_energies = energies
        return torch.cat(charges), sigma

    def dense_coulomb(self, system: AtomicSystem, graph: Graph, sigma: torch.Tensor, s: int,
                      totals: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """``(C [n, n] eV/e^2, linear [n] eV/e or None, constant eV or None)`` of structure ``s`` for the dense
        solve: the Gaussian Coulomb matrix (Ewald for periodic cells, direct for clusters), without the
        diagonal hardness and self terms; ``totals`` are the structure's constraint totals (e)."""
        a, b = int(system.ptr[s]), int(system.ptr[s + 1])
        if bool(system.periodic[s]):
            op, _, _ = periodic_operator(system, graph, sigma, s, self.params, "ewald")
            # slabs: the dipole correction's total-charge terms (a large negative 1 1^T part
            # of its matrix) become a linear term and a constant, exact on the constraint
            # space; the matrix keeps only the PSD rank-1 dipole Hessian (SPD for Cholesky)
            return op.dense_constrained(totals.sum())
        return direct_coulomb_matrix(system.positions[a:b], sigma[a:b]), None, None

    def uses_matrix_free(self, system: AtomicSystem, s: int) -> bool:
        """Whether structure ``s`` is solved matrix-free (periodic, and ``solver`` or its size says so)."""
        n = int(system.ptr[s + 1]) - int(system.ptr[s])
        return bool(system.periodic[s]) and (
            self.solver == "matrix_free" or (self.solver == "auto" and n >= self.matrix_free_min_atoms))

    def _check_total_charges(self, system: AtomicSystem) -> None:
        """``ValueError`` for a non-finite total or fragment charge; :class:`TotalChargeWarning` for
        a total charge more than ``TOTAL_CHARGE_MARGIN`` e outside :attr:`training_charge_range`."""
        totals = system.charge.detach()
        if not bool(torch.isfinite(totals).all()):
            s = int(torch.nonzero(~torch.isfinite(totals)).flatten()[0])
            raise ValueError(f'structure {s}: the total charge (atoms.info["charge"]) is {float(totals[s])}; '
                             "it must be a finite number of elementary charges")
        if system.fragment_charges is not None and not bool(torch.isfinite(system.fragment_charges).all()):
            raise ValueError('fragment charges (atoms.info["fragment_charges"]) must be finite numbers, got '
                             f"{system.fragment_charges.tolist()}")
        known = getattr(self, "training_charge_range", None)
        if known is not None:
            low, high = known
            outside = (totals < low - TOTAL_CHARGE_MARGIN) | (totals > high + TOTAL_CHARGE_MARGIN)
            if bool(outside.any()):
                s = int(torch.nonzero(outside).flatten()[0])
                warnings.warn(
                    f'structure {s}: total charge {float(totals[s]):g} e (atoms.info["charge"]) is far outside the '
                    f"total charges of the training data ({low:g} to {high:g} e): the charges and energies are an "
                    "extrapolation", TotalChargeWarning, stacklevel=3)

    def release_graph(self) -> None:
        """Detach what the last call keeps for :attr:`last_energy` from its autograd graph.

        :class:`~hybridpot.HybridPotential` calls this after a call without ``create_graph``:
        a matrix-free structure's lazily evaluated ``E_QEq`` otherwise holds the charges' graph,
        and with it the solve's operator (PME stencil, real-space kernel, preconditioner) until
        the next call: measured 480 MB at 21952 atoms, carried into the next call's peak.
        """
        def detach(x):
            if isinstance(x, torch.Tensor):
                return x.detach()
            if isinstance(x, (tuple, list)):
                return type(x)(detach(v) for v in x)
            return x

        self._last_energies = [functools.partial(e.func, *detach(e.args)) if isinstance(e, functools.partial)
                               else detach(e) for e in self._last_energies]

    @property
    def last_energy(self) -> Optional[torch.Tensor]:
        """``E_QEq`` per structure ``[S]`` (eV) of the last call, differentiable like the charges
        (for matrix-free structures evaluated on first access: one more PME product)."""
        if not self._last_energies:
            return None
        self._last_energies = [e() if callable(e) else e for e in self._last_energies]
        return torch.stack(self._last_energies)
