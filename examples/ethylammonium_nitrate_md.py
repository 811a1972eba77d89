"""Ethylammonium nitrate (EAN) with the shipped 4G model: Langevin at 350 K, then NVE; RDFs, diffusion, charges.

Usage::

    python examples/ethylammonium_nitrate_md.py [--model PATH] [--pairs 4] [--temperature 350]
        [--langevin-ps 1] [--nve-ps 2] [--check-xtb N] [--xtb-md-steps N] [--output runs/ean_md]

The default model is ``hybridpot/data/ethylammonium_nitrate_4G.pt`` (``examples/train_ethylammonium_nitrate.py``,
GFN1-xTB data of 4-ion-pair boxes). The box: ``--pairs`` [CH3CH2NH3][NO3] pairs at 1.21 g/cm^3 (the
experimental density at 298 K), built by :func:`hybridpot.reference_data.ethylammonium_nitrate.ean_box`
(ions on a rock-salt lattice, random orientations). Every ion is a QEq fragment with total charge
+1 / -1 (``atoms.info["fragments"]``, ``["fragment_charges"]``), so the calculator's charge
equilibration moves charge only within each ion. The lattice start is relaxed with the model (FIRE,
``--relax-steps``); time step ``--timestep`` (default 0.5 fs: H atoms, no constraints); Langevin (friction
0.01/fs) for ``--langevin-ps``, then velocity Verlet for ``--nve-ps``, a frame every 5 fs.

Printed (and written to ``results.json``): NVE temperature and energy drift (meV/atom/ps), the largest
deviation of the total charge from 0 and of any ion's charge from +-1 along the NVE run, the largest
ammonium N-H distance (proton transfer check), the RDF first shells of cation N - anion N, ammonium
H - nitrate O (the hydrogen bond), cation N - cation N and anion N - anion N (the box is small: RDFs
end at half the box edge), centre-of-mass MSDs and Einstein diffusion coefficients of both ions with
the Yeh-Hummer finite-size correction, and the plots ``rdf.png`` and ``msd.png``.

Reference method on the model's own trajectory (needs tblite):

* ``--check-xtb N``: GFN1-xTB single points on N NVE frames: energy offset and spread, force RMSE
  against the reference forces' RMS, charge RMSE against the Mulliken charges and the Mulliken per-ion sums.
* ``--xtb-md-steps N``: N steps (1 fs) of GFN1-xTB Langevin MD of the same box at the same temperature,
  started from the model's last frame: its RDFs are plotted next to the model's (dashed) and its
  first shells printed (about 1 s per step on one core for 60 atoms).

Long run (the one reported in examples/README.md): ``--timestep 1 --nve-ps 10 --check-xtb 10 --xtb-md-steps 300``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary
from ase.md.verlet import VelocityVerlet

import hybridpot as hp
from hybridpot.analysis import (diffusion_coefficient, energy_drift, first_shell, mean_squared_displacement,
                                radial_distribution, unwrapped_positions, yeh_hummer_correction)
from hybridpot.data import ethylammonium_nitrate_model_path
from hybridpot.reference_data.ethylammonium_nitrate import (ammonium_h_distances, ean_box, ion_charge_sums,
                                                            ion_groups, with_fragments)

#: Pa s; EAN's shear viscosity at 298 K, roughly (the value assumed for the Yeh-Hummer estimate; not measured
#: here, no source checked): lower at 350 K, which makes the true correction larger.
EAN_VISCOSITY_298K = 0.036
FRAME_EVERY_FS = 5.0

#: Inter-ion contact walls (Å): 0.2 Å below the shortest contact of each element pair between atoms of different
#: ions in the GFN1-xTB MD frames of the shipped data (300-600 K: H-H 1.71, H-C 2.38, H-N 1.99, H-O 1.45 Å; heavy
#: atoms 2.30 and more). Measured: the shipped model lets two H atoms of different cations fall onto each other
#: (0.1 Å) in FIRE relaxations and MD of fresh boxes, where GFN1-xTB repels them (2.6 eV/Å at 1.27 Å, 19 eV/Å at
#: 0.62 Å in the active-learning frames); the wall keeps the dynamics where the model was trained.
WALLS_A = {(1, 1): 1.5, (1, 6): 2.2, (1, 7): 1.8, (1, 8): 1.25}
HEAVY_WALL_A = 2.0
#: H-H pairs *within* an ion (geminal H, 1.68-1.78 Å apart in the templates): the shipped model also let two H
#: of one ammonium group fall together (0.09 Å) in a 1 fs NVE run without this wall (GFN1-xTB MD frames: >= 1.44 Å)
INTRA_ION_HH_WALL_A = 1.3
WALL_STIFFNESS = 20.0  # eV/Å^2


class ContactWall:
    """``sum k (R_ab - r)^2`` over pairs of atoms of *different* ions closer than the wall radius R_ab
    (:data:`WALLS_A`, heavy-atom pairs :data:`HEAVY_WALL_A`) and H-H pairs within an ion closer than
    :data:`INTRA_ION_HH_WALL_A`, minimum image; energy eV, forces eV/Å."""

    def __init__(self, atoms: Atoms, stiffness: float = WALL_STIFFNESS):
        z = atoms.numbers
        radius = np.full((len(z), len(z)), HEAVY_WALL_A)
        for (a, b), r in WALLS_A.items():
            radius[np.ix_(z == a, z == b)] = r
            radius[np.ix_(z == b, z == a)] = r
        ion = np.asarray(atoms.arrays["ion"])
        hh = (z[:, None] == 1) & (z[None, :] == 1)
        self.radius = np.where(ion[:, None] != ion[None, :], radius, np.where(hh, INTRA_ION_HH_WALL_A, 0.0))
        self.stiffness = stiffness

    def __call__(self, atoms: Atoms):
        from ase.geometry import get_distances

        vectors, d = get_distances(atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        overlap = np.clip(self.radius - d, 0.0, None)
        np.fill_diagonal(overlap, 0.0)
        energy = 0.5 * self.stiffness * float(np.sum(overlap**2))  # each pair counted twice
        with np.errstate(invalid="ignore", divide="ignore"):
            unit = np.where(d[..., None] > 0, vectors / d[..., None], 0.0)  # from i to j
        # dE/dr = -2 k overlap; force on i pushes it away from j
        forces = -2.0 * self.stiffness * np.einsum("ij,ijk->ik", overlap, unit)
        return energy, forces


class WalledCalculator(Calculator):
    """The model's calculator plus :class:`ContactWall` (energy and forces added; charges the model's)."""

    implemented_properties = ["energy", "free_energy", "forces", "charges"]

    def __init__(self, model_calc, wall: ContactWall):
        super().__init__()
        self.model_calc, self.wall = model_calc, wall
        self.wall_energies: List[float] = []

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.model_calc.calculate(self.atoms, ["energy", "forces", "charges"], system_changes)
        e_wall, f_wall = self.wall(self.atoms)
        self.wall_energies.append(e_wall)
        r = self.model_calc.results
        energy = float(r["energy"]) + e_wall
        self.results = {"energy": energy, "free_energy": energy, "forces": r["forces"] + f_wall,
                        "charges": np.array(r["charges"])}


def get_model(path: Optional[str]):
    path = Path(path) if path else ethylammonium_nitrate_model_path()
    if not path.exists():
        raise SystemExit(f"{path} not found; train one with: python examples/train_ethylammonium_nitrate.py --install")
    return hp.load(path), path


def rdf_selections(atoms: Atoms) -> Dict[str, tuple]:
    """Atom index groups of the RDFs: name -> (a, b)."""
    cations, anions = ion_groups(atoms)
    n_cation = np.array([c[atoms.numbers[c] == 7][0] for c in cations])
    n_anion = np.array([a[atoms.numbers[a] == 7][0] for a in anions])
    o_anion = np.concatenate([a[atoms.numbers[a] == 8] for a in anions])
    h_ammonium = []
    for c in cations:  # the three H nearest the cation's N (as built: atoms 3-5 of each cation)
        h = c[atoms.numbers[c] == 1]
        d = np.linalg.norm(atoms.positions[h] - atoms.positions[c[atoms.numbers[c] == 7][0]], axis=1)
        h_ammonium += h[np.argsort(d)[:3]].tolist()
    return {"N+ - N-": (n_cation, n_anion), "H(N) - O": (np.array(h_ammonium), o_anion),
            "N+ - N+": (n_cation, n_cation), "N- - N-": (n_anion, n_anion)}


def first_shells(frames: List[Atoms], r_max: float, n_bins: int = 60) -> Dict[str, dict]:
    """g(r) and first shells of the groups of :func:`rdf_selections`."""
    selections = rdf_selections(frames[0])
    volume = frames[0].get_volume()
    out = {}
    for name, (a, b) in selections.items():
        r, g = radial_distribution(frames, a, b, r_max, n_bins=n_bins)
        n_b = len(b) - 1 if np.array_equal(a, b) else len(b)
        try:
            shell = first_shell(r, g, n_b / volume)
            shell = {"r_peak_A": shell.r_peak, "g_peak": shell.g_peak, "r_min_A": shell.r_min,
                     "coordination": shell.coordination}
        except ValueError as exc:  # like ions: no peak above 1 within half the small box
            shell = {"note": str(exc)}
        out[name] = {"r": r, "g": g, "shell": shell}
    return out


def run_md(atoms: Atoms, calc, temperature: float, langevin_steps: int, nve_steps: int, seed: int,
           timestep_fs: float = 0.5, progress: bool = True):
    """Langevin then NVE; returns NVE frames (every 5 fs), times (ps), total energies (eV), temperatures,
    charges, and the wall time."""
    from tqdm.auto import tqdm

    atoms.calc = calc
    rng = np.random.default_rng(seed)
    masses = atoms.get_masses()[:, None]
    atoms.set_momenta(rng.normal(size=(len(atoms), 3)) * np.sqrt(masses * units.kB * temperature))
    Stationary(atoms)
    atoms.set_constraint(FixCom())
    t0 = time.time()
    langevin = Langevin(atoms, timestep=timestep_fs * units.fs, temperature_K=temperature, friction=0.01 / units.fs,
                        fixcm=False, rng=np.random.RandomState(seed))
    bar = tqdm(total=langevin_steps + nve_steps, desc="MD", unit="step", disable=not progress, mininterval=5)
    langevin.attach(lambda: bar.update(1) if langevin.nsteps > 0 else None, interval=1)
    langevin.run(langevin_steps)
    t_langevin = time.time() - t0
    record = {"frames": [], "times_ps": [], "energies": [], "temperatures": [], "charges": []}
    nve = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    every = max(1, int(round(FRAME_EVERY_FS / timestep_fs)))

    def store():
        record["frames"].append(atoms.copy())
        record["times_ps"].append(nve.nsteps * timestep_fs / 1000.0)
        record["energies"].append(atoms.get_total_energy())
        record["temperatures"].append(atoms.get_temperature())
        record["charges"].append(atoms.get_charges().copy())

    nve.attach(lambda: bar.update(1) if nve.nsteps > 0 else None, interval=1)
    nve.attach(store, interval=every)
    t1 = time.time()
    record["breakdown"] = None
    try:
        nve.run(nve_steps)
    except ValueError as exc:  # overlapping atoms: the model broke a molecule; analyse the frames so far
        record["breakdown"] = f"NVE stopped after {nve.nsteps * timestep_fs / 1000:.3f} ps: {exc}"
        print(record["breakdown"])
    bar.close()
    for k in ("times_ps", "energies", "temperatures", "charges"):
        record[k] = np.array(record[k])
    record.update(t_langevin=t_langevin, t_nve=time.time() - t1)
    for f in record["frames"]:
        f.calc = None
        f.set_constraint()
    return record


def check_against_xtb(model, frames: List[Atoms], n_frames: int) -> dict:
    """GFN1-xTB single points on ``n_frames`` frames of the model's trajectory (needs tblite)."""
    from hybridpot.reference_data.ethylammonium_nitrate import label

    picks = [frames[k] for k in np.linspace(0, len(frames) - 1, n_frames).astype(int)]
    refs = label(picks, progress=False)
    de, df, f_ref, dq, ion_q = [], [], [], [], []
    for atoms, ref in zip(picks, refs):
        out = model(hp.AtomicSystem.from_ase(with_fragments(atoms)), compute_forces=True)
        de.append((float(out["energy"][0]) - ref.get_potential_energy()) / len(atoms))
        df.append(out["forces"].detach().numpy() - ref.get_forces())
        f_ref.append(ref.get_forces())
        dq.append(out["charges"].detach().numpy() - ref.get_charges())
        ion_q.append(ion_charge_sums(atoms, ref.get_charges()))
    de, ion_q = np.array(de), np.array(ion_q)
    sign = np.asarray(frames[0].info["ion_charges"]) > 0
    return {"frames": n_frames,
            "energy_offset_meV_per_atom": 1000 * float(de.mean()),
            "energy_spread_meV_per_atom": 1000 * float(de.std()),
            "forces_rmse_eV_per_A": float(np.sqrt(np.mean(np.concatenate(df) ** 2))),
            "reference_forces_rms_eV_per_A": float(np.sqrt(np.mean(np.concatenate(f_ref) ** 2))),
            "charges_rmse_e": float(np.sqrt(np.mean(np.concatenate(dq) ** 2))),
            "mulliken_cation_sum_e": float(ion_q[:, sign].mean()),
            "mulliken_anion_sum_e": float(ion_q[:, ~sign].mean())}


def xtb_md(start: Atoms, temperature: float, steps: int, seed: int) -> List[Atoms]:
    """GFN1-xTB Langevin MD (1 fs steps, as in the reference sampling; friction 0.01/fs) of ``start``
    (positions and velocities kept); frames every 5 fs (needs tblite)."""
    from hybridpot.reference_data.ethylammonium_nitrate import ReferenceCalculator

    work = start.copy()
    work.set_constraint(FixCom())
    work.calc = ReferenceCalculator()
    dyn = Langevin(work, timestep=1.0 * units.fs, temperature_K=temperature, friction=0.01 / units.fs, fixcm=False,
                   rng=np.random.RandomState(seed))
    frames: List[Atoms] = []

    def store():
        f = work.copy()
        f.calc = None
        f.set_constraint()
        frames.append(f)

    dyn.attach(store, interval=int(round(FRAME_EVERY_FS)))
    dyn.run(steps)
    return frames[1:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="saved model (default: the shipped EAN 4G model)")
    parser.add_argument("--pairs", type=int, default=4, help="ion pairs (4: 60 atoms; 13: 195 atoms)")
    parser.add_argument("--temperature", type=float, default=350.0)
    parser.add_argument("--langevin-ps", type=float, default=1.0)
    parser.add_argument("--nve-ps", type=float, default=2.0)
    parser.add_argument("--timestep", type=float, default=0.5, help="fs")
    parser.add_argument("--relax-steps", type=int, default=200, help="FIRE steps with the model before the MD")
    parser.add_argument("--no-wall", action="store_true", help="MD with the model alone (no inter-ion contact wall)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-xtb", type=int, default=0, metavar="N", help="GFN1-xTB single points on N NVE frames")
    parser.add_argument("--xtb-md-steps", type=int, default=0, metavar="N",
                        help="N steps of GFN1-xTB MD of the same box for its RDFs")
    parser.add_argument("--output", default="runs/ean_md")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    model, model_path = get_model(args.model)

    start = ean_box(args.pairs, np.random.default_rng(args.seed))
    length = float(start.cell.lengths()[0])
    steps_per_ps = 1000.0 / args.timestep
    langevin_steps, nve_steps = int(round(args.langevin_ps * steps_per_ps)), int(round(args.nve_ps * steps_per_ps))
    print(f"model {model_path}; {args.pairs} ion pairs, {len(start)} atoms, box {length:.2f} Å, "
          f"{args.temperature:.0f} K; {args.relax_steps} FIRE steps, {args.langevin_ps:g} ps Langevin + "
          f"{args.nve_ps:g} ps NVE, {args.timestep:g} fs steps")
    calc = hp.HybridCalculator(model, skin=0.5)
    if not args.no_wall:
        calc = WalledCalculator(calc, ContactWall(start))
    if args.relax_steps > 0:  # the lattice start is far from a minimum: its excess energy would heat the box
        from ase.optimize import FIRE

        start.calc = calc
        FIRE(start, logfile=None).run(fmax=0.1, steps=args.relax_steps)
        print(f"relaxed with the model: largest force {np.abs(start.get_forces()).max():.2f} eV/Å")
    run = run_md(start.copy(), calc, args.temperature, langevin_steps, nve_steps, args.seed,
                 timestep_fs=args.timestep, progress=not args.no_progress)
    frames, n_atoms = run["frames"], len(start)
    if not args.no_wall:
        walls = np.array(calc.wall_energies)
        print(f"inter-ion contact wall: touched in {np.mean(walls > 0) * 100:.1f} % of the {len(walls)} force calls "
              f"(FIRE + MD), largest wall energy {walls.max() * 1000:.2f} meV")
    t_ps = run["times_ps"]
    results: dict = {"nve_breakdown": run["breakdown"], "wall": None if args.no_wall else {"touched_fraction": float(np.mean(walls > 0)),
                                                         "max_energy_eV": float(walls.max())},
                     "model": str(model_path), "atoms": n_atoms, "box_A": length, "temperature_K": args.temperature,
                     "langevin_ps": args.langevin_ps, "nve_ps": args.nve_ps,
                     "wall_s": {"langevin": run["t_langevin"], "nve": run["t_nve"]}}

    drift = energy_drift(t_ps, run["energies"], n_atoms)
    e_per_atom = run["energies"] / n_atoms
    q = run["charges"]
    ion = start.arrays["ion"]
    targets = np.asarray(start.info["ion_charges"])
    per_ion = np.array([np.bincount(ion, weights=qk, minlength=len(targets)) for qk in q])
    nh = np.array([ammonium_h_distances(f) for f in frames])
    results.update(
        nve_mean_T_K=float(run["temperatures"].mean()),
        drift_meV_per_atom_per_ps=drift,
        max_abs_E_minus_E0_meV_per_atom=float(1000 * np.abs(e_per_atom - e_per_atom[0]).max()),
        max_abs_total_charge_e=float(np.abs(q.sum(axis=1)).max()),
        max_abs_ion_charge_error_e=float(np.abs(per_ion - targets).max()),
        largest_ammonium_NH_A=float(nh[:, 0].max()),
        shortest_H_to_nitrate_O_A=float(nh[:, 1].min()),
        mean_atom_charges_e={s: float(q[:, start.numbers == z].mean()) for s, z in (("H", 1), ("C", 6), ("N", 7), ("O", 8))},
    )
    print(f"Langevin {run['t_langevin']:.0f} s, NVE {run['t_nve']:.0f} s wall; NVE mean T {results['nve_mean_T_K']:.0f} K; "
          f"drift {drift:+.4f} meV/atom/ps, max |E - E0| {results['max_abs_E_minus_E0_meV_per_atom']:.3f} meV/atom")
    print(f"charges along NVE: max |sum q| {results['max_abs_total_charge_e']:.1e} e, max |ion charge - (+-1)| "
          f"{results['max_abs_ion_charge_error_e']:.1e} e; mean atom charges "
          + ", ".join(f"{k} {v:+.3f}" for k, v in results["mean_atom_charges_e"].items()))
    print(f"largest ammonium N-H {nh[:, 0].max():.3f} Å, shortest H(N)...O {nh[:, 1].min():.3f} Å")

    # structure
    r_max = 0.5 * length - 1e-6
    shells = {"4G model": first_shells(frames, r_max)}
    if args.check_xtb > 0:
        results["vs_gfn1_xtb"] = check_against_xtb(model, frames, args.check_xtb)
        v = results["vs_gfn1_xtb"]
        print(f"vs GFN1-xTB on {v['frames']} NVE frames: energy offset {v['energy_offset_meV_per_atom']:+.1f} meV/atom "
              f"(spread {v['energy_spread_meV_per_atom']:.1f}), force RMSE {v['forces_rmse_eV_per_A']:.3f} eV/Å "
              f"(reference RMS {v['reference_forces_rms_eV_per_A']:.3f}), charge RMSE {v['charges_rmse_e']:.3f} e; "
              f"Mulliken per-ion sums {v['mulliken_cation_sum_e']:+.3f} / {v['mulliken_anion_sum_e']:+.3f} e")
    if args.xtb_md_steps > 0:
        last = frames[-1].copy()
        last.set_momenta(frames[-1].get_momenta())
        t0 = time.time()
        xtb_frames = xtb_md(last, args.temperature, args.xtb_md_steps, args.seed + 1)
        results["xtb_md"] = {"steps": args.xtb_md_steps, "frames": len(xtb_frames), "wall_s": time.time() - t0}
        shells["GFN1-xTB"] = first_shells(xtb_frames, r_max)
    results["first_shells"] = {name: {k: v["shell"] for k, v in s.items()} for name, s in shells.items()}
    for name, s in shells.items():
        for pair, v in s.items():
            sh = v["shell"]
            text = (f"peak {sh['r_peak_A']:.2f} Å (g {sh['g_peak']:.2f}), min {sh['r_min_A']:.2f} Å, "
                    f"n {sh['coordination']:.2f}") if "r_peak_A" in sh else sh["note"]
            print(f"  [{name}] {pair}: {text}")

    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=120)
    for (pair, v), color in zip(shells["4G model"].items(), ("C0", "C1", "C2", "C3")):
        ax.plot(v["r"], v["g"], color=color, label=f"{pair} (4G)")
        if "GFN1-xTB" in shells:
            x = shells["GFN1-xTB"][pair]
            ax.plot(x["r"], x["g"], color=color, ls="--", label=f"{pair} (GFN1-xTB MD)")
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("g(r)")
    ax.set_title(f"EAN, {args.pairs} ion pairs, {args.temperature:.0f} K")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(output / "rdf.png")
    plt.close(fig)

    # diffusion of the ions' centres of mass
    cations, anions = ion_groups(start)
    positions = unwrapped_positions(frames)
    masses = start.get_masses()
    lag_ps = np.arange(len(frames) // 2 + 1) * FRAME_EVERY_FS / 1000.0
    fit = (0.2 * lag_ps[-1], lag_ps[-1])
    correction = yeh_hummer_correction(args.temperature, EAN_VISCOSITY_298K, length)
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    results["diffusion"] = {"fit_ps": list(fit), "yeh_hummer_correction_m2_per_s": correction,
                            "viscosity_assumed_Pa_s": EAN_VISCOSITY_298K}
    for name, groups in (("cation", cations), ("anion", anions)):
        msd = mean_squared_displacement(positions, groups=groups, masses=masses)
        d = diffusion_coefficient(lag_ps, msd, fit)
        results["diffusion"][name] = {"D_m2_per_s": d.D_m2_per_s, "D_stderr_m2_per_s": d.D_stderr_m2_per_s,
                                      "D_plus_YH_m2_per_s": d.D_m2_per_s + correction,
                                      "msd_at_max_lag_A2": float(msd[-1])}
        ax.plot(lag_ps, msd, label=f"{name}: D = {d.D_m2_per_s:.2e} m$^2$/s")
        print(f"{name} centre-of-mass D = {d.D_m2_per_s:.2e} +- {d.D_stderr_m2_per_s:.1e} m^2/s (fit {fit[0]:.2f}-"
              f"{fit[1]:.2f} ps, MSD {msd[-1]:.2f} Å^2 at {lag_ps[-1]:.2f} ps); + Yeh-Hummer {correction:.1e} "
              f"(eta {EAN_VISCOSITY_298K} Pa s, L {length:.2f} Å) = {d.D_m2_per_s + correction:.2e} m^2/s")
    ax.set_xlabel("lag (ps)")
    ax.set_ylabel("centre-of-mass MSD (Å$^2$)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(output / "msd.png")
    plt.close(fig)

    (output / "results.json").write_text(json.dumps(results, indent=1))
    print(f"plots: {output / 'rdf.png'}, {output / 'msd.png'}; results: {output / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
