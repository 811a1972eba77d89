"""Reference datasets: structures with precomputed neighbour lists, batching and splits.

A :class:`AtomsDataset` holds one :class:`Sample` per structure: the structure as a
float64 :class:`~hybridpot.system.AtomicSystem`, its neighbour list (computed once, at the
dataset's cutoff) and its reference quantities. :meth:`AtomsDataset.batches` concatenates
samples of any sizes and elements into :class:`Batch` es (one ``AtomicSystem`` and one
``NeighborList`` each, ready for ``model(batch.system, neighbors=batch.neighbors)``).

Units: energies eV, forces eV/Å, charges e, dipoles e·Å.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from ase import Atoms

from ..io import ReferenceKeys, read_structures, reference_values
from ..neighbors import NeighborList, compute_neighbors
from ..system import AtomicSystem

__all__ = ["Sample", "Batch", "AtomsDataset", "collate"]


@dataclass
class Sample:
    """One reference structure.

    Attributes
    ----------
    system : AtomicSystem
        The structure (float64, one system).
    neighbors : NeighborList
        Its full neighbour list (atom indices local to the structure).
    energy : float
        Reference total energy (eV); NaN when absent.
    forces : torch.Tensor, optional
        Reference forces ``[n, 3]`` (eV/Å).
    charges : torch.Tensor, optional
        Reference atomic charges ``[n]`` (e).
    dipole : torch.Tensor, optional
        Reference dipole ``[3]`` (e·Å).
    stress : torch.Tensor, optional
        Reference stress ``[3, 3]`` (eV/Å^3, ASE's sign convention; periodic structures).
    """

    system: AtomicSystem
    neighbors: NeighborList
    energy: float = float("nan")
    forces: Optional[torch.Tensor] = None
    charges: Optional[torch.Tensor] = None
    dipole: Optional[torch.Tensor] = None
    stress: Optional[torch.Tensor] = None

    @property
    def n_atoms(self) -> int:
        return self.system.n_atoms


@dataclass
class Batch:
    """Several samples concatenated; missing references are NaN/zero with a ``has_*`` mask.

    Attributes
    ----------
    system : AtomicSystem
        ``S`` structures, ``N`` atoms.
    neighbors : NeighborList
        Global atom indices.
    energy : torch.Tensor
        ``[S]`` float64 (eV), zero where ``has_energy`` is False.
    forces : torch.Tensor
        ``[N, 3]`` float64 (eV/Å).
    charges : torch.Tensor
        ``[N]`` float64 (e).
    dipole : torch.Tensor
        ``[S, 3]`` float64 (e·Å).
    stress : torch.Tensor
        ``[S, 3, 3]`` float64 (eV/Å^3).
    has_energy, has_dipole, has_stress : torch.Tensor
        ``[S]`` bool.
    has_forces, has_charges : torch.Tensor
        ``[N]`` bool.
    n_atoms : torch.Tensor
        Atoms per structure ``[S]`` (int64).
    index : torch.Tensor
        Positions of the samples in their dataset ``[S]``.
    """

    system: AtomicSystem
    neighbors: NeighborList
    energy: torch.Tensor
    forces: torch.Tensor
    charges: torch.Tensor
    dipole: torch.Tensor
    has_energy: torch.Tensor
    has_forces: torch.Tensor
    has_charges: torch.Tensor
    has_dipole: torch.Tensor
    n_atoms: torch.Tensor
    index: torch.Tensor
    stress: Optional[torch.Tensor] = None
    has_stress: Optional[torch.Tensor] = None

    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "Batch":
        """The system in ``dtype``/``device``; references stay float64 (moved to ``device``)."""
        mv = lambda t: t.to(device=device)
        return replace(
            self,
            system=self.system.to(device=device, dtype=dtype),
            neighbors=self.neighbors.to(device) if device is not None else self.neighbors,
            energy=mv(self.energy), forces=mv(self.forces), charges=mv(self.charges), dipole=mv(self.dipole),
            has_energy=mv(self.has_energy), has_forces=mv(self.has_forces), has_charges=mv(self.has_charges),
            has_dipole=mv(self.has_dipole), n_atoms=mv(self.n_atoms), index=mv(self.index),
            stress=None if self.stress is None else mv(self.stress),
            has_stress=None if self.has_stress is None else mv(self.has_stress),
        )

    def with_energy_offsets(self, offsets: torch.Tensor) -> "Batch":
        """Subtract per-element reference energies (``[119]``, eV, indexed by Z) from ``energy`` (float64)."""
        per_atom = offsets.to(torch.float64)[self.system.numbers]
        total = torch.zeros_like(self.energy).index_add(0, self.system.batch, per_atom)
        return replace(self, energy=torch.where(self.has_energy, self.energy - total, self.energy))


def collate(samples: Sequence[Sample], index: Optional[Sequence[int]] = None) -> Batch:
    """Concatenate samples into one :class:`Batch` (no Python loop over atoms)."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    system = AtomicSystem.concatenate([s.system for s in samples])
    offsets = system.ptr[:-1].tolist()
    if len(samples) == 1:
        nl = samples[0].neighbors  # the sample's own list (and its descriptor store, if any)
    else:
        nl = NeighborList(
            i=torch.cat([s.neighbors.i + o for s, o in zip(samples, offsets)]),
            j=torch.cat([s.neighbors.j + o for s, o in zip(samples, offsets)]),
            shifts=torch.cat([s.neighbors.shifts for s in samples]),
            cutoff=min(s.neighbors.cutoff for s in samples),
        )
    f64 = torch.float64

    def per_atom(name, width):
        parts, mask = [], []
        for s in samples:
            v = getattr(s, name)
            shape = (s.n_atoms, width) if width else (s.n_atoms,)
            parts.append(torch.zeros(shape, dtype=f64) if v is None else v.to(f64))
            mask.append(torch.full((s.n_atoms,), v is not None))
        return torch.cat(parts), torch.cat(mask)

    forces, has_forces = per_atom("forces", 3)
    charges, has_charges = per_atom("charges", 0)
    energy = torch.tensor([s.energy for s in samples], dtype=f64)
    has_energy = torch.isfinite(energy)
    energy = torch.where(has_energy, energy, torch.zeros_like(energy))
    dipole = torch.stack([torch.zeros(3, dtype=f64) if s.dipole is None else s.dipole.to(f64) for s in samples])
    has_dipole = torch.tensor([s.dipole is not None for s in samples])
    stress = torch.stack([torch.zeros(3, 3, dtype=f64) if s.stress is None else s.stress.to(f64) for s in samples])
    has_stress = torch.tensor([s.stress is not None for s in samples])
    return Batch(
        system=system, neighbors=nl, energy=energy, forces=forces, charges=charges, dipole=dipole,
        has_energy=has_energy, has_forces=has_forces, has_charges=has_charges, has_dipole=has_dipole,
        n_atoms=torch.tensor([s.n_atoms for s in samples], dtype=torch.long),
        index=torch.as_tensor(list(index) if index is not None else range(len(samples)), dtype=torch.long),
        stress=stress, has_stress=has_stress,
    )


class AtomsDataset:
    """Reference structures with precomputed neighbour lists.

    Parameters
    ----------
    samples : sequence of Sample
    cutoff : float
        Cutoff of the neighbour lists (Å); a model with a larger cutoff cannot use them.
    """

    def __init__(self, samples: Sequence[Sample], cutoff: float):
        self.samples: List[Sample] = list(samples)
        self.cutoff = float(cutoff)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_atoms(cls, images: Sequence[Atoms], cutoff: float, charges_as_input: bool = False) -> "AtomsDataset":
        """Build from canonical ``ase.Atoms`` (see :mod:`hybridpot.io`).

        Parameters
        ----------
        images : sequence of ase.Atoms
        cutoff : float
            Neighbour-list cutoff (Å), at least the model's ``cutoff``.
        charges_as_input : bool
            Also give the reference charges to the model as ``initial_charges`` (for
            :class:`FixedCharges` models, whose charges are an input).
        """
        if cutoff <= 0:
            raise ValueError(f"cutoff must be positive, got {cutoff}")
        samples = []
        for k, atoms in enumerate(images):
            ref = reference_values(atoms)
            system = AtomicSystem.from_ase(atoms, dtype=torch.float64)
            if "total_charge" not in ref:
                ref["total_charge"] = 0.0
            if charges_as_input and "charges" in ref:
                system = replace(system, initial_charges=torch.as_tensor(ref["charges"], dtype=torch.float64))
            try:
                neighbors = compute_neighbors(system, cutoff)
            except Exception as err:
                raise ValueError(f"structure {k}: cannot compute neighbours: {err}") from err
            as_t = lambda x: None if x is None else torch.as_tensor(x, dtype=torch.float64)
            energy = ref.get("energy", float("nan"))
            if energy is not None and not np.isfinite(energy) and "energy" in ref:
                raise ValueError(f"structure {k}: non-finite reference energy")
            samples.append(
                Sample(system, neighbors, float(energy), as_t(ref.get("forces")), as_t(ref.get("charges")),
                       as_t(ref.get("dipole")), as_t(ref.get("stress")))
            )
        if not samples:
            raise ValueError("no structures")
        return cls(samples, cutoff)

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        cutoff: float,
        format: Optional[str] = None,
        keys: ReferenceKeys | dict | None = None,
        units: str = "angstrom_ev",
        charges_as_input: bool = False,
    ) -> "AtomsDataset":
        """Read a file with :func:`hybridpot.io.read_structures` and build the dataset."""
        return cls.from_atoms(read_structures(path, format=format, keys=keys, units=units), cutoff, charges_as_input)

    def cache_descriptors(self, enable: bool = True) -> None:
        """Keep each structure's symmetry functions and their derivatives after the first call.

        Training structures never move, so the compiled descriptor engine runs once per
        structure and descriptor; later calls (every epoch, every Kalman update) reuse
        ``G`` and ``dG/dr`` and only contract them. Applies to single-structure batches
        (Kalman updates, per-structure evaluation); memory: ``pairs x features x 3`` floats
        per structure. ``enable=False`` drops the stores.
        """
        for sample in self.samples:
            sample.neighbors.descriptor_store = {} if enable else None

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item):
        if isinstance(item, (int, np.integer)):
            return self.samples[int(item)]
        if isinstance(item, slice):
            return AtomsDataset(self.samples[item], self.cutoff)
        return AtomsDataset([self.samples[int(k)] for k in item], self.cutoff)

    @property
    def elements(self) -> List[int]:
        """Atomic numbers present, sorted."""
        return sorted({int(z) for s in self.samples for z in s.system.numbers.unique().tolist()})

    @property
    def n_atoms(self) -> int:
        return sum(s.n_atoms for s in self.samples)

    def has(self, quantity: str) -> bool:
        """Whether any sample has the reference ``quantity`` (energy, forces, charges, dipole)."""
        if quantity == "energy":
            return any(np.isfinite(s.energy) for s in self.samples)
        return any(getattr(s, quantity) is not None for s in self.samples)

    def constant_labels(self) -> List[str]:
        """Reference quantities present but identical (e.g. all 0) in every sample: probably not
        labels at all (a file without results, or the wrong ``keys``). Needs >= 2 samples."""
        if len(self.samples) < 2:
            return []
        out = []
        energies = np.array([s.energy for s in self.samples])
        energies = energies[np.isfinite(energies)]
        if energies.size >= 2 and np.all(energies == energies[0]):
            out.append(f"energy (every value {energies[0]:g} eV)")
        for name, unit in (("forces", "eV/Å"), ("charges", "e")):
            values = [getattr(s, name) for s in self.samples if getattr(s, name) is not None]
            if len(values) >= 2:
                flat = torch.cat([v.reshape(-1) for v in values])
                if flat.numel() > 1 and bool((flat == flat[0]).all()):
                    out.append(f"{name} (every component {float(flat[0]):g} {unit})")
        return out

    def composition(self, elements: Sequence[int]) -> np.ndarray:
        """Atom counts per structure and element, ``[S, len(elements)]``."""
        elements = list(elements)
        out = np.zeros((len(self), len(elements)))
        for k, s in enumerate(self.samples):
            counts = torch.bincount(s.system.numbers, minlength=119).numpy()
            out[k] = counts[elements]
        return out

    # ------------------------------------------------------------------ splitting and batching
    def split(
        self, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
    ) -> Tuple["AtomsDataset", "AtomsDataset", "AtomsDataset"]:
        """Random train/validation/test split, reproducible from ``seed``.

        ``fractions`` (train, validation[, test]) are normalised to sum 1; counts are
        rounded down for validation and test, the rest goes to training. The permutation
        is ``numpy.random.default_rng(seed).permutation(len(self))``, so the same seed
        and length give the same split on any machine.
        """
        fr = np.asarray(list(fractions) + [0.0] * (3 - len(fractions)), dtype=np.float64)
        if fr.shape != (3,) or np.any(fr < 0) or fr.sum() <= 0:
            raise ValueError(f"fractions must be 2 or 3 non-negative numbers, got {fractions}")
        fr = fr / fr.sum()
        n = len(self)
        n_val, n_test = int(np.floor(fr[1] * n)), int(np.floor(fr[2] * n))
        if fr[1] > 0 and n_val == 0 and n >= 3:
            n_val = 1
        n_train = n - n_val - n_test
        if n_train < 1:
            raise ValueError(f"{n} structures are too few for the split {fractions}")
        perm = np.random.default_rng(seed).permutation(n)
        parts = np.split(perm, [n_train, n_train + n_val])
        return tuple(self[sorted(p.tolist())] for p in parts)  # type: ignore[return-value]

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: Optional[torch.Generator] = None
    ) -> Iterator[Batch]:
        """Iterate over batches of ``batch_size`` structures (the last may be smaller).

        Shuffling draws a permutation from ``generator`` (a seeded ``torch.Generator``
        makes the order reproducible and resumable).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self)
        order = torch.randperm(n, generator=generator).tolist() if shuffle else list(range(n))
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield collate([self.samples[k] for k in idx], idx)

    def n_batches(self, batch_size: int) -> int:
        return (len(self) + batch_size - 1) // batch_size
