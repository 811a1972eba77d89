"""Weighted training losses and RMSE/MAE metrics (per quantity and per element).

Quantities and units:

* ``energy``: total energy per atom, eV/atom;
* ``forces``: Cartesian force components, eV/Å;
* ``charges``: atomic charges, e;
* ``dipole``: dipole components, e·Å (about the origin; finite structures);
* ``total_charge``: sum of predicted charges minus the structure's total charge, e;
* ``stress``: stress components (periodic structures), eV/Å^3 (ASE's sign convention).

Each loss term is a mean squared error over the entries that have a reference; the
total loss is ``sum_k w_k MSE_k``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from ase.data import chemical_symbols

from .dataset import Batch

__all__ = ["LossWeights", "QUANTITIES", "UNITS", "compute_loss", "MetricAccumulator", "dipole_of"]

QUANTITIES = ("energy", "forces", "charges", "dipole", "total_charge", "stress")
UNITS = {"energy": "eV/atom", "forces": "eV/Å", "charges": "e", "dipole": "e·Å", "total_charge": "e",
         "stress": "eV/Å^3"}


@dataclass
class LossWeights:
    """Weights of the loss terms (dimension: 1 / unit^2 of each quantity)."""

    energy: float = 1.0
    forces: float = 1.0
    charges: float = 0.0
    dipole: float = 0.0
    total_charge: float = 0.0
    stress: float = 0.0

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> "LossWeights":
        d = dict(d or {})
        unknown = set(d) - set(QUANTITIES)
        if unknown:
            raise ValueError(f"unknown loss weight(s) {sorted(unknown)}; known: {list(QUANTITIES)}")
        out = cls(**{k: float(v) for k, v in d.items()})
        if any(v < 0 for v in asdict(out).values()):
            raise ValueError(f"loss weights must be non-negative, got {asdict(out)}")
        return out


def dipole_of(charges: torch.Tensor, positions: torch.Tensor, batch: torch.Tensor, n_systems: int) -> torch.Tensor:
    """Dipole ``sum_i q_i r_i`` of each structure ``[S, 3]`` (e·Å)."""
    return torch.zeros(n_systems, 3, dtype=charges.dtype, device=charges.device).index_add(
        0, batch, charges.unsqueeze(1) * positions
    )


def _errors(pred: Dict[str, torch.Tensor], batch: Batch) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """(prediction - reference) and a mask per quantity, in the prediction's dtype."""
    out = {}
    some = next(v for v in pred.values() if v.is_floating_point())  # not a diagnostic (bool, int)
    dtype, device = some.dtype, some.device
    ref = lambda t: t.to(device=device, dtype=dtype)
    if "energy" in pred:
        n = ref(batch.n_atoms)
        out["energy"] = ((pred["energy"] - ref(batch.energy)) / n, batch.has_energy.to(device))
    if "forces" in pred:
        out["forces"] = (pred["forces"] - ref(batch.forces), batch.has_forces.to(device))
    if "charges" in pred:
        q = pred["charges"]
        out["charges"] = (q - ref(batch.charges), batch.has_charges.to(device))
        s = batch.system
        total = torch.zeros(s.n_systems, dtype=dtype, device=device).index_add(0, s.batch.to(device), q)
        out["total_charge"] = (total - ref(s.charge), torch.ones(s.n_systems, dtype=torch.bool, device=device))
        if "dipole" in pred:
            out["dipole"] = (pred["dipole"] - ref(batch.dipole), batch.has_dipole.to(device))
    if "stress" in pred and batch.stress is not None:
        out["stress"] = (pred["stress"] - ref(batch.stress), batch.has_stress.to(device))
    return out


def compute_loss(
    pred: Dict[str, torch.Tensor], batch: Batch, weights: LossWeights
) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Weighted sum of mean squared errors.

    Parameters
    ----------
    pred : dict
        Model output (``energy`` [S], ``forces`` [N, 3], ``charges`` [N], ``dipole`` [S, 3];
        any subset).
    batch : Batch
        References (energies already shifted by any energy offsets the model lacks).
    weights : LossWeights

    Returns
    -------
    (loss, parts)
        The scalar loss (differentiable) and the unweighted MSE of each term used.
    """
    errors = _errors(pred, batch)
    some = next(v for v in pred.values() if v.is_floating_point())  # not a diagnostic (bool, int)
    loss = torch.zeros((), dtype=some.dtype, device=some.device)
    parts: Dict[str, float] = {}
    for name, (err, mask) in errors.items():
        w = getattr(weights, name)
        if w == 0 or not bool(mask.any()):
            continue
        mse = (err[mask] ** 2).mean()
        loss = loss + w * mse
        parts[name] = float(mse.detach())
    return loss, parts


class MetricAccumulator:
    """Accumulates RMSE and MAE per quantity and per element over batches.

    Parameters
    ----------
    keep_values : bool
        Also keep (reference, prediction) pairs for parity plots.
    """

    def __init__(self, keep_values: bool = False):
        self.keep_values = keep_values
        self.sq = defaultdict(float)
        self.abs = defaultdict(float)
        self.count = defaultdict(int)
        self.values = defaultdict(lambda: ([], []))

    def _add(self, key: str, err: torch.Tensor) -> None:
        err = err.detach().to(torch.float64).reshape(-1)
        self.sq[key] += float((err**2).sum())
        self.abs[key] += float(err.abs().sum())
        self.count[key] += int(err.numel())

    @torch.no_grad()
    def update(self, pred: Dict[str, torch.Tensor], batch: Batch) -> None:
        """Add one batch of predictions (absolute energies must match ``batch.energy``)."""
        numbers = batch.system.numbers
        for name, (err, mask) in _errors({k: v.detach() for k, v in pred.items()}, batch).items():
            mask = mask.to(err.device)
            if not bool(mask.any()):
                continue
            self._add(name, err[mask])
            if name in ("forces", "charges"):
                z_masked = numbers.to(err.device)[mask]
                for z in z_masked.unique().tolist():
                    self._add(f"{name}_{chemical_symbols[z]}", err[mask][z_masked == z])
            if self.keep_values and name in ("energy", "forces", "charges", "dipole", "stress"):
                p = pred[name].detach().to(torch.float64).cpu()
                if name == "energy":
                    n = batch.n_atoms.to(torch.float64)
                    r, p = batch.energy / n, p / n
                else:
                    r = getattr(batch, name)
                m = mask.cpu()
                self.values[name][0].append(r[m].reshape(-1).numpy())
                self.values[name][1].append(p[m].reshape(-1).numpy())

    def compute(self) -> Dict[str, float]:
        """``{"<quantity>_rmse": .., "<quantity>_mae": .., "<quantity>_<El>_rmse": ..}``."""
        out = {}
        for key in sorted(self.count):
            n = self.count[key]
            out[f"{key}_rmse"] = float(np.sqrt(self.sq[key] / n))
            out[f"{key}_mae"] = self.abs[key] / n
        return out

    def parity_data(self) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
        """(reference, prediction) arrays per quantity (needs ``keep_values=True``)."""
        return {k: (np.concatenate(r), np.concatenate(p)) for k, (r, p) in self.values.items() if r}

    def table(self) -> str:
        """A plain-text RMSE/MAE table."""
        m = self.compute()
        rows = [f"{'quantity':<18s} {'unit':>8s} {'RMSE':>12s} {'MAE':>12s} {'n':>8s}"]
        for key in sorted(self.count, key=lambda k: (QUANTITIES.index(k.split('_')[0]) if k.split('_')[0] in QUANTITIES
                                                       else 99, k)):
            base = "total_charge" if key.startswith("total_charge") else key.split("_")[0]
            rows.append(f"{key:<18s} {UNITS.get(base, ''):>8s} {m[key + '_rmse']:12.6g} {m[key + '_mae']:12.6g} "
                        f"{self.count[key]:8d}")
        return "\n".join(rows)
