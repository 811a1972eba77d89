"""Time per atom of short-range energy + forces versus system size.

A two-element (Na/Cl) liquid-density periodic system (0.032 atoms/Å^3, jittered cubic
lattice), the default symmetry-function set at r_c = 6 Å (8 radial + 24 angular per
element pair... per element: 40 features) and 25x25 tanh networks. Prints a table of
N, seconds per call (median of repeats), microseconds per atom and the per-atom cost
relative to the smallest N (flat = linear scaling), and writes a PNG plot.

``--engines kernel reference`` times the compiled descriptor kernels and the torch
reference implementation interleaved (each repeat runs both back to back), with CPU time
(``time.process_time``) beside wall time, and their ratio.

Usage: python benchmarks/short_range_scaling.py [--sizes 100 1000 10000] [--dtype float64]
       [--engines kernel reference]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

import hybridpot as hp

from _common import peak_memory_mb, reset_peak_memory, synchronize


def liquid(n_atoms: int, density: float = 0.032, seed: int = 0) -> Atoms:
    """Na/Cl on a jittered simple-cubic lattice at ``density`` atoms/Å^3."""
    rng = np.random.default_rng(seed)
    side = int(round(n_atoms ** (1 / 3)))
    n_cube = side**3
    spacing = (1.0 / density) ** (1 / 3)
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3) * spacing
    grid = grid + rng.normal(scale=0.25, size=grid.shape)
    symbols = ["Na" if k % 2 == 0 else "Cl" for k in range(n_cube)]
    return Atoms(symbols, positions=grid, cell=np.eye(3) * side * spacing, pbc=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[125, 343, 1000, 3375, 10648])
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plot", default="benchmarks/short_range_scaling.png")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on the shared 2-core machine 2 threads were up to 10x slower)")
    parser.add_argument("--engines", nargs="+", default=["auto"], choices=["auto", "kernel", "reference"],
                        help="descriptor engines to time, interleaved (first one plotted)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    desc = hp.SymmetryFunctions.default(["Na", "Cl"], r_cut=6.0)
    model = hp.HybridPotential(short_range=hp.ShortRange(["Na", "Cl"], desc, hidden=(25, 25))).to(args.device, dtype)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.dtype}, {args.device}, "
          f"{desc.n_features[0]} features per atom; {os.popen('uptime').read().strip()}")
    cuda = torch.device(args.device).type == "cuda"
    head = f"{'N':>7}"
    for e in args.engines:
        head += f" {e + ' s/call':>16} {e + ' cpu s':>15} {'us/atom':>8} {'rel.':>5}"
    if len(args.engines) == 2:
        head += f" {'ratio cpu':>10}"
    print(head + (f" {'GPU MB/1000 atoms':>18}" if cuda else ""))
    rows = []
    for n in args.sizes:
        atoms = liquid(n)
        system = hp.AtomicSystem.from_ase(atoms, dtype=dtype, device=args.device)
        reset_peak_memory(args.device)
        times = {e: [] for e in args.engines}
        for e in args.engines:
            desc.engine = e
            model(system, compute_stress=False)  # warm-up
        for _ in range(args.repeats):
            for e in args.engines:
                desc.engine = e
                synchronize(args.device)
                t0, c0 = time.perf_counter(), time.process_time()
                model(system, compute_stress=False)
                synchronize(args.device)
                times[e].append((time.perf_counter() - t0, time.process_time() - c0))
        line = f"{len(atoms):>7}"
        row = [len(atoms)]
        for k, e in enumerate(args.engines):
            t = statistics.median(w for w, _ in times[e])
            c = statistics.median(c for _, c in times[e])
            per_atom = t / len(atoms) * 1e6
            row += [t, per_atom, c]
            rel = per_atom / rows[0][2 + 3 * k] if rows else 1.0
            line += f" {t:>16.4f} {c:>15.4f} {per_atom:>8.1f} {rel:>5.2f}"
        if len(args.engines) == 2:
            line += f" {row[3] / row[6]:>10.2f}"
        rows.append(row)
        memory = f" {peak_memory_mb(args.device) / len(atoms) * 1000:>18.1f}" if cuda else ""
        print(line + memory, flush=True)
    desc.engine = "auto"
    rows = [r[:3] for r in rows]
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n, _, us = zip(*rows)
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.loglog(n, us, "o-", label=f"hybridpot ({args.dtype}, {args.device}, {args.engines[0]})")
        ax.set_xlabel("atoms N")
        ax.set_ylabel("energy + forces time per atom (µs)")
        ax.set_title("Short range: linear scaling means a flat line")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
