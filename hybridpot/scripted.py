"""The whole HybridPotential as one TorchScript module: short range (2G, or 4G with the charge
input), charge equilibration, electrostatics and dispersion, on plain tensors.

``torch.jit.script`` cannot compile :class:`~hybridpot.HybridPotential` itself (dataclass
systems and graphs, comprehensions, the numba descriptor kernels, the matrix-free solver's
autograd Function). The export therefore splits the model in two:

* the **local pieces**, traced (``torch.jit.trace``) with the torch reference descriptors:
  :class:`ChargeFeatures` (the charge model's symmetry functions and electronegativities),
  :class:`ShortRangeFromFeatures` (the 4G short range's networks on the same features: one
  descriptor evaluation for both) and :class:`hybridpot.export.LocalEnergy` of the other local
  terms (dispersion pairs). Their operations are shape-polymorphic; the whole is compared with
  the eager model on a second, larger structure before it is returned;
* the **global pieces**, scripted, with the eager model's own choices and parameters:
  charges of clusters by the dense solve on the direct Coulomb matrix, of periodic cells by the
  dense solve on the Ewald matrix or (eager ``solver="matrix_free"``, or ``"auto"`` from
  ``matrix_free_min_atoms`` atoms) by projected CG on the Ewald/PME operator
  (:mod:`hybridpot.electrostatics.scripted_operator`) with the adjoint solve for the gradients
  (below); the electrostatic energy by the direct sum, Ewald, or PME (eager ``"auto"``: above
  ``ewald_max_atoms``) with the term's own parameters and n2p2 screening; the dispersion tail
  correction of periodic cells.

:class:`ScriptedHybridPotential` ``forward(positions [N,3] Å, numbers [N] int64, cell [3,3] Å,
pbc [3] bool, i [M], j [M], shifts [M,3] int64, total_charge [1] e) -> (energies [N] eV,
charges [N] e)``, with a full neighbour list (both directions, periodic images through
``shifts``, ``r_ij = r_j - r_i + shifts @ cell``) holding every pair closer than
:attr:`ScriptedHybridPotential.cutoff` (longer pairs, e.g. a Verlet skin, are dropped inside).
Every step is differentiable in positions and cell: forces and stress come from autograd of
the summed energy. The dense solve is differentiated by autograd (``dq/dR`` included, any
order). The matrix-free solve runs CG without autograd and adds a zero-valued term whose
gradient is the implicit-function gradient (:meth:`ScriptedHybridPotential._adjoint_term`: the
eager solver's adjoint solve, without a custom ``autograd.Function``, which TorchScript cannot
compile): first derivatives only, as the eager solver.

Agreement with the eager model (tests/test_metatomic.py): to rounding for the dense solve
and Ewald/PME/direct sums (~1e-15 relative); to the CG tolerance for the matrix-free solve
(both use the k-space preconditioner with PME, Jacobi with Ewald; the eager CG adds a
coarse-operator stage and warm starts, the export starts cold: 3e-11 relative in the forces at
``cg_tol`` 1e-10).

Unsupported (refused at export, with the reason): fragment charge constraints, FixedCharges,
non-local terms other than Electrostatics, n2p2's ``ewald_prec`` truncation, screening cores
other than ``"p2"`` and ``"c"``; at run time, periodic cells more dilute than
``DILUTE_DENSITY`` (the eager model rescales its Ewald parameters there) and mixed boundary
conditions raise.
"""

import copy
import math
import warnings
from typing import Final, Optional, Tuple

import torch
from torch import nn

from .electrostatics.parameters import DILUTE_DENSITY, EwaldParameters
from .electrostatics.scripted import (
    K_E,
    SCRIPTED_SCREENING_CORES,
    direct_matrix,
    ewald_matrix,
    gaussian_kernel,
    screening_factor,
)
from .electrostatics.preconditioner import (
    PRECONDITIONER_DENSITY_SPACING,
    PRECONDITIONER_MAX_FILTER,
    PRECONDITIONER_NODES,
    PRECONDITIONER_SPACING,
)
from .electrostatics.scripted_operator import ScriptedKSpacePreconditioner, ScriptedPeriodicCoulomb
from .qeq.scripted import solve_qeq_dense_total

__all__ = ["ScriptedHybridPotential", "script_model", "check_supported", "evaluate_scripted"]


class ChargeFeatures(nn.Module):
    """Traced: ``(positions, numbers, cell, i, j, shifts) -> (features, chi)``: the charge model's
    symmetry functions ``[N, F]`` (``[N, 0]`` when ``share`` is off) and electronegativities
    ``[N]`` (eV/e). With ``share`` the features feed :class:`ShortRangeFromFeatures` as well (one
    descriptor evaluation for both, as the eager model's per-call feature cache does)."""

    def __init__(self, charges, share: bool):
        super().__init__()
        self.charges = charges
        self.share = bool(share)
        self.cutoff = float(charges.descriptor.cutoff)

    def forward(self, positions, numbers, cell, i, j, shifts):
        from .export import _graph, _system

        graph = _graph(positions, cell, i, j, shifts, [self.cutoff]).share_features()
        chi = self.charges.electronegativity(_system(positions, numbers, cell), graph)
        features = self.charges.descriptor(numbers, graph)  # the same call: from the graph's feature cache
        return (features if self.share else features[:, :0]), chi


class ShortRangeFromFeatures(nn.Module):
    """Traced: ``(features [N, F], numbers, charges [N]) -> [N]`` short-range atomic energies (eV)."""

    def __init__(self, short):
        super().__init__()
        self.short = short

    def forward(self, features, numbers, charges):
        return self.short.energies_from_features(features, numbers, charges if self.short.use_charges else None)


class _NoChargeFeatures(nn.Module):
    """Stands in for :class:`ChargeFeatures` in a model without charge equilibration."""

    def forward(self, positions: torch.Tensor, numbers: torch.Tensor, cell: torch.Tensor, i: torch.Tensor,
                j: torch.Tensor, shifts: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return positions[:, :0], torch.zeros_like(positions[:, 0])


class _NoShortRange(nn.Module):
    """Stands in for :class:`ShortRangeFromFeatures` when the short range is in the local energy."""

    def forward(self, features: torch.Tensor, numbers: torch.Tensor, charges: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(charges)


class _NoLocalEnergy(nn.Module):
    """Stands in for the traced local energy of a model without (other) local terms."""

    def forward(self, positions: torch.Tensor, numbers: torch.Tensor, cell: torch.Tensor, i: torch.Tensor,
                j: torch.Tensor, shifts: torch.Tensor, charges: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(positions[:, 0])


def check_supported(model) -> None:
    """``ValueError`` naming what to change when ``model`` has a part the export cannot script."""
    from .dispersion import Dispersion
    from .electrostatics import Electrostatics
    from .qeq import ChargeEquilibration

    for name, traits in model.term_traits().items():
        term = model.terms()[name]
        if traits.provides_charges and not isinstance(term, ChargeEquilibration):
            raise ValueError(f"term {name!r} ({type(term).__name__}): the whole-model export supports "
                             "ChargeEquilibration as the charge model (FixedCharges reads per-atom input charges, "
                             "which the export does not take)")
        if not traits.provides_charges and not traits.is_local and not isinstance(term, Electrostatics):
            raise ValueError(f"term {name!r} ({type(term).__name__}) is not local and not Electrostatics: the export "
                             "cannot script it")
        if isinstance(term, Electrostatics) and not isinstance(model.charge_model, ChargeEquilibration):
            raise ValueError("Electrostatics needs ChargeEquilibration charges in the export")
        params = getattr(term, "params", None)
        if params is not None and getattr(params, "truncation", None) is not None:
            raise ValueError(f"term {name!r} uses n2p2's ewald_prec truncation (from_n2p2(ewald='n2p2')), which "
                             "the export does not script; import with ewald='converged'")
        if isinstance(term, Electrostatics) and term.screening is not None \
                and term.screening[2] not in SCRIPTED_SCREENING_CORES:
            raise ValueError(f"screening core {term.screening[2]!r} is not scripted; the export supports "
                             f"{sorted(SCRIPTED_SCREENING_CORES)}")
    if sum(isinstance(t, Dispersion) for t in model.terms().values()) > 1:
        raise ValueError("the export supports one Dispersion term")


class ScriptedHybridPotential(nn.Module):
    """Per-atom energies and charges of a whole hybrid model (see the module docstring).

    Built by :func:`script_model`; ``charge_features`` (:class:`ChargeFeatures`), ``short``
    (:class:`ShortRangeFromFeatures`, when it shares the charge model's descriptor) and ``local``
    (:class:`hybridpot.export.LocalEnergy` of the other local terms) are the traced local pieces
    (or stand-ins); the rest are tables and floats taken from the eager terms.
    """

    has_charges: Final[bool]
    shared_features: Final[bool]
    has_electrostatics: Final[bool]
    share_matrix: Final[bool]
    has_screening: Final[bool]
    has_tail: Final[bool]

    def __init__(self, model, charge_features: nn.Module, short: nn.Module, local: nn.Module,
                 shared_features: bool):
        super().__init__()
        charges, elec = model.charge_model, None
        for name, traits in model.term_traits().items():
            if traits.uses_widths:
                elec = model.terms()[name]
        disp = [t for t in model.terms().values() if type(t).__name__ == "Dispersion"]
        self.charge_features = charge_features
        self.short = short
        self.local = local
        self.shared_features = bool(shared_features)
        self.cutoff: float = float(model.cutoff)
        self.k_e: float = K_E
        self.has_charges = charges is not None
        self.has_electrostatics = elec is not None
        hardness = torch.full((119,), float("nan"), dtype=torch.float64)
        sigma = torch.full((119,), float("nan"), dtype=torch.float64)
        # QEq: the dense solve on the Ewald matrix, or (as the eager "matrix_free" solver, periodic
        # only) projected CG on the Ewald/PME operator with the adjoint solve for the gradients
        qeq_p = EwaldParameters.for_accuracy(1e-6, 1.0)
        self.qeq_mode: int = 0  # 0 dense, 1 matrix-free, 2 auto (matrix-free from matrix_free_min_atoms)
        self.matrix_free_min_atoms: int = 0
        self.cg_tol: float = 1e-10
        self.cg_maxiter: int = 1000
        qeq_pme = True
        self.qeq_kspace: bool = False  # the k-space preconditioner (eager "kspace"/"auto" with PME), else Jacobi
        if charges is not None:
            with torch.no_grad():
                hardness[charges.elements] = charges.hardness.detach().double()
                sigma[charges.elements] = charges.sigma.detach().double()
            qeq_p = charges.params
            self.qeq_mode = {"dense": 0, "matrix_free": 1, "auto": 2}[charges.solver]
            self.matrix_free_min_atoms = int(charges.matrix_free_min_atoms)
            self.cg_tol = max(float(charges.cg_tol), 50.0 * float(torch.finfo(torch.float64).eps))
            self.cg_maxiter = int(charges.cg_maxiter)
            qeq_pme = charges.periodic_method == "pme"
            self.qeq_kspace = charges._preconditioner_kind() == "kspace"
        self.register_buffer("hardness", hardness)
        self.register_buffer("sigma", sigma)
        self.qeq_smearing, self.qeq_k_max = float(qeq_p.smearing), float(qeq_p.k_max)
        self.qeq_cutoff, self.qeq_switch = float(qeq_p.real_space_cutoff), float(qeq_p.switch_width)
        self.qeq_operator = _operator(qeq_p, qeq_pme)
        self.qeq_preconditioner = ScriptedKSpacePreconditioner(
            PRECONDITIONER_SPACING, PRECONDITIONER_DENSITY_SPACING, PRECONDITIONER_NODES, PRECONDITIONER_MAX_FILTER, K_E)
        # electrostatics: periodic cells by Ewald or PME as the eager term chooses
        elec_p = qeq_p
        screening = (0.0, 1.0, 0)
        self.elec_mode: int = 0  # 0 Ewald, 1 PME, 2 auto (PME above ewald_max_atoms), 3 direct (clusters only)
        self.ewald_max_atoms: int = 0
        if elec is not None:
            elec_p = elec.params
            self.elec_mode = {"ewald": 0, "pme": 1, "auto": 2, "direct": 3}[elec.method]
            self.ewald_max_atoms = int(elec.ewald_max_atoms)
            if elec.screening is not None:
                screening = (float(elec.screening[0]), float(elec.screening[1]),
                             SCRIPTED_SCREENING_CORES[elec.screening[2]])
        self.elec_cutoff: float = float(elec_p.real_space_cutoff)
        self.elec_ewald = _operator(elec_p, False)
        self.elec_pme = _operator(elec_p, True)
        self.share_matrix = charges is not None and elec is not None and elec.params == charges.params
        self.has_screening = elec is not None and elec.screening is not None
        self.screen_inner, self.screen_outer = screening[0], screening[1]
        self.screen_core: int = int(screening[2])
        self.dilute_density: float = float(DILUTE_DENSITY)
        # dispersion tail (eager Dispersion.tail_energies): kernel C6_ab I_ab (eV), element slots
        tail_kernel = torch.zeros(1, 1, dtype=torch.float64)
        slots = torch.zeros(119, dtype=torch.long)
        factor = 0.0
        self.has_tail = False
        if disp and disp[0].tail_correction:
            d = disp[0]
            zs = torch.tensor(d.elements)
            with torch.no_grad():
                c6ab = d.pair_c6(zs.unsqueeze(1), zs.unsqueeze(0)).double()
                tail_kernel = c6ab * d.tail_integrals.double()
            slots = d.slot.clone()
            factor = float((d.s6 * d.scale).detach())
            self.has_tail = True
        self.register_buffer("tail_kernel", tail_kernel)
        self.register_buffer("tail_slots", slots)
        self.tail_factor: float = factor

    def forward(self, positions: torch.Tensor, numbers: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
                i: torch.Tensor, j: torch.Tensor, shifts: torch.Tensor, total_charge: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(energies [N] eV, charges [N] e)`` of one structure (module docstring)."""
        n = positions.shape[0]
        periodic = bool(pbc.any())
        if periodic and not bool(pbc.all()):
            raise ValueError("the exported model supports fully periodic or finite structures, not mixed "
                             "boundary conditions")
        vectors = positions.index_select(0, j) - positions.index_select(0, i) + shifts.to(positions.dtype) @ cell
        distances = torch.linalg.vector_norm(vectors, dim=1)
        if periodic and self.has_charges:
            volume = float(torch.linalg.det(cell.detach()).abs())
            if n / volume < self.dilute_density:
                raise ValueError("periodic cell more dilute than 0.01 atoms/Å^3: the eager model rescales its Ewald "
                                 "parameters there, the export does not; use a denser cell, or pbc=False for a "
                                 "cluster in vacuum")
        charges = torch.zeros_like(positions[:, 0])
        matrix = torch.zeros(0, 0, dtype=positions.dtype, device=positions.device)
        sigma = torch.zeros_like(charges)
        diag = torch.ones_like(charges)
        features, chi = self.charge_features(positions, numbers, cell, i, j, shifts)
        matrix_free = periodic and self.has_charges and (
            self.qeq_mode == 1 or (self.qeq_mode == 2 and n >= self.matrix_free_min_atoms))
        adjoint = False
        kspace = False
        if self.has_charges:
            sigma = self.sigma.to(positions.dtype)[numbers]
            if bool(torch.isnan(sigma).any()):
                raise ValueError("the exported model has no QEq parameters for some atomic numbers of this structure")
            diag = self.hardness.to(positions.dtype)[numbers] + self.k_e / (sigma * math.sqrt(math.pi))
            if matrix_free:
                qi, qj, qd = _within(i, j, distances, self.qeq_cutoff)
                self.qeq_operator.prepare(positions, cell, qi, qj, qd, sigma)
                kspace = self.qeq_kspace
                if kspace:
                    self.qeq_preconditioner.prepare(positions, cell, diag, sigma, self.qeq_operator.mesh_shape)
                with torch.no_grad():
                    q0 = torch.full_like(chi, float(total_charge.reshape(-1)[0]) / n)
                    x = self._solve(-chi - self._qeq_matvec(q0, diag), diag, kspace)
                    charges = (q0 + x).detach()
                # the energy below sees the charges as a leaf; their response dq/dR enters through the
                # adjoint term added at the end (first derivatives only, as the eager solver)
                adjoint = torch.is_grad_enabled()
                if adjoint:
                    charges.requires_grad_(True)
            else:
                if periodic:
                    qi, qj, qd = _within(i, j, distances, self.qeq_cutoff)
                    matrix = ewald_matrix(positions, cell, qi, qj, qd, sigma, self.qeq_smearing, self.qeq_k_max,
                                          self.qeq_cutoff, self.qeq_switch, self.k_e)
                else:
                    matrix = direct_matrix(positions, sigma, self.k_e)
                charges = solve_qeq_dense_total(matrix + torch.diag(diag), chi, total_charge)
        energies = self.local(positions, numbers, cell, i, j, shifts, charges)
        if self.shared_features:
            energies = energies + self.short(features, numbers, charges)
        if self.has_electrostatics:
            if not periodic:
                potential = matrix @ charges
            elif self.elec_mode == 3:
                raise ValueError("Electrostatics(method='direct') cannot treat periodic structures; use 'ewald', 'pme' "
                                 "or 'auto'")
            else:
                use_pme = self.elec_mode == 1 or (self.elec_mode == 2 and n > self.ewald_max_atoms)
                if self.share_matrix and not use_pme and not matrix_free:
                    potential = matrix @ charges
                else:
                    ei, ej, ed = _within(i, j, distances, self.elec_cutoff)
                    operator = self.elec_pme if use_pme else self.elec_ewald
                    operator.prepare(positions, cell, ei, ej, ed, sigma)
                    potential = operator.matvec(charges.unsqueeze(1)).squeeze(1)
            if self.has_screening:
                si, sj, r = _within(i, j, distances, self.screen_outer)
                gamma = torch.sqrt(sigma[si] ** 2 + sigma[sj] ** 2)
                kernel = self.k_e * gaussian_kernel(r, gamma) * (
                    screening_factor(r, self.screen_inner, self.screen_outer, self.screen_core) - 1.0)
                potential = potential + torch.zeros_like(potential).index_add(0, si, kernel * charges[sj])
            energies = energies + 0.5 * charges * potential
        if self.has_tail and periodic:
            energies = energies + self._dispersion_tail(numbers, cell)
        if adjoint:
            energies = energies + self._adjoint_term(energies, charges, chi, diag, kspace)
        return energies, charges.detach() if adjoint else charges

    def _qeq_matvec(self, v: torch.Tensor, diag: torch.Tensor) -> torch.Tensor:
        """``A v = C v + diag v`` with the QEq operator prepared for this structure."""
        return self.qeq_operator.matvec(v.unsqueeze(1)).squeeze(1) + diag * v

    def _solve(self, b: torch.Tensor, diag: torch.Tensor, kspace: bool) -> torch.Tensor:
        """:meth:`_projected_cg` with the k-space preconditioner, or Jacobi when it is off or turns out
        not positive definite (only rounding or non-finite input can do that; the eager solver falls
        back the same way, with a warning)."""
        if kspace:
            x, ok = self._projected_cg(b, diag, True)
            if ok:
                return x
        x, ok = self._projected_cg(b, diag, False)
        if not ok:
            raise ValueError("QEq CG: the Jacobi preconditioner is not positive definite (non-finite input?)")
        return x

    def _projected_cg(self, b: torch.Tensor, diag: torch.Tensor, kspace: bool) -> Tuple[torch.Tensor, bool]:
        """``(x, ok)``: ``x`` with ``sum x = 0`` solving ``P A P x = P b`` (``P`` subtracts the mean),
        preconditioned by the prepared k-space preconditioner or Jacobi, stopped at
        ``|P (b - A x)| <= cg_tol |P b|`` (the eager stopping rule); ``ok`` False when the
        preconditioner was found indefinite (``r.z <= 0``)."""
        r = b - b.mean()
        x = torch.zeros_like(b)
        b_norm = float(torch.linalg.vector_norm(r))
        if b_norm == 0.0:
            return x, True
        inverse = 1.0 / diag
        z = self.qeq_preconditioner.apply(r) if kspace else inverse * r
        z = z - z.mean()
        p = z
        rz = torch.dot(r, z)
        if not float(rz) > 0.0:
            return x, False
        converged = False
        iteration = 0
        while not converged:
            if iteration >= self.cg_maxiter:
                raise ValueError("QEq conjugate gradients did not converge within cg_maxiter iterations")
            iteration += 1
            ap = self._qeq_matvec(p, diag)
            ap = ap - ap.mean()
            pap = torch.dot(p, ap)
            if not float(pap) > 0.0:
                raise ValueError("QEq matrix is not positive definite on the constraint space (CG); check hardness "
                                 "and widths")
            alpha = rz / pap
            x = x + alpha * p
            r = r - alpha * ap
            converged = float(torch.linalg.vector_norm(r)) / b_norm <= self.cg_tol
            if not converged:
                z = self.qeq_preconditioner.apply(r) if kspace else inverse * r
                z = z - z.mean()
                rz_new = torch.dot(r, z)
                if not float(rz_new) > 0.0:
                    return x, False
                p = z + (rz_new / rz) * p
                rz = rz_new
        return x, True

    def _adjoint_term(self, energies: torch.Tensor, charges: torch.Tensor, chi: torch.Tensor,
                      diag: torch.Tensor, kspace: bool) -> torch.Tensor:
        """Zero-valued per-atom term whose gradient is the charges' contribution to the forces.

        With ``g = dE/dq`` at the solution and ``lambda`` solving ``P A P lambda = P g`` (``sum
        lambda = 0``), the gradient of ``-lambda . (A(r) q* + chi(r))`` (``q*``, ``lambda`` fixed) is
        ``-lambda . d(residual)/dr = g . dq*/dr`` (implicit function theorem on ``P (A q + chi) = 0``,
        ``sum q = Q``): the eager solver's adjoint, without a custom autograd Function."""
        grads = torch.autograd.grad([energies.sum()], [charges], retain_graph=True, allow_unused=True)
        g = torch.zeros_like(energies)
        gradient = grads[0]
        if gradient is not None:
            g = gradient
        with torch.no_grad():
            lam = self._solve(g, diag, kspace)
        q = charges.detach()
        term = -lam * (self._qeq_matvec(q, diag) + chi)
        return term - term.detach()

    def _dispersion_tail(self, numbers: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """Per-atom homogeneous tail correction of the dispersion (eager ``Dispersion.tail_energies``)."""
        slots = self.tail_slots[numbers]
        n_el = self.tail_kernel.shape[0]
        counts = torch.zeros(n_el, dtype=cell.dtype, device=cell.device).index_add(
            0, slots, torch.ones(numbers.shape[0], dtype=cell.dtype, device=cell.device))
        per_element = counts @ self.tail_kernel.to(cell.dtype)
        volume = torch.linalg.det(cell).abs()
        return (-2.0 * math.pi * self.tail_factor / volume) * per_element[slots]


def _within(i: torch.Tensor, j: torch.Tensor, distances: torch.Tensor, cutoff: float
            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pairs of the full list closer than ``cutoff`` (Å)."""
    close = torch.nonzero(distances.detach() < cutoff).flatten()
    return i.index_select(0, close), j.index_select(0, close), distances.index_select(0, close)


def _operator(params, pme: bool) -> ScriptedPeriodicCoulomb:
    return ScriptedPeriodicCoulomb(params.smearing, params.k_max, params.real_space_cutoff, params.switch_width,
                                   params.mesh_spacing, params.interpolation_nodes, pme, K_E)


def _example_inputs(atoms, cutoff: float, skin: float):
    from .export import pair_inputs

    return pair_inputs(atoms, cutoff + skin)


def script_model(model, example, check=None, skin: float = 1.0) -> torch.jit.ScriptModule:
    """The whole ``model`` as a scripted :class:`ScriptedHybridPotential` (float64).

    The traced pieces are not checked one by one: the scripted whole is compared with the eager
    model (energy, forces, stress) on ``example`` and on ``check`` and the export raises when
    they differ by more than 1e-9 (relative), e.g. when a trace did not generalise.

    Parameters
    ----------
    model : HybridPotential
        Copied and converted to float64; see :func:`check_supported` for what it may contain.
    example : ase.Atoms
        A structure with every element of the model (the local pieces are traced on it, with
        a neighbour list to ``cutoff + skin`` so that the cutoff filters are part of the trace).
    check : list of ase.Atoms, optional
        Structures the scripted module must reproduce (energy, forces, stress within 1e-9 of the
        eager model, relative), besides ``example``; default: ``example`` repeated twice along
        the first axis and rattled (periodic) or stretched by 3% (cluster).
    skin : float
        Extra neighbour range (Å) of the tracing and checking lists.
    """
    from .export import LocalEnergy, _trace

    model = copy.deepcopy(model).double().eval()
    check_supported(model)
    if check is None:
        other = example.repeat((2, 1, 1)) if example.pbc.any() else example.copy()
        if not example.pbc.any():
            other.positions = other.positions * 1.03
        other.rattle(0.05, seed=1)
        check = [other]
    charges = model.charge_model
    short = model.short_range
    share = charges is not None and short is not None and short.descriptor is charges.descriptor
    x = _example_inputs(example, model.cutoff, skin)
    q = torch.linspace(-0.5, 0.5, len(example), dtype=torch.float64)
    if charges is not None:
        features = ChargeFeatures(charges, share)
        charge_features = _trace(features, x)
        if share:
            short_module = _trace(ShortRangeFromFeatures(short), (features(*x)[0].detach(), x[1], q))
        _check_widths(model)
    else:
        charge_features = torch.jit.script(_NoChargeFeatures())
    if not share:
        short_module = torch.jit.script(_NoShortRange())
    rest = model.without("short_range") if share else model
    if rest is not None and any(tr.is_local and not tr.provides_charges for tr in rest.term_traits().values()):
        local = _trace(LocalEnergy(rest), tuple(x) + (q,))
    else:
        local = torch.jit.script(_NoLocalEnergy())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch 2.13: TorchScript deprecated
        scripted = torch.jit.script(ScriptedHybridPotential(model, charge_features, short_module, local, share))
    for atoms in [example] + list(check):
        _compare_with_eager(model, scripted, atoms, skin)
    return scripted


def _check_widths(model) -> None:
    """The eager model's run-time check of the Gaussian widths against the real-space cutoff,
    done once at export."""
    from .electrostatics import minimum_real_space_cutoff

    smax = float(model.charge_model.sigma.detach().max())
    for term in model.terms().values():
        params = getattr(term, "params", None)
        if params is None:
            continue
        if math.erfc(params.switch_start / (2.0 * smax)) > 0.1 * params.accuracy:
            raise ValueError(f"Gaussian width {smax:.3f} Å is too wide for the real-space cutoff "
                             f"{params.real_space_cutoff} Å; increase it to at least "
                             f"{minimum_real_space_cutoff(smax, params.accuracy):.2f} Å")


def evaluate_scripted(scripted, atoms, skin: float = 1.0, stress: Optional[bool] = None):
    """``(energy eV, forces [N,3] eV/Å, stress [3,3] eV/Å^3 or None, charges [N] e)`` of the scripted
    module on an ``ase.Atoms`` (total charge from ``atoms.info["charge"]``), by autograd."""
    positions, numbers, cell, i, j, shifts = _example_inputs(atoms, scripted.cutoff, skin)
    pbc = torch.as_tensor(atoms.pbc.copy())
    stress = bool(pbc.any()) if stress is None else stress
    strain = torch.eye(3, dtype=torch.float64, requires_grad=True)
    positions = positions.detach().requires_grad_(True)
    total = torch.tensor([float(atoms.info.get("charge", 0.0))], dtype=torch.float64)
    energies, q = scripted(positions @ strain, numbers, cell @ strain, pbc, i, j, shifts, total)
    energy = energies.sum()
    grads = torch.autograd.grad(energy, [positions, strain])
    sigma = grads[1] / abs(float(torch.linalg.det(cell))) if stress else None
    return float(energy.detach()), -grads[0], sigma, q.detach()


def _compare_with_eager(model, scripted, atoms, skin: float) -> None:
    from .system import AtomicSystem

    system = AtomicSystem.from_ase(atoms)
    out = model(system, compute_forces=True, compute_stress=bool(atoms.pbc.any()))
    energy, forces, stress, _ = evaluate_scripted(scripted, atoms, skin)
    scale = max(abs(float(out["energy"][0])), 1e-12)
    f_scale = max(float(out["forces"].abs().max()), 1e-12)
    worst = max(abs(energy - float(out["energy"][0])) / scale, float((forces - out["forces"]).abs().max()) / f_scale)
    if stress is not None:
        s_scale = max(float(out["stress"].abs().max()), 1e-12)
        worst = max(worst, float((stress - out["stress"][0]).abs().max()) / s_scale)
    tolerance = 1e-9
    charges = model.charge_model
    if charges is not None and charges.solver != "dense":
        # matrix-free solves (eager: k-space or Jacobi preconditioned, export: Jacobi) agree to their tolerance
        tolerance = max(tolerance, 1e3 * float(charges.cg_tol))
    if worst > tolerance:
        raise RuntimeError(f"the scripted model differs from the eager model by {worst:.1e} (relative) on a "
                           f"{len(atoms)}-atom structure: export failed")
