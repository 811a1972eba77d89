"""Smoke test of examples/slab_density.py: a few MD steps of the molten NaCl film with the shipped
model; the total charge stays zero, the plot is written, the profile integrates to the ion count."""

from __future__ import annotations

import numpy as np
import pytest
from example_scripts import load_script  # tests/example_scripts.py


def test_slab_density_example_runs(tmp_path, capsys):
    script = load_script("examples/slab_density.py")
    script.main(["--steps", "5", "--vacuum", "18", "--output", str(tmp_path)])
    printed = capsys.readouterr().out
    assert (tmp_path / "density.png").stat().st_size > 0
    max_total = float(printed.split("max |sum q| ")[1].split(" e")[0])
    assert max_total < 1e-10
    # the profile function: number densities integrate back to the ions of every frame
    atoms = script.nacl001_slab(2, 2, 20.0)
    charges = np.tile(np.where(atoms.numbers == 11, 0.5, -0.5), (1, 1))
    bins = np.arange(-16.0, 16.0 + 1e-9, 0.5)
    na, cl, rho_q = script.film_profile([atoms], charges, bins)
    area = np.linalg.norm(np.cross(atoms.cell[0], atoms.cell[1]))
    assert np.sum(na) * area * 0.5 == pytest.approx(np.count_nonzero(atoms.numbers == 11))
    assert np.sum(cl) * area * 0.5 == pytest.approx(np.count_nonzero(atoms.numbers == 17))
    assert abs(np.sum(rho_q)) < 1e-12
