"""Stored vs recomputed symmetry-function derivatives: time and memory of energy + forces.

The descriptor engine keeps ``dG [M, W, 3]`` between the forward and backward pass unless it
would exceed ``hybridpot.descriptors.engine.STORED_DERIVATIVES_LIMIT`` bytes; then the backward
recomputes it per centre (``SymmetryFunctionsRecompute``). This script times the short-range
energy + forces of the shipped molten-NaCl model's descriptors both ways on melts made by MD
(benchmarks/_melts.py), interleaved repeats, one torch thread, CPU time beside wall time, and
measures each mode's peak RSS above the level before the call in its own subprocess.

Usage: python benchmarks/descriptor_memory.py [--sizes 4096 21952] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def setup(n: int):
    import hybridpot as hp
    from _melts import shipped_model, system_for

    atoms = system_for("melt", n)
    model = shipped_model(1e-4, 1e-5)
    short = model.short_range.double()  # the 4G short range (charges as input: zeros here)
    system = hp.AtomicSystem.from_ase(atoms)
    nl = hp.compute_neighbors(system, float(short.cutoff))
    return short, system, nl


def call(short, system, nl, mode: str):
    from hybridpot.descriptors import engine

    engine.STORED_DERIVATIVES_LIMIT = -1 if mode == "recompute" else 2**62
    charges = torch.zeros(system.n_atoms, dtype=torch.float64)
    positions = system.positions.detach().requires_grad_(True)
    from hybridpot.neighbors import build_graph

    graph = build_graph(system, nl, positions=positions)
    energy = short(system, graph, charges).sum()
    (grad,) = torch.autograd.grad(energy, positions)
    return energy.detach(), grad




def peak_rss_during(fn) -> float:
    """Peak resident memory above the level before ``fn()`` (MB), sampled every millisecond
    (``ru_maxrss`` cannot be reset and already holds the peak of building the melt)."""
    import os
    import threading

    page = os.sysconf("SC_PAGE_SIZE")

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page / 2**20

    base, peak, done = rss(), [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    fn()
    done.set()
    thread.join()
    return max(peak[0], rss()) - base


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 21952])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.memory:
        short, system, nl = setup(int(args.memory[0]))
        call(short, system, nl, args.memory[1])  # compiled, warm
        print(json.dumps({"peak_above_base_mb": peak_rss_during(lambda: call(short, system, nl, args.memory[1]))}))
        return
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"torch {torch.__version__}, 1 thread, float64; shipped NaCl model's short range (r_c 6 Å), melts from MD")
    print(f"{'N':>7} {'pairs':>8} {'dG MB':>7} {'stored s':>9} {'cpu':>7} {'recomp. s':>9} {'cpu':>7} {'ratio':>6}"
          f" {'stored MB':>10} {'recomp. MB':>11}")
    from hybridpot.descriptors.engine import build_plan

    for n in args.sizes:
        short, system, nl = setup(n)
        plan = build_plan(short.descriptor)
        pairs = int(nl.i.shape[0])
        e0, g0 = call(short, system, nl, "stored")
        e1, g1 = call(short, system, nl, "recompute")
        assert float((g0 - g1).abs().max()) <= 1e-12 * float(g0.abs().max()), "modes disagree"
        times = {"stored": [], "recompute": []}
        for _ in range(args.repeats):
            for mode in times:
                t0, c0 = time.perf_counter(), time.process_time()
                call(short, system, nl, mode)
                times[mode].append((time.perf_counter() - t0, time.process_time() - c0))
        med = {m: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)) for m, v in times.items()}
        mem = {}
        for mode in times:
            out = subprocess.run([sys.executable, __file__, "--memory", str(n), mode], capture_output=True, text=True,
                                 check=True, cwd=Path(__file__).parent)
            mem[mode] = json.loads(out.stdout.strip().splitlines()[-1])["peak_above_base_mb"]
        print(f"{n:>7} {pairs:>8} {pairs * plan.width * 24 / 2**20:>7.0f} {med['stored'][0]:>9.3f} {med['stored'][1]:>7.3f}"
              f" {med['recompute'][0]:>9.3f} {med['recompute'][1]:>7.3f} {med['recompute'][1] / med['stored'][1]:>6.2f}"
              f" {mem['stored']:>10.0f} {mem['recompute']:>11.0f}")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
