"""torch.compile on the short-range energy + forces: compile time and speed vs eager, same run.

The Behler–Parrinello short range (default symmetry functions at 6 Å, 25x25 networks, float64,
one thread) on a Na/Cl liquid of N atoms (argument, default 1000); ``torch.compile(dynamic=False)``
of ``ShortRange.forward``; forces by autograd through the compiled graph. Prints the first call
(compilation included), the largest force difference to eager, and the median time of 5
interleaved eager/compiled calls with their ratio (> 1: compiled faster).

Usage: python benchmarks/compile_short_range.py [N]
"""

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hybridpot as hp
from hybridpot.neighbors import build_graph
from short_range_scaling import liquid
torch.set_num_threads(1)
torch.manual_seed(0)
desc = hp.SymmetryFunctions.default(["Na","Cl"], r_cut=6.0)
short = hp.ShortRange(["Na","Cl"], desc, hidden=(25,25)).double()
atoms = liquid(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
system = hp.AtomicSystem.from_ase(atoms)
nl = hp.compute_neighbors(system, 6.0)
def energy_forces(fn):
    pos = system.positions.clone().requires_grad_(True)
    s = hp.AtomicSystem(pos, system.numbers, system.cell, system.pbc, system.charge, system.batch, system.ptr)
    g = build_graph(s, nl, check_distance=False)
    e = fn(s, g).sum()
    return torch.autograd.grad(e, pos)[0]
eager = short.forward
compiled = torch.compile(short.forward, dynamic=False)
t=time.perf_counter(); f1 = energy_forces(compiled); print("compile+first", time.perf_counter()-t)
f0 = energy_forces(eager)
print("max diff", float((f1-f0).abs().max()))
te, tc = [], []
for k in range(5):
    t=time.perf_counter(); energy_forces(eager); te.append(time.perf_counter()-t)
    t=time.perf_counter(); energy_forces(compiled); tc.append(time.perf_counter()-t)
print(f"N = {len(atoms)}: eager {statistics.median(te):.4f} s, compiled {statistics.median(tc):.4f} s, "
      f"eager/compiled {statistics.median([a / b for a, b in zip(te, tc)]):.2f}")
