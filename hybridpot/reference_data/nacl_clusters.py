"""Reference data from GFN2-xTB / GFN1-xTB with ``tblite`` (optional dependency).

Install the extra: ``pip install hybridpot[reference]`` (or ``pip install tblite``).
``tblite`` is imported lazily: the rest of hybridpot works without it.

Units of everything written: eV, Å, e (tblite works in Hartree/Bohr; converted with
``ase.units``). Each structure is an ``ase.Atoms`` with a ``SinglePointCalculator``
holding ``energy`` (eV), ``free_energy``, ``forces`` (eV/Å), ``charges`` (Mulliken charges
of the tight-binding method, e) and, for periodic structures, ``stress`` (eV/Å^3, from
tblite's virial); ``info`` holds ``charge`` (total charge, e), ``multiplicity``,
``method``, ``source`` (how the geometry was made) and ``tblite_dipole`` (tblite's dipole
moment in e·Å about the coordinate origin, which includes atomic dipoles, so it is not
``sum_i q_i r_i``; kept for reference only).

The NaCl-clusters dataset shipped in ``hybridpot/data/`` (918 structures) was made with
(tblite 0.8.0; 126 s wall, 49 s CPU on one core of a busy 2-core machine)::

    OMP_NUM_THREADS=1 python -m hybridpot.reference_data.nacl_clusters --output hybridpot/data/nacl_clusters.extxyz.gz --seed 0

It holds Na_nCl_n (charge 0) and Na_{n+1}Cl_n (charge +1, closed shell, and charge 0,
doublet: the same composition with two total charges, which a 2G potential cannot tell
apart) clusters of several sizes, each from random connected starting geometries:
the random geometry itself, its tight-binding relaxation, rattled copies of it and snapshots
of short Langevin MD at 300-1000 K, plus the NaCl dimer scan from 1.8 to 10 Å, and close
contacts (compressed clusters, those with force components above ``MAX_CLOSE_CONTACT_FORCE``
dropped) so that trained models see the repulsive wall.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress
from ase.units import Bohr, Hartree, fs, kB

__all__ = [
    "require_tblite",
    "multiplicity",
    "compute_reference",
    "random_cluster",
    "dimer_scan",
    "rattled",
    "md_snapshots",
    "relax",
    "generate_nacl_dataset",
    "write_dataset",
    "DEFAULT_COMPOSITIONS",
    "MAX_CLOSE_CONTACT_FORCE",
]

#: Method and electronic (Fermi smearing) temperature (K) of the shipped dataset. GFN2-xTB's and
#: GFN1-xTB's SCF does not converge for the NaCl dimer beyond ~6.5 Å at 300 K (the ionic
#: and neutral states come close); GFN1-xTB at 3000 K converges everywhere in 1.8-10 Å.
DEFAULT_METHOD = "GFN1-xTB"
DEFAULT_ELECTRONIC_TEMPERATURE = 3000.0

#: close contacts (like-ion scans, compressed clusters) whose largest force component exceeds this
#: (eV/Å) are left out of the dataset (see generate_nacl_dataset)
MAX_CLOSE_CONTACT_FORCE = 10.0

#: (n_Na, n_Cl, total charge) of the shipped dataset's clusters
DEFAULT_COMPOSITIONS: Tuple[Tuple[int, int, int], ...] = (
    (2, 2, 0), (3, 3, 0), (4, 4, 0),
    (2, 1, 1), (2, 1, 0), (3, 2, 1), (3, 2, 0), (4, 3, 1), (4, 3, 0), (5, 4, 1), (5, 4, 0),
)


def require_tblite():
    """Import ``tblite.interface`` or raise an ``ImportError`` saying how to install it."""
    try:
        import tblite.interface as interface
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reference data generation needs the optional dependency tblite: "
            "pip install 'hybridpot[reference]'  (or: pip install tblite)"
        ) from exc
    return interface


def multiplicity(numbers: Sequence[int], charge: float) -> int:
    """Lowest spin multiplicity for the electron count: 1 (even) or 2 (odd)."""
    n_electrons = int(np.sum(numbers)) - int(round(charge))
    if abs(charge - round(charge)) > 1e-8:
        raise ValueError(f"total charge must be an integer for tblite, got {charge}")
    if n_electrons < 0:
        raise ValueError(f"charge {charge} leaves a negative number of electrons")
    return 1 + n_electrons % 2


def compute_reference(
    atoms: Atoms,
    method: str = DEFAULT_METHOD,
    charge: Optional[float] = None,
    mult: Optional[int] = None,
    accuracy: float = 1.0,
    electronic_temperature: float = DEFAULT_ELECTRONIC_TEMPERATURE,
    max_iterations: int = 250,
) -> Atoms:
    """Single-point tight-binding energy, forces, charges (and stress) of ``atoms``.

    Parameters
    ----------
    atoms : ase.Atoms
        Structure (finite, or periodic in all three directions).
    method : str
        "GFN2-xTB" or "GFN1-xTB" (any method tblite knows).
    charge : float, optional
        Total charge (e); default ``atoms.info["charge"]`` or 0.
    mult : int, optional
        Spin multiplicity; default the lowest for the electron count.
    accuracy, electronic_temperature, max_iterations
        tblite settings (electronic temperature in K).

    Returns
    -------
    ase.Atoms
        A copy with a ``SinglePointCalculator`` (eV, Å, e) and ``info`` as in the module
        docstring.
    """
    interface = require_tblite()
    charge = float(atoms.info.get("charge", 0.0) if charge is None else charge)
    mult = multiplicity(atoms.numbers, charge) if mult is None else int(mult)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any() and not pbc.all():
        raise ValueError("tblite needs fully periodic or finite structures, not mixed pbc")
    kwargs = {}
    if pbc.all():
        kwargs = {"lattice": atoms.cell.array / Bohr, "periodic": pbc}
    res = None
    # a failed SCF is retried once with stronger damping and more iterations (same
    # method and electronic temperature, so the same solution where both converge)
    for damping, iterations in ((0.4, max_iterations), (0.1, 4 * max_iterations)):
        calc = interface.Calculator(method, atoms.numbers, atoms.positions / Bohr, charge, mult - 1, **kwargs)
        calc.set("verbosity", 0)
        calc.set("accuracy", accuracy)
        calc.set("temperature", electronic_temperature * kB / Hartree)
        calc.set("max-iter", iterations)
        calc.set("mixer-damping", damping)
        try:
            res = calc.singlepoint()
            break
        except Exception as exc:  # tblite raises its own TBLiteRuntimeError
            error = exc
    if res is None:
        raise RuntimeError(f"{method} SCF did not converge for this structure: {error}")
    energy = float(res.get("energy")) * Hartree
    results = {
        "energy": energy,
        "free_energy": energy,
        "forces": -np.asarray(res.get("gradient")) * Hartree / Bohr,
        "charges": np.asarray(res.get("charges"), dtype=np.float64),
    }
    if pbc.all():
        virial = np.asarray(res.get("virial")) * Hartree  # dE/d(strain), eV
        results["stress"] = full_3x3_to_voigt_6_stress(virial / atoms.get_volume())
    out = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    out.info.update({k: v for k, v in atoms.info.items() if k not in ("energy", "free_energy", "stress")})
    out.info.update(
        charge=charge,
        multiplicity=mult,
        method=method,
        electronic_temperature=float(electronic_temperature),
        tblite_dipole=np.asarray(res.get("dipole")) * Bohr,
    )
    out.calc = SinglePointCalculator(out, **results)
    return out


# ---------------------------------------------------------------------- geometries
def random_cluster(
    n_na: int,
    n_cl: int,
    rng: np.random.Generator,
    bond: Tuple[float, float] = (2.35, 3.0),
    min_distance: float = 2.25,
    like_min_distance: float = 3.2,
) -> Atoms:
    """A random connected Na_nCl_m cluster.

    Ions are added one at a time next to a random ion of the opposite kind (where there is
    one), at a distance drawn from ``bond`` (Å) in a random direction; a trial position is
    rejected if it comes closer than ``min_distance`` to any ion or ``like_min_distance``
    to an ion of the same kind. The cluster is centred at the origin.
    """
    if n_na < 0 or n_cl < 0 or n_na + n_cl == 0:
        raise ValueError(f"need at least one ion, got n_na={n_na}, n_cl={n_cl}")
    # alternate the kinds as far as possible so that every new ion has an opposite partner
    remaining = {"Na": n_na, "Cl": n_cl}
    current = "Na" if rng.random() < n_na / (n_na + n_cl) else "Cl"
    kinds = []
    while remaining["Na"] + remaining["Cl"] > 0:
        if remaining[current] == 0:
            current = "Cl" if current == "Na" else "Na"
        kinds.append(current)
        remaining[current] -= 1
        current = "Cl" if current == "Na" else "Na"
    symbols = [kinds[0]]
    positions = [np.zeros(3)]
    for kind in kinds[1:]:
        for _ in range(10000):
            partners = [k for k, s in enumerate(symbols) if s != kind] or list(range(len(symbols)))
            anchor = positions[int(rng.choice(partners))]
            direction = rng.normal(size=3)
            trial = anchor + rng.uniform(*bond) * direction / np.linalg.norm(direction)
            ok = True
            for s, p in zip(symbols, positions):
                d = np.linalg.norm(trial - p)
                if d < min_distance or (s == kind and d < like_min_distance):
                    ok = False
                    break
            if ok:
                break
        else:  # pragma: no cover - practically unreachable for small clusters
            raise RuntimeError("could not place an ion")
        symbols.append(kind)
        positions.append(trial)
    atoms = Atoms(symbols, positions=np.array(positions))
    atoms.positions -= atoms.positions.mean(axis=0)
    return atoms


def dimer_scan(r_min: float = 1.8, r_max: float = 10.0, n: int = 60, symbols: str = "NaCl") -> List[Atoms]:
    """A diatomic at ``n`` distances from ``r_min`` to ``r_max`` (Å) along x."""
    out = []
    for r in np.linspace(r_min, r_max, n):
        a = Atoms(symbols, positions=[[0.0, 0.0, 0.0], [r, 0.0, 0.0]])
        a.info["distance"] = float(r)
        out.append(a)
    return out


def rattled(atoms: Atoms, rng: np.random.Generator, sigma: float) -> Atoms:
    """A copy with Gaussian displacements of standard deviation ``sigma`` (Å)."""
    out = atoms.copy()
    out.calc = None
    out.positions = out.positions + rng.normal(scale=sigma, size=out.positions.shape)
    return out


def _tblite_ase(method: str, charge: float, mult: int, electronic_temperature: float):
    require_tblite()
    from tblite.ase import TBLite

    return TBLite(
        method=method, charge=charge, multiplicity=mult, verbosity=0, electronic_temperature=electronic_temperature
    )


def relax(
    atoms: Atoms,
    method: str = DEFAULT_METHOD,
    fmax: float = 0.05,
    steps: int = 200,
    electronic_temperature: float = DEFAULT_ELECTRONIC_TEMPERATURE,
) -> Atoms:
    """Geometry relaxation (BFGS) with tblite; returns a new ``Atoms`` (no calculator)."""
    from ase.optimize import BFGS

    charge = float(atoms.info.get("charge", 0.0))
    work = atoms.copy()
    work.calc = _tblite_ase(method, charge, multiplicity(work.numbers, charge), electronic_temperature)
    BFGS(work, logfile=None).run(fmax=fmax, steps=steps)
    out = Atoms(work.numbers, positions=work.positions, cell=work.cell, pbc=work.pbc)
    out.info.update(atoms.info)
    return out


def md_snapshots(
    atoms: Atoms,
    rng: np.random.Generator,
    n_snapshots: int,
    interval: int = 10,
    temperature_K: float = 900.0,
    timestep_fs: float = 2.0,
    friction: float = 0.02,
    method: str = DEFAULT_METHOD,
    electronic_temperature: float = DEFAULT_ELECTRONIC_TEMPERATURE,
) -> List[Atoms]:
    """Snapshots of Langevin MD with tblite, every ``interval`` steps (geometries only)."""
    from ase.md.langevin import Langevin

    charge = float(atoms.info.get("charge", 0.0))
    work = atoms.copy()
    work.calc = _tblite_ase(method, charge, multiplicity(work.numbers, charge), electronic_temperature)
    masses = work.get_masses()[:, None]
    momenta = rng.normal(size=(len(work), 3)) * np.sqrt(masses * kB * temperature_K)
    work.set_momenta(momenta - masses * momenta.sum(0) / masses.sum())
    dyn = Langevin(
        work,
        timestep=timestep_fs * fs,
        temperature_K=temperature_K,
        friction=friction / fs,
        rng=np.random.RandomState(int(rng.integers(2**31))),
    )
    out = []
    for _ in range(n_snapshots):
        dyn.run(interval)
        snap = Atoms(work.numbers, positions=work.positions.copy())
        snap.info.update(atoms.info)
        out.append(snap)
    return out


# ---------------------------------------------------------------------- dataset
def generate_nacl_dataset(
    seed: int = 0,
    compositions: Sequence[Tuple[int, int, int]] = DEFAULT_COMPOSITIONS,
    n_starts: int = 3,
    n_rattles: int = 4,
    n_md: int = 18,
    md_interval: int = 10,
    md_temperatures: Tuple[float, float] = (300.0, 1000.0),
    dimer_points: int = 60,
    n_compressed: int = 6,
    like_dimer_points: int = 0,
    max_close_contact_force: float = MAX_CLOSE_CONTACT_FORCE,
    method: str = DEFAULT_METHOD,
    electronic_temperature: float = DEFAULT_ELECTRONIC_TEMPERATURE,
    progress: bool = True,
) -> List[Atoms]:
    """Na_nCl_m clusters and the NaCl dimer scan with tight-binding labels (see module doc).

    Per composition and start: the random connected cluster, its relaxation, ``n_rattles``
    rattled copies of the relaxed cluster (sigma 0.03-0.15 Å) and ``n_md`` Langevin MD
    snapshots at a temperature drawn from ``md_temperatures`` (K). All random numbers come
    from ``numpy.random.default_rng(seed)``. Then close contacts from
    ``numpy.random.default_rng(seed + 1)``: ``n_compressed`` compressed random clusters per
    composition (and, with ``like_dimer_points > 0``, neutral Na2 and Cl2 scans from 1.8 to 6 Å);
    those whose largest force component exceeds ``max_close_contact_force`` (eV/Å) are dropped.
    """
    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    geometries: List[Atoms] = []
    for a in dimer_scan(n=dimer_points):
        a.info.update(charge=0.0, source="dimer_scan")
        geometries.append(a)
    bar = tqdm(total=len(compositions) * n_starts, desc="sampling clusters", disable=not progress)
    for n_na, n_cl, q in compositions:
        for start in range(n_starts):
            base = random_cluster(n_na, n_cl, rng)
            base.info.update(charge=float(q), composition=f"Na{n_na}Cl{n_cl}", start=start)
            initial = base.copy()
            initial.info["source"] = "random"
            geometries.append(initial)
            relaxed = relax(base, method=method, electronic_temperature=electronic_temperature)
            relaxed.info["source"] = "relaxed"
            geometries.append(relaxed)
            for sigma in np.linspace(0.03, 0.15, n_rattles):
                r = rattled(relaxed, rng, float(sigma))
                r.info["source"] = f"rattle_{sigma:.3f}"
                geometries.append(r)
            temperature = float(rng.uniform(*md_temperatures))
            snaps = md_snapshots(
                relaxed, rng, n_md, md_interval, temperature, method=method, electronic_temperature=electronic_temperature
            )
            for snap in snaps:
                snap.info["source"] = f"md_{temperature:.0f}K"
                geometries.append(snap)
            bar.update()
    bar.close()
    # close contacts, so that a model learns the repulsive wall (without them, MD with a
    # trained model can fall into unphysical like-ion collapse): Na2 and Cl2 scans and
    # compressed random clusters (ions 2.0-2.6 Å from a partner, no two closer than 1.9 Å,
    # like ions not closer than 2.6 Å). A separate generator (seed + 1) keeps everything above
    # identical to datasets made without them.
    rng_close = np.random.default_rng(seed + 1)
    close_contacts: List[Atoms] = []
    # Neutral Na2 and Cl2 scans (like_dimer_points > 0; the first version of this dataset had 20
    # each) are left out by default: they are covalent molecules (Cl2 bound at 2.0 Å, Na2 at 3.1 Å),
    # not the repelling ions of a salt cluster, and a 4G model fitted with them had test errors
    # of 0.9 eV/atom and 7 eV/Å on them (against 0.02 eV/atom and 0.14 eV/Å on the clusters);
    # the compressed clusters give the like-ion wall in the ionic environment.
    for symbols in ("Na2", "Cl2") if like_dimer_points > 0 else ():
        for a in dimer_scan(1.8, 6.0, like_dimer_points, symbols=symbols):
            a.info.update(charge=0.0, source=f"dimer_scan_{symbols}")
            close_contacts.append(a)
    for n_na, n_cl, q in compositions:
        for k in range(n_compressed):
            a = random_cluster(n_na, n_cl, rng_close, bond=(2.0, 2.6), min_distance=1.9, like_min_distance=2.6)
            a.info.update(charge=float(q), composition=f"Na{n_na}Cl{n_cl}", start=k, source="compressed")
            close_contacts.append(a)
    labelled = []
    for atoms in tqdm(geometries, desc=f"{method} single points", disable=not progress):
        labelled.append(compute_reference(atoms, method=method, electronic_temperature=electronic_temperature))
    # Close contacts whose largest force component exceeds max_close_contact_force (eV/Å) are
    # dropped: MD at the sampled temperatures never gets there (largest component in the MD
    # frames: about 3 eV/Å), and in the first version of this dataset such frames (up to
    # 46 eV/Å: Na2 at 1.8 Å, clusters with like ions 1.9 Å apart) held 90 % of the sum of
    # squared forces, so they decided the force RMSE of every fit.
    for atoms in tqdm(close_contacts, desc=f"{method} close contacts", disable=not progress):
        result = compute_reference(atoms, method=method, electronic_temperature=electronic_temperature)
        if np.abs(result.get_forces()).max() <= max_close_contact_force:
            labelled.append(result)
    return labelled


def write_dataset(images: Sequence[Atoms], path) -> None:
    """Write labelled structures to extended XYZ (``.gz`` compressed if the name says so)."""
    import ase.io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(str(path), list(images), format="extxyz")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hybridpot.reference_data.nacl_clusters",
        description="Generate the NaCl-clusters reference dataset with tblite (GFN1-xTB at 3000 K by default).",
    )
    parser.add_argument("--output", default="nacl_clusters.extxyz.gz", help="output file (.extxyz or .extxyz.gz)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=["GFN2-xTB", "GFN1-xTB"])
    parser.add_argument("--electronic-temperature", type=float, default=DEFAULT_ELECTRONIC_TEMPERATURE,
                        help="Fermi smearing temperature in K")
    parser.add_argument("--starts", type=int, default=3, help="random starting clusters per composition")
    parser.add_argument("--md", type=int, default=18, help="MD snapshots per start")
    parser.add_argument("--rattles", type=int, default=4, help="rattled copies per start")
    parser.add_argument("--quick", action="store_true", help="a tiny dataset (for testing the script)")
    args = parser.parse_args(argv)
    kwargs = dict(seed=args.seed, method=args.method, electronic_temperature=args.electronic_temperature,
                  n_starts=args.starts, n_md=args.md, n_rattles=args.rattles)
    if args.quick:
        kwargs.update(compositions=((2, 2, 0), (2, 1, 1)), n_starts=1, n_md=2, n_rattles=1, dimer_points=5,
                      n_compressed=1, like_dimer_points=3)
    images = generate_nacl_dataset(**kwargs)
    write_dataset(images, args.output)
    energies = np.array([a.get_potential_energy() for a in images])
    print(f"wrote {len(images)} structures to {args.output} ({args.method}, "
          f"T_el = {args.electronic_temperature:g} K, seed {args.seed}); "
          f"energies {energies.min():.3f} .. {energies.max():.3f} eV")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
