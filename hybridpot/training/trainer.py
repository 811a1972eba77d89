"""Training loop: the n2p2-style two-stage 4G schedule, checkpoints that resume bit-exactly.

Stages
------
``"charges"`` (4G models whose charge term has parameters, when the training data has
reference charges or dipoles): only the charge model (electronegativity networks,
hardness, widths) is optimised, against reference charges and/or dipoles (weights
``charge_weights``; structures without a reference for a quantity are masked out of that
term, so dipoles alone can train the charge model) and optionally the total charge.

``"energy"``: the charge model is frozen; the other parameters (short range, learnable
dispersion scale, ...) are optimised against energies per atom and forces. The model's
total energy includes electrostatics and dispersion, so the short range learns the
reference minus those terms. Per-element energy offsets are fitted by least squares to
(reference - electrostatics - dispersion) of the training split and kept in float64
outside the network during training (so float32 training never handles large absolute
energies); they are stored in ``ShortRange.atomic_energy_offset`` of the saved model.

A 2G model (short range only) has only the energy stage.

Every stage: Adam, a learning-rate schedule, gradient-norm clipping, early stopping on
the validation loss, the best weights restored at the end. Each epoch writes
``checkpoint.pt`` (model, optimiser, scheduler, RNG states, epoch, history), so a killed
run resumed with ``fit(resume=True)`` ends with the same weights, bit for bit on CPU,
as an uninterrupted run. ``metrics.jsonl`` gets one line per epoch, ``learning_curve.png`` the
RMSEs per epoch at the end; ``best_model.pt``
and ``model.pt`` are float64 models loadable with :func:`hybridpot.load`.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..descriptors import SymmetryFunctions
from ..model import save
from ..neighbors import build_graph
from ..terms import call_charge_model
from .config import TrainingConfig
from .dataset import AtomsDataset, Batch
from .losses import LossWeights, MetricAccumulator, compute_loss, dipole_of
from .preprocessing import fit_descriptor_scaling, fit_energy_offsets
from .devices import resolve_device
from .threads import apply_threads

__all__ = ["Trainer", "evaluate_model", "TrainingInterrupted"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class TrainingInterrupted(RuntimeError):
    """Raised by a callback to stop training (the last checkpoint stays resumable)."""


def _numpy_rng_state() -> dict:
    """numpy's global RNG state as tensors and numbers (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_rng_state(state: dict) -> None:
    np.random.set_state((state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"],
                         state["cached_gaussian"]))


def load_checkpoint(path) -> dict:
    """A training checkpoint, read without running code from the file (``weights_only``).

    Checkpoints hold state dicts, optimiser and scheduler states, RNG states (tensors and
    numbers) and the training config: no pickled objects. Old checkpoints that hold pickled
    numpy objects are refused with :class:`~hybridpot.serialization.UntrustedFileError`
    (start the run again, or train from the old run's model with ``model.from_file``).
    """
    from ..serialization import ModelFileError, safe_torch_load

    ckpt = safe_torch_load(path, what="training checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != "hybridpot-checkpoint":
        raise ModelFileError(f"{path}: not a hybridpot training checkpoint")
    return ckpt


def _loss_from_metrics(metrics: Dict[str, float], weights: LossWeights) -> float:
    total = 0.0
    for name, w in asdict(weights).items():
        key = f"{name}_rmse"
        if w > 0 and key in metrics:
            total += w * metrics[key] ** 2
    return total


def _detach_cached_tensors(model: nn.Module) -> None:
    """Detach non-leaf tensors that modules keep as plain attributes (e.g. a last energy),
    which would make ``copy.deepcopy`` and pickling fail."""
    for m in model.modules():
        for k, v in list(vars(m).items()):
            if isinstance(v, torch.Tensor) and v.grad_fn is not None:
                setattr(m, k, v.detach())


def _copy_model(model: nn.Module) -> nn.Module:
    _detach_cached_tensors(model)
    return copy.deepcopy(model)


def _has_parameters(module: Optional[nn.Module]) -> bool:
    return module is not None and any(True for _ in module.parameters())


@torch.no_grad()
def _other_energies(model: nn.Module, dataset: AtomsDataset, batch_size: int) -> np.ndarray:
    """Energies of every term but the short range (eV, float64), one per structure."""
    m = _copy_model(model).to(torch.float64).without("short_range")
    if m is None:  # no energy term besides the short range
        return np.zeros(len(dataset))
    out = []
    for batch in dataset.batches(batch_size):
        pred = m(batch.system, compute_forces=False, compute_stress=False, neighbors=batch.neighbors)
        out.append(pred["energy"].cpu().numpy())
    return np.concatenate(out)


def evaluate_model(
    model: nn.Module,
    dataset: AtomsDataset,
    batch_size: int = 16,
    keep_values: bool = False,
    dtype: torch.dtype = torch.float64,
    energy_offsets: Optional[torch.Tensor] = None,
    device: Optional[str | torch.device] = None,
    progress: bool = False,
) -> MetricAccumulator:
    """Metrics of ``model`` (converted to ``dtype``, moved to ``device`` when given) on ``dataset``.

    ``energy_offsets`` ([119], eV) are subtracted from the reference energies when the
    model does not contain them (during training). ``progress`` shows a progress bar
    (structures per second).
    """
    model = model.to(dtype) if device is None else model.to(device=resolve_device(str(device)), dtype=dtype)
    model.eval()
    acc = MetricAccumulator(keep_values=keep_values)
    want_forces = dataset.has("forces")
    want_stress = dataset.has("stress")
    bar = tqdm(total=len(dataset), desc="evaluate", unit="structure", disable=not progress, leave=False)
    for batch in dataset.batches(batch_size):
        if energy_offsets is not None:
            batch = batch.with_energy_offsets(energy_offsets)
        pred = model(batch.system, compute_forces=want_forces, compute_stress=want_stress, neighbors=batch.neighbors)
        acc.update(pred, batch)
        bar.update(batch.system.n_systems)
    bar.close()
    return acc


class Trainer:
    """Fits a :class:`~hybridpot.model.HybridPotential` to reference data.

    Parameters
    ----------
    model : HybridPotential
        The model (float64 on entry; trained in ``config.dtype``).
    train, validation : AtomsDataset
        Training and validation splits (``validation`` may be None: the training loss then
        drives early stopping and model selection).
    config : TrainingConfig, optional
    directory : str or Path, optional
        Run directory for checkpoints, models and the metrics log (None: nothing written,
        no resume).
    scaling : str or None
        Symmetry-function scaling mode fitted on ``train`` before training ("scalecenter",
        "scale", "center", "sigma", "none"); None keeps the model's scaling.
    scaling_range : (float, float)
        Target interval ``(S_min, S_max)`` of the scaling.
    progress : bool
        Show tqdm progress bars with live losses.
    callback : callable, optional
        ``callback(trainer, stage, epoch, record)`` after each epoch's checkpoint; raise
        :class:`TrainingInterrupted` to stop.
    ddp : bool
        Data-parallel training with ``torch.distributed`` DistributedDataParallel (the
        default process group must be initialised, e.g. under torchrun). Every process
        passes the same datasets and config; ``config.batch_size`` is the global batch,
        split over the processes; the result equals a single-process run with the same
        batch size (see :mod:`hybridpot.training.distributed`). Only rank 0 writes files.
    """

    def __init__(
        self,
        model: nn.Module,
        train: AtomsDataset,
        validation: Optional[AtomsDataset] = None,
        config: Optional[TrainingConfig] = None,
        directory: Optional[str | Path] = None,
        scaling: Optional[str] = "scalecenter",
        scaling_range=(-1.0, 1.0),
        progress: bool = True,
        callback: Optional[Callable] = None,
        ddp: bool = False,
    ):
        self.ddp = bool(ddp)
        if self.ddp:
            import torch.distributed as dist

            if not (dist.is_available() and dist.is_initialized()):
                raise ValueError("ddp=True needs an initialised torch.distributed process group")
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        else:
            self.rank, self.world_size = 0, 1
        self.model = model
        self.train = train
        self.validation = validation if validation is not None and len(validation) > 0 else None
        self.config = config if config is not None else TrainingConfig()
        self.directory = Path(directory) if directory is not None else None
        self.scaling = scaling
        self.scaling_range = tuple(float(x) for x in scaling_range)
        self.progress = progress
        self.callback = callback
        self.dtype = _DTYPES[self.config.dtype]
        self.device = resolve_device(self.config.device, ddp=self.ddp)
        for name, ds in (("train", train), ("validation", self.validation)):
            if ds is not None and ds.cutoff < model.cutoff - 1e-12:
                raise ValueError(f"{name} neighbour lists ({ds.cutoff} Å) are shorter than the model cutoff ({model.cutoff} Å)")
        self.energy_weights = LossWeights.from_dict(self.config.weights)
        self.charge_weights = LossWeights.from_dict({"energy": 0.0, "forces": 0.0, **self.config.charge_weights})
        self.stages: List[str] = []
        has_charge_refs = train.has("charges") or train.has("dipole")
        if _has_parameters(model.charge_model) and has_charge_refs and self.config.charge_epochs > 0:
            self.stages.append("charges")
        if self.config.epochs > 0:
            self.stages.append("energy")
        self.offsets = torch.zeros(119, dtype=torch.float64)
        self.history: List[dict] = []
        self.generator = torch.Generator().manual_seed(int(self.config.seed))

    # ------------------------------------------------------------------ helpers
    @property
    def short_range(self):
        return getattr(self.model, "short_range", None)

    def _descriptors(self) -> List[SymmetryFunctions]:
        seen, out = set(), []
        for m in self.model.modules():
            if isinstance(m, SymmetryFunctions) and id(m) not in seen:
                seen.add(id(m))
                out.append(m)
        return out

    def _stage_parameters(self, stage: str) -> List[nn.Parameter]:
        charge_model = self.model.charge_model
        charge_params = {id(p) for p in charge_model.parameters()} if charge_model is not None else set()
        if stage == "charges":
            return list(charge_model.parameters())
        return [p for p in self.model.parameters() if id(p) not in charge_params]

    def _set_trainable(self, stage: str) -> None:
        trainable = {id(p) for p in self._stage_parameters(stage)}
        for p in self.model.parameters():
            p.requires_grad_(id(p) in trainable)

    def _make_optimizer(self, stage: str, n_epochs: int):
        lr = self.config.charge_lr if stage == "charges" else self.config.lr
        opt = torch.optim.Adam(self._stage_parameters(stage), lr=lr)
        sc = self.config.scheduler
        if sc.kind == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=sc.factor, patience=sc.patience, min_lr=sc.min_lr)
        elif sc.kind == "exponential":
            sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=sc.gamma)
        elif sc.kind == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(n_epochs, 1), eta_min=sc.min_lr)
        else:
            sched = None
        return opt, sched

    def _weights(self, stage: str) -> LossWeights:
        return self.charge_weights if stage == "charges" else self.energy_weights

    def _predict(self, stage: str, batch: Batch, training: bool) -> Dict[str, torch.Tensor]:
        system = batch.system
        if stage == "charges":
            with torch.set_grad_enabled(training):
                graph = build_graph(system, batch.neighbors, cutoff=self.model.cutoff)
                q, _, _ = call_charge_model(self.model.charge_model, system, graph, None)
                return {"charges": q, "dipole": dipole_of(q, system.positions, system.batch, system.n_systems)}
        w = self.energy_weights
        need_forces = bool(batch.has_forces.any()) and (w.forces > 0 or not training)
        need_stress = batch.has_stress is not None and bool(batch.has_stress.any()) and (w.stress > 0 or not training)
        return self.model(
            system, compute_forces=need_forces, compute_stress=need_stress, create_graph=training,
            neighbors=batch.neighbors,
        )

    def _last_training_rmse(self, stage: str) -> Optional[Dict[str, float]]:
        """The last epoch's training RMSEs of ``stage`` (for the Kalman filter's threshold selection), or None."""
        for record in reversed(self.history):
            if record["stage"] == stage:
                keys = {"energy": "train_energy_rmse", "forces": "train_forces_rmse", "charges": "train_charges_rmse"}
                return {k: float(record[v]) for k, v in keys.items() if v in record}
            break
        return None

    def _validate(self, stage: str, dataset: AtomsDataset) -> Dict[str, float]:
        self.model.eval()
        acc = MetricAccumulator()
        for batch, real in self._batches(dataset, shuffle=False):
            batch = batch.with_energy_offsets(self.offsets).to(device=self.device, dtype=self.dtype)
            pred = self._predict(stage, batch, training=False)
            if real:
                acc.update(pred, batch)
        if self.ddp:
            from .distributed import merge_metrics

            acc = merge_metrics(acc)
        return acc.compute()

    def _file(self, name: str) -> Optional[Path]:
        """Path of an output file (None without a run directory, and on ranks > 0)."""
        return None if self.directory is None or self.rank != 0 else self.directory / name

    def _batches(self, dataset: AtomsDataset, shuffle: bool):
        """``(batch, real)`` pairs: whole batches, or this process's shard of each under DDP."""
        if not self.ddp:
            for batch in dataset.batches(self.config.batch_size, shuffle=shuffle, generator=self.generator if shuffle else None):
                yield batch, True
            return
        from .distributed import shard_batches

        yield from shard_batches(dataset, self.config.batch_size, self.rank, self.world_size, shuffle=shuffle,
                                 generator=self.generator if shuffle else None)

    def export_model(self) -> nn.Module:
        """A float64 copy of the current model with the energy offsets stored in it."""
        m = _copy_model(self.model).to(device="cpu", dtype=torch.float64)
        for p in m.parameters():
            p.requires_grad_(True)
        if self.short_range is not None:
            m.short_range.atomic_energy_offset.copy_(self.offsets)
        charge_model = getattr(m, "charges", None)
        if charge_model is not None and hasattr(charge_model, "training_charge_range"):
            # total charges far outside these get a TotalChargeWarning when the model is used
            totals = torch.cat([s.system.charge.reshape(-1) for s in self.train.samples]).to(torch.float64)
            charge_model.training_charge_range = (float(totals.min()), float(totals.max()))
        m.eval()
        return m

    def _write_log(self) -> None:
        path = self._file("metrics.jsonl")
        if path is None:
            return
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in self.history))
        os.replace(tmp, path)

    def _append_log(self, record: dict) -> None:
        path = self._file("metrics.jsonl")
        if path is None:
            return
        if len(self.history) == 1:
            path.write_text("")
        with open(path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def _save_checkpoint(self, state: dict) -> None:
        path = self._file("checkpoint.pt")
        if path is None:
            return
        payload = {
            "format": "hybridpot-checkpoint",
            **state,
            "model_state": self.model.state_dict(),
            "offsets": self.offsets.clone(),
            "history": list(self.history),
            "generator_state": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": _numpy_rng_state(),
            "python_rng": list(random.getstate()),
            "config": asdict(self.config),
        }
        tmp = path.with_suffix(".pt.tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)

    # ------------------------------------------------------------------ preparation
    def prepare(self) -> None:
        """Fit descriptor scaling on the training split (float64, before training)."""
        if self.scaling is not None:
            for d in self._descriptors():
                fit_descriptor_scaling(d.to(torch.float64), self.train, mode=self.scaling,
                                       s_min=self.scaling_range[0], s_max=self.scaling_range[1])

    def _start_energy_stage(self) -> None:
        """Energy offsets from the training split, for what the short range must fit."""
        sr = self.short_range
        if sr is None:
            return
        existing = sr.atomic_energy_offset.detach().to(torch.float64).cpu().clone()
        if self.config.fit_energy_offsets and self.train.has("energy"):
            other = _other_energies(self.model, self.train, self.config.batch_size)
            energies = np.array([s.energy for s in self.train.samples]) - other
            self.offsets = fit_energy_offsets(self.train, sr.elements, energies)
        else:
            self.offsets = self.offsets + existing
        with torch.no_grad():
            sr.atomic_energy_offset.zero_()

    # ------------------------------------------------------------------ main loop
    def fit(self, resume: bool = False) -> nn.Module:
        """Run all stages; return the best model (float64, offsets included).

        With ``resume=True`` and a ``checkpoint.pt`` in the run directory, training
        continues from it (the model passed in must have the same architecture).
        """
        threads, reason = apply_threads(self.config.threads)
        if self.progress and self.rank == 0:
            tqdm.write(f"training on {threads} torch thread(s): {reason}")
        ckpt = None
        if resume:
            if self.directory is None:
                raise ValueError("resume needs a run directory")
            path = self.directory / "checkpoint.pt"  # every rank reads it
            if path.exists():
                ckpt = load_checkpoint(path)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

        if ckpt is None:
            self.prepare()
            self.model.to(device=self.device, dtype=self.dtype)
            if self.short_range is not None:
                # offsets live in float64 outside the network during training
                self.offsets = self.short_range.atomic_energy_offset.detach().to(torch.float64).cpu().clone()
                with torch.no_grad():
                    self.short_range.atomic_energy_offset.zero_()
            start_stage, stage_state = 0, None
        else:
            self.model.to(device=self.device, dtype=self.dtype)
            self.model.load_state_dict(ckpt["model_state"])
            self.offsets = ckpt["offsets"]
            self.history = list(ckpt["history"])
            self.generator.set_state(ckpt["generator_state"])
            torch.set_rng_state(ckpt["torch_rng"])
            _set_numpy_rng_state(ckpt["numpy_rng"])
            version, internal, gauss = ckpt["python_rng"]
            random.setstate((version, tuple(internal), gauss))
            start_stage = ckpt["stage_index"]
            stage_state = ckpt if ckpt.get("optimizer_state") is not None else None
            self._write_log()

        for k in range(start_stage, len(self.stages)):
            self._run_stage(k, stage_state)
            stage_state = None
        for p in self.model.parameters():
            p.requires_grad_(True)
        final = self.export_model()
        if self._file("model.pt") is not None:
            save(final, self.directory / "model.pt")
        if self._file("learning_curve.png") is not None and self.history:
            from .plots import learning_curve_plot

            learning_curve_plot(self.history, self.directory / "learning_curve.png")
        return final

    def _run_stage(self, k: int, state: Optional[dict]) -> None:
        stage = self.stages[k]
        cfg = self.config
        n_epochs = cfg.charge_epochs if stage == "charges" else cfg.epochs
        weights = self._weights(stage)
        self._set_trainable(stage)
        if state is None and stage == "energy":
            self._start_energy_stage()
        kalman = None
        if cfg.optimizer == "kalman":
            if self.ddp:
                raise ValueError("optimizer 'kalman' does not run under DDP (one global filter): use 'adam'")
            from .kalman_fit import KalmanEpochs, KalmanSettings

            self.train.cache_descriptors()  # single-structure updates on fixed structures: descriptors once
            kalman = KalmanEpochs(self.model, self._stage_parameters(stage), self.train, stage,
                                  KalmanSettings(**cfg.kalman), self.offsets, self.dtype, self.generator,
                                  device=self.device)
            opt, sched = kalman, None
        elif cfg.optimizer != "adam":
            raise ValueError(f"training.optimizer must be 'adam' or 'kalman', got {cfg.optimizer!r}")
        else:
            opt, sched = self._make_optimizer(stage, n_epochs)
        forward = lambda batch: self._predict(stage, batch, training=True)
        if self.ddp:
            from torch.nn.parallel import DistributedDataParallel

            from .distributed import StageForward, distributed_loss, merge_metrics

            ddp_module = DistributedDataParallel(StageForward(self, stage), find_unused_parameters=True)
            forward = lambda batch: ddp_module(batch, True)
        if state is None:
            start_epoch, best_loss, bad = 0, math.inf, 0
            best_state = copy.deepcopy(self.model.state_dict())
        else:
            opt.load_state_dict(state["optimizer_state"])
            if sched is not None:
                sched.load_state_dict(state["scheduler_state"])
            start_epoch, best_loss, bad = state["epoch"], state["best_loss"], state["bad_epochs"]
            best_state = state["best_state"]

        bar = tqdm(range(start_epoch, n_epochs), desc=f"{stage}", disable=not self.progress or self.rank != 0,
                   initial=start_epoch,
                   total=n_epochs, unit="epoch", leave=True)
        stopped = False
        for epoch in bar:
            t0 = time.perf_counter()
            self.model.train()
            acc = MetricAccumulator()
            if kalman is not None:
                kalman.run_epoch(progress=self.progress, description=f"{stage} epoch {epoch + 1}",
                                 training_rmse=self._last_training_rmse(stage))
            inner = tqdm(self._batches(self.train, shuffle=True) if kalman is None else iter(()),
                         total=self.train.n_batches(cfg.batch_size), desc=f"{stage} epoch {epoch + 1}",
                         disable=not self.progress or self.rank != 0, leave=False, unit="batch")
            for batch, real in inner:
                batch = batch.with_energy_offsets(self.offsets).to(device=self.device, dtype=self.dtype)
                pred = forward(batch)
                if self.ddp:
                    loss, parts = distributed_loss(pred, batch, weights, self.world_size, real)
                else:
                    loss, parts = compute_loss(pred, batch, weights)
                opt.zero_grad(set_to_none=True)
                if loss.requires_grad:
                    # parameter gradients only: with force losses a plain backward() would also
                    # accumulate into the positions leaf, i.e. compute second derivatives of the
                    # descriptors that nobody reads (the compiled engine's slow exact fallback)
                    loss.backward(inputs=[p for p in self.model.parameters() if p.requires_grad])
                    if cfg.clip_grad_norm > 0:
                        torch.nn.utils.clip_grad_norm_(self._stage_parameters(stage), cfg.clip_grad_norm)
                    opt.step()
                if real:
                    acc.update(pred, batch)
                inner.set_postfix(loss=f"{float(loss.detach()):.3e}")
            if self.ddp:
                acc = merge_metrics(acc)
            # Kalman updates are single-structure: the epoch's training metrics come from one pass after it
            train_metrics = acc.compute() if kalman is None else kalman.training_metrics()
            if train_metrics is None:
                train_metrics = self._validate(stage, self.train)
            train_loss = _loss_from_metrics(train_metrics, weights)
            val_metrics = self._validate(stage, self.validation) if self.validation is not None else {}
            val_loss = _loss_from_metrics(val_metrics, weights) if self.validation is not None else train_loss
            lr = opt.param_groups[0]["lr"] if kalman is None else kalman.filter.eta
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step(val_loss)
            elif sched is not None:
                sched.step()
            improved = val_loss < best_loss * (1.0 - cfg.early_stopping_min_delta)
            if improved:
                best_loss, bad = val_loss, 0
                best_state = copy.deepcopy(self.model.state_dict())
                if self._file("best_model.pt") is not None:
                    save(self.export_model(), self.directory / "best_model.pt")
            else:
                bad += 1
            record = {"stage": stage, "epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "val_loss": val_loss,
                      "best": bool(improved), "time_s": time.perf_counter() - t0}
            record.update({f"train_{k_}": v for k_, v in train_metrics.items()})
            record.update({f"val_{k_}": v for k_, v in val_metrics.items()})
            self.history.append(record)
            self._append_log(record)
            stopped = cfg.early_stopping_patience > 0 and bad >= cfg.early_stopping_patience
            last = stopped or epoch + 1 == n_epochs
            if not last and cfg.checkpoint_every > 0 and (epoch + 1) % cfg.checkpoint_every == 0:
                self._save_checkpoint({
                    "stage_index": k, "stage": stage, "epoch": epoch + 1,
                    "optimizer_state": opt.state_dict(),
                    "scheduler_state": sched.state_dict() if sched is not None else None,
                    "best_loss": best_loss, "best_state": best_state, "bad_epochs": bad,
                })
            key, unit = ("charges_rmse", "e") if stage == "charges" else ("energy_rmse", "eV/atom")
            value = val_metrics.get(key, train_metrics.get(key, float("nan")))
            bar.set_postfix_str(f"loss train {train_loss:.3e} val {val_loss:.3e} (weighted), "
                                f"{'val ' if key in val_metrics else 'train '}{key} {value:.3g} {unit}")
            if self.callback is not None:
                self.callback(self, stage, epoch + 1, record)
            if stopped:
                break
        bar.close()
        self.model.load_state_dict(best_state)
        # the stage is done: the next one starts from this state
        self._save_checkpoint({"stage_index": k + 1, "stage": stage, "epoch": 0, "optimizer_state": None})
