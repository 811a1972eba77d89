"""n2p2 compatibility: run n2p2's example potentials with hybridpot and compare.

For each potential in ../shared/reference/n2p2 this prints: number of atoms, energy
difference to n2p2's own prediction (n2p2 test/cpp/Example_nnp_predict.h) where one
exists, the largest force difference to n2p2's forces (test/cpp/ExamplePrediction.h, the
atoms listed there) or, where n2p2 gives none, to central finite differences of our energy
(a few components), and the wall time of one energy+forces evaluation. The 4G examples
have no n2p2 reference numbers; they are compared with the DFT data of their input.data
(sanity check of the import, not of n2p2 agreement).

Usage::

    python validation/n2p2_compat.py [--device cuda] [--skip-large]

Units are those of the files (Bohr/Hartree or Å/eV) for 2G; 4G potentials are imported
with ``units="ase"`` and reported in eV and Å.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import hybridpot as hp  # noqa: E402
from hybridpot.io.input_data import read_input_data  # noqa: E402

N2P2 = ROOT.parent / "shared" / "reference" / "n2p2"

sys.path.insert(0, str(ROOT / "tests"))
from n2p2_reference import REFERENCE_ENERGY, REFERENCE_FORCES  # noqa: E402  (n2p2 test-suite numbers)

EXAMPLES = [
    # name, from_n2p2 keyword arguments, input.data units
    ("H2O_RPBE-D3", {}, "angstrom_ev"),
    ("Cu2S_PBE", {}, "angstrom_ev"),
    ("DMABN_SCAN", {}, "angstrom_ev"),
    ("Carbon_chain_4G", {"units": "ase", "overrides": {"global_nodes_short": "10 10"}}, "bohr_hartree"),
    ("H2O_RPBE-D3_4G", {"units": "ase"}, "bohr_hartree"),
]


def finite_difference_error(model, atoms, forces, device, n=3, h=1e-4):
    """Largest |F - F_fd| over ``n`` random force components."""
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(n):
        i, a = int(rng.integers(len(atoms))), int(rng.integers(3))
        e = []
        for sign in (1.0, -1.0):
            moved = atoms.copy()
            moved.positions[i, a] += sign * h
            system = hp.AtomicSystem.from_ase(moved, device=device)
            e.append(float(model(system, compute_forces=False)["energy"][0]))
        worst = max(worst, abs(-(e[0] - e[1]) / (2 * h) - forces[i, a]))
    return worst


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-large", action="store_true", help="skip the 1080-atom water example")
    args = parser.parse_args(argv)
    if not N2P2.is_dir():
        print(f"n2p2 reference potentials not found at {N2P2}")
        return 1
    rows = []
    for name, kwargs, data_units in EXAMPLES:
        if args.skip_large and name == "H2O_RPBE-D3":
            continue
        model = hp.from_n2p2(N2P2 / name, **kwargs).to(args.device)
        atoms = read_input_data(N2P2 / name / "input.data", units=data_units)[0]
        system = hp.AtomicSystem.from_ase(atoms, device=args.device)
        model(system)  # warm-up
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(system)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        energy = float(out["energy"][0])
        forces = out["forces"].cpu().numpy()
        if name in REFERENCE_ENERGY:
            ref = REFERENCE_ENERGY[name]
            e_col = f"{energy - ref:+.2e} ({abs(energy - ref) / abs(ref):.1e} rel, n2p2)"
        else:
            e_dft = atoms.get_potential_energy()
            e_col = f"{(energy - e_dft) / len(atoms):+.2e}/atom (DFT)" if e_dft != 0 else "n/a (no reference)"
        if name in REFERENCE_FORCES:
            ref_f = np.array(REFERENCE_FORCES[name])
            f_col = f"{np.abs(forces[: len(ref_f)] - ref_f).max():.1e} (n2p2, {len(ref_f)} atoms)"
        else:
            f_col = f"{finite_difference_error(model, atoms, forces, args.device):.1e} (fin. diff.)"
        rows.append((name, len(atoms), e_col, f_col, f"{elapsed:.2f}"))
    header = ("example", "atoms", "energy difference", "max force difference", "time [s]")
    widths = [max(len(str(r[k])) for r in rows + [header]) for k in range(5)]
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print(" | ".join(str(v).ljust(w) for v, w in zip(r, widths)))
    print("\nn2p2's reference timings are not available (its test suite stores no timings).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
