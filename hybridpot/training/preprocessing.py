"""Statistics from the training split: symmetry-function scaling and per-element energy offsets."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from ..descriptors import SymmetryFunctions
from ..neighbors import build_graph
from .dataset import AtomsDataset

__all__ = ["raw_features", "fit_descriptor_scaling", "fit_energy_offsets"]


@torch.no_grad()
def raw_features(descriptor: SymmetryFunctions, dataset: AtomsDataset, batch_size: int = 32):
    """Unscaled symmetry functions of every atom of ``dataset``.

    Returns
    -------
    (features, numbers) : ``[N_total, max_features]`` float64 and ``[N_total]`` int64.
    """
    if dataset.cutoff < descriptor.cutoff - 1e-12:
        raise ValueError(f"dataset neighbour lists ({dataset.cutoff} Å) are shorter than the descriptor cutoff "
                         f"({descriptor.cutoff} Å)")
    dtype = descriptor.scale_shift.dtype
    feats, numbers = [], []
    for batch in dataset.batches(batch_size):
        system = batch.system.to(dtype=dtype, device=descriptor.scale_shift.device)
        graph = build_graph(system, batch.neighbors, cutoff=descriptor.cutoff)
        feats.append(descriptor(system.numbers, graph, scaled=False).to(torch.float64).cpu())
        numbers.append(system.numbers.cpu())
    return torch.cat(feats), torch.cat(numbers)


def fit_descriptor_scaling(
    descriptor: SymmetryFunctions,
    train: AtomsDataset,
    mode: str = "scalecenter",
    s_min: float = -1.0,
    s_max: float = 1.0,
    batch_size: int = 32,
) -> None:
    """Set ``descriptor``'s scaling from the raw features of the training split only (in place).

    ``mode`` as in :meth:`SymmetryFunctions.set_scaling` (n2p2's ``scale``, ``center``,
    ``scalecenter``, ``sigma`` or ``none``).
    """
    features, numbers = raw_features(descriptor, train, batch_size)
    descriptor.fit_scaling(features, numbers, mode=mode, s_min=s_min, s_max=s_max)


def fit_energy_offsets(
    train: AtomsDataset,
    elements: Sequence[int],
    energies: Optional[np.ndarray] = None,
) -> torch.Tensor:
    """Per-element reference energies by linear least squares, ``E_s ≈ sum_Z n_{s,Z} e_Z``.

    Parameters
    ----------
    train : AtomsDataset
        Training split (only structures with a reference energy are used).
    elements : sequence of int
        Elements to fit; others get 0.
    energies : numpy.ndarray, optional
        Energies to fit instead of the references, ``[len(train)]`` (eV), e.g. the
        reference minus electrostatics and dispersion for the short range of a 4G model.

    Returns
    -------
    torch.Tensor
        ``[119]`` float64, eV, indexed by atomic number. With linearly dependent
        compositions (e.g. one stoichiometry), the minimum-norm solution is returned.
    """
    elements = [int(z) for z in elements]
    counts = train.composition(elements)
    e = np.array([s.energy for s in train.samples], dtype=np.float64) if energies is None else np.asarray(energies, dtype=np.float64)
    if e.shape != (len(train),):
        raise ValueError(f"energies must have shape ({len(train)},), got {e.shape}")
    use = np.isfinite(e)
    if not use.any():
        raise ValueError("no reference energies to fit energy offsets to")
    solution, *_ = np.linalg.lstsq(counts[use], e[use], rcond=None)
    out = torch.zeros(119, dtype=torch.float64)
    out[elements] = torch.as_tensor(solution, dtype=torch.float64)
    return out
