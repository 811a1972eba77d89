"""Count host-device synchronisations in one MD step of the 4G model on CUDA.

Runs the ``md_step.py`` model (4G NaCl: short range, QEq with matrix-free PME CG, PME,
dispersion) on a periodic melt-density box, then repeats one warm MD-like step under
``torch.cuda.set_sync_debug_mode("warn")`` and groups the synchronising calls by the source
line that made them. A synchronisation is where the host waits for the GPU (reading a
tensor's value into Python: ``.item()``, ``bool()``, ``int()``, ``nonzero``, ...); each costs
a launch-queue drain (tens of microseconds), which matters when a step is short.

Usage: python benchmarks/gpu_sync_count.py [--n 4096] [--dtype float32]
"""

from __future__ import annotations

import argparse
import collections
import warnings

import torch

import hybridpot as hp

from md_step import build_model
from short_range_scaling import liquid


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    model = build_model(dtype).to("cuda")
    system = hp.AtomicSystem.from_ase(liquid(args.n), dtype=dtype, device="cuda")
    neighbors = hp.compute_neighbors(system, model.cutoff + 0.5)
    model(system, compute_stress=False, neighbors=neighbors)  # cold call: warm-start store, FFT plans
    system.positions = system.positions + 0.005 * torch.randn_like(system.positions)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            model(system, compute_stress=False, neighbors=neighbors)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    by_line = collections.Counter(f"{w.filename.split('hybridpot/')[-1]}:{w.lineno}" for w in syncs)
    print(f"N = {system.n_atoms}, {args.dtype}: {len(syncs)} host-device synchronisations in one warm step; "
          f"CG iterations {model.charges.last_iterations}")
    for where, count in by_line.most_common(15):
        print(f"  {count:5d}  {where}")


if __name__ == "__main__":
    main()
