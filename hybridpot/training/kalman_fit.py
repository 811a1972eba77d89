"""Epochs of Kalman-filter updates, as n2p2's nnp-train performs them.

A stage (4G charges, or energies and forces) is a sequence of single-structure updates of
:class:`~hybridpot.training.kalman.KalmanFilter`:

* energy update: one structure, one observation: the energy per atom (or, as n2p2, of the
  structure), error ``E_ref/N - E/N`` and its gradient with respect to the weights;
* force update: one structure, ``forces_per_update`` force components (eV/Å) picked at
  random, errors and Jacobian multiplied by ``force_weight`` (n2p2 ``force_weight``);
  the Jacobian is a second derivative (forces are ``-dE/dR``), one double backward per
  component;
* charge update (4G stage 1): one structure, one observation, as n2p2: the norm of the
  charge errors ``|q - q_ref|`` (e) with target 0 and its gradient.

Per epoch there are ``round(energy_fraction * n_structures)`` energy updates and
``round(force_fraction * n_force_components)`` force updates, in a random order
(n2p2 ``short_energy_fraction``, ``short_force_fraction``; candidates drawn without
replacement within an epoch), or ``round(charge_fraction * n_structures)`` charge updates.

Update selection (n2p2 ``selection_mode``): "random" uses each drawn candidate; "threshold"
(n2p2's SM_THRESHOLD) draws up to ``threshold_trials`` candidates per update and uses the first whose
error exceeds ``<kind>_threshold`` times the training RMSE of the last epoch (energy per atom, force
component, charge-error norm / sqrt(N)). When none does, ``threshold_fallback`` says which is used:
"last", the last one tried (what n2p2 does: its Training::update logs the largest but updates with the
candidate of its last trial), or "largest". Force candidates of one update are components of one
structure (n2p2's sub-candidates), so one evaluation of its forces rates them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..neighbors import build_graph
from .dataset import AtomsDataset, collate
from .losses import MetricAccumulator, dipole_of
from .kalman import KalmanFilter
from .kalman_inputs import FROZEN_INPUTS_LIMIT, FrozenChargeInputs, FrozenInputs, frozen_charge_model, short_range_term_name

__all__ = ["KalmanSettings", "KalmanEpochs"]


@dataclass
class KalmanSettings:
    """Kalman-filter training settings (n2p2 keywords in brackets; defaults: n2p2's examples).

    Attributes
    ----------
    kind : str
        "standard" or "fading_memory" (``kalman_type`` 0 / 1).
    epsilon, q0, q_tau, q_min, eta, eta_tau, eta_max, lam, nu : float
        Filter parameters, see :class:`~hybridpot.training.kalman.KalmanFilter`
        (``kalman_epsilon``, ``kalman_q0``, ``kalman_qtau``, ``kalman_qmin``, ``kalman_eta``,
        ``kalman_etatau``, ``kalman_etamax``, ``kalman_lambda_short``, ``kalman_nue_short``).
        ``q_tau`` and ``eta_tau`` are per epoch.
    energy_fraction : float
        Energy updates per epoch as a fraction of the structures (``short_energy_fraction``).
    force_fraction : float
        Force updates per epoch as a fraction of all force components (``short_force_fraction``).
    force_weight : float
        Factor on force errors and Jacobians (``force_weight``; eV/atom per eV/Å).
    forces_per_update : int
        Force components per force update (n2p2: 1).
    charge_fraction : float
        Charge updates per epoch as a fraction of the structures (``charge_fraction``).
    charge_observations : str
        "norm" (n2p2: one observation per structure, the norm of its charge errors) or
        "atoms" (one observation per atomic charge: more information per update).
    per_atom_energy : bool
        Energy observations per atom (default) or of the whole structure (as n2p2).
    selection : str
        "random" or "threshold" (``selection_mode`` 0 or 2; see the module docstring).
    energy_threshold, force_threshold, charge_threshold : float
        Threshold selection: a candidate is used when its error exceeds this fraction of the
        training RMSE (``short_energy_error_threshold``, ``short_force_error_threshold``,
        ``charge_error_threshold``); 0 uses every first candidate.
    threshold_trials : int
        Candidates tried per update (``rmse_threshold_trials``).
    threshold_fallback : str
        The candidate used when none of the trials exceeds its threshold: "last" (n2p2) or
        "largest" (the largest error of the trials).
    output_in_filter_units : bool
        Energy stage: run the filter as if the short-range networks output atomic energies in
        ``energy_unit`` (as n2p2's networks output them in its training units): the filter's state
        is scaled by ``energy_unit / c`` on the output layers' weights and biases, ``c`` the factor
        the model applies after them (1 for hybridpot's own networks; n2p2 imports carry their unit
        conversion). Without it, ``P = I / epsilon`` weighs a network with eV outputs as if its
        output weights were in ``energy_unit``.
    energy_unit, length_unit : float
        Units (in eV and Å) in which errors and Jacobians are expressed: the filter is not
        unit-free (``1/eta`` is a noise variance in these units, ``force_weight`` weighs
        energy against force units). ``27.211386, 0.529177`` with ``per_atom_energy=False``
        reproduce n2p2's scale for potentials trained in Hartree and Bohr.
    """

    kind: str = "standard"
    epsilon: float = 1e-2
    q0: float = 1e-2
    q_tau: float = 2.302
    q_min: float = 1e-6
    eta: float = 1e-3
    eta_tau: Optional[float] = 2.302
    eta_max: Optional[float] = 1.0
    lam: float = 0.99
    nu: float = 0.99
    energy_fraction: float = 1.0
    force_fraction: float = 0.025
    force_weight: float = 10.0
    forces_per_update: int = 1
    charge_fraction: float = 1.0
    charge_observations: str = "norm"
    per_atom_energy: bool = True
    energy_unit: float = 1.0
    length_unit: float = 1.0
    selection: str = "random"
    energy_threshold: float = 0.0
    force_threshold: float = 0.0
    charge_threshold: float = 0.0
    threshold_trials: int = 1
    threshold_fallback: str = "last"
    output_in_filter_units: bool = False

    def __post_init__(self):
        if self.kind not in ("standard", "fading_memory"):
            raise ValueError(f"kalman kind must be 'standard' or 'fading_memory', got {self.kind!r}")
        if self.charge_observations not in ("norm", "atoms"):
            raise ValueError(f"kalman charge_observations must be 'norm' or 'atoms', got {self.charge_observations!r}")
        for name in ("epsilon", "eta", "energy_unit", "length_unit", "force_weight"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"kalman {name} must be positive, got {getattr(self, name)}")
        for name in ("energy_fraction", "force_fraction", "charge_fraction", "q0", "q_min"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"kalman {name} must be >= 0, got {getattr(self, name)}")
        if self.selection not in ("random", "threshold"):
            raise ValueError(f"kalman selection must be 'random' or 'threshold' (n2p2 selection_mode 0 or 2), "
                             f"got {self.selection!r}")
        if self.threshold_fallback not in ("last", "largest"):
            raise ValueError(f"kalman threshold_fallback must be 'last' (n2p2) or 'largest', "
                             f"got {self.threshold_fallback!r}")
        if int(self.threshold_trials) < 1:
            raise ValueError(f"kalman threshold_trials must be >= 1, got {self.threshold_trials}")
        for name in ("energy_threshold", "force_threshold", "charge_threshold"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"kalman {name} must be >= 0, got {getattr(self, name)}")
        if int(self.forces_per_update) < 1:
            raise ValueError(f"kalman forces_per_update must be >= 1, got {self.forces_per_update}")


def output_layer_scale(model: nn.Module, parameters: Sequence[nn.Parameter], energy_unit: float) -> torch.Tensor:
    """The filter's state scale ``[n]`` for :attr:`KalmanSettings.output_in_filter_units`:
    ``energy_unit / c`` on the weights and biases of each short-range network's last linear layer
    (``c`` the product of the ``factor`` of the modules after it, 1 without), 1 elsewhere."""
    from ..short_range import ShortRange

    scale_of: Dict[int, float] = {}
    for term in model.terms().values():
        if not isinstance(term, ShortRange):
            continue
        for net in term.nets.nets.values():
            layers = list(net)
            last = max(k for k, layer in enumerate(layers) if isinstance(layer, nn.Linear))
            factor = 1.0
            for layer in layers[last + 1:]:
                factor *= float(getattr(layer, "factor", 1.0))
            for p in layers[last].parameters():
                scale_of[id(p)] = float(energy_unit) / factor
    return torch.cat([torch.full((p.numel(),), scale_of.get(id(p), 1.0), dtype=torch.float64) for p in parameters])


class KalmanEpochs:
    """Runs the Kalman-filter updates of one training stage.

    Parameters
    ----------
    model : nn.Module
        The :class:`~hybridpot.model.HybridPotential` being trained (in its training dtype).
    parameters : sequence of nn.Parameter
        The stage's trainable parameters (the filter's state).
    train : AtomsDataset
        The training split.
    stage : {"energy", "charges"}
    settings : KalmanSettings
    offsets : torch.Tensor
        Per-element energy offsets ``[119]`` (eV) subtracted from the reference energies
        (they live outside the network during training).
    dtype : torch.dtype
        Training dtype of the model.
    generator : torch.Generator
        Source of the update order and force-component choice (part of the resumable state).
    device : torch.device or str
        Where the model runs (the filter's P lives with the parameters).
    """

    def __init__(self, model: nn.Module, parameters: Sequence[nn.Parameter], train: AtomsDataset, stage: str,
                 settings: KalmanSettings, offsets: torch.Tensor, dtype: torch.dtype, generator: torch.Generator,
                 device: torch.device | str = "cpu"):
        if stage not in ("energy", "charges"):
            raise ValueError(f"unknown training stage {stage!r}")
        self.model, self.params, self.train, self.stage = model, list(parameters), train, stage
        self.settings, self.offsets, self.dtype, self.generator = settings, offsets, dtype, generator
        self.device = torch.device(device)
        n_structures = len(train)
        if stage == "charges":
            if not train.has("charges"):
                raise ValueError("Kalman charge updates need reference charges in the training data")
            self.n_energy, self.n_force = 0, 0
            self.n_charge = max(1, round(settings.charge_fraction * n_structures))
        else:
            self.n_charge = 0
            self.n_energy = round(settings.energy_fraction * n_structures) if train.has("energy") else 0
            n_components = 3 * sum(s.n_atoms for s in train.samples if s.forces is not None)
            self.n_force = round(settings.force_fraction * n_components / max(settings.forces_per_update, 1)) \
                if train.has("forces") else 0
        self.updates_per_epoch = self.n_energy + self.n_force + self.n_charge
        # energy stage: the networks' inputs and everything else frozen per structure (kalman_inputs.py),
        # where the stored input derivatives fit in FROZEN_INPUTS_LIMIT
        self._frozen: Dict[int, tuple] = {}
        self.frozen_term = short_range_term_name(model, self.params) if stage == "energy" else None
        if self.frozen_term is not None:
            short = model.terms()[self.frozen_term]
            n_inputs = max(short.nets.n_inputs.values())
            itemsize = torch.empty((), dtype=dtype).element_size()
            total = sum(FrozenInputs.nbytes(s.n_atoms, n_inputs, itemsize) for s in train.samples if s.forces is not None)
            if total > FROZEN_INPUTS_LIMIT:
                self.frozen_term = None
        self.frozen_charges = frozen_charge_model(model, self.params, train) if stage == "charges" else None
        if self.updates_per_epoch == 0:
            raise ValueError(f"Kalman {stage} stage has no updates: check the reference data and the fractions")
        scale = output_layer_scale(model, self.params, settings.energy_unit) \
            if stage == "energy" and settings.output_in_filter_units else None
        self.filter = KalmanFilter(
            self.params, updates_per_epoch=self.updates_per_epoch, kind=settings.kind, epsilon=settings.epsilon,
            q0=settings.q0, q_tau=settings.q_tau, q_min=settings.q_min, eta=settings.eta, eta_tau=settings.eta_tau,
            eta_max=settings.eta_max, lam=settings.lam, nu=settings.nu, state_scale=scale)

    # ----------------------------------------------------------------------------- observations
    def _batch(self, index: int):
        batch = collate([self.train.samples[index]], index=[index])
        return batch.with_energy_offsets(self.offsets).to(device=self.device, dtype=self.dtype)

    def _frozen_inputs(self, index: int) -> tuple:
        """``(FrozenInputs, reference energy eV, n_atoms, reference forces [3N] or None)`` of a structure."""
        if index not in self._frozen:
            batch = self._batch(index)
            has_forces = batch.forces is not None and self.n_force > 0
            frozen = FrozenInputs(self.model, self.frozen_term, batch, need_forces=has_forces)
            forces = batch.forces.reshape(-1).to(torch.float64) if has_forces else None
            self._frozen[index] = (frozen, float(batch.energy[0]), float(batch.n_atoms[0]), forces)
        return self._frozen[index]

    def _frozen_charge_inputs(self, index: int) -> tuple:
        """``(FrozenChargeInputs, reference charges [N])`` of a structure."""
        if index not in self._frozen:
            batch = self._batch(index)
            self._frozen[index] = (FrozenChargeInputs(self.frozen_charges, batch, self.model.cutoff), batch.charges)
        return self._frozen[index]

    def _gradient(self, value: torch.Tensor, retain_graph: bool) -> torch.Tensor:
        grads = torch.autograd.grad(value, self.params, retain_graph=retain_graph, allow_unused=True)
        return self.filter.flat_gradients(grads)

    def energy_observation(self, index: int):
        """``(errors [1], jacobian [n, 1])`` of the energy (per atom) of structure ``index``."""
        if self.frozen_term is not None:
            frozen, reference, n_atoms, _ = self._frozen_inputs(index)
            scale = (n_atoms if self.settings.per_atom_energy else 1.0) * self.settings.energy_unit
            energy = frozen.energy(self.model.terms()[self.frozen_term]) / scale
            column = self._gradient(energy, retain_graph=False)
            return torch.tensor([reference / scale - float(energy.detach())], dtype=torch.float64), column.unsqueeze(1)
        batch = self._batch(index)
        n_atoms = float(batch.n_atoms[0]) if self.settings.per_atom_energy else 1.0
        n_atoms *= self.settings.energy_unit
        pred = self.model(batch.system, compute_forces=False, compute_stress=False, create_graph=True,
                          neighbors=batch.neighbors)
        energy = pred["energy"][0] / n_atoms
        column = self._gradient(energy, retain_graph=False)
        error = float(batch.energy[0]) / n_atoms - float(energy.detach())
        return torch.tensor([error], dtype=torch.float64), column.unsqueeze(1)

    def force_observation(self, index: int, components: torch.Tensor):
        """Force components ``components`` (flat indices ``3 * atom + xyz``) of structure ``index``."""
        if self.frozen_term is not None:
            frozen, _, _, reference = self._frozen_inputs(index)
            forces = frozen.forces(self.model.terms()[self.frozen_term], components)
            reference = reference[components]
        else:
            batch = self._batch(index)
            pred = self.model(batch.system, compute_forces=True, compute_stress=False, create_graph=True,
                              neighbors=batch.neighbors)
            forces = pred["forces"].reshape(-1)[components]
            reference = batch.forces.reshape(-1)[components].to(torch.float64)
        # errors in energy_unit / length_unit, weighted
        w = self.settings.force_weight * self.settings.length_unit / self.settings.energy_unit
        columns = [self._gradient(forces[k], retain_graph=k + 1 < forces.shape[0]) for k in range(forces.shape[0])]
        errors = w * (reference - forces.detach().to(torch.float64))
        return errors, w * torch.stack(columns, dim=1)

    def charge_observation(self, index: int):
        """Charge update: n2p2's norm of the charge errors (target 0) and its gradient, or every charge."""
        if self.frozen_charges is not None:
            frozen, reference = self._frozen_charge_inputs(index)
            charges = frozen.charges(self.frozen_charges)
        else:
            batch = self._batch(index)
            graph = build_graph(batch.system, batch.neighbors, cutoff=self.model.cutoff)
            charges, _ = self.model.charges(batch.system, graph)  # the charge term alone (stage 1)
            reference = batch.charges
        diff = charges - reference.to(charges.dtype)
        if self.settings.charge_observations == "atoms":
            columns = [self._gradient(charges[k], retain_graph=k + 1 < charges.shape[0])
                       for k in range(charges.shape[0])]
            return -diff.detach().to(torch.float64), torch.stack(columns, dim=1)
        norm = torch.sqrt((diff * diff).sum())
        if float(norm.detach()) == 0.0:
            return None
        column = self._gradient(norm, retain_graph=False)
        return torch.tensor([-float(norm.detach())], dtype=torch.float64), column.unsqueeze(1)

    # ----------------------------------------------------------------------------- one epoch
    def _plan(self) -> List[tuple]:
        """The epoch's updates: ("energy" | "charges", structure) and ("forces", structure, components)."""
        g = self.generator
        n = len(self.train)

        def draw(count: int) -> List[int]:
            picks: List[int] = []
            while len(picks) < count:  # without replacement within each pass over the structures
                picks += torch.randperm(n, generator=g).tolist()
            return picks[:count]

        plan: List[tuple] = [("charges", s) for s in draw(self.n_charge)]
        plan += [("energy", s) for s in draw(self.n_energy)]
        if self.n_force:
            with_forces = [k for k, s in enumerate(self.train.samples) if s.forces is not None]
            sizes = torch.tensor([3 * self.train.samples[k].n_atoms for k in with_forces], dtype=torch.float64)
            structures = torch.multinomial(sizes, self.n_force, replacement=True, generator=g).tolist()
            for k in structures:
                index = with_forces[k]
                n_comp = 3 * self.train.samples[index].n_atoms
                m = min(self.settings.forces_per_update, n_comp)
                plan.append(("forces", index, torch.randperm(n_comp, generator=g)[:m]))
        order = torch.randperm(len(plan), generator=g).tolist()
        plan = [plan[k] for k in order]
        if self.settings.selection == "threshold" and self.settings.threshold_trials > 1:
            # each update with a positive threshold gets its further candidates (drawn after the
            # plan, so that "random" plans stay what they were)
            plan = [("select", [update] + [self._draw(update) for _ in range(self.settings.threshold_trials - 1)])
                    if self._threshold(update[0]) > 0 else update for update in plan]
        return plan

    def _threshold(self, kind: str) -> float:
        s = self.settings
        return {"energy": s.energy_threshold, "forces": s.force_threshold, "charges": s.charge_threshold}[kind]

    def _draw(self, update: tuple) -> tuple:
        """One more candidate for ``update`` (threshold selection): another random structure, or, for
        forces, other components of the same structure (n2p2's sub-candidates)."""
        g = self.generator
        if update[0] != "forces":
            return (update[0], int(torch.randint(len(self.train), (1,), generator=g)))
        index = update[1]
        n_comp = 3 * self.train.samples[index].n_atoms
        return ("forces", index, torch.randperm(n_comp, generator=g)[:min(self.settings.forces_per_update, n_comp)])

    # ----------------------------------------------------------------------------- threshold selection
    def _predictions(self, kind: str, index: int):
        """``(prediction, reference)`` float64 of structure ``index`` without a graph: the energy per atom
        (eV/atom, scalars), all force components ``[3N]`` (eV/Å) or the charges ``[N]`` (e)."""
        if kind == "charges":
            with torch.no_grad():
                if self.frozen_charges is not None:
                    frozen, reference = self._frozen_charge_inputs(index)
                    q = frozen.charges(self.frozen_charges)
                else:
                    batch = self._batch(index)
                    graph = build_graph(batch.system, batch.neighbors, cutoff=self.model.cutoff)
                    q, _ = self.model.charges(batch.system, graph)
                    reference = batch.charges
            return q.to(torch.float64), reference.to(torch.float64)
        if self.frozen_term is not None:
            frozen, energy_ref, n_atoms, forces_ref = self._frozen_inputs(index)
            short = self.model.terms()[self.frozen_term]
            if kind == "energy":
                with torch.no_grad():
                    return float(frozen.energy(short)) / n_atoms, energy_ref / n_atoms
            components = torch.arange(forces_ref.shape[0])
            return frozen.forces(short, components, create_graph=False).detach().to(torch.float64), forces_ref
        batch = self._batch(index)
        pred = self.model(batch.system, compute_forces=kind == "forces", compute_stress=False,
                          neighbors=batch.neighbors)
        if kind == "energy":
            n = float(batch.n_atoms[0])
            return float(pred["energy"][0]) / n, float(batch.energy[0]) / n
        return pred["forces"].reshape(-1).to(torch.float64), batch.forces.reshape(-1).to(torch.float64)

    def _candidate_error(self, update: tuple, memo: Optional[dict] = None) -> float:
        """A candidate's error: |energy error| per atom, the RMS of its force components' errors, or
        the norm of its charge errors / sqrt(N) (n2p2's measures). ``memo`` keeps a structure's
        predictions between candidates of one selection (force candidates share their structure)."""
        kind, index = update[0], update[1]
        memo = {} if memo is None else memo
        if (kind, index) not in memo:
            memo[kind, index] = self._predictions(kind, index)
        pred, ref = memo[kind, index]
        if kind == "energy":
            return abs(ref - pred)
        if kind == "forces":
            diff = (pred - ref)[update[2]]
            return float(torch.sqrt((diff * diff).mean()))
        return float(torch.linalg.norm(pred - ref)) / math.sqrt(pred.shape[0])

    def training_rmse(self) -> Dict[str, float]:
        """Training-set RMSEs of this stage's quantities, for threshold selection: ``energy`` (eV/atom),
        ``forces`` (eV/Å), ``charges`` (e)."""
        kinds = ["charges"] if self.stage == "charges" else (["energy"] if self.n_energy else []) + (
            ["forces"] if self.n_force else [])
        out = {}
        for kind in kinds:
            squares, count = 0.0, 0
            for index, sample in enumerate(self.train.samples):
                if kind == "forces" and sample.forces is None:
                    continue
                pred, ref = self._predictions(kind, index)
                if kind == "energy":
                    squares, count = squares + (pred - ref) ** 2, count + 1
                else:
                    squares, count = squares + float(((pred - ref) ** 2).sum()), count + pred.shape[0]
            out[kind] = math.sqrt(squares / max(count, 1))
        return out

    def training_metrics(self) -> Optional[Dict[str, float]]:
        """The training set's metrics (those of ``Trainer._validate``) from the frozen inputs, in one pass
        of the networks; None where the stage has no frozen inputs or the data has stresses."""
        frozen_stage = self.frozen_term if self.stage == "energy" else self.frozen_charges
        if frozen_stage is None or any(s.stress is not None for s in self.train.samples):
            return None
        if not hasattr(self, "_all"):
            self._all = collate(self.train.samples).with_energy_offsets(self.offsets).to(device=self.device,
                                                                                            dtype=self.dtype)
        batch = self._all
        system = batch.system
        with torch.no_grad():
            if self.stage == "charges":
                q = torch.cat([self._frozen_charge_inputs(k)[0].charges(self.frozen_charges)
                               for k in range(len(self.train))])
                pred = {"charges": q}
            else:
                short = self.model.terms()[self.frozen_term]
                energies, forces, charges = [], [], []
                for k, sample in enumerate(self.train.samples):
                    frozen, _, _, reference = self._frozen_inputs(k)
                    energies.append(frozen.energy(short))
                    if reference is not None:
                        components = torch.arange(reference.shape[0])
                        forces.append(frozen.forces(short, components, create_graph=False).reshape(-1, 3))
                    else:
                        forces.append(torch.zeros(sample.n_atoms, 3, dtype=self.dtype, device=self.device))
                    if frozen.charges is not None:
                        charges.append(frozen.charges)
                pred = {"energy": torch.stack(energies).to(self.dtype), "forces": torch.cat(forces).detach()}
                if charges:
                    pred["charges"] = torch.cat(charges)
            if "charges" in pred:
                pred["dipole"] = dipole_of(pred["charges"], system.positions, system.batch, system.n_systems)
        accumulator = MetricAccumulator()
        accumulator.update(pred, batch)
        return accumulator.compute()

    def _select(self, candidates: List[tuple], rmse: Dict[str, float]) -> tuple:
        """n2p2's threshold selection: the first candidate above threshold x RMSE, else the last tried
        (``threshold_fallback="last"``, n2p2) or the largest."""
        best, best_fraction, memo = candidates[0], -1.0, {}
        for update in candidates:
            scale = rmse.get(update[0], 0.0)
            fraction = self._candidate_error(update, memo) / scale if scale > 0 else math.inf
            if fraction > self._threshold(update[0]):
                return update
            if fraction > best_fraction:
                best, best_fraction = update, fraction
        return candidates[-1] if self.settings.threshold_fallback == "last" else best

    def run_epoch(self, progress: bool = False, description: str = "",
                  training_rmse: Optional[Dict[str, float]] = None) -> Dict[str, float]:
        """Perform one epoch of updates; returns counts and the RMS of the update errors.

        ``training_rmse``: the last epoch's training RMSEs (keys ``energy`` eV/atom, ``forces`` eV/Å,
        ``charges`` e) for threshold selection; computed here when needed and not given.
        """
        squares: Dict[str, List[float]] = {"energy": [], "forces": [], "charges": []}
        plan = self._plan()
        if any(update[0] == "select" for update in plan) and training_rmse is None:
            training_rmse = self.training_rmse()
        with self.filter.one_blas_thread():
            self._run_updates(plan, squares, progress, description, training_rmse)
        # update errors in the filter's units (energy_unit per atom or structure, energy_unit/length_unit)
        return {f"kalman_{k}_update_rmse": math.sqrt(sum(v) / len(v)) for k, v in squares.items() if v}

    def _run_updates(self, plan: List[tuple], squares: Dict[str, List[float]], progress: bool,
                     description: str, training_rmse: Optional[Dict[str, float]]) -> None:
        for update in tqdm(plan, desc=description, disable=not progress, leave=False, unit="update"):
            if update[0] == "select":
                update = self._select(update[1], training_rmse)
            kind, index = update[0], update[1]
            if kind == "energy":
                obs = self.energy_observation(index)
            elif kind == "forces":
                obs = self.force_observation(index, update[2])
            else:
                obs = self.charge_observation(index)
            if obs is None:
                continue
            errors, jacobian = obs
            self.filter.step(errors, jacobian)
            scale = 1.0
            if kind == "forces":
                scale = self.settings.force_weight * self.settings.length_unit / self.settings.energy_unit
            squares[kind] += (errors / scale).pow(2).tolist()

    # ----------------------------------------------------------------------------- resume
    def state_dict(self) -> dict:
        return {"filter": self.filter.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.filter.load_state_dict(state["filter"])
