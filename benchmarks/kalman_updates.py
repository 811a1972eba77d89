"""Cost of one Kalman-filter update in training: observations from frozen inputs vs the full model.

Sets up hybridpot's training on n2p2's Carbon_chain_4G set exactly as validation/train_vs_n2p2.py does
(one epoch of each stage, so that the filter, the offsets and the stored inputs exist), then times, in
interleaved rounds on the same updates of one epoch plan, the energy, force and charge observations with
the frozen inputs (hybridpot/training/kalman_inputs.py) and with whole-model calls, and the filter step.
One torch thread; process CPU time and wall time per call (ms).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/kalman_updates.py [--set Carbon_chain_4G] [--updates 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "validation"))


def timed(calls) -> tuple:
    """(CPU ms, wall ms) per call of the callables in ``calls``."""
    cpu, wall = time.process_time(), time.perf_counter()
    for call in calls:
        call()
    n = max(len(calls), 1)
    return (time.process_time() - cpu) / n * 1e3, (time.perf_counter() - wall) / n * 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", default="Carbon_chain_4G")
    parser.add_argument("--updates", type=int, default=60, help="updates of each kind per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/kalman_updates"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import hybridpot.training.kalman_fit as kalman_fit
    from train_hybridpot import train_hybridpot
    from train_vs_n2p2 import FILE_UNITS, TRAIN_SETS, read_blocks, split_indices

    if not (TRAIN_SETS / args.set).is_dir():
        raise SystemExit(f"{TRAIN_SETS / args.set} not found (../shared/reference/n2p2-train)")
    stages = {}
    run_epoch = kalman_fit.KalmanEpochs.run_epoch

    def keep(self, *a, **k):  # the trainer's KalmanEpochs of each stage
        stages.setdefault(self.stage, self)
        return run_epoch(self, *a, **k)

    kalman_fit.KalmanEpochs.run_epoch = keep
    blocks = read_blocks(TRAIN_SETS / args.set / "input.data")
    train, _ = split_indices(len(blocks), 0.2, 0)
    train_hybridpot(args.set, [blocks[i] for i in train], args.workdir, FILE_UNITS[args.set], TRAIN_SETS / args.set,
                    epochs=1, charge_epochs=1 if "4G" in args.set else 0)
    kalman_fit.KalmanEpochs.run_epoch = run_epoch

    rows = []
    energy = stages["energy"]
    plan = energy._plan()
    kinds = {"energy": [u for u in plan if u[0] == "energy"][: args.updates],
             "forces": [u for u in plan if u[0] == "forces"][: args.updates]}
    frozen_term = energy.frozen_term
    observe = {"energy": lambda e, u: e.energy_observation(u[1]), "forces": lambda e, u: e.force_observation(u[1], u[2])}
    for u in kinds["energy"] + kinds["forces"]:  # build the stored inputs first (once per structure)
        observe[u[0]](energy, u)
    charge = stages.get("charges")
    if charge is not None:
        kinds["charges"] = [u for u in charge._plan() if u[0] == "charges"][: args.updates]
        observe["charges"] = lambda e, u: e.charge_observation(u[1])
        frozen_charges = charge.frozen_charges
        for u in kinds["charges"]:
            charge.charge_observation(u[1])
    results = {}
    for _ in range(args.rounds):
        for kind, updates in kinds.items():
            epochs = charge if kind == "charges" else energy
            for path in ("frozen", "full"):
                if kind == "charges":
                    epochs.frozen_charges = frozen_charges if path == "frozen" else None
                else:
                    epochs.frozen_term = frozen_term if path == "frozen" else None
                results.setdefault((kind, path), []).append(
                    timed([lambda u=u: observe[kind](epochs, u) for u in updates]))
        energy.frozen_term = frozen_term
        obs = [energy.force_observation(u[1], u[2]) for u in kinds["forces"]]
        with energy.filter.one_blas_thread():
            results.setdefault(("filter step", f"n = {energy.filter.n}"), []).append(
                timed([lambda o=o: energy.filter.step(*o) for o in obs]))
    print(f"{args.set}: ms per call (median of {args.rounds} interleaved rounds of {args.updates} calls), one thread")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"{'observation':<14} {'path':<12} {'CPU ms':>8} {'wall ms':>8}")
    for (kind, path), values in results.items():
        cpu = sorted(v[0] for v in values)[len(values) // 2]
        wall = sorted(v[1] for v in values)[len(values) // 2]
        rows.append((kind, path, cpu, wall))
        print(f"{kind:<14} {path:<12} {cpu:8.2f} {wall:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
