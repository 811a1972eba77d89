"""Aqueous NaCl reference data: 1 NaCl + 32 H2O in a periodic box, GFN1-xTB labels (needs ``tblite``).

What: periodic cubic boxes of one Na+/Cl- pair in 32 water molecules (98 atoms, ~10.05 Å edge at
1.04 g/cm^3, about 1.7 mol/kg), total charge 0, labelled with energy, forces, stress and Mulliken
charges of **GFN1-xTB** [1]_ computed with **tblite** (through
:func:`hybridpot.reference_data.nacl_clusters.compute_reference`) at a **300 K electronic
temperature**. No fragment (per-molecule/per-ion) charge constraints are used: only the total
charge (0) is fixed, and the QEq model is free to transfer charge between the ions and the water,
as GFN1-xTB's Mulliken charges do (Na about +0.8 e, Cl about -0.8 e here, not +-1).

How: the box is built from hand-written water coordinates (O-H 0.9572 Å, H-O-H 104.52 deg)
inserted at random positions and orientations around the ion pair (no heavy atoms closer than
2.6 Å, no H closer than 1.6 Å to another molecule's atoms), then relaxed briefly with GFN1-xTB
(FIRE, at most ``relax_steps`` steps, 20 for the shipped data). Samples come from short GFN1-xTB Langevin MD (1 fs steps,
friction 0.05/fs) with the ion pair started in contact (2.7 Å) and separated (about 4 and 5 Å),
at 300-400 K; every MD step is a GFN1-xTB single point, and every ``interval``-th one is kept with
its labels (:class:`ReferenceCalculator`: no second labelling pass). Rattled copies of MD frames
(sigma 0.01-0.03 Å) add off-equilibrium geometries. :func:`model_snapshots` is the active-learning round:
frames of a trained model's own MD (free, and with the Na-Cl distance held fixed at the distances
of the potential of mean force), labelled with GFN1-xTB.

Reference method, honestly: GFN1-xTB is a semi-empirical tight-binding method (minimal valence
basis, parameters fitted for the whole periodic table to molecular data, D3 dispersion); it is
cheap (~3 s CPU per energy+forces+charges for these 98 atoms on one core of the busy machine
that made the data) but it is not DFT. For liquid water, a benchmark of semi-empirical methods
with their original parameters (GFN-xTB among them) found static and dynamic properties of bulk
water poorly described, most methods having too weak hydrogen bonds and too fluid water [2]_; the
ion-water distances GFN1-xTB gives need not match experiment either. A model trained here learns
GFN1-xTB, so its RDFs are compared with GFN1-xTB first and with experiment second
(``examples/aqueous_nacl_md.py`` does both). The shipped dataset was made with::

    OMP_NUM_THREADS=1 python -m hybridpot.reference_data.aqueous_nacl --output hybridpot/data/aqueous_nacl.extxyz.gz --seed 0

(26 min CPU); the active-learning rounds (``--from-model``, seeds 1 and 3) and the distorted-water
boxes (``--distorted 30 --seed 2``) as listed in ``hybridpot/data/README.md``.

The second pass (the model that is stable in MD): :func:`close_contacts` (``--contacts 32 --seed 4``:
Na-O, short H-bond, shifted-proton and Cl-H contacts, where ``examples/aqueous_nacl_scans.py`` and the
models' MD showed them leaving GFN1-xTB) and :func:`breakdown_snapshots` (``--breakdown MODEL``,
seeds 11-13): a model's own Langevin MD watched by :func:`first_defect`, labelled densest just
before the first defect, with an energy cap (:data:`MAX_ACTIVE_LEARNING_ENERGY`) instead of the
force filter of :func:`model_snapshots`.

.. [1] S. Grimme, C. Bannwarth, P. Shushkov, J. Chem. Theory Comput. 13, 1989 (2017).
.. [2] X. Wu, H. Elgabarty, ..., T. D. Kühne, "Benchmarking semi-empirical quantum chemical methods on
   liquid water", arXiv:2503.11867 (2025).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes
from ase.geometry import get_distances

__all__ = [
    "WATER_MOLAR_MASS",
    "NACL_MOLAR_MASS",
    "ELECTRONIC_TEMPERATURE",
    "with_pair_distance",
    "water_molecule",
    "box_length",
    "aqueous_nacl_box",
    "molecule_index",
    "ReferenceCalculator",
    "xtb_md",
    "relax_box",
    "na_cl_distance",
    "generate_aqueous_nacl_dataset",
    "model_snapshots",
    "DEFAULT_CHAINS",
    "PMF_DISTANCES",
    "RATTLE_SIGMA",
    "MAX_ACTIVE_LEARNING_FORCE",
    "rattled_geometries",
    "label",
    "distorted_waters",
    "MAX_ACTIVE_LEARNING_ENERGY",
    "first_defect",
    "close_contacts",
    "energy_capped",
    "breakdown_snapshots",
    "trajectory_frames",
]

WATER_MOLAR_MASS = 18.015  # g/mol
NACL_MOLAR_MASS = 58.443  # g/mol
#: Fermi smearing temperature (K) of every label (the SCF converges at 300 K for these boxes)
ELECTRONIC_TEMPERATURE = 300.0
METHOD = "GFN1-xTB"

#: GFN1-xTB sampling: per chain the initial Na-Cl distance (Å) and its segments (temperature K,
#: MD steps); a chain's segments continue one another (positions and velocities), so the later
#: frames are further from the built box
DEFAULT_CHAINS: Tuple[Tuple[float, Tuple[Tuple[float, int], ...]], ...] = (
    (2.7, ((300.0, 120), (400.0, 120))),
    (5.0, ((300.0, 120), (350.0, 120))),
)
#: Na-Cl distances (Å) of the constrained MD (potential of mean force, active learning)
PMF_DISTANCES: Tuple[float, ...] = (2.4, 2.8, 3.2, 3.8, 4.4, 5.0)
#: range (Å) of the displacement sigma of rattled copies. 0.03-0.08 Å (the first version) stretched
#: O-H bonds to 0.75 Å, with forces up to 25 eV/Å and energies 0.1 eV/atom above the MD frames;
#: 0.01-0.03 Å stays near what 300-400 K MD visits
RATTLE_SIGMA: Tuple[float, float] = (0.01, 0.03)
#: active-learning frames with a larger GFN1-xTB force component (eV/Å) are dropped: frames of a
#: collapsing model (H-H 0.1-0.6 Å, forces up to 1350 eV/Å) put 12 eV/Å into the training force
#: RMSE and stopped the fit (validation forces stuck at 1 eV/Å); the MD data reach 8.5 eV/Å
MAX_ACTIVE_LEARNING_FORCE = 10.0

_OH = 0.9572  # Å
_HOH = np.deg2rad(104.52)


def water_molecule() -> np.ndarray:
    """Cartesian coordinates (Å) of O, H, H of one water molecule, O at the origin, shape [3, 3]."""
    half = 0.5 * _HOH
    return np.array([[0.0, 0.0, 0.0],
                     [_OH * np.sin(half), _OH * np.cos(half), 0.0],
                     [-_OH * np.sin(half), _OH * np.cos(half), 0.0]])


def box_length(n_water: int, n_nacl: int, density: float) -> float:
    """Edge (Å) of the cubic box of ``n_water`` H2O and ``n_nacl`` NaCl at ``density`` (g/cm^3)."""
    mass_g = (n_water * WATER_MOLAR_MASS + n_nacl * NACL_MOLAR_MASS) / units._Nav
    return float((mass_g / density * 1e24) ** (1.0 / 3.0))


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    a, b, c, d = q
    return np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                     [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
                     [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d]])


def aqueous_nacl_box(
    rng: np.random.Generator,
    n_water: int = 32,
    n_nacl: int = 1,
    density: float = 1.04,
    na_cl_distance: float = 5.0,
    heavy_min: float = 2.6,
    hydrogen_min: float = 1.6,
    max_tries: int = 20000,
) -> Atoms:
    """A periodic box of water with ``n_nacl`` (0 or 1) ion pairs, molecules at random places.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the positions and orientations.
    n_water, n_nacl : int
        Numbers of water molecules and of Na+/Cl- pairs (0 or 1).
    density : float
        Mass density (g/cm^3) that sets the cubic box edge.
    na_cl_distance : float
        Na-Cl distance (Å) of the pair, placed along a random direction about the box centre.
    heavy_min, hydrogen_min : float
        Smallest allowed distance (Å, minimum image) between heavy atoms (O, Na, Cl) of different
        molecules, and between an H and any atom of another molecule.

    Returns
    -------
    ase.Atoms
        Atoms ordered Na, Cl, then O H H per molecule; ``info["charge"] = 0``; ``pbc`` True.
    """
    if n_nacl not in (0, 1):
        raise ValueError(f"n_nacl must be 0 or 1 (one ion pair), got {n_nacl}")
    length = box_length(n_water, n_nacl, density)
    cell = np.eye(3) * length
    numbers: List[int] = []
    positions: List[np.ndarray] = []
    molecule: List[int] = []
    if n_nacl:
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        centre = 0.5 * np.diag(cell)
        numbers += [11, 17]
        positions += [centre - 0.5 * na_cl_distance * direction, centre + 0.5 * na_cl_distance * direction]
        molecule += [0, 1]
    template = water_molecule()
    placed, tries = 0, 0
    while placed < n_water:
        tries += 1
        if tries > max_tries:
            raise RuntimeError(f"placed only {placed} of {n_water} waters in {max_tries} tries: lower the density "
                               "or the minimum distances")
        candidate = template @ _random_rotation(rng).T + rng.uniform(0.0, length, 3)
        if positions:
            _, d = get_distances(candidate, np.array(positions), cell=cell, pbc=True)
            heavy = np.array([z != 1 for z in numbers])
            if d[0, heavy].min() < heavy_min or d[1:].min() < hydrogen_min or d[0, ~heavy].min(initial=9.9) < hydrogen_min:
                continue
        mol_id = 2 * n_nacl + placed
        numbers += [8, 1, 1]
        positions += list(candidate)
        molecule += [mol_id] * 3
        placed += 1
    atoms = Atoms(numbers, positions=np.array(positions), cell=cell, pbc=True)
    atoms.wrap()
    atoms.info["charge"] = 0.0
    return atoms


def molecule_index(atoms: Atoms) -> np.ndarray:
    """Molecule (or ion) number of each atom, shape [n_atoms]: ions first, then O H H per water.

    Relies on the atom order of :func:`aqueous_nacl_box` (Na, Cl, then O H H), which every
    shipped structure has.
    """
    numbers = atoms.numbers
    n_ions = int(np.sum((numbers == 11) | (numbers == 17)))
    if not (np.all(np.isin(numbers[:n_ions], (11, 17))) and np.all(numbers[n_ions::3] == 8)
            and np.all(numbers[n_ions + 1::3] == 1) and np.all(numbers[n_ions + 2::3] == 1)):
        raise ValueError("atoms are not ordered as ions first, then O H H per water molecule")
    return np.concatenate([np.arange(n_ions), n_ions + np.repeat(np.arange((len(atoms) - n_ions) // 3), 3)])


def na_cl_distance(atoms: Atoms) -> float:
    """Minimum-image Na-Cl distance (Å) of a box with one ion pair."""
    na, cl = int(np.nonzero(atoms.numbers == 11)[0][0]), int(np.nonzero(atoms.numbers == 17)[0][0])
    return float(atoms.get_distance(na, cl, mic=True))


class ReferenceCalculator(Calculator):
    """ASE calculator of GFN1-xTB through :func:`compute_reference`; keeps the last labelled copy.

    ``self.labelled`` is the ``Atoms`` (with ``SinglePointCalculator``: energy, forces, stress,
    charges) of the last call, so an MD run with this calculator yields labelled frames at no
    extra cost.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "charges"]

    def __init__(self, method: str = METHOD, electronic_temperature: float = ELECTRONIC_TEMPERATURE, **kwargs):
        super().__init__(**kwargs)
        self.method = method
        self.electronic_temperature = float(electronic_temperature)
        self.labelled: Optional[Atoms] = None
        self.calls = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        from .nacl_clusters import compute_reference

        super().calculate(atoms, properties, system_changes)
        clean = Atoms(self.atoms.numbers, positions=self.atoms.positions, cell=self.atoms.cell, pbc=self.atoms.pbc)
        clean.info.update({k: v for k, v in self.atoms.info.items() if k in ("charge", "source")})
        self.labelled = compute_reference(clean, method=self.method, electronic_temperature=self.electronic_temperature)
        self.calls += 1
        calc = self.labelled.calc
        self.results = {name: calc.results[name] for name in self.implemented_properties if name in calc.results}


def relax_box(atoms: Atoms, steps: int = 40, fmax: float = 0.3) -> Atoms:
    """Brief GFN1-xTB relaxation (FIRE, at most ``steps`` steps to ``fmax`` eV/Å) of a freshly built box.

    Removes the worst contacts of random insertion before MD; returns a copy without calculator.
    """
    from ase.optimize import FIRE

    work = atoms.copy()
    work.calc = ReferenceCalculator()
    FIRE(work, logfile=None).run(fmax=fmax, steps=steps)
    out = Atoms(work.numbers, positions=work.get_positions(wrap=True), cell=work.cell, pbc=True)
    out.info.update(atoms.info)
    return out


def xtb_md(
    atoms: Atoms,
    temperature: float,
    steps: int,
    rng: np.random.Generator,
    interval: int = 5,
    skip: int = 20,
    timestep: float = 1.0,
    friction: float = 0.05,
    source: str = "xtb md",
    thermalize: bool = True,
) -> Tuple[List[Atoms], Atoms]:
    """GFN1-xTB Langevin MD; every ``interval``-th step after ``skip`` steps, labelled.

    Parameters
    ----------
    atoms : ase.Atoms
        Start (not modified).
    temperature : float
        Thermostat and initial-velocity temperature (K).
    steps : int
        MD steps (each one GFN1-xTB single point).
    interval, skip : int
        Keep a frame every ``interval`` steps once ``skip`` steps have passed.
    timestep, friction : float
        Time step (fs) and Langevin friction (1/fs).
    thermalize : bool
        Draw Maxwell-Boltzmann velocities at ``temperature``; False keeps those of ``atoms``
        (to continue a run).

    Returns
    -------
    (list of ase.Atoms, ase.Atoms)
        The labelled frames, and the final state (positions and momenta, no calculator).
    """
    from ase.md.langevin import Langevin
    try:  # ase >= 3.29 (MaxwellBoltzmannDistribution is deprecated there)
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # pragma: no cover - older ase
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    work = atoms.copy()
    calc = ReferenceCalculator()
    work.calc = calc
    if thermalize:
        thermalize_momenta(work, temperature_K=temperature, rng=rng)
    dyn = Langevin(work, timestep * units.fs, temperature_K=temperature, friction=friction / units.fs, fixcm=False,
                   rng=np.random.RandomState(int(rng.integers(2**31))))
    frames: List[Atoms] = []

    def keep():
        if dyn.nsteps >= skip and dyn.nsteps % interval == 0 and calc.labelled is not None:
            from ase.calculators.singlepoint import SinglePointCalculator

            frame = calc.labelled.copy()
            frame.calc = SinglePointCalculator(frame, **calc.labelled.calc.results)
            frame.info.update(source=f"{source} {temperature:.0f} K step {dyn.nsteps}",
                              na_cl_distance=na_cl_distance(frame) if 11 in frame.numbers else -1.0)
            frames.append(frame)

    dyn.attach(keep, interval=1)
    dyn.run(steps)
    final = Atoms(work.numbers, positions=work.get_positions(wrap=True), momenta=work.get_momenta(), cell=work.cell,
                  pbc=True)
    final.info.update(atoms.info)
    return frames, final


def rattled_geometries(frames: Sequence[Atoms], rng: np.random.Generator, n: int,
                       sigma_range: Tuple[float, float] = RATTLE_SIGMA) -> List[Atoms]:
    """``n`` copies of random ``frames`` (no repeats) with Gaussian displacements, sigma drawn from
    ``sigma_range`` (Å); geometries only."""
    out = []
    for k in rng.choice(len(frames), size=min(n, len(frames)), replace=False):
        sigma = float(rng.uniform(*sigma_range))
        geometry = Atoms(frames[k].numbers, positions=frames[k].positions + rng.normal(0.0, sigma, (len(frames[k]), 3)),
                         cell=frames[k].cell, pbc=True)
        geometry.info.update(charge=0.0, source=f"rattle {sigma:.3f} of {frames[k].info['source']}")
        out.append(geometry)
    return out


def label(geometries: Sequence[Atoms]) -> List[Atoms]:
    """GFN1-xTB labels (300 K electronic temperature) of ``geometries``, with ``info["na_cl_distance"]``."""
    from .nacl_clusters import compute_reference

    out = []
    for geometry in geometries:
        labelled = compute_reference(geometry, method=METHOD, electronic_temperature=ELECTRONIC_TEMPERATURE)
        labelled.info["na_cl_distance"] = na_cl_distance(labelled)
        out.append(labelled)
    return out


def generate_aqueous_nacl_dataset(
    seed: int = 0,
    chains: Sequence[Tuple[float, Sequence[Tuple[float, int]]]] = DEFAULT_CHAINS,
    interval: int = 4,
    skip: int = 20,
    n_rattles: int = 15,
    relax_steps: int = 20,
    progress: bool = True,
) -> List[Atoms]:
    """GFN1-xTB-labelled boxes of 1 NaCl + 32 H2O: Langevin MD frames and rattled copies.

    Parameters
    ----------
    seed : int
        Seed of every random choice (box building, velocities, Langevin noise, rattles).
    chains : sequence of (float, sequence of (float, int))
        Per chain: the initial Na-Cl distance (Å) of a freshly built, briefly relaxed box, and
        its MD segments (temperature K, steps), each continuing the previous one.
    interval, skip : int
        Frames kept every ``interval`` steps after the first ``skip`` of each segment (see
        :func:`xtb_md`).
    n_rattles : int
        Rattled copies of random MD frames (sigma in ``RATTLE_SIGMA``).
    relax_steps : int
        FIRE steps of the GFN1-xTB relaxation of each new box.
    """
    rng = np.random.default_rng(seed)
    frames: List[Atoms] = []
    for distance, segments in chains:
        t0 = time.time()
        state = relax_box(aqueous_nacl_box(rng, na_cl_distance=distance), steps=relax_steps)
        if progress:
            print(f"chain d0={distance} Å: built and relaxed in {time.time() - t0:.0f} s", flush=True)
        for k, (temperature, steps) in enumerate(segments):
            t1 = time.time()
            run, state = xtb_md(state, temperature, steps, rng, interval=interval, skip=skip,
                                source=f"xtb md d0={distance:.1f} seg{k}", thermalize=(k == 0))
            frames += run
            if progress:
                d = [f.info["na_cl_distance"] for f in run]
                print(f"  {temperature:.0f} K, {steps} steps: {time.time() - t1:.0f} s, {len(run)} frames, "
                      f"Na-Cl {min(d):.2f}-{max(d):.2f} Å", flush=True)
    frames += label(rattled_geometries(frames, rng, n_rattles))
    return frames


def with_pair_distance(atoms: Atoms, distance: float, max_shift: float = 0.6) -> Atoms:
    """A copy of a box (ions first, then O H H) with the Na-Cl distance set to ``distance`` (Å).

    Within ``max_shift`` of the present distance the Cl moves along the Na-Cl axis. Farther, the Cl
    changes places with the water whose O is nearest to ``distance`` from the Na: the Cl goes onto
    the Na-O axis at ``distance`` (where that water sat, a cavity of the liquid), the water moves
    rigidly to where the Cl was. This keeps the geometry inside the liquid-like region the data
    cover (moving the Cl straight through the solvent put it on top of water molecules).
    """
    out = Atoms(atoms.numbers, positions=atoms.positions.copy(), cell=atoms.cell, pbc=True)
    out.info["charge"] = 0.0
    na_cl = out.get_distance(0, 1, mic=True, vector=True)
    if abs(np.linalg.norm(na_cl) - distance) <= max_shift:
        out.positions[1] = out.positions[0] + na_cl / np.linalg.norm(na_cl) * distance
        return out
    oxygens = np.nonzero(out.numbers == 8)[0]
    na_o = out.get_distances(0, oxygens, mic=True, vector=True)
    w = int(np.argmin(np.abs(np.linalg.norm(na_o, axis=1) - distance)))
    o = oxygens[w]
    old_cl = out.positions[0] + na_cl
    shift = old_cl - (out.positions[0] + na_o[w])
    out.positions[o:o + 3] += shift  # the water, rigidly, to the Cl's place (O on it)
    out.positions[1] = out.positions[0] + na_o[w] / np.linalg.norm(na_o[w]) * distance
    out.wrap()
    return out


def distorted_waters(frames: Sequence[Atoms], rng: np.random.Generator, n: int, waters_per_frame: int = 6) -> List[Atoms]:
    """Geometries with close H-H contacts: the region where trained models collapsed.

    Per structure, a random MD frame of ``frames`` with ``waters_per_frame`` random waters
    distorted: half of them bent (H-O-H closed until H-H is 1.05-1.40 Å, O-H lengths kept), the
    other half moved rigidly towards a neighbouring water until an intermolecular H-H distance is
    1.3-1.8 Å. Geometries only (label them with :func:`label`).
    """
    out = []
    md = [f for f in frames if str(f.info.get("source", "")).startswith("xtb md")]
    for _ in range(n):
        base = md[int(rng.integers(len(md)))]
        atoms = Atoms(base.numbers, positions=base.positions.copy(), cell=base.cell, pbc=True)
        oxygens = np.nonzero(atoms.numbers == 8)[0]
        chosen = rng.choice(oxygens, size=waters_per_frame, replace=False)
        for k, o in enumerate(chosen):
            h1, h2 = o + 1, o + 2
            v1 = atoms.get_distance(o, h1, mic=True, vector=True)
            v2 = atoms.get_distance(o, h2, mic=True, vector=True)
            if k % 2 == 0:  # bend: rotate both O-H about their bisector plane normal, lengths kept
                target = float(rng.uniform(1.05, 1.40))
                l1, l2 = np.linalg.norm(v1), np.linalg.norm(v2)
                bis = v1 / l1 + v2 / l2
                bis /= np.linalg.norm(bis)
                perp = v1 / l1 - (v1 / l1 @ bis) * bis
                perp /= np.linalg.norm(perp)
                half = np.arcsin(min(1.0, target / (l1 + l2)))
                atoms.positions[h1] = atoms.positions[o] + l1 * (np.cos(half) * bis + np.sin(half) * perp)
                atoms.positions[h2] = atoms.positions[o] + l2 * (np.cos(half) * bis - np.sin(half) * perp)
            else:  # approach: the nearest foreign H, moved rigidly with its water
                hydrogens = np.setdiff1d(np.nonzero(atoms.numbers == 1)[0], [h1, h2])
                vectors = atoms.get_distances(h1, hydrogens, mic=True, vector=True)
                j = int(np.argmin(np.linalg.norm(vectors, axis=1)))
                d = float(np.linalg.norm(vectors[j]))
                target = float(rng.uniform(1.3, 1.8))
                if d > target:
                    other_o = hydrogens[j] - 1 if atoms.numbers[hydrogens[j] - 1] == 8 else hydrogens[j] - 2
                    atoms.positions[other_o:other_o + 3] -= vectors[j] / d * (d - target)
        atoms.wrap()
        atoms.info.update(charge=0.0, source=f"distorted waters of {base.info['source']}")
        out.append(atoms)
    return out


def model_snapshots(
    model,
    starts: Optional[Sequence[Atoms]] = None,
    seed: int = 1,
    temperature: float = 300.0,
    distances: Sequence[float] = PMF_DISTANCES,
    free_runs: int = 2,
    equilibration_steps: int = 200,
    snapshots_per_run: int = 5,
    interval: int = 40,
    progress: bool = True,
) -> List[Atoms]:
    """Active learning: frames of a trained model's own 300 K MD, labelled with GFN1-xTB.

    Langevin MD (1 fs, friction 0.05/fs) with ``model`` (a :class:`hybridpot.HybridPotential`),
    started from ``starts`` (default: the last frames of the contact and the separated GFN1-xTB
    chains of the shipped data): one run per Na-Cl distance of ``distances`` with the distance set
    by :func:`with_pair_distance` (from the start nearer in distance) and held fixed
    (``ase.constraints.FixBondLengths``, as in the potential of mean force of
    ``examples/aqueous_nacl_md.py``), and ``free_runs`` unconstrained runs from the starts. After
    ``equilibration_steps`` a frame is taken every ``interval`` steps. Where the model collapses
    (two atoms closer than 0.1 Å) the run stops, and the frame recorded 20 steps before the collapse
    is labelled too (``"model md ... collapse"``): GFN1-xTB's answer there is what the model lacked.
    Frames with a GFN1-xTB force component above ``MAX_ACTIVE_LEARNING_FORCE`` are dropped.
    (Random-insertion boxes relaxed with the round-0 model fell into such holes at once: H-H
    contacts the xTB data never show; hence the starts from the data.)
    """
    from ase.constraints import FixBondLengths
    from ase.md.langevin import Langevin
    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # pragma: no cover - older ase
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    from ..calculator import HybridCalculator

    if starts is None:
        from ..data import load_aqueous_nacl

        data = load_aqueous_nacl(include_model_md=False)
        starts = [[a for a in data if str(a.info["source"]).startswith(f"xtb md d0={d:.1f} seg1")][-1]
                  for d in (2.7, 5.0)]
    rng = np.random.default_rng(seed)
    settings = [(d, True) for d in distances] + [(None, False) for _ in range(free_runs)]
    geometries: List[Atoms] = []
    for k, (distance, constrained) in enumerate(settings):
        if constrained:
            start = min(starts, key=lambda a: abs(na_cl_distance(a) - distance))
            atoms = with_pair_distance(start, distance)
            atoms.set_constraint(FixBondLengths([(0, 1)]))
            kind = f"constrained {distance:.1f}"
        else:
            start = starts[k % len(starts)]
            atoms = Atoms(start.numbers, positions=start.positions, cell=start.cell, pbc=True)
            kind = f"free from {na_cl_distance(start):.1f}"
        atoms.calc = HybridCalculator(model, skin=0.5)
        thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
        dyn = Langevin(atoms, 1.0 * units.fs, temperature_K=temperature, friction=0.05 / units.fs, fixcm=False,
                       rng=np.random.RandomState(int(rng.integers(2**31))))
        recent: List[np.ndarray] = []
        dyn.attach(lambda: recent.append(atoms.get_positions(wrap=True)) if dyn.nsteps % 10 == 0 else None, interval=1)
        t0 = time.time()

        def keep(tag: str, positions: np.ndarray) -> None:
            frame = Atoms(atoms.numbers, positions=positions, cell=atoms.cell, pbc=True)
            frame.info.update(charge=0.0, source=f"model md {kind} {temperature:.0f} K{tag}")
            geometries.append(frame)

        try:
            dyn.run(equilibration_steps)
            for _ in range(snapshots_per_run):
                dyn.run(interval)
                keep("", atoms.get_positions(wrap=True))
        except ValueError as err:  # overlapping atoms: the model left its domain
            if len(recent) >= 3:
                keep(f" collapse (step {dyn.nsteps}; 20 steps before)", recent[-3])
            print(f"model MD {kind} stopped at step {dyn.nsteps}: {err}", flush=True)
            continue
        if progress:
            print(f"model MD {kind}: {time.time() - t0:.0f} s, Na-Cl now {na_cl_distance(atoms):.2f} Å", flush=True)
    labelled = label(geometries)
    kept = [a for a in labelled if np.abs(a.get_forces()).max() <= MAX_ACTIVE_LEARNING_FORCE]
    if progress and len(kept) < len(labelled):
        print(f"dropped {len(labelled) - len(kept)} of {len(labelled)} frames with a force component above "
              f"{MAX_ACTIVE_LEARNING_FORCE} eV/Å", flush=True)
    return kept


#: active-learning frames of :func:`breakdown_snapshots` with a GFN1-xTB energy more than this
#: (eV/atom) above the lowest GFN1-xTB MD frame of the shipped data are dropped (an energy cap
#: instead of the force filter of :func:`model_snapshots`, which dropped the frames just before the
#: model's collapses: the ones that show it the way back). The shipped data span 0-0.19 eV/atom;
#: collapsed frames (two atoms fused) lie 0.5 eV/atom and more above.
MAX_ACTIVE_LEARNING_ENERGY = 0.3
#: lowest GFN1-xTB energy (eV/atom) of the shipped MD frames (seed 0), the zero of the energy cap

def first_defect(atoms: Atoms) -> Optional[str]:
    """What is unphysical in a box of intact waters and ions, or None.

    Checked (minimum image): an H without exactly one O within 1.25 Å (a broken or shared water),
    Na-O below 1.9 Å, O-O below 2.35 Å, H-H of different waters below 1.3 Å. The closest contacts
    of the GFN1-xTB MD data are Na-O 1.99, O-O 2.42, intermolecular H-H 1.30 Å.
    """
    d = atoms.get_all_distances(mic=True)
    numbers = atoms.numbers
    h, o, na = (np.nonzero(numbers == z)[0] for z in (1, 8, 11))
    counts = (d[np.ix_(h, o)] < 1.25).sum(axis=1)
    if np.any(counts != 1):
        k = int(np.nonzero(counts != 1)[0][0])
        return f"H {h[k]} has {counts[k]} O within 1.25 Å"
    if len(na) and d[np.ix_(na, o)].min() < 1.9:
        return f"Na-O {d[np.ix_(na, o)].min():.2f} Å"
    oo = d[np.ix_(o, o)] + 10.0 * np.eye(len(o))
    if oo.min() < 2.35:
        return f"O-O {oo.min():.2f} Å"
    molecule = molecule_index(atoms)
    hh = d[np.ix_(h, h)] + 10.0 * (molecule[h][:, None] == molecule[h][None, :])
    if hh.min() < 1.3:
        return f"H-H {hh.min():.2f} Å (different waters)"
    return None


def close_contacts(frames: Sequence[Atoms], rng: np.random.Generator, n: int) -> List[Atoms]:
    """Geometries with the close contacts where trained models left GFN1-xTB (their MD's first defects).

    Per structure, a random GFN1-xTB MD frame of ``frames`` with one distortion, cycling through:

    * ``Na-O``: the water nearest the Na moved rigidly towards it, Na-O 1.65-2.0 Å;
    * ``H-bond``: the water accepting an H-bond (the O nearest a random water's H) moved rigidly
      towards the donor O, O-O 2.2-2.45 Å;
    * ``proton``: that H moved along its O-H bond towards the acceptor, O-H 1.05-1.35 Å;
    * ``Cl-H``: the water with the H nearest the Cl moved rigidly towards it, Cl-H 1.5-1.95 Å.

    ``examples/aqueous_nacl_scans.py`` measured the Na-O hole (the model's energy fell by 0.2 eV from
    2.0 to 1.5 Å where GFN1-xTB's rises by 1.7 eV); the MD of that model with a pair-repulsion wall
    then broke waters through a short H-bond (O-O 2.28 Å, the H shared). Geometries only.
    """
    md = [f for f in frames if str(f.info.get("source", "")).startswith("xtb md")]
    kinds = ("Na-O", "H-bond", "proton", "Cl-H")
    out = []
    for k in range(n):
        kind = kinds[k % len(kinds)]
        base = md[int(rng.integers(len(md)))]
        atoms = Atoms(base.numbers, positions=base.positions.copy(), cell=base.cell, pbc=True)
        oxygens = np.nonzero(atoms.numbers == 8)[0]
        hydrogens = np.nonzero(atoms.numbers == 1)[0]

        def move_water(o: int, anchor: int, target: float, through: Optional[int] = None) -> None:
            # rigid shift of the water of O ``o`` along anchor->through (default: anchor->o) to ``target``
            probe = o if through is None else through
            vector = atoms.get_distance(anchor, probe, mic=True, vector=True)
            length = np.linalg.norm(vector)
            atoms.positions[o:o + 3] += vector / length * (target - length)

        if kind == "Na-O":
            o = int(oxygens[np.argmin(atoms.get_distances(0, oxygens, mic=True))])
            target = float(rng.uniform(1.65, 2.0))
            move_water(o, 0, target)
            detail = f"Na-O {target:.2f}"
        elif kind == "Cl-H":
            hh = int(hydrogens[np.argmin(atoms.get_distances(1, hydrogens, mic=True))])
            o = hh - 1 if atoms.numbers[hh - 1] == 8 else hh - 2
            target = float(rng.uniform(1.5, 1.95))
            move_water(o, 1, target, through=hh)
            detail = f"Cl-H {target:.2f}"
        else:
            donor = int(rng.choice(oxygens))
            hh = donor + int(rng.integers(1, 3))
            others = oxygens[oxygens != donor]
            acceptor = int(others[np.argmin(atoms.get_distances(hh, others, mic=True))])
            if kind == "H-bond":
                target = float(rng.uniform(2.2, 2.45))
                move_water(acceptor, donor, target)
                detail = f"O-O {target:.2f}"
            else:
                target = float(rng.uniform(1.05, 1.35))
                towards = atoms.get_distance(donor, acceptor, mic=True, vector=True)
                atoms.positions[hh] = atoms.positions[donor] + towards / np.linalg.norm(towards) * target
                detail = f"O-H {target:.2f} towards O {acceptor}"
        atoms.wrap()
        atoms.info.update(charge=0.0, source=f"contact {kind} ({detail}) of {base.info['source']}")
        out.append(atoms)
    return out


def energy_capped(labelled: Sequence[Atoms], cap: float = MAX_ACTIVE_LEARNING_ENERGY,
                  zero: Optional[float] = None) -> List[Atoms]:
    """``labelled`` without the structures more than ``cap`` eV/atom above ``zero`` (eV/atom;
    default: the lowest GFN1-xTB MD frame of the shipped data)."""
    if zero is None:
        from ..data import load_aqueous_nacl

        zero = min(a.get_potential_energy() / len(a) for a in load_aqueous_nacl(False, False, False)
                   if str(a.info["source"]).startswith("xtb md"))
    return [a for a in labelled if a.get_potential_energy() / len(a) - zero <= cap]


def breakdown_snapshots(
    model,
    starts: Optional[Sequence[Atoms]] = None,
    seed: int = 11,
    runs: int = 4,
    steps: int = 2000,
    temperature: float = 300.0,
    timestep: float = 0.5,
    interval: int = 200,
    before: Sequence[int] = (60, 30, 0),
    progress: bool = True,
) -> List[Atoms]:
    """Active learning on a model's way out: its own MD frames, densest just before its first defect.

    ``runs`` Langevin runs (``timestep`` fs, friction 0.05/fs, ``temperature``) of ``model``, started
    alternately from ``starts`` (default: the last frames of the contact and the separated GFN1-xTB
    chains) with new velocities. :func:`first_defect` is checked every 10 steps; a frame is taken every
    ``interval`` steps, and at the first defect the frames ``before`` steps earlier (and the defect
    frame itself, ``0``), then the run stops. Everything is labelled with GFN1-xTB and kept below
    the energy cap (:func:`energy_capped`), not filtered by force.
    """
    from ase.md.langevin import Langevin
    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # pragma: no cover - older ase
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    from ..calculator import HybridCalculator

    if starts is None:
        from ..data import load_aqueous_nacl

        data = load_aqueous_nacl(include_model_md=False, include_distorted=False, include_contacts=False)
        starts = [[a for a in data if str(a.info["source"]).startswith(f"xtb md d0={d:.1f} seg1")][-1]
                  for d in (2.7, 5.0)]
    rng = np.random.default_rng(seed)
    geometries: List[Atoms] = []
    for k in range(runs):
        start = starts[k % len(starts)]
        atoms = Atoms(start.numbers, positions=start.positions, cell=start.cell, pbc=True)
        atoms.calc = HybridCalculator(model, skin=0.5)
        thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
        dyn = Langevin(atoms, timestep * units.fs, temperature_K=temperature, friction=0.05 / units.fs, fixcm=False,
                       rng=np.random.RandomState(int(rng.integers(2**31))))
        history: List[Tuple[int, np.ndarray]] = []
        found: List[str] = []

        def keep(tag: str, positions: np.ndarray) -> None:
            frame = Atoms(atoms.numbers, positions=positions, cell=atoms.cell, pbc=True)
            frame.info.update(charge=0.0, source=f"model breakdown run {k} {temperature:.0f} K {tag}")
            geometries.append(frame)

        def watch() -> None:
            if found:
                return
            history.append((dyn.nsteps, atoms.get_positions(wrap=True)))
            del history[:-(max(before) // 10 + 2)]
            if dyn.nsteps % interval == 0 and dyn.nsteps > 0:
                keep(f"step {dyn.nsteps}", history[-1][1])
            defect = first_defect(atoms)
            if defect:
                found.append(f"step {dyn.nsteps}: {defect}")
                for lag in before:
                    match = [p for s, p in history if s == dyn.nsteps - lag]
                    if match:
                        keep(f"{lag} steps before defect ({defect}, step {dyn.nsteps})", match[0])

        dyn.attach(watch, interval=10)
        t0 = time.time()
        try:
            while dyn.nsteps < steps and not found:
                dyn.run(10)
        except ValueError as err:  # overlapping atoms
            found.append(f"step {dyn.nsteps}: {err}")
        if progress:
            print(f"model MD run {k}: {found[0] if found else f'no defect in {steps} steps'} "
                  f"({time.time() - t0:.0f} s)", flush=True)
    labelled = label(geometries)
    kept = energy_capped(labelled)
    if progress:
        print(f"labelled {len(labelled)} frames, kept {len(kept)} below the energy cap "
              f"({MAX_ACTIVE_LEARNING_ENERGY} eV/atom); largest force component "
              f"{max(np.abs(a.get_forces()).max() for a in kept):.1f} eV/Å", flush=True)
    return kept


def trajectory_frames(path: str, selection: str, progress: bool = True) -> List[Atoms]:
    """GFN1-xTB labels of frames of a saved model trajectory (e.g. ``nve.extxyz`` of
    ``examples/aqueous_nacl_md.py``), energy-capped (:func:`energy_capped`).

    ``selection``: comma-separated Python slices of frame indices, e.g. ``"200:340:5,400::100"``.
    """
    import ase.io

    frames = ase.io.read(path, index=":")
    picks: List[int] = []
    for part in selection.split(","):
        picks += list(range(len(frames)))[slice(*[int(x) if x else None for x in part.split(":")])]
    geometries = []
    for k in sorted(set(picks)):
        atoms = Atoms(frames[k].numbers, positions=frames[k].positions, cell=frames[k].cell, pbc=True)
        atoms.info.update(charge=0.0, source=f"model trajectory frame {k}"
                          + (f" ({first_defect(atoms)})" if first_defect(atoms) else ""))
        geometries.append(atoms)
    labelled = label(geometries)
    kept = energy_capped(labelled)
    if progress:
        print(f"labelled {len(labelled)} frames, kept {len(kept)} below the energy cap; largest force component "
              f"{max(np.abs(a.get_forces()).max() for a in kept):.1f} eV/Å", flush=True)
    return kept


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybridpot.reference_data.aqueous_nacl",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="aqueous_nacl.extxyz.gz")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rattles", type=int, default=15)
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every run's MD steps by this")
    parser.add_argument("--distorted", type=int, default=0, metavar="N",
                        help="instead: N boxes with close H-H contacts made from the shipped MD frames")
    parser.add_argument("--from-model", default=None, metavar="MODEL",
                        help="active learning: label frames of this model's own MD instead")
    parser.add_argument("--contacts", type=int, default=0, metavar="N",
                        help="instead: N boxes with close Na-O, O-O (H-bond), O-H (proton) and Cl-H contacts")
    parser.add_argument("--breakdown", default=None, metavar="MODEL",
                        help="active learning: frames of this model's own MD up to and just before its first defect")
    parser.add_argument("--trajectory", default=None, metavar="EXTXYZ",
                        help="instead: label frames of this saved model trajectory (--frames)")
    parser.add_argument("--frames", default="::10", help="--trajectory: comma-separated slices of frame indices")
    parser.add_argument("--runs", type=int, default=4, help="--breakdown: MD runs")
    parser.add_argument("--md-steps", type=int, default=2000, help="--breakdown: longest run (0.5 fs steps)")
    parser.add_argument("--temperature", type=float, default=300.0, help="--breakdown: K")
    args = parser.parse_args(argv)
    from .nacl_clusters import write_dataset

    t0 = time.time()
    c0 = time.process_time()
    import torch

    torch.set_num_threads(1)  # the model MD of --from-model: 2 threads on the busy 2-core machine were ~5x slower
    if args.contacts:
        from ..data import load_aqueous_nacl

        images = label(close_contacts(load_aqueous_nacl(False, False, False), np.random.default_rng(args.seed), args.contacts))
    elif args.trajectory:
        images = trajectory_frames(args.trajectory, args.frames)
    elif args.breakdown:
        from ..model import load

        images = breakdown_snapshots(load(args.breakdown), seed=args.seed, runs=args.runs, steps=args.md_steps,
                                     temperature=args.temperature)
    elif args.distorted:
        from ..data import load_aqueous_nacl

        images = label(distorted_waters(load_aqueous_nacl(include_model_md=False), np.random.default_rng(args.seed),
                                        args.distorted))
    elif args.from_model:
        from ..model import load

        images = model_snapshots(load(args.from_model), seed=args.seed)
    else:
        chains = [(d, [(t, max(1, int(round(n * args.steps_scale)))) for t, n in segments])
                  for d, segments in DEFAULT_CHAINS]
        images = generate_aqueous_nacl_dataset(seed=args.seed, chains=chains, n_rattles=args.rattles)
    write_dataset(images, args.output)
    print(f"wrote {len(images)} structures to {args.output} ({time.time() - t0:.0f} s wall, "
          f"{time.process_time() - c0:.0f} s CPU)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
