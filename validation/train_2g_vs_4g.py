"""2G versus 4G trained from scratch on an n2p2-format data set with charges.

The shipped NaCl-cluster data (GFN1-xTB energies, forces and charges of neutral and
+1-charged Na_nCl_m clusters and the NaCl dimer scan; ``hybridpot/data/README.md``) is
written as an n2p2/RuNNer ``input.data`` file in Bohr and Hartree, as n2p2 data sets are,
and both models are trained from that file with ``hybridpot train`` (same descriptor, the
same short-range network size, the same seed and split). The 4G model adds the charge
equilibration network (two-stage schedule: charges first, then energies and forces with
the electrostatics included). Prints the test-set table (float64 evaluation).

Usage: python validation/train_2g_vs_4g.py [--epochs 200] [--charge-epochs 60] [--output validation/out_2g_vs_4g]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from hybridpot.cli import main as cli
from hybridpot.io import read_structures, write_input_data

DATA = Path(__file__).resolve().parents[1] / "hybridpot" / "data" / "nacl_clusters.extxyz.gz"


def config(kind: str, data: Path, run: Path, epochs: int, charge_epochs: int) -> dict:
    return {
        "data": {"train": str(data), "format": "input.data", "units": "bohr_hartree", "split": [0.8, 0.1, 0.1], "seed": 0},
        "model": {"kind": kind, "cutoff": 6.0, "n_radial": 6, "angular_etas": [0.01], "zetas": [1.0, 4.0],
                  "hidden": [15, 15], "charge_hidden": [10, 10]},
        "training": {"dtype": "float32", "seed": 0, "batch_size": 16, "epochs": epochs, "lr": 5e-3,
                     "charge_epochs": charge_epochs, "charge_lr": 5e-3, "early_stopping_patience": 60},
        "output": {"directory": str(run), "progress": False},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--charge-epochs", type=int, default=60)
    parser.add_argument("--output", default="validation/out_2g_vs_4g")
    args = parser.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    images = read_structures(DATA)
    data = out / "input.data"
    write_input_data(data, images, units="bohr_hartree")
    print(f"wrote {len(images)} structures to {data} (Bohr/Hartree, n2p2 format, with charges)")
    rows = {}
    for kind in ("2G", "4G"):
        cfg_path = out / f"{kind}.yaml"
        cfg_path.write_text(yaml.safe_dump(config(kind, data.resolve(), (out / kind).resolve(), args.epochs,
                                                  args.charge_epochs)))
        t0 = time.perf_counter()
        status = cli(["train", str(cfg_path), "--no-progress"])
        if status != 0:
            raise SystemExit(f"training {kind} failed with status {status}")
        metrics = json.loads((out / kind / "final_metrics.json").read_text())["test"]
        rows[kind] = (metrics, time.perf_counter() - t0)
    print("\nTest split (float64), same split, descriptor and short-range network size:")
    print(f"{'model':6s} {'E RMSE (meV/atom)':>18s} {'E MAE (meV/atom)':>17s} {'F RMSE (meV/Å)':>15s} "
          f"{'F MAE (meV/Å)':>14s} {'q RMSE (e)':>11s} {'train time (s)':>15s}")
    for kind, (m, seconds) in rows.items():
        q = m.get("charges_rmse", float("nan"))
        print(f"{kind:6s} {1000 * m['energy_rmse']:18.2f} {1000 * m['energy_mae']:17.2f} "
              f"{1000 * m['forces_rmse']:15.1f} {1000 * m['forces_mae']:14.1f} {q:11.4f} {seconds:15.0f}")


if __name__ == "__main__":
    main()
