"""The whole HybridPotential as one TorchScript module: short range (2G, or 4G with the charge
input), charge equilibration, electrostatics and dispersion, on plain tensors.

``torch.jit.script`` cannot compile :class:`~hybridpot.HybridPotential` itself (dataclass
systems and graphs, comprehensions, the numba descriptor kernels, the matrix-free solver's
autograd Function). The export therefore splits the model in two:

* the **local pieces**, traced (``torch.jit.trace``) with the torch reference descriptors:
  :class:`hybridpot.export.LocalEnergy` (per-atom short-range energies given the charges, plus
  the dispersion pair energies) and :class:`hybridpot.export.Electronegativity` (QEq ``chi``).
  Their operations are shape-polymorphic: the traces are checked against the eager model on a
  second, larger structure before they are used;
* the **global pieces**, scripted: the dense QEq solve (:mod:`hybridpot.qeq.scripted`) on the
  Ewald matrix of a periodic cell or the direct Coulomb matrix of a cluster
  (:mod:`hybridpot.electrostatics.scripted`), the electrostatic energy of the charges with
  the electrostatics term's own parameters and n2p2 screening, and the dispersion tail
  correction of periodic cells.

:class:`ScriptedHybridPotential` ``forward(positions [N,3] Å, numbers [N] int64, cell [3,3] Å,
pbc [3] bool, i [M], j [M], shifts [M,3] int64, total_charge [1] e) -> (energies [N] eV,
charges [N] e)``, with a full neighbour list (both directions, periodic images through
``shifts``, ``r_ij = r_j - r_i + shifts @ cell``) holding every pair closer than
:attr:`ScriptedHybridPotential.cutoff` (longer pairs, e.g. a Verlet skin, are dropped inside).
Every step is differentiable in positions and cell: forces and stress come from autograd of
the summed energy, including ``dq/dR`` through the dense solve.

What the eager model does and the export does the same way (to rounding, tested): charges of
clusters from the direct Coulomb matrix, of periodic cells from the Ewald matrix (as the eager
dense solver); the electrostatic energy by the same sums. What differs, by design:

* periodic cells always use Ewald sums. The eager model switches its electrostatics to PME
  above ``ewald_max_atoms`` (300) atoms and its QEq to the matrix-free CG solver above
  ``matrix_free_min_atoms`` (1000): there the two agree to the accuracy setting (PME error,
  CG tolerance), not to rounding, and the export's cost grows as ``N^2 K`` (Ewald) and ``N^3``
  (dense solve): it is meant for the small and medium cells of MD engines that run one
  process, not for 10^4 atoms;
* unsupported (refused at export, with the reason): fragment charge constraints, FixedCharges,
  non-local terms other than Electrostatics, n2p2's ``ewald_prec`` truncation, screening cores
  other than ``"p2"`` and ``"c"``; at run time, periodic cells more dilute than
  ``DILUTE_DENSITY`` (the eager model rescales its Ewald parameters there) and mixed boundary
  conditions raise.
"""

import copy
import math
import warnings
from typing import Final, List, Optional, Tuple

import torch
from torch import nn

from .electrostatics.parameters import DILUTE_DENSITY
from .electrostatics.scripted import (
    K_E,
    SCRIPTED_SCREENING_CORES,
    direct_matrix,
    ewald_matrix,
    gaussian_kernel,
    screening_factor,
)
from .qeq.scripted import solve_qeq_dense_total

__all__ = ["ScriptedHybridPotential", "script_model", "check_supported", "evaluate_scripted", "same_method_reference"]


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
        for params in [getattr(term, "params", None)]:
            if params is not None and getattr(params, "truncation", None) is not None:
                raise ValueError(f"term {name!r} uses n2p2's ewald_prec truncation (from_n2p2(ewald='n2p2')), which "
                                 "the export does not script; import with ewald='converged'")
        if isinstance(term, Electrostatics) and term.screening is not None \
                and term.screening[2] not in SCRIPTED_SCREENING_CORES:
            raise ValueError(f"screening core {term.screening[2]!r} is not scripted; the export supports "
                             f"{sorted(SCRIPTED_SCREENING_CORES)}")
        if isinstance(term, Dispersion) and term.tail_correction and not term.is_local:
            raise ValueError("Dispersion must be a local term")


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
        qeq_p = [0.0, 1.0, 1.0, 1.0, 0.0]  # smearing, k_max, real-space cutoff, switch width, accuracy
        if charges is not None:
            with torch.no_grad():
                hardness[charges.elements] = charges.hardness.detach().double()
                sigma[charges.elements] = charges.sigma.detach().double()
            p = charges.params
            qeq_p = [p.smearing, p.k_max, p.real_space_cutoff, p.switch_width, p.accuracy]
        self.register_buffer("hardness", hardness)
        self.register_buffer("sigma", sigma)
        self.qeq_smearing, self.qeq_k_max, self.qeq_cutoff, self.qeq_switch = (float(x) for x in qeq_p[:4])
        elec_p = qeq_p
        screening = (0.0, 1.0, 0)
        if elec is not None:
            p = elec.params
            elec_p = [p.smearing, p.k_max, p.real_space_cutoff, p.switch_width, p.accuracy]
            if elec.screening is not None:
                screening = (float(elec.screening[0]), float(elec.screening[1]),
                             SCRIPTED_SCREENING_CORES[elec.screening[2]])
        self.elec_smearing, self.elec_k_max, self.elec_cutoff, self.elec_switch = (float(x) for x in elec_p[:4])
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
        if len(disp) > 1:
            raise ValueError("the export supports one Dispersion term")
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
        features, chi = self.charge_features(positions, numbers, cell, i, j, shifts)
        if self.has_charges:
            sigma = self.sigma.to(positions.dtype)[numbers]
            if bool(torch.isnan(sigma).any()):
                raise ValueError("the exported model has no QEq parameters for some atomic numbers of this structure")
            diag = self.hardness.to(positions.dtype)[numbers] + self.k_e / (sigma * math.sqrt(math.pi))
            if periodic:
                matrix = self._ewald(positions, cell, i, j, distances, sigma, self.qeq_smearing, self.qeq_k_max,
                                     self.qeq_cutoff, self.qeq_switch)
            else:
                matrix = direct_matrix(positions, sigma, self.k_e)
            charges = solve_qeq_dense_total(matrix + torch.diag(diag), chi, total_charge)
        energies = self.local(positions, numbers, cell, i, j, shifts, charges)
        if self.shared_features:
            energies = energies + self.short(features, numbers, charges)
        if self.has_electrostatics:
            if not periodic or self.share_matrix:
                coulomb = matrix
            else:
                coulomb = self._ewald(positions, cell, i, j, distances, sigma, self.elec_smearing, self.elec_k_max,
                                      self.elec_cutoff, self.elec_switch)
            potential = coulomb @ charges
            if self.has_screening:
                close = torch.nonzero(distances.detach() < self.screen_outer).flatten()
                si, sj, r = i.index_select(0, close), j.index_select(0, close), distances.index_select(0, close)
                gamma = torch.sqrt(sigma[si] ** 2 + sigma[sj] ** 2)
                kernel = self.k_e * gaussian_kernel(r, gamma) * (
                    screening_factor(r, self.screen_inner, self.screen_outer, self.screen_core) - 1.0)
                potential = potential + torch.zeros_like(potential).index_add(0, si, kernel * charges[sj])
            energies = energies + 0.5 * charges * potential
        if self.has_tail and periodic:
            energies = energies + self._dispersion_tail(numbers, cell)
        return energies, charges

    def _ewald(self, positions: torch.Tensor, cell: torch.Tensor, i: torch.Tensor, j: torch.Tensor,
               distances: torch.Tensor, sigma: torch.Tensor, smearing: float, k_max: float, cutoff: float,
               switch: float) -> torch.Tensor:
        close = torch.nonzero(distances.detach() < cutoff).flatten()
        return ewald_matrix(positions, cell, i.index_select(0, close), j.index_select(0, close),
                            distances.index_select(0, close), sigma, smearing, k_max, cutoff, switch, self.k_e)

    def _dispersion_tail(self, numbers: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """Per-atom homogeneous tail correction of the dispersion (eager ``Dispersion.tail_energies``)."""
        slots = self.tail_slots[numbers]
        n_el = self.tail_kernel.shape[0]
        counts = torch.zeros(n_el, dtype=cell.dtype, device=cell.device).index_add(
            0, slots, torch.ones(numbers.shape[0], dtype=cell.dtype, device=cell.device))
        per_element = counts @ self.tail_kernel.to(cell.dtype)
        volume = torch.linalg.det(cell).abs()
        return (-2.0 * math.pi * self.tail_factor / volume) * per_element[slots]


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
        Structures the scripted module must reproduce (energy and forces within 1e-9 of the
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


def same_method_reference(model):
    """A copy of ``model`` that computes what the export computes at every size: Ewald sums for
    periodic electrostatics (the eager default switches to PME above ``ewald_max_atoms``) and
    the dense QEq solve (not the matrix-free one)."""
    from .electrostatics import Electrostatics
    from .qeq import ChargeEquilibration

    reference = copy.deepcopy(model)
    for term in reference.terms().values():
        if isinstance(term, Electrostatics) and term.method != "direct":
            term.method = "ewald"
        if isinstance(term, ChargeEquilibration):
            term.solver = "dense"
    return reference


def _compare_with_eager(model, scripted, atoms, skin: float) -> None:
    from .system import AtomicSystem

    system = AtomicSystem.from_ase(atoms)
    out = same_method_reference(model)(system, compute_forces=True, compute_stress=bool(atoms.pbc.any()))
    energy, forces, stress, _ = evaluate_scripted(scripted, atoms, skin)
    scale = max(abs(float(out["energy"][0])), 1e-12)
    f_scale = max(float(out["forces"].abs().max()), 1e-12)
    worst = max(abs(energy - float(out["energy"][0])) / scale, float((forces - out["forces"]).abs().max()) / f_scale)
    if stress is not None:
        s_scale = max(float(out["stress"].abs().max()), 1e-12)
        worst = max(worst, float((stress - out["stress"][0]).abs().max()) / s_scale)
    if worst > 1e-9:
        raise RuntimeError(f"the scripted model differs from the eager model by {worst:.1e} (relative) on a "
                           f"{len(atoms)}-atom structure: export failed")
