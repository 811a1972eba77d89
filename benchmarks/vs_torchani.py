"""Short-range energy + forces: hybridpot versus TorchANI, side by side in one run.

Both models see the same two-element (Na/Cl) liquid-density periodic systems (0.032
atoms/Å^3), use the same cutoffs (radial 6.0 Å, angular 4.0 Å), the same number of
descriptor functions per atom (8 radial per element; 8 angular per element pair: 40 in
all for two elements) and per-element networks of the same size (hidden 25x25, tanh for
hybridpot, CELU for TorchANI's AtomicNetwork). TorchANI uses its pure-PyTorch cell list
(CUDA extensions are not installed here). Each entry is the median of ``--repeats`` calls
after one warm-up, the two codes interleaved; the ratio is the median over repeats of
hybridpot time / TorchANI time (<= 1: hybridpot faster).

Needs ``pip install torchani`` (not a hybridpot dependency).

Usage: python benchmarks/vs_torchani.py [--sizes 125 1000 3375 10648] [--dtype float32] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

import hybridpot as hp

from short_range_scaling import liquid

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")


def timed(fn, repeats: int, device: str) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timed_cpu(fn) -> tuple:
    """(wall s, CPU s of this process) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def build_torchani(dtype, device):
    import torchani
    from torchani.aev import AEVComputer
    from torchani.nn import ANINetworks, AtomicNetwork

    aev = AEVComputer.from_constants(
        radial_cutoff=6.0,
        angular_cutoff=4.0,
        radial_eta=16.0 / 6.0**2,
        radial_shifts=[0.8 + k * (6.0 - 0.8) / 7 for k in range(8)],
        angular_eta=8.0 / 4.0**2,
        angular_zeta=32.0,
        angular_shifts=[0.9, 2.5],
        sections=[0.3927, 1.1781, 1.9635, 2.7489],
        num_species=2,
        neighborlist="cell_list",
    )
    n_features = aev.out_dim
    nets = ANINetworks({s: AtomicNetwork([n_features, 25, 25, 1], activation="celu", bias=True) for s in ("Na", "Cl")})
    return aev.to(device, dtype), nets.to(device, dtype), torchani.__version__


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[125, 1000, 3375, 10648])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--plot", default="benchmarks/vs_torchani.png")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on the shared 2-core machine 2 threads were up to 10x slower)")
    parser.add_argument("--engine", default="auto", choices=["auto", "kernel", "reference"],
                        help="hybridpot descriptor engine (auto: compiled kernels)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)

    desc = hp.SymmetryFunctions.default(["Na", "Cl"], r_cut=6.0, n_radial=8, angular_r_cut=4.0)
    desc.engine = args.engine
    ours = hp.HybridPotential(short_range=hp.ShortRange(["Na", "Cl"], desc, hidden=(25, 25))).to(args.device, dtype)
    aev, nets, ani_version = build_torchani(dtype, args.device)
    print(f"torch {torch.__version__}, torchani {ani_version}, threads {torch.get_num_threads()}, {args.dtype}, "
          f"{args.device}; features per atom: hybridpot {desc.n_features[0]}, torchani {aev.out_dim}; "
          f"engine {args.engine}; {os.popen('uptime').read().strip()}")
    print(f"{'N':>7} {'hybridpot s':>12} {'torchani s':>11} {'ratio':>7} {'hp cpu s':>9} {'ani cpu s':>10} "
          f"{'ratio cpu':>10}")
    rows = []
    for n in args.sizes:
        atoms = liquid(n)
        system = hp.AtomicSystem.from_ase(atoms, dtype=dtype, device=args.device)
        species = torch.as_tensor((atoms.numbers == 17).astype(int), device=args.device).unsqueeze(0)
        coords0 = torch.as_tensor(atoms.positions, dtype=dtype, device=args.device).unsqueeze(0)
        cell = torch.as_tensor(atoms.cell.array, dtype=dtype, device=args.device)
        pbc = torch.tensor([True, True, True], device=args.device)

        def run_ours():
            return ours(system, compute_stress=False)["forces"]

        def run_ani():
            coords = coords0.clone().requires_grad_(True)
            energy = nets(species, aev(species, coords, cell=cell, pbc=pbc)).sum()
            return torch.autograd.grad(energy, coords)[0]

        # interleaved: each repeat times both codes back to back, so load changes on a shared
        # machine hit both; the ratio is the median of the per-repeat ratios
        run_ours(), run_ani()
        if args.device.startswith("cuda"):
            pairs = [(timed(run_ours, 1, args.device), timed(run_ani, 1, args.device)) for _ in range(args.repeats)]
            cpu_pairs = None
        else:
            both = [(timed_cpu(run_ours), timed_cpu(run_ani)) for _ in range(args.repeats)]
            pairs = [(a[0], b[0]) for a, b in both]
            cpu_pairs = [(a[1], b[1]) for a, b in both]
        t_ours = statistics.median(p[0] for p in pairs)
        t_ani = statistics.median(p[1] for p in pairs)
        ratio = statistics.median(p[0] / p[1] for p in pairs)
        rows.append((len(atoms), t_ours, t_ani))
        cpu = ""
        if cpu_pairs:
            c_ours, c_ani = (statistics.median(p[k] for p in cpu_pairs) for k in (0, 1))
            cpu = f" {c_ours:>9.4f} {c_ani:>10.4f} {statistics.median(p[0] / p[1] for p in cpu_pairs):>10.2f}"
        print(f"{len(atoms):>7} {t_ours:>12.4f} {t_ani:>11.4f} {ratio:>7.2f}{cpu}", flush=True)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n, a, b = zip(*rows)
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.loglog(n, [t / k * 1e6 for t, k in zip(a, n)], "o-", label="hybridpot")
        ax.loglog(n, [t / k * 1e6 for t, k in zip(b, n)], "s--", label=f"TorchANI {ani_version}")
        ax.set_xlabel("atoms N")
        ax.set_ylabel("energy + forces per atom (µs)")
        ax.set_title(f"Short range, {args.dtype}, {args.device}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
