"""Short-range energy + forces with the current descriptors vs those of an older commit, one run.

Loads ``hybridpot/descriptors.py`` of ``--commit`` (via ``git show``) as a second module and
times the same model (same weights, same systems as vs_torchani.py: Na/Cl liquid, radial
6 Å x 8, angular 4 Å, 25x25 networks) with each, interleaved; checks that energies and
forces agree. The descriptors of commits before the compiled kernels (issue 13) are one file,
which is what this loads; ``--commit 44e7359`` (the kernels' branch point) compares the torch
implementation of that time with the working tree's default engine.
Usage: python benchmarks/descriptors_before_after.py [--commit ec5c549]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import hybridpot as hp

from short_range_scaling import liquid


def old_module(commit: str):
    root = Path(__file__).resolve().parents[1]
    src = subprocess.run(["git", "show", f"{commit}:hybridpot/descriptors.py"], cwd=root, capture_output=True,
                         text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "descriptors_old.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("hybridpot._descriptors_old", path)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "hybridpot"
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commit", default="ec5c549")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10648])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--angular-cutoff", type=float, default=4.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    old = old_module(args.commit)
    kw = dict(r_cut=6.0, n_radial=8, angular_r_cut=args.angular_cutoff)
    new_desc = hp.SymmetryFunctions.default(["Na", "Cl"], **kw)
    old_desc = old.SymmetryFunctions.default(["Na", "Cl"], **kw)
    torch.manual_seed(0)
    model = hp.HybridPotential(short_range=hp.ShortRange(["Na", "Cl"], new_desc, hidden=(25, 25))).to(dtype)
    print(f"threads {torch.get_num_threads()}, {args.dtype}, angular cutoff {args.angular_cutoff} Å; descriptors of "
          f"{args.commit} vs working tree")
    print(f"{'N':>7} {'old s':>9} {'new s':>9} {'speed-up':>9} {'max |dF|':>10}")
    for n in args.sizes:
        system = hp.AtomicSystem.from_ase(liquid(n), dtype=dtype)
        nl = hp.compute_neighbors(system, 6.0)
        runs = {}
        for name, desc in (("old", old_desc), ("new", new_desc)):
            model.short_range.descriptor = desc.to(dtype)
            runs[name] = model(system, compute_stress=False, neighbors=nl)
        pairs = []
        for _ in range(args.repeats):
            row = []
            for desc in (old_desc, new_desc):
                model.short_range.descriptor = desc
                t0 = time.perf_counter()
                model(system, compute_stress=False, neighbors=nl)
                row.append(time.perf_counter() - t0)
            pairs.append(row)
        t_old = statistics.median(p[0] for p in pairs)
        t_new = statistics.median(p[1] for p in pairs)
        speed = statistics.median(p[0] / p[1] for p in pairs)
        df = float((runs["old"]["forces"] - runs["new"]["forces"]).abs().max())
        print(f"{n:>7} {t_old:>9.4f} {t_new:>9.4f} {speed:>9.2f} {df:>10.2e}", flush=True)


if __name__ == "__main__":
    main()
