"""Atomic systems and batching.

An :class:`AtomicSystem` holds one or several structures concatenated along the atom
axis.  Units: positions and cells in Å, charges in elementary charges e.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Iterable, Optional, Sequence

import math

import numpy as np
import torch

__all__ = ["AtomicSystem", "MIN_CELL_HEIGHT", "MAX_PERIODIC_IMAGES"]

#: smallest distance (Å) between opposite faces of a periodic cell (closer periodic images
#: of an atom than this are overlapping atoms)
MIN_CELL_HEIGHT = 0.1
#: most periodic cell images a neighbour search may need (a 1 Å cell at a 10 Å cutoff needs
#: 21^3 = 9261); beyond, the search would take minutes to hours
MAX_PERIODIC_IMAGES = 1e6


def _total_charge(info: dict) -> float:
    """``info["charge"]`` (e, default 0) as a float; ``ValueError`` naming the key when it is not a
    finite number (e.g. ``"abc"``, None, NaN or inf)."""
    value = info.get("charge", 0.0)
    try:
        charge = float(value)
    except (TypeError, ValueError):
        raise ValueError(f'atoms.info["charge"] must be a number (the total charge in e), got {value!r}; '
                         'set it to e.g. 0 or 1, or delete it for a neutral structure') from None
    if not math.isfinite(charge):
        raise ValueError(f'atoms.info["charge"] must be a finite number (the total charge in e), got {value!r}')
    return charge


@dataclass
class AtomicSystem:
    """A batch of atomic structures, concatenated atom-wise.

    Attributes
    ----------
    positions : torch.Tensor
        Cartesian positions, shape ``[N, 3]``, Å.
    numbers : torch.Tensor
        Atomic numbers, shape ``[N]``, int64.
    cell : torch.Tensor
        Cell of each structure, rows are lattice vectors, shape ``[S, 3, 3]``, Å.
        All zero for a finite (non-periodic) structure.
    pbc : torch.Tensor
        Periodicity along each lattice vector, shape ``[S, 3]``, bool.
    charge : torch.Tensor
        Total charge of each structure, shape ``[S]``, e.
    batch : torch.Tensor
        Index of the structure each atom belongs to, shape ``[N]``, int64.
    ptr : torch.Tensor
        Offsets of the structures in the atom axis, shape ``[S + 1]``, int64.
    initial_charges : torch.Tensor, optional
        Per-atom charges given with the input (``atoms.get_initial_charges()``), ``[N]``, e.
    fragments : torch.Tensor, optional
        Fragment index of every atom, global over the batch, shape ``[N]``, int64.
        Used by charge equilibration with per-fragment total charges.
    fragment_charges : torch.Tensor, optional
        Total charge of each fragment, shape ``[n_fragments]``, e.
    """

    positions: torch.Tensor
    numbers: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    charge: torch.Tensor
    batch: torch.Tensor
    ptr: torch.Tensor
    initial_charges: Optional[torch.Tensor] = None
    fragments: Optional[torch.Tensor] = None
    fragment_charges: Optional[torch.Tensor] = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_ase(
        cls,
        atoms,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
        fragments: Optional[Sequence[Sequence[int]]] = None,
        fragment_charges: Optional[Sequence[float]] = None,
    ) -> "AtomicSystem":
        """Build a system from one ``ase.Atoms`` or a list of them (a batch).

        The total charge is read from ``atoms.info["charge"]`` (default 0). Initial
        charges (``atoms.get_initial_charges()``) are kept when any is non-zero.
        Fragments (lists of atom indices, each atom in exactly one) and their charges
        may be given for a single structure, or read from ``atoms.info["fragments"]``
        and ``atoms.info["fragment_charges"]``.
        """
        if isinstance(atoms, (list, tuple)):
            if fragments is not None:
                raise ValueError("fragments= applies to a single structure; set atoms.info['fragments'] for batches")
            return cls.concatenate([cls.from_ase(a, dtype=dtype, device=device) for a in atoms])
        n = len(atoms)
        if n == 0:
            raise ValueError("an AtomicSystem needs at least one atom")
        pbc = np.asarray(atoms.get_pbc(), dtype=bool)
        cell = np.asarray(atoms.get_cell().array, dtype=np.float64)
        if not pbc.any():
            cell = np.zeros((3, 3))
        charges0 = atoms.get_initial_charges()
        initial = None
        if np.any(charges0 != 0):
            initial = torch.as_tensor(charges0, dtype=dtype, device=device)
        frags = fragments if fragments is not None else atoms.info.get("fragments")
        fq = fragment_charges if fragment_charges is not None else atoms.info.get("fragment_charges")
        frag_index = frag_q = None
        if frags is not None:
            frag_index, frag_q = _fragment_arrays(frags, fq, n)
            frag_index = torch.as_tensor(frag_index, device=device)
            frag_q = torch.as_tensor(frag_q, dtype=dtype, device=device)
        system = cls(
            positions=torch.as_tensor(atoms.get_positions(), dtype=dtype, device=device),
            numbers=torch.as_tensor(atoms.get_atomic_numbers(), dtype=torch.long, device=device),
            cell=torch.as_tensor(cell, dtype=dtype, device=device).unsqueeze(0),
            pbc=torch.as_tensor(pbc, device=device).unsqueeze(0),
            charge=torch.tensor([_total_charge(atoms.info)], dtype=dtype, device=device),
            batch=torch.zeros(n, dtype=torch.long, device=device),
            ptr=torch.tensor([0, n], dtype=torch.long, device=device),
            initial_charges=initial,
            fragments=frag_index,
            fragment_charges=frag_q,
        )
        return system

    @classmethod
    def concatenate(cls, systems: Iterable["AtomicSystem"]) -> "AtomicSystem":
        """Concatenate systems (each possibly a batch itself) into one batch."""
        systems = list(systems)
        if not systems:
            raise ValueError("nothing to concatenate")
        ref = systems[0]
        n_atoms = [s.n_atoms for s in systems]
        n_sys = [s.n_systems for s in systems]
        atom_off = np.cumsum([0] + n_atoms)
        sys_off = np.cumsum([0] + n_sys)
        batch = torch.cat([s.batch + int(o) for s, o in zip(systems, sys_off)])
        ptr = torch.cat([systems[0].ptr[:1]] + [s.ptr[1:] + int(o) for s, o in zip(systems, atom_off)])

        initial = None
        if any(s.initial_charges is not None for s in systems):
            initial = torch.cat(
                [s.initial_charges if s.initial_charges is not None else torch.zeros_like(s.positions[:, 0]) for s in systems]
            )
        fragments = fragment_charges = None
        if any(s.fragments is not None for s in systems):
            # structures without fragments become one fragment carrying the total charge
            parts, charges, offset = [], [], 0
            for s in systems:
                if s.fragments is not None:
                    parts.append(s.fragments + offset)
                    charges.append(s.fragment_charges)
                    offset += len(s.fragment_charges)
                else:
                    parts.append(s.batch + offset)
                    charges.append(s.charge)
                    offset += s.n_systems
            fragments, fragment_charges = torch.cat(parts), torch.cat(charges)
        return cls(
            positions=torch.cat([s.positions for s in systems]),
            numbers=torch.cat([s.numbers for s in systems]),
            cell=torch.cat([s.cell for s in systems]),
            pbc=torch.cat([s.pbc for s in systems]),
            charge=torch.cat([s.charge for s in systems]),
            batch=batch,
            ptr=ptr,
            initial_charges=initial,
            fragments=fragments,
            fragment_charges=fragment_charges,
        )

    # ------------------------------------------------------------------ properties
    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_systems(self) -> int:
        return int(self.cell.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        return self.positions.dtype

    @property
    def device(self) -> torch.device:
        return self.positions.device

    @property
    def periodic(self) -> torch.Tensor:
        """Whether each structure is periodic in any direction, ``[S]`` bool."""
        return self.pbc.any(dim=1)

    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "AtomicSystem":
        """Copy to a device and/or floating dtype (integer tensors keep their dtype)."""
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if value.is_floating_point():
                changes[f.name] = value.to(device=device, dtype=dtype)
            else:
                changes[f.name] = value.to(device=device)
        return replace(self, **changes)

    def split(self) -> list["AtomicSystem"]:
        """The structures of a batch as separate systems (fragments are not kept)."""
        out = []
        for s in range(self.n_systems):
            a, b = int(self.ptr[s]), int(self.ptr[s + 1])
            out.append(
                AtomicSystem(
                    positions=self.positions[a:b],
                    numbers=self.numbers[a:b],
                    cell=self.cell[s : s + 1],
                    pbc=self.pbc[s : s + 1],
                    charge=self.charge[s : s + 1],
                    batch=torch.zeros(b - a, dtype=torch.long, device=self.device),
                    ptr=torch.tensor([0, b - a], device=self.device),
                    initial_charges=None if self.initial_charges is None else self.initial_charges[a:b],
                )
            )
        return out

    def validate(self, known_numbers: Optional[Iterable[int]] = None, cutoff: Optional[float] = None) -> None:
        """Raise ``ValueError`` for input that would give NaN, silent nonsense or a hang.

        Checks finite positions, atomic numbers the model knows, and non-degenerate
        cells in periodic directions: each periodic direction's cell height (the distance
        between opposite faces) must be at least :data:`MIN_CELL_HEIGHT`, and with a
        ``cutoff`` (Å) the neighbour search must need at most :data:`MAX_PERIODIC_IMAGES`
        cell images (a nearly flat or nearly coplanar cell would otherwise make the
        neighbour list enumerate billions of images). Close contacts are checked on the
        neighbour list.
        """
        finite = torch.isfinite(self.positions).all(dim=1)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten().tolist()
            raise ValueError(f"non-finite coordinates for atom(s) {bad[:20]}")
        if known_numbers is not None:
            known = torch.as_tensor(sorted(set(int(z) for z in known_numbers)), device=self.device)
            unknown = ~torch.isin(self.numbers, known)
            if bool(unknown.any()):
                bad = torch.nonzero(unknown).flatten().tolist()
                zs = sorted(set(self.numbers[unknown].tolist()))
                raise ValueError(
                    f"atom(s) {bad[:20]} have atomic number(s) {zs} that the model does not know "
                    f"(known: {known.tolist()})"
                )
        if not bool(torch.isfinite(self.cell).all()):
            raise ValueError("non-finite cell")
        for s in range(self.n_systems):
            pbc = self.pbc[s]
            if not bool(pbc.any()):
                continue
            cell = self.cell[s].detach().to(torch.float64)
            volume = torch.linalg.det(cell).abs()
            lengths = cell.norm(dim=1)
            if bool((lengths[pbc] < 1e-6).any()) or float(volume) < 1e-6 * float(lengths.prod().clamp_min(1e-300)):
                slab_hint = ("" if bool(pbc.all()) else
                             " (a slab, pbc=(True, True, False), needs its third lattice vector too: along z, spanning "
                             "the atoms plus vacuum, e.g. atoms.center(vacuum=10.0, axis=2))")
                raise ValueError(
                    f"structure {s}: degenerate cell (lattice vectors {cell.tolist()}, volume {float(volume):.3g} Å^3) "
                    "with periodic boundary conditions: give three independent lattice vectors, or set pbc=False "
                    f"in the directions without periodicity{slab_hint}"
                )
            # height of the cell along each lattice direction: V / |a_j x a_k|
            cross = torch.stack([torch.linalg.cross(cell[(k + 1) % 3], cell[(k + 2) % 3]) for k in range(3)])
            heights = float(volume) / cross.norm(dim=1).clamp_min(1e-300)
            for k in range(3):
                if bool(pbc[k]) and float(heights[k]) < MIN_CELL_HEIGHT:
                    raise ValueError(
                        f"structure {s}: the cell is {float(heights[k]):.3g} Å thin along lattice vector {k} "
                        f"(lattice vectors {cell.tolist()}): nearly flat or coplanar; a periodic cell must be at least "
                        f"{MIN_CELL_HEIGHT} Å across in every periodic direction"
                    )
            if cutoff is not None:
                images = 1.0
                for k in range(3):
                    if bool(pbc[k]):
                        images *= 2.0 * math.ceil(cutoff / float(heights[k])) + 1.0
                if images > MAX_PERIODIC_IMAGES:
                    raise ValueError(
                        f"structure {s}: the cell (heights {[round(float(h), 4) for h in heights]} Å) is so thin that a "
                        f"{cutoff:g} Å neighbour search needs {images:.3g} periodic images (limit "
                        f"{MAX_PERIODIC_IMAGES:.0e}); check the cell, or use a supercell"
                    )


def _fragment_arrays(fragments, fragment_charges, n_atoms: int):
    """Convert lists of atom indices into a per-atom fragment index and charges."""
    index = np.full(n_atoms, -1, dtype=np.int64)
    for f, members in enumerate(fragments):
        members = np.asarray(members, dtype=np.int64)
        if members.size == 0:
            raise ValueError(f"fragment {f} is empty")
        if members.min() < 0 or members.max() >= n_atoms:
            raise ValueError(f"fragment {f} names atoms outside 0..{n_atoms - 1}")
        if np.any(index[members] >= 0):
            raise ValueError(f"fragment {f} shares atoms with another fragment")
        index[members] = f
    if np.any(index < 0):
        raise ValueError(f"atom(s) {np.nonzero(index < 0)[0].tolist()[:20]} belong to no fragment")
    if fragment_charges is None:
        fragment_charges = np.zeros(len(fragments))
    fragment_charges = np.asarray(fragment_charges, dtype=np.float64)
    if fragment_charges.shape != (len(fragments),):
        raise ValueError(f"{len(fragments)} fragments but {fragment_charges.size} fragment charges")
    return index, fragment_charges
