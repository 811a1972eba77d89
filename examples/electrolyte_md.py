"""Molten NaCl, periodic, with a 4G model: Langevin equilibration, then NVE; RDFs and energy drift.

Usage::

    python examples/electrolyte_md.py [--model PATH] [--steps 500] [--temperature 1200] [--output molten_nacl]

The default model is the shipped ``hybridpot/data/molten_nacl_4G.pt``: a 4G model trained by
``examples/train_molten_nacl.py`` on GFN1-xTB data of the NaCl melt (periodic 64-ion boxes at
1.40-1.70 g/cm^3, 1100-2500 K) and of gas-phase clusters. ``--model`` takes any other saved model
(e.g. the demo's ``runs/hybridpot_demo/model_4G.pt``, trained on clusters only, which fails in the
melt: the script warns when ions come closer than 1.5 Å).

The box: 64 ions at the density of the melt at 1074 K (1.556 g/cm^3, ``--density``), melted
from a rattled rock-salt arrangement; Langevin at ``--temperature`` (default 1200 K; NaCl melts at
1074 K), then NVE. Electrostatics and charge equilibration use Ewald sums with Gaussian charges
(``Electrostatics(method="auto")``: Ewald below 300 atoms, PME above); the neighbour list is
reused between steps (Verlet skin 0.5 Å).

With ``--check-xtb N`` (needs tblite) N frames of the model's own NVE trajectory are recomputed with
GFN1-xTB: the model's energy and force errors where the dynamics actually went.

Printed: temperatures, the NVE energy drift (meV/atom/ps), the largest deviation of the total
charge from zero, mean QEq charges, and the first RDF peaks, next to those of the Tosi-Fumi
rigid-ion model (the classical potential that sampled the training geometries; an independent
reference for the melt structure) run in the same way; both RDFs are plotted (``rdf.png``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from ase import units
from ase.constraints import FixCom
from ase.geometry import get_distances
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary

try:  # ase >= 3.29 (MaxwellBoltzmannDistribution is deprecated there)
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # pragma: no cover - older ase
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as _mbd

    def thermalize_momenta(atoms, temperature_K, rng=None):
        _mbd(atoms, temperature_K=temperature_K, rng=rng)
from ase.md.verlet import VelocityVerlet

import hybridpot as hp
from hybridpot.analysis import radial_distribution
from hybridpot.data import molten_nacl_model_path
from hybridpot.reference_data.molten_salt import TosiFumi, nacl_box


def get_model(path: Optional[str]):
    path = Path(path) if path else molten_nacl_model_path()
    if not path.exists():
        raise SystemExit(f"{path} not found; train one with: python examples/train_molten_nacl.py --install")
    return hp.load(path), path


def progress(dynamics, steps: int, desc: str):
    """A tqdm bar (MD steps, with rate) that the ASE dynamics advances; close it after ``run``."""
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, desc=desc, unit="step", leave=False)
    dynamics.attach(lambda: bar.update(1) if dynamics.nsteps > 0 else None, interval=1)
    return bar


def run_md(atoms, calc, temperature: float, steps: int, seed: int, record_every: int = 5):
    """Langevin (``steps``), then NVE (``steps``), 1 fs; returns NVE frames, energies/atom, total charges."""
    atoms.calc = calc
    thermalize_momenta(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    Stationary(atoms)
    atoms.set_constraint(FixCom())
    langevin = Langevin(atoms, timestep=1.0 * units.fs, temperature_K=temperature, friction=0.02 / units.fs,
                        fixcm=False, rng=np.random.RandomState(seed))
    t0 = time.time()
    bar = progress(langevin, steps, "Langevin")
    langevin.run(steps)
    bar.close()
    t_langevin = time.time() - t0
    frames, energies, charges, temperatures = [], [], [], []
    nve = VelocityVerlet(atoms, timestep=1.0 * units.fs)

    def record():
        energies.append(atoms.get_total_energy() / len(atoms))
        temperatures.append(atoms.get_temperature())
        if "charges" in calc.implemented_properties:
            charges.append(atoms.get_charges())
        frames.append(atoms.copy())

    nve.attach(record, interval=record_every)
    t0 = time.time()
    bar = progress(nve, steps, "NVE")
    nve.run(steps)
    bar.close()
    return {"frames": frames, "energies": np.array(energies), "charges": np.array(charges),
            "temperatures": np.array(temperatures), "t_langevin": t_langevin, "t_nve": time.time() - t0}


def check_against_reference(model, frames, n_frames: int) -> dict:
    """GFN1-xTB (tblite) on ``n_frames`` frames of the model's own trajectory: how well the model
    reproduces its reference where it actually went (needs ``pip install tblite``)."""
    from hybridpot.reference_data.nacl_clusters import compute_reference

    picks = [frames[k] for k in np.linspace(0, len(frames) - 1, n_frames).astype(int)]
    de, df, dq, f_ref = [], [], [], []
    for atoms in picks:
        ref = compute_reference(atoms)
        out = model(hp.AtomicSystem.from_ase(atoms), compute_forces=True)
        de.append((float(out["energy"][0]) - ref.get_potential_energy()) / len(atoms))
        df.append(out["forces"].detach().numpy() - ref.get_forces())
        f_ref.append(ref.get_forces())
        if "charges" in out:
            dq.append(out["charges"].detach().numpy() - ref.get_charges())
    de = np.array(de)
    row = {"frames": n_frames, "energy_offset_meV_per_atom": 1000 * float(de.mean()),
           "energy_spread_meV_per_atom": 1000 * float(de.std()),
           "forces_rmse_eV_per_A": float(np.sqrt(np.mean(np.concatenate(df) ** 2))),
           "reference_forces_rms_eV_per_A": float(np.sqrt(np.mean(np.concatenate(f_ref) ** 2))),
           "charges_rmse_e": float(np.sqrt(np.mean(np.concatenate(dq) ** 2))) if dq else None}
    print(f"  vs GFN1-xTB on {n_frames} frames of this trajectory: energy offset {row['energy_offset_meV_per_atom']:+.1f} "
          f"meV/atom (spread {row['energy_spread_meV_per_atom']:.1f}), force RMSE {row['forces_rmse_eV_per_A']:.3f} eV/Å "
          f"(reference forces RMS {row['reference_forces_rms_eV_per_A']:.3f}), charge RMSE "
          f"{row['charges_rmse_e'] if row['charges_rmse_e'] is None else round(row['charges_rmse_e'], 4)} e")
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description="molten NaCl MD with a 4G model")
    parser.add_argument("--model", default=None, help="saved model (default: the shipped molten-NaCl 4G model)")
    parser.add_argument("--steps", type=int, default=500, help="Langevin steps, and as many NVE steps (1 fs)")
    parser.add_argument("--temperature", type=float, default=1200.0)
    parser.add_argument("--density", type=float, default=1.556, help="g/cm^3")
    parser.add_argument("--no-reference", action="store_true", help="skip the Tosi-Fumi comparison run")
    parser.add_argument("--check-xtb", type=int, default=0, metavar="N",
                        help="recompute N frames of the model's trajectory with GFN1-xTB (needs tblite)")
    parser.add_argument("--output", default="runs/molten_nacl")
    args = parser.parse_args(argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    model, model_path = get_model(args.model)

    start = nacl_box(2, args.density)
    start.rattle(0.1, rng=np.random.default_rng(0))
    print(f"model {model_path}; {len(start)} ions, box {start.cell.lengths()[0]:.2f} Å, density {args.density:.3f} "
          f"g/cm^3, {args.temperature:.0f} K, {args.steps} Langevin + {args.steps} NVE steps of 1 fs")
    runs = {"4G model": run_md(start.copy(), hp.HybridCalculator(model, skin=0.5), args.temperature, args.steps, 0)}
    if not args.no_reference:
        runs["Tosi-Fumi"] = run_md(start.copy(), TosiFumi(), args.temperature, args.steps, 0)

    r_max = 0.5 * min(start.cell.lengths())
    numbers = start.get_atomic_numbers()
    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=120)
    results = {}
    for name, run in runs.items():
        e, t_ps = run["energies"], np.arange(len(run["energies"])) * 5e-3
        drift = np.polyfit(t_ps, e, 1)[0]
        print(f"\n[{name}] Langevin {run['t_langevin']:.0f} s, NVE {run['t_nve']:.0f} s; NVE mean T "
              f"{run['temperatures'].mean():.0f} K; energy drift {drift * 1000:.3f} meV/atom/ps, "
              f"max |E - E0| {np.abs(e - e[0]).max() * 1000:.3f} meV/atom")
        if len(run["charges"]):
            q = run["charges"]
            print(f"  charges: Na {q[:, numbers == 11].mean():+.3f} e, Cl {q[:, numbers == 17].mean():+.3f} e; "
                  f"max |sum q| {np.abs(q.sum(axis=1)).max():.1e} e")
        closest = min(get_distances(f.positions, cell=f.cell, pbc=f.pbc)[1][np.triu_indices(len(f), 1)].min()
                      for f in run["frames"])
        results[name] = {"drift_meV_per_atom_per_ps": float(drift * 1000), "mean_T_K": float(run["temperatures"].mean()),
                         "closest_A": float(closest), "peaks_A": {},
                         "max_total_charge_e": float(np.abs(run["charges"].sum(axis=1)).max()) if len(run["charges"]) else None}
        print(f"  closest contact {closest:.2f} Å")
        if closest < 1.5:
            print(f"  WARNING: two ions came {closest:.2f} Å close: the model has left its training domain.")
        for (z1, z2, label), color in zip(((11, 17, "Na-Cl"), (11, 11, "Na-Na"), (17, 17, "Cl-Cl")), ("C0", "C1", "C2")):
            r, g = radial_distribution(run["frames"], z1, z2, r_max, n_bins=60)
            ax.plot(r, g, color=color, ls="-" if name == "4G model" else "--", label=f"{label} ({name})")
            print(f"  {label}: first peak at {r[np.argmax(g)]:.2f} Å (g = {g.max():.2f})")
            results[name]["peaks_A"][label] = float(r[np.argmax(g)])
        if name == "4G model" and args.check_xtb > 0:
            results[name]["vs_gfn1"] = check_against_reference(model, run["frames"], args.check_xtb)
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("g(r)")
    ax.set_title(f"molten NaCl, {args.temperature:.0f} K, {args.density:.2f} g/cm$^3$, 64 ions")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(output / "rdf.png")
    print(f"\nplot: {output / 'rdf.png'}")
    return results


if __name__ == "__main__":
    main()
