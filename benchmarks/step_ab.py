"""One warm MD step of the shipped 4G NaCl model, two checkouts side by side (interleaved).

Times a warm energy + forces call (every atom moved 0.005 Å per component first, neighbour list
reused; accuracy 1e-4, CG tolerance 1e-5) on a melt made by MD (benchmarks/_melts.py) with the
hybridpot of each given checkout, in alternating subprocesses, one torch thread; prints CPU and
wall seconds per step, the largest force (the two must agree) and ``uptime``.

Usage: python benchmarks/step_ab.py OLD_CHECKOUT NEW_CHECKOUT [--size 21952] [--rounds 2] [--steps 2]
(e.g. ``git worktree add /tmp/old <commit>`` for the old one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def child(tree: str, n: int, steps: int) -> None:
    sys.path.insert(0, tree)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # this checkout's _melts (same boxes)
    import torch

    torch.set_num_threads(1)
    import hybridpot as hp

    if not hp.__file__.startswith(str(Path(tree).resolve())):
        raise SystemExit(f"imported {hp.__file__}, not the checkout {tree}")
    from _melts import shipped_model, system_for

    atoms = system_for("melt", n)
    model = shipped_model(1e-4, 1e-5)
    system = hp.AtomicSystem.from_ase(atoms)
    nl = hp.compute_neighbors(system, model.cutoff + 0.5)
    generator = torch.Generator().manual_seed(1)
    model(system, compute_stress=False, neighbors=nl)  # warm
    cpu, wall = [], []
    for _ in range(steps):
        system.positions = system.positions + 0.005 * torch.randn(system.positions.shape, generator=generator,
                                                                 dtype=system.positions.dtype)
        c0, w0 = time.process_time(), time.perf_counter()
        out = model(system, compute_stress=False, neighbors=nl)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    print(json.dumps({"cpu": cpu, "wall": wall, "max_force": float(out["forces"].abs().max())}))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--size", type=int, default=21952)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.old, args.size, args.steps)
        return
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    results = {args.old: [], args.new: []}
    for _ in range(args.rounds):
        for tree in results:
            out = subprocess.run([sys.executable, __file__, tree, tree, "--child", "--size", str(args.size),
                                  "--steps", str(args.steps)], capture_output=True, text=True, check=True, cwd="/")
            results[tree].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'checkout':<40} {'CPU s/step':>10} {'wall s/step':>11} {'max |F| eV/Å':>14}")
    for tree, runs in results.items():
        cpu = statistics.median(c for r in runs for c in r["cpu"])
        wall = statistics.median(w for r in runs for w in r["wall"])
        print(f"{tree:<40} {cpu:>10.2f} {wall:>11.2f} {runs[-1]['max_force']:>14.10f}")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
