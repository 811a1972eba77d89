"""Charge constraints: one total charge per structure, or one per fragment."""

from __future__ import annotations

from typing import Tuple

import torch

from ..system import AtomicSystem

__all__ = ["constraint_groups"]


def constraint_groups(system: AtomicSystem) -> Tuple[torch.Tensor, torch.Tensor]:
    """Constraint group of every atom (global) and the groups' total charges.

    One group per structure, or the fragments when given. Raises ``ValueError`` when a
    fragment spans structures or the fragment charges of a structure do not add up to
    its total charge.
    """
    if system.fragments is None:
        return system.batch, system.charge
    frag = system.fragments.to(torch.long)
    totals = system.fragment_charges.to(system.dtype)
    if frag.shape != (system.n_atoms,):
        raise ValueError(f"fragments must have shape [{system.n_atoms}], got {list(frag.shape)}")
    n_frag = totals.shape[0]
    if bool((frag < 0).any()) or bool((frag >= n_frag).any()):
        raise ValueError(f"fragment indices must be in 0..{n_frag - 1}")
    owner = torch.full((n_frag,), -1, dtype=torch.long, device=frag.device)
    owner = owner.scatter_reduce(0, frag, system.batch, reduce="amax", include_self=True)
    owner_min = torch.full((n_frag,), system.n_systems, dtype=torch.long, device=frag.device)
    owner_min = owner_min.scatter_reduce(0, frag, system.batch, reduce="amin", include_self=True)
    if bool((owner != owner_min).any()):
        raise ValueError("a fragment contains atoms of different structures")
    used = owner >= 0
    per_structure = torch.zeros(system.n_systems, dtype=totals.dtype, device=totals.device).index_add(
        0, owner[used], totals[used]
    )
    bad = (per_structure - system.charge.to(totals.dtype)).abs() > 1e-6
    if bool(bad.any()):
        s = int(torch.nonzero(bad).flatten()[0])
        raise ValueError(
            f"structure {s}: fragment charges add up to {float(per_structure[s]):g} e but the total charge is "
            f"{float(system.charge[s]):g} e"
        )
    return frag, totals


def _local_groups(groups: torch.Tensor, totals: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    uniq, inverse = torch.unique(groups, return_inverse=True)
    return inverse, totals[uniq]
