"""Write init.xyz for examples/ipi/input.xml: a 64-ion frame of the shipped model's molten-NaCl MD."""

from ase.io import read, write

from hybridpot.data import DATA_DIR

atoms = read(DATA_DIR / "molten_nacl_model_md.extxyz.gz", index=0)
atoms.calc = None
write("init.xyz", atoms, format="extxyz")
print(f"init.xyz: {len(atoms)} atoms, cell {atoms.cell.lengths().round(3).tolist()} Å")
