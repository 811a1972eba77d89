"""Charges given with the input (no equilibration)."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn

from ..descriptors import element_number
from ..neighbors import Graph
from ..system import AtomicSystem

__all__ = ["FixedCharges"]


class FixedCharges(nn.Module):
    """Charges given with the input (``system.initial_charges``, e.g. ase initial charges).

    Parameters
    ----------
    sigma : float or dict, optional
        Gaussian width (Å) for all atoms, or per element (symbol or atomic number);
        None: point charges.
    """

    cutoff = 0.0

    def __init__(self, sigma: Optional[float | Dict] = None):
        super().__init__()
        table = torch.full((119,), float("nan"), dtype=torch.float64)
        self.point_charges = sigma is None
        if isinstance(sigma, dict):
            for k, v in sigma.items():
                table[element_number(k)] = float(v)
        elif sigma is not None:
            table[:] = float(sigma)
        if bool((table[~torch.isnan(table)] <= 0).any()):
            raise ValueError(f"Gaussian widths must be positive, got {sigma}")
        self.register_buffer("sigma_table", table)

    def forward(self, system: AtomicSystem, graph: Optional[Graph] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(q [N] e, sigma [N] Å or None)``; zero charges when the input has none."""
        q = system.initial_charges
        if q is None:
            q = torch.zeros(system.n_atoms, dtype=system.dtype, device=system.device)
        if q.shape != (system.n_atoms,):
            raise ValueError(f"initial charges must have shape [{system.n_atoms}], got {list(q.shape)}")
        if self.point_charges:
            return q, None
        sigma = self.sigma_table.to(system.dtype)[system.numbers]
        if bool(torch.isnan(sigma).any()):
            missing = sorted(set(system.numbers[torch.isnan(sigma)].tolist()))
            raise ValueError(f"FixedCharges has no Gaussian width for element(s) {missing}")
        return q, sigma
