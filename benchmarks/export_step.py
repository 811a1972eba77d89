"""Time per MD step: the whole model exported to metatomic (metatomic-ase) vs HybridCalculator.

One "step" = energy + forces (and stress for periodic cells: one model call each, the energy
asked first) after every atom moved by a random
0.005 Å per Cartesian component, so both calculators reuse their neighbour lists (Verlet skins:
HybridCalculator 0.5 Å, metatomic-ase 2 Å, their defaults). One torch thread; the two
calculators alternate step by step (interleaved), ``--steps`` measured steps after two warm-up
steps each; median wall time and median CPU time (``time.process_time``) per step.

Structures: the shipped 4G molten-NaCl model (``hybridpot/data/molten_nacl_4G.pt``: QEq,
charge-aware short range, electrostatics) on a 64-atom melt frame (the melt of
``hybridpot/data/molten_nacl.extxyz.gz``), the same frame repeated 2x2x2 (512 atoms: the eager
model and the export switch the electrostatics to PME above 300 atoms), repeated 3x3x3 (1728
atoms: both switch the QEq to the matrix-free CG solver from 1000 atoms; the eager one with its
k-space preconditioner and warm starts, the export with Jacobi, cold), and the largest NaCl
cluster of ``nacl_clusters.extxyz.gz``; the n2p2 4G examples (``../shared/reference/n2p2``, when
present): a 24-atom periodic water box (H2O_RPBE-D3_4G) and the 12-atom Carbon_chain_4G.

Usage: python benchmarks/export_step.py [--steps 20] [--large-steps 5] [--only melt64,...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's hybridpot

import hybridpot as hp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N2P2 = ROOT.parent / "shared" / "reference" / "n2p2"


def structures():
    """(label, model, example for the export, structure to step)"""
    import ase.io

    model = hp.load(ROOT / "hybridpot" / "data" / "molten_nacl_4G.pt")
    frames = ase.io.read(ROOT / "hybridpot" / "data" / "molten_nacl.extxyz.gz", ":2")
    clusters = ase.io.read(ROOT / "hybridpot" / "data" / "nacl_clusters.extxyz.gz", ":")
    out = [("melt64", model, frames[0], frames[1]), ("melt512", model, frames[0], frames[1].repeat((2, 2, 2))),
           ("melt1728", model, frames[0], frames[1].repeat((3, 3, 3))),
           ("cluster", model, frames[0], max(clusters, key=len))]
    if (N2P2 / "H2O_RPBE-D3_4G").is_dir():
        sys.path.insert(0, str(ROOT / "tests"))
        from test_n2p2 import small_water_box

        water = hp.from_n2p2(N2P2 / "H2O_RPBE-D3_4G", units="ase", accuracy=1e-7)
        out.append(("water24_n2p2", water, small_water_box(), small_water_box()))
    if (N2P2 / "Carbon_chain_4G").is_dir():
        from hybridpot.io.input_data import read_input_data

        carbon = hp.from_n2p2(N2P2 / "Carbon_chain_4G", units="ase", overrides={"global_nodes_short": "10 10"})
        chain = read_input_data(N2P2 / "Carbon_chain_4G" / "input.data", units="bohr_hartree")[0]
        out.append(("carbon12_n2p2", carbon, chain, chain))
    return out


def step(atoms, rng, periodic):
    atoms.positions = atoms.positions + rng.normal(scale=0.005, size=atoms.positions.shape)
    wall, cpu = time.perf_counter(), time.process_time()
    # energy first: both calculators then compute forces (and stress, periodic) in the same call
    atoms.get_potential_energy()
    atoms.get_forces()
    if periodic:
        atoms.get_stress()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--large-steps", type=int, default=5, help="steps for structures of 1000 atoms or more")
    parser.add_argument("--only", default=None, help="comma-separated labels")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from metatomic_ase import MetatomicCalculator

    from hybridpot.metatomic import export_metatomic

    print(f"torch {torch.__version__}, 1 thread; {args.steps} interleaved steps after 2 warm-up steps each")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, model, example, atoms in structures():
            if args.only and label not in args.only.split(","):
                continue
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                path = export_metatomic(model, Path(tmp) / f"{label}.pt", example=example)
            export_s = time.perf_counter() - t0
            periodic = bool(atoms.pbc.any())
            runs = {}
            for name, calc in (("export", MetatomicCalculator(str(path))), ("eager", hp.HybridCalculator(model))):
                a = atoms.copy()
                # a Python float: metatomic-ase 0.1.4 compares info values with ``isinstance(old == new, bool)``,
                # so a numpy value (as ase.io reads it) makes it recompute at every property request
                a.info["charge"] = float(a.info.get("charge", 0.0))
                a.calc = calc
                runs[name] = (a, np.random.default_rng(1), [])
            steps = args.large_steps if len(atoms) >= 1000 else args.steps
            for k in range(steps + 2):
                for name, (a, rng, times) in runs.items():
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        t = step(a, rng, periodic)
                    if k >= 2:
                        times.append(t)
            med = {name: (statistics.median(t[0] for t in r[2]), statistics.median(t[1] for t in r[2]))
                   for name, r in runs.items()}
            rows.append((label, len(atoms), med["eager"], med["export"], export_s))
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print("| structure | atoms | HybridCalculator wall / CPU (ms) | exported, metatomic-ase wall / CPU (ms) "
          "| export / eager (wall) | export time (s) |")
    print("|---|---|---|---|---|---|")
    for label, n, eager, exported, export_s in rows:
        print(f"| {label} | {n} | {1e3 * eager[0]:.1f} / {1e3 * eager[1]:.1f} | {1e3 * exported[0]:.1f} / "
              f"{1e3 * exported[1]:.1f} | {exported[0] / eager[0]:.2f} | {export_s:.1f} |")


if __name__ == "__main__":
    main()
