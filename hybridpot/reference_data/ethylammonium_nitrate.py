"""Ethylammonium nitrate (EAN), a protic room-temperature ionic liquid: GFN1-xTB reference data (needs ``tblite``).

[CH3CH2NH3]+ [NO3]- (15 atoms per ion pair, 108.10 g/mol). The boxes: ``n_pairs`` ion pairs
(default 4: 60 atoms, 8.40 Å at the experimental density 1.21 g/cm^3 at 298 K) in a periodic cubic cell.
Ions are built from hand-written coordinates (:data:`ETHYLAMMONIUM`: staggered ethylamine with a
third H on N, N-H 1.03 Å, C-N 1.50 Å, C-C 1.52 Å, C-H 1.09 Å; :data:`NITRATE`: planar, N-O 1.25 Å),
put on the sites of a rock-salt lattice (cations and anions alternating) with random orientations,
and relaxed with GFN1-xTB.

Every ion is a *fragment* with charge +1 (cation) or -1 (anion): ``atoms.arrays["ion"]`` (per-atom
ion index, survives extended XYZ) and ``atoms.info["ion_charges"]``; :func:`with_fragments`
rebuilds ``atoms.info["fragments"]`` / ``["fragment_charges"]`` from them, which is what
:class:`hybridpot.AtomicSystem` and the ASE calculator read (QEq then keeps each ion's charge
exactly at +-1). The reference method's own charges (Mulliken) are *not* +-1 per ion: GFN1-xTB
moves some charge between the ions (see :func:`ion_charge_sums`).

Reference method: GFN1-xTB (S. Grimme, C. Bannwarth, P. Shushkov, J. Chem. Theory Comput. 13, 1989
(2017)) through tblite, 300 K electronic temperature, via
:func:`hybridpot.reference_data.nacl_clusters.compute_reference`.

Sampling (:func:`generate_ean_dataset`): per start box the xTB relaxation, rattled copies, and
snapshots of GFN1-xTB Langevin MD at several temperatures (0.5 fs steps, friction 0.01/fs) and
a few densities; :func:`model_snapshots` is the active-learning round (frames of a trained model's
own MD, labelled with GFN1-xTB).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.singlepoint import SinglePointCalculator
from scipy.spatial.transform import Rotation

__all__ = [
    "ETHYLAMMONIUM",
    "NITRATE",
    "EAN_MOLAR_MASS",
    "EAN_DENSITY",
    "ean_box",
    "with_fragments",
    "ion_groups",
    "ion_charge_sums",
    "closest_intermolecular",
    "xtb_md_frames",
    "generate_ean_dataset",
    "model_snapshots",
    "ammonium_h_distances",
    "ReferenceCalculator",
    "relax_box",
    "label",
    "summary",
    "load_ean",
    "main",
]

#: [CH3CH2NH3]+: (symbol, x, y, z) in Å, staggered, centred. N, C(alpha), C(methyl), 3 H on N,
#: 2 H on C(alpha), 3 H on C(methyl); made once with internal coordinates (N-H 1.03, C-N 1.50,
#: C-C 1.52, C-H 1.09 Å, angles ~110 degrees) and written out here.
ETHYLAMMONIUM: Tuple[Tuple[str, float, float, float], ...] = (
    ("N", -1.1483, -0.5231, 0.0000),
    ("C", 0.3517, -0.5231, 0.0000),
    ("C", 0.8716, 0.9052, 0.0000),
    ("H", -1.5005, -0.0392, -0.8382),
    ("H", -1.5005, -1.4910, 0.0000),
    ("H", -1.5005, -0.0392, 0.8382),
    ("H", 0.7100, -1.0407, -0.8898),
    ("H", 0.7100, -1.0407, 0.8898),
    ("H", 0.5225, 1.4385, 0.8842),
    ("H", 1.9616, 0.9147, 0.0000),
    ("H", 0.5225, 1.4385, -0.8842),
)

#: [NO3]-: planar, N-O 1.25 Å, O-N-O 120 degrees.
NITRATE: Tuple[Tuple[str, float, float, float], ...] = (
    ("N", 0.0, 0.0, 0.0),
    ("O", 1.25, 0.0, 0.0),
    ("O", -0.625, 1.0825, 0.0),
    ("O", -0.625, -1.0825, 0.0),
)

#: g/mol of [C2H5NH3][NO3] (C2H8N2O3)
EAN_MOLAR_MASS = 108.097
#: g/cm^3, liquid EAN at 298 K (the density the default boxes have)
EAN_DENSITY = 1.21

#: method and electronic temperature (K) of the shipped data
DEFAULT_METHOD = "GFN1-xTB"
DEFAULT_ELECTRONIC_TEMPERATURE = 300.0


def _ion(template) -> Tuple[List[str], np.ndarray]:
    return [t[0] for t in template], np.array([t[1:] for t in template], dtype=float)


def ean_box(
    n_pairs: int = 4,
    rng: Optional[np.random.Generator] = None,
    density: float = EAN_DENSITY,
    min_distance: float = 1.8,
    max_tries: int = 100,
) -> Atoms:
    """A periodic cubic box of ``n_pairs`` EAN ion pairs at ``density`` (g/cm^3), unrelaxed.

    Ion centres sit on the sites of an m x m x m simple-cubic lattice (m^3 >= 2 n_pairs; filled in order
    where m^3 > 2 n_pairs, so 4 and 13 pairs fill it evenly), cations and anions alternating like rock
    salt; each ion gets a random orientation; ions are placed one at a time, each orientation redrawn (up to
    200 times) until the ion's atoms are at least ``min_distance`` (Å, minimum image) from those of the ions
    placed before; a placement that gets stuck starts again (up to ``max_tries`` times).

    Returns
    -------
    ase.Atoms
        ``15 n_pairs`` atoms, cations first (11 atoms each), then anions (4 each);
        ``arrays["ion"]`` (ion index per atom), ``info["ion_charges"]`` (+1 / -1 per ion),
        ``info["charge"]`` 0, and the QEq fragments (:func:`with_fragments`).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    volume = n_pairs * EAN_MOLAR_MASS / units._Nav / density * 1e24  # Å^3
    length = volume ** (1.0 / 3.0)
    m = int(np.ceil((2 * n_pairs) ** (1.0 / 3.0) - 1e-9))
    sites = np.array([(i, j, k) for i in range(m) for j in range(m) for k in range(m)], dtype=float)
    parity = sites.sum(axis=1).astype(int) % 2
    cation_sites = sites[parity == 0][:n_pairs]
    anion_sites = sites[parity == 1][:n_pairs]
    spacing = length / m
    cat_symbols, cat_positions = _ion(ETHYLAMMONIUM)
    an_symbols, an_positions = _ion(NITRATE)
    cat_positions -= cat_positions.mean(axis=0)
    templates = [(cat_symbols, cat_positions, s) for s in cation_sites] + [(an_symbols, an_positions, s) for s in anion_sites]
    symbols: List[str] = []
    ion_index: List[int] = []
    for k, (sym, _, _) in enumerate(templates):
        symbols += sym
        ion_index += [k] * len(sym)
    ion_index_arr = np.array(ion_index)
    cell = np.eye(3) * length
    from ase.geometry import get_distances

    placed: List[np.ndarray] = []
    for _ in range(max_tries):  # whole placements; a placement that gets stuck starts again
        placed = []
        for _, pos, site in templates:
            # one ion at a time: redraw its orientation until it keeps min_distance from the ions placed so far
            for _ in range(200):
                trial = Rotation.random(random_state=int(rng.integers(2**31))).apply(pos) + (site + 0.5) * spacing
                if not placed:
                    break
                _, d = get_distances(trial, np.concatenate(placed), cell=cell, pbc=True)
                if d.min() >= min_distance:
                    break
            else:
                break
            placed.append(trial)
        if len(placed) == len(templates):
            break
    else:
        raise RuntimeError(f"no placement of the ions keeps {min_distance} Å between ions in {max_tries} tries; "
                           "lower min_distance or the density")
    atoms = Atoms(symbols, positions=np.concatenate(placed), cell=cell, pbc=True)
    atoms.wrap()
    atoms.arrays["ion"] = ion_index_arr
    atoms.info["ion_charges"] = np.array([1.0] * n_pairs + [-1.0] * n_pairs)
    atoms.info["charge"] = 0.0
    return with_fragments(atoms)


def with_fragments(atoms: Atoms) -> Atoms:
    """Set ``info["fragments"]`` and ``info["fragment_charges"]`` (what hybridpot's QEq reads) from
    ``arrays["ion"]`` and ``info["ion_charges"]`` (what extended XYZ keeps); returns ``atoms``."""
    ion = np.asarray(atoms.arrays["ion"], dtype=int)
    charges = np.asarray(atoms.info["ion_charges"], dtype=float).ravel()
    atoms.info["fragments"] = [np.nonzero(ion == k)[0].tolist() for k in range(len(charges))]
    atoms.info["fragment_charges"] = charges.tolist()
    return atoms


def ion_groups(atoms: Atoms) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Atom indices of each cation and of each anion (from ``arrays["ion"]`` and ``info["ion_charges"]``)."""
    ion = np.asarray(atoms.arrays["ion"], dtype=int)
    charges = np.asarray(atoms.info["ion_charges"], dtype=float).ravel()
    cations = [np.nonzero(ion == k)[0] for k in range(len(charges)) if charges[k] > 0]
    anions = [np.nonzero(ion == k)[0] for k in range(len(charges)) if charges[k] < 0]
    return cations, anions


def ion_charge_sums(atoms: Atoms, charges: Optional[np.ndarray] = None) -> np.ndarray:
    """Sum of atomic charges per ion (e), shape ``[n_ions]`` (default: ``atoms.get_charges()``)."""
    q = atoms.get_charges() if charges is None else np.asarray(charges)
    ion = np.asarray(atoms.arrays["ion"], dtype=int)
    return np.bincount(ion, weights=q, minlength=int(ion.max()) + 1)


def closest_intermolecular(atoms: Atoms, ion_index: Optional[np.ndarray] = None) -> float:
    """Smallest minimum-image distance (Å) between atoms of different ions."""
    from ase.geometry import get_distances

    ion = np.asarray(atoms.arrays["ion"] if ion_index is None else ion_index)
    _, d = get_distances(atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    return float(d[ion[:, None] != ion[None, :]].min())


class ReferenceCalculator(Calculator):
    """ASE calculator running :func:`~hybridpot.reference_data.nacl_clusters.compute_reference`
    (GFN1-xTB, 300 K electronic temperature), so that every MD step is a labelled structure
    (energy, forces, stress, Mulliken charges) and sampling costs no extra single points."""

    implemented_properties = ["energy", "free_energy", "forces", "stress", "charges"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        from .nacl_clusters import compute_reference

        super().calculate(atoms, properties, system_changes)
        ref = compute_reference(self.atoms, method=DEFAULT_METHOD, charge=0.0,
                                electronic_temperature=DEFAULT_ELECTRONIC_TEMPERATURE)
        self.results = dict(ref.calc.results)


def _as_labelled(atoms: Atoms, work: Atoms, source: str) -> Atoms:
    """A copy of ``work``'s geometry with its reference results and ``atoms``' ion data."""
    frame = Atoms(work.numbers, positions=work.positions.copy(), cell=work.cell, pbc=True)
    frame.arrays["ion"] = np.asarray(atoms.arrays["ion"]).copy()
    frame.info.update(charge=0.0, ion_charges=np.array(atoms.info["ion_charges"]), source=source,
                      method=DEFAULT_METHOD, electronic_temperature=DEFAULT_ELECTRONIC_TEMPERATURE)
    frame.calc = SinglePointCalculator(frame, **{k: np.copy(v) for k, v in work.calc.results.items()})
    return frame


def relax_box(atoms: Atoms, fmax: float = 0.1, steps: int = 30) -> Atoms:
    """GFN1-xTB relaxation (FIRE, fixed cell, at most ``steps`` steps) of a box; returns the last
    geometry, labelled, with the same ions (``info["source"] = "relaxed"``)."""
    from ase.optimize import FIRE

    work = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)
    work.calc = ReferenceCalculator()
    FIRE(work, logfile=None).run(fmax=fmax, steps=steps)
    return _as_labelled(atoms, work, "relaxed")


def xtb_md_frames(
    atoms: Atoms,
    rng: np.random.Generator,
    temperature_K: float,
    n_frames: int,
    interval: int,
    equilibration: int = 60,
    timestep_fs: float = 1.0,
    friction: float = 0.01,
    trajectory: Optional[list] = None,
) -> List[Atoms]:
    """Labelled frames of GFN1-xTB Langevin MD of a box: every ``interval`` steps after ``equilibration``
    steps (time step ``timestep_fs``, friction per fs). ``trajectory``, if a list, gets every step's
    positions (for analysis, e.g. N-H distances or RDFs)."""
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary

    work = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)
    work.calc = ReferenceCalculator()
    masses = work.get_masses()[:, None]
    work.set_momenta(rng.normal(size=(len(work), 3)) * np.sqrt(masses * units.kB * temperature_K))
    Stationary(work)
    work.set_constraint(FixCom())
    dyn = Langevin(work, timestep=timestep_fs * units.fs, temperature_K=temperature_K, friction=friction / units.fs,
                   fixcm=False, rng=np.random.RandomState(int(rng.integers(2**31))))
    if trajectory is not None:
        dyn.attach(lambda: trajectory.append(work.positions.copy()), interval=1)
    dyn.run(equilibration)
    frames = []
    for _ in range(n_frames):
        dyn.run(interval)
        frames.append(_as_labelled(atoms, work, f"xtb md {temperature_K:.0f} K"))
    return frames


def label(frames: Sequence[Atoms], progress: bool = True) -> List[Atoms]:
    """GFN1-xTB energy, forces, stress and Mulliken charges of each frame (ion data kept)."""
    from tqdm.auto import tqdm

    from .nacl_clusters import compute_reference

    out = []
    for frame in tqdm(frames, desc="GFN1-xTB", disable=not progress):
        ref = compute_reference(frame, method=DEFAULT_METHOD, electronic_temperature=DEFAULT_ELECTRONIC_TEMPERATURE)
        ref.arrays["ion"] = frame.arrays["ion"].copy()
        ref.info.pop("fragments", None)
        ref.info.pop("fragment_charges", None)
        out.append(ref)
    return out


def ammonium_h_distances(atoms: Atoms) -> Tuple[float, float]:
    """(largest N-H distance within any cation, shortest ammonium-H to nitrate-O distance), Å.

    A proton transfer to nitrate shows as an N-H distance growing past the H...O one (about
    1.0-1.1 Å within the cation and 1.6-2.0 Å for the hydrogen bond while the ions stay intact)."""
    from ase.geometry import get_distances

    cations, anions = ion_groups(atoms)
    oxygens = np.concatenate([a[atoms.numbers[a] == 8] for a in anions])
    longest, shortest = 0.0, np.inf
    for c in cations:
        nitrogen = c[atoms.numbers[c] == 7]
        hydrogens = c[atoms.numbers[c] == 1]
        _, d_nh = get_distances(atoms.positions[hydrogens], atoms.positions[nitrogen], cell=atoms.cell, pbc=atoms.pbc)
        on_n = hydrogens[np.argsort(d_nh[:, 0])[:3]]  # the three H closest to the cation's N
        _, d_own = get_distances(atoms.positions[on_n], atoms.positions[nitrogen], cell=atoms.cell, pbc=atoms.pbc)
        _, d_o = get_distances(atoms.positions[on_n], atoms.positions[oxygens], cell=atoms.cell, pbc=atoms.pbc)
        longest, shortest = max(longest, float(d_own.max())), min(shortest, float(d_o.min()))
    return longest, shortest


def generate_ean_dataset(
    seed: int = 0,
    states: Sequence[Tuple[float, float]] = ((1.21, 300.0), (1.21, 400.0), (1.15, 500.0), (1.27, 600.0)),
    n_pairs: int = 4,
    frames_per_state: int = 40,
    interval: int = 6,
    equilibration: int = 60,
    rattles_per_state: int = 4,
    rattle_sigma: float = 0.05,
    relax_steps: int = 30,
    progress: bool = True,
    checkpoint=None,
) -> List[Atoms]:
    """EAN boxes with GFN1-xTB labels (see the module docstring).

    Per (density g/cm^3, temperature K) of ``states``: a new random box (:func:`ean_box`), its
    GFN1-xTB relaxation (``relax_steps`` FIRE steps; the last geometry kept, ``source`` "relaxed"),
    ``equilibration`` steps of GFN1-xTB Langevin MD (1 fs, friction 0.01/fs), then ``frames_per_state``
    frames ``interval`` steps apart (``source`` "xtb md <T> K"; each MD step is a GFN1-xTB single
    point, so the frames cost nothing extra), and ``rattles_per_state`` copies of MD frames with Gaussian
    displacements ``rattle_sigma`` (Å), labelled (``source`` "rattled"). Every random number comes from
    ``numpy.random.default_rng(seed)``. ``checkpoint``: a path the structures so far are written to after
    each state.
    """
    from tqdm.auto import tqdm

    from .nacl_clusters import write_dataset

    rng = np.random.default_rng(seed)
    images: List[Atoms] = []
    for density, temperature in tqdm(states, desc="EAN states", disable=not progress):
        box = ean_box(n_pairs, rng, density=density)
        relaxed = relax_box(box, steps=relax_steps)
        relaxed.info["source"] = f"relaxed {density:.2f} g/cm3"
        images.append(relaxed)
        frames = xtb_md_frames(relaxed, rng, temperature, frames_per_state, interval, equilibration=equilibration)
        for f in frames:
            f.info["source"] = f"xtb md {temperature:.0f} K {density:.2f} g/cm3"
        images += frames
        picks = rng.choice(len(frames), size=min(rattles_per_state, len(frames)), replace=False)
        rattled = []
        for k in picks:
            r = Atoms(frames[k].numbers, positions=frames[k].positions + rng.normal(0.0, rattle_sigma, (len(box), 3)),
                      cell=box.cell, pbc=True)
            r.arrays["ion"] = box.arrays["ion"].copy()
            r.info.update(charge=0.0, ion_charges=np.array(box.info["ion_charges"]),
                          source=f"rattled {rattle_sigma:.2f} {temperature:.0f} K {density:.2f} g/cm3")
            rattled.append(r)
        images += label(rattled, progress=False)
        if checkpoint is not None:
            write_dataset(images, checkpoint)
    return images


def model_snapshots(
    model,
    states: Sequence[Tuple[float, float]] = ((1.21, 350.0), (1.21, 450.0)),
    n_pairs: int = 4,
    snapshots_per_state: int = 20,
    seed: int = 1,
    equilibration_steps: int = 100,
    interval: int = 20,
    timestep_fs: float = 0.5,
    min_distance: float = 0.75,
    max_force: float = 20.0,
    relax_steps: int = 0,
    relax_interval: int = 10,
    progress: bool = True,
) -> List[Atoms]:
    """Active learning: frames of a trained model's own Langevin MD of EAN boxes, labelled with GFN1-xTB.

    With ``relax_steps > 0`` each state starts with a FIRE relaxation of the box with the model, a frame
    every ``relax_interval`` steps (``source`` "model relax"): relaxations find the holes of a model's
    energy (e.g. two H atoms of different ions falling together) faster than MD.

    Per (density g/cm^3, temperature K): a new random box, ``equilibration_steps`` of Langevin MD with
    ``model`` (QEq with the per-ion fragment charges +-1; ``timestep_fs``, friction 0.01/fs), then up to
    ``snapshots_per_state`` frames ``interval`` steps apart (``source`` "model md <T> K <rho> g/cm3").
    A first-round model can break molecules apart in its own MD: a state ends at the first frame with two
    atoms closer than ``min_distance`` (Å; that frame is kept) or when the model fails (overlapping
    atoms); those last frames are where the model is most wrong. Labelled frames whose largest GFN1-xTB
    force component exceeds ``max_force`` (eV/Å) are dropped (they would dominate the force loss).
    """
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary

    from ..calculator import HybridCalculator

    rng = np.random.default_rng(seed)
    frames: List[Atoms] = []
    for density, temperature in states:
        atoms = ean_box(n_pairs, rng, density=density)
        atoms.calc = HybridCalculator(model, skin=0.5)
        masses = atoms.get_masses()[:, None]
        atoms.set_momenta(rng.normal(size=(len(atoms), 3)) * np.sqrt(masses * units.kB * temperature))
        Stationary(atoms)
        atoms.set_constraint(FixCom())
        dyn = Langevin(atoms, timestep=timestep_fs * units.fs, temperature_K=temperature, friction=0.01 / units.fs,
                       fixcm=False, rng=np.random.RandomState(int(rng.integers(2**31))))
        try:
            if relax_steps > 0:
                from ase.optimize import FIRE

                momenta = atoms.get_momenta()
                relaxation = FIRE(atoms, logfile=None)
                for _ in range(relax_steps // relax_interval):
                    relaxation.run(fmax=0.05, steps=relax_interval)
                    f = Atoms(atoms.numbers, positions=atoms.positions.copy(), cell=atoms.cell, pbc=True)
                    f.arrays["ion"] = atoms.arrays["ion"].copy()
                    f.info.update(charge=0.0, ion_charges=np.array(atoms.info["ion_charges"]),
                                  source=f"model relax {density:.2f} g/cm3")
                    frames.append(f)
                    if f.get_all_distances(mic=True)[np.triu_indices(len(f), 1)].min() < min_distance:
                        raise RuntimeError("two atoms closer than min_distance in the relaxation")
                atoms.set_momenta(momenta)
            dyn.run(equilibration_steps)
            for _ in range(snapshots_per_state):
                dyn.run(interval)
                f = Atoms(atoms.numbers, positions=atoms.positions.copy(), cell=atoms.cell, pbc=True)
                f.arrays["ion"] = atoms.arrays["ion"].copy()
                f.info.update(charge=0.0, ion_charges=np.array(atoms.info["ion_charges"]),
                              source=f"model md {temperature:.0f} K {density:.2f} g/cm3")
                frames.append(f)
                if f.get_all_distances(mic=True)[np.triu_indices(len(f), 1)].min() < min_distance:
                    break
        except (ValueError, RuntimeError) as exc:  # the model's MD broke down (overlapping atoms)
            print(f"model MD at {temperature:.0f} K, {density:.2f} g/cm3 stopped after {dyn.nsteps} steps: {exc}")
    labelled = label(frames, progress=progress)
    return [a for a in labelled if np.abs(a.get_forces()).max() <= max_force]


def summary(images: Sequence[Atoms]) -> str:
    """Counts per source, energy and force ranges, per-ion Mulliken sums, the N-H check."""
    from collections import Counter

    lines = [f"{len(images)} structures"]
    for source, n in sorted(Counter(str(a.info.get("source")).split(" g/cm3")[0] for a in images).items()):
        lines.append(f"  {n:4d}  {source}")
    e = np.array([a.get_potential_energy() / len(a) for a in images])
    f = np.concatenate([a.get_forces().ravel() for a in images])
    q = np.array([ion_charge_sums(a) for a in images])
    ion_sign = np.asarray(images[0].info["ion_charges"]).ravel() > 0
    nh = np.array([ammonium_h_distances(a) for a in images])
    lines.append(f"energies {e.min():.4f} .. {e.max():.4f} eV/atom; force components RMS {np.sqrt(np.mean(f**2)):.3f}, "
                 f"max {np.abs(f).max():.2f} eV/Å")
    lines.append(f"Mulliken charge per ion: cations {q[:, ion_sign].mean():+.3f} +- {q[:, ion_sign].std():.3f} e, "
                 f"anions {q[:, ~ion_sign].mean():+.3f} +- {q[:, ~ion_sign].std():.3f} e")
    lines.append(f"largest ammonium N-H {nh[:, 0].max():.3f} Å, shortest H...O(nitrate) {nh[:, 1].min():.3f} Å")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybridpot.reference_data.ethylammonium_nitrate",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="ethylammonium_nitrate.extxyz.gz")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames-per-state", type=int, default=40)
    parser.add_argument("--from-model", default=None, metavar="MODEL",
                        help="active learning: label frames of this model's own MD instead")
    parser.add_argument("--relax-steps", type=int, default=0,
                        help="with --from-model: FIRE steps with the model first, a frame every 10")
    parser.add_argument("--states", type=lambda x: tuple(tuple(float(v) for v in st.split(":")) for st in x.split(",")),
                        default=None, help="with --from-model: density:temperature,... (default 1.21:350,1.21:450)")
    parser.add_argument("--quick", action="store_true", help="a tiny dataset (for testing the script)")
    args = parser.parse_args(argv)
    from .nacl_clusters import write_dataset

    t0, c0 = time.time(), time.process_time()
    if args.from_model:
        from ..model import load

        images = model_snapshots(load(args.from_model), seed=args.seed, relax_steps=args.relax_steps,
                                 states=args.states or ((1.21, 350.0), (1.21, 450.0)))
    elif args.quick:
        images = generate_ean_dataset(seed=args.seed, states=((1.21, 350.0),), frames_per_state=2, interval=2,
                                      equilibration=2, rattles_per_state=1, relax_steps=2)
    else:
        images = generate_ean_dataset(seed=args.seed, frames_per_state=args.frames_per_state,
                                      checkpoint=str(args.output) + ".partial.extxyz")
    write_dataset(images, args.output)
    print(f"wrote {len(images)} structures to {args.output} ({time.time() - t0:.0f} s wall, "
          f"{time.process_time() - c0:.0f} s CPU)")
    print(summary(images))
    return 0


def load_ean(path) -> List[Atoms]:
    """Read an EAN dataset written by :func:`main` and restore the QEq fragments (:func:`with_fragments`)."""
    import ase.io

    return [with_fragments(a) for a in ase.io.read(str(path), index=":", format="extxyz")]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
