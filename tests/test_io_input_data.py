"""n2p2/RuNNer input.data reader and writer."""

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import Bohr, Hartree

from hybridpot.io import InputDataError, read_input_data, read_structures, reference_values, write_input_data

N2P2 = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "n2p2"

TEXT = """\
begin
comment first structure
lattice 10.0 0.0 0.0
lattice 0.0 11.0 0.0
lattice 1.0 0.0 12.0
atom 1.0 2.0 3.0 O -0.8 0.0 0.1 0.2 0.3
atom 1.5 2.0 3.0 H 0.4 0.0 -0.1 0.0 0.0
atom 0.5 2.0 3.0 H 0.4 0.0 0.0 -0.2 -0.3
energy -10.5
charge 0.0
end
begin
atom 0.0 0.0 0.0 Na 1.0 0.0 0.0 0.0 0.0
energy -1.25
charge 1.0
end
"""


def _random_structures(rng, n_struct=4):
    out = []
    for k in range(n_struct):
        n = 2 + k
        a = Atoms(numbers=rng.choice([1, 6, 8, 29], n), positions=rng.normal(size=(n, 3)) * 3)
        if k % 2:
            a.set_cell(np.diag(rng.uniform(8, 12, 3)) + rng.normal(size=(3, 3)) * 0.5)
            a.set_pbc(True)
        a.info["charge"] = float(k - 1)
        a.info["comment"] = f"structure {k}"
        a.calc = SinglePointCalculator(a, energy=float(rng.normal() * 100), forces=rng.normal(size=(n, 3)),
                                       charges=rng.normal(size=n))
        out.append(a)
    return out


def test_parse_known_text(tmp_path):
    p = tmp_path / "input.data"
    p.write_text(TEXT)
    s = read_input_data(p)
    assert len(s) == 2
    a, b = s
    assert a.get_chemical_symbols() == ["O", "H", "H"]
    assert a.pbc.all() and not b.pbc.any()
    np.testing.assert_array_equal(a.cell.array, [[10, 0, 0], [0, 11, 0], [1, 0, 12]])
    np.testing.assert_array_equal(a.positions[1], [1.5, 2.0, 3.0])
    np.testing.assert_array_equal(a.get_forces()[0], [0.1, 0.2, 0.3])
    np.testing.assert_array_equal(a.get_charges(), [-0.8, 0.4, 0.4])
    assert a.get_potential_energy() == -10.5
    assert a.info["comment"] == "first structure"
    assert b.info["charge"] == 1.0 and b.get_potential_energy() == -1.25


def test_bohr_hartree_conversion(tmp_path):
    p = tmp_path / "input.data"
    p.write_text(TEXT)
    au = read_input_data(p, units="bohr_hartree")
    si = read_input_data(p)
    np.testing.assert_allclose(au[0].positions, si[0].positions * Bohr, rtol=1e-15)
    np.testing.assert_allclose(au[0].cell.array, si[0].cell.array * Bohr, rtol=1e-15)
    assert au[0].get_potential_energy() == pytest.approx(-10.5 * Hartree, rel=1e-15)
    np.testing.assert_allclose(au[0].get_forces(), si[0].get_forces() * Hartree / Bohr, rtol=1e-15)
    np.testing.assert_array_equal(au[0].get_charges(), si[0].get_charges())  # charges stay in e


@pytest.mark.parametrize("units", ["angstrom_ev", "bohr_hartree"])
def test_round_trip(tmp_path, units):
    structures = _random_structures(np.random.default_rng(1))
    p = tmp_path / "input.data"
    write_input_data(p, structures, units=units)
    back = read_input_data(p, units=units)
    assert len(back) == len(structures)
    exact = units == "angstrom_ev"
    for a, b in zip(structures, back):
        ra, rb = reference_values(a), reference_values(b)
        assert a.get_chemical_symbols() == b.get_chemical_symbols()
        assert (a.pbc == b.pbc).all()
        assert b.info["comment"] == a.info["comment"]
        for x, y in [(a.positions, b.positions), (a.cell.array, b.cell.array), (ra["forces"], rb["forces"]),
                     (ra["charges"], rb["charges"]), (ra["energy"], rb["energy"]), (ra["total_charge"], rb["total_charge"])]:
            if exact:
                np.testing.assert_array_equal(x, y)  # 17 significant digits: float64 exact
            else:
                np.testing.assert_allclose(x, y, rtol=4e-16, atol=1e-14)


def test_n2p2_example_files_round_trip(tmp_path):
    if not N2P2.is_dir():
        pytest.skip("n2p2 reference data not present")
    for path in sorted(N2P2.glob("*/input.data")):
        structures = read_input_data(path, units="bohr_hartree")
        assert len(structures) >= 1
        n_atom_lines = sum(1 for line in path.read_text().splitlines() if line.split()[:1] == ["atom"])
        assert sum(len(s) for s in structures) == n_atom_lines
        out = tmp_path / "copy.data"
        write_input_data(out, structures, units="bohr_hartree")
        back = read_input_data(out, units="bohr_hartree")
        for a, b in zip(structures, back):
            np.testing.assert_allclose(a.positions, b.positions, rtol=1e-15, atol=1e-13)
            np.testing.assert_allclose(a.get_forces(), b.get_forces(), rtol=1e-15, atol=1e-13)


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("begin\natom 0 0 0 H 0 0 0 0\nend\n", 2, "needs 9 fields"),
        ("begin\natom 0 0 x H 0 0 0 0 0\nend\n", 2, "'x' is not a number"),
        ("begin\natom 0 0 0 Qq 0 0 0 0 0\nend\n", 2, "unknown element 'Qq'"),
        ("begin\nlattice 1 0 0\natom 0 0 0 H 0 0 0 0 0\nend\n", 4, "1 lattice lines"),
        ("begin\natom 0 0 0 H 0 0 0 0 0\nenergy 1\n", 3, "missing 'end'"),
        ("begin\natom 0 0 0 H 0 0 0 0 0\nbegin\n", 3, "missing 'end'"),
        ("atom 0 0 0 H 0 0 0 0 0\n", 1, "outside a begin"),
        ("begin\nend\n", 2, "has no atoms"),
        ("begin\natom 0 0 0 H 0 0 0 0 0\nenergy 1\nenergy 2\nend\n", 4, "second 'energy'"),
        ("begin\natom 0 0 0 H 0 0 0 0 0\nforces 1\nend\n", 3, "unknown keyword 'forces'"),
        ("begin\natom 0 0 0 H 0 0 0 0 0\nenergy nan\nend\n", 3, "non-finite"),
        ("\n", 1, "no structures"),
    ],
)
def test_malformed_files_name_file_line_problem(tmp_path, text, line, problem):
    p = tmp_path / "bad.data"
    p.write_text(text)
    with pytest.raises(InputDataError) as info:
        read_input_data(p)
    msg = str(info.value)
    assert str(p) in msg and f"line {line}:" in msg and problem in msg, msg
    assert info.value.line == line


def test_read_structures_dispatch(tmp_path):
    p = tmp_path / "input.data"
    p.write_text(TEXT)
    assert len(read_structures(p)) == 2
    with pytest.raises(ValueError, match="unknown unit system"):
        read_input_data(p, units="furlongs")


def test_binary_file_is_a_clear_error(tmp_path):
    import numpy as np

    from hybridpot.io.input_data import InputDataError, read_input_data

    path = tmp_path / "input.data"
    path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    with pytest.raises(InputDataError, match="input.data, line 1: not a text file"):
        read_input_data(path)
    # a model file given as data
    import hybridpot as hp
    from conftest import make_short_range_model

    hp.save(make_short_range_model(), tmp_path / "model.pt")
    with pytest.raises(InputDataError, match="not a text file"):
        hp.read_structures(tmp_path / "model.pt", format="input.data")
