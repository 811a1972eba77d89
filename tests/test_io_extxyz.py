"""Extended XYZ reader/writer with configurable keys."""

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from hybridpot.io import read_extxyz, read_structures, reference_values, write_extxyz


def _structures(rng):
    out = []
    for k in range(3):
        n = 3 + k
        a = Atoms(numbers=rng.choice([1, 8, 11], n), positions=rng.uniform(-3, 3, size=(n, 3)))
        if k == 1:
            a.set_cell(np.diag([9.0, 10.0, 11.0]))
            a.set_pbc(True)
        a.info["charge"] = float(k) - 1.0
        a.calc = SinglePointCalculator(
            a, energy=float(rng.normal()), forces=rng.normal(size=(n, 3)), charges=rng.normal(size=n),
            dipole=rng.normal(size=3),
        )
        out.append(a)
    return out


@pytest.mark.parametrize(
    "keys",
    [None, dict(energy="REF_energy", forces="REF_forces", charges="REF_q", total_charge="Qtot", dipole="REF_dipole")],
)
def test_round_trip(tmp_path, keys):
    structures = _structures(np.random.default_rng(0))
    p = tmp_path / "data.xyz"
    write_extxyz(p, structures, keys=keys)
    text = p.read_text()
    if keys:
        for name in keys.values():
            assert name in text
    back = read_extxyz(p, keys=keys)
    assert len(back) == 3
    for a, b in zip(structures, back):
        ra, rb = reference_values(a), reference_values(b)
        assert set(ra) == set(rb) == {"energy", "forces", "charges", "dipole", "total_charge"}
        assert a.get_chemical_symbols() == b.get_chemical_symbols()
        assert (a.pbc == b.pbc).all()
        # ase writes %16.8f: round trip to 5e-9
        np.testing.assert_allclose(a.positions, b.positions, atol=5.1e-9)
        np.testing.assert_allclose(a.cell.array, b.cell.array, atol=5.1e-9)
        for k in ra:
            np.testing.assert_allclose(ra[k], rb[k], atol=5.1e-9, err_msg=k)


def test_missing_quantities_are_absent(tmp_path):
    a = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    a.calc = SinglePointCalculator(a, energy=-1.0)
    p = tmp_path / "e.xyz"
    write_extxyz(p, [a])
    ref = reference_values(read_extxyz(p)[0])
    assert ref == {"energy": -1.0}


def test_custom_keys_read_from_foreign_file(tmp_path):
    p = tmp_path / "foreign.xyz"
    p.write_text(
        "2\n"
        'Properties=species:S:1:pos:R:3:dft_f:R:3:hirsh:R:1 dft_e=-3.5 tot_q=1.0 pbc="F F F"\n'
        "H 0 0 0 0.1 0.2 0.3 0.6\n"
        "H 0 0 1 -0.1 -0.2 -0.3 0.4\n"
    )
    a = read_structures(p, keys=dict(energy="dft_e", forces="dft_f", charges="hirsh", total_charge="tot_q"))[0]
    assert a.get_potential_energy() == -3.5
    np.testing.assert_array_equal(a.get_forces(), [[0.1, 0.2, 0.3], [-0.1, -0.2, -0.3]])
    np.testing.assert_array_equal(a.get_charges(), [0.6, 0.4])
    assert a.info["charge"] == 1.0


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_extxyz(tmp_path / "nope.xyz")
    p = tmp_path / "bad.xyz"
    p.write_text("2\ncomment\nH 0 0 0\n")
    with pytest.raises(ValueError, match="bad.xyz"):
        read_extxyz(p)
    with pytest.raises(ValueError, match="unknown reference key"):
        read_extxyz(p, keys={"energies": "E"})
