"""The energy-term protocol: named terms, per-term energies, custom terms, traits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hybridpot as hp
from hybridpot.terms import TermTraits, term_traits
from conftest import random_cluster, random_periodic


class HarmonicTether(nn.Module):
    """A custom local term: ``k |r_i - r_0|^2`` per atom about the origin (eV), no neighbours needed."""

    cutoff = 0.0
    is_local = True

    def __init__(self, k: float = 0.1):
        super().__init__()
        self.k = k

    def forward(self, system, graph):
        return self.k * (system.positions ** 2).sum(dim=1)


def _model(dispersion=True, extra=None):
    desc = hp.SymmetryFunctions.default(["Na", "Cl"], r_cut=4.0, n_radial=3)
    qeq = hp.ChargeEquilibration(["Na", "Cl"], desc, hidden=(4,))
    short = hp.ShortRange(["Na", "Cl"], desc, hidden=(5,), use_charges=True)
    disp = hp.Dispersion(["Na", "Cl"], cutoff=6.0) if dispersion else None
    return hp.HybridPotential(short_range=short, charges=qeq, electrostatics=hp.Electrostatics(),
                              dispersion=disp, terms=extra).double()


def test_term_energies_add_up_to_the_energy():
    model = _model()
    assert model.term_names == ["charges", "short_range", "electrostatics", "dispersion"]
    for atoms in (random_cluster(6, symbols=("Na", "Cl"), min_distance=2.0),
                  random_periodic(8, symbols=("Na", "Cl"), seed=3, min_distance=2.0)):
        out = model(hp.AtomicSystem.from_ase(atoms))
        parts = [out[f"energy_{n}"] for n in ("short_range", "electrostatics", "dispersion")]
        assert "energy_charges" not in out
        assert torch.allclose(sum(parts), out["energy"], rtol=1e-14, atol=1e-12)
        # each part equals the model without the other terms
        alone = model.without("short_range", "dispersion")(hp.AtomicSystem.from_ase(atoms))
        assert torch.equal(alone["energy"], out["energy_electrostatics"])


def test_custom_term_by_name_adds_its_energy_and_forces():
    tether = HarmonicTether(0.2)
    model = _model(dispersion=False, extra={"tether": tether})
    base = _model(dispersion=False)
    base.load_state_dict(model.state_dict())
    atoms = random_cluster(6, symbols=("Na", "Cl"), min_distance=2.0)
    system = hp.AtomicSystem.from_ase(atoms)
    out, ref = model(system), base(system)
    expected = 0.2 * (system.positions ** 2).sum()
    assert torch.allclose(out["energy_tether"], expected.reshape(1), rtol=1e-14)
    assert torch.allclose(out["energy"], ref["energy"] + expected, rtol=1e-14)
    assert torch.allclose(out["forces"], ref["forces"] - 0.4 * system.positions, rtol=1e-12, atol=1e-12)
    assert model.term_traits()["tether"] == TermTraits(is_local=True)


def test_traits_of_the_shipped_terms():
    model = _model()
    traits = model.term_traits()
    assert traits["charges"].provides_charges and not traits["charges"].is_local
    assert traits["short_range"].needs_charges and traits["short_range"].is_local
    assert traits["electrostatics"].uses_widths and not traits["electrostatics"].is_local
    assert traits["dispersion"] == TermTraits(is_local=True)
    desc = hp.SymmetryFunctions.default(["Na"], r_cut=3.0, n_radial=2)
    assert not term_traits(hp.ShortRange(["Na"], desc, hidden=(2,))).needs_charges
    assert term_traits(hp.FixedCharges()).provides_charges


def test_protocol_errors():
    desc = hp.SymmetryFunctions.default(["Na", "Cl"], r_cut=4.0, n_radial=3)
    short4g = hp.ShortRange(["Na", "Cl"], desc, hidden=(5,), use_charges=True)
    with pytest.raises(ValueError, match="short_range needs a charge model"):
        hp.HybridPotential(short_range=short4g)
    with pytest.raises(ValueError, match="electrostatics needs a charge model"):
        hp.HybridPotential(electrostatics=hp.Electrostatics())
    with pytest.raises(ValueError, match="one charge model"):
        hp.HybridPotential(charges=hp.FixedCharges(), terms={"more": hp.FixedCharges()},
                           electrostatics=hp.Electrostatics())
    with pytest.raises(ValueError, match="given twice"):
        hp.HybridPotential(dispersion=hp.Dispersion(["Na"]), terms={"dispersion": hp.Dispersion(["Na"])})
    with pytest.raises(ValueError, match="is an attribute of HybridPotential"):
        hp.HybridPotential(terms={"cutoff": HarmonicTether()})
    with pytest.raises(ValueError, match="identifier"):
        hp.HybridPotential(terms={"my term": HarmonicTether()})
    with pytest.raises(ValueError, match="cannot remove the charge model"):
        _model().without("charges")


def test_slots_read_none_and_can_be_replaced():
    model = _model(dispersion=False)
    assert model.dispersion is None
    model.dispersion = hp.Dispersion(["Na", "Cl"], cutoff=5.0)
    assert model.term_names[-1] == "dispersion"
    model.dispersion = None
    assert "dispersion" not in model.term_names and model.dispersion is None
    assert model.charge_model is model.charges


class CountingCharges(nn.Module):
    """A custom charge model: zero charges, its diagnostics returned with them."""

    cutoff = 0.0
    provides_charges = True
    is_local = True

    def forward(self, system, graph, state=None):
        if state is not None:
            state["calls"] = state.get("calls", 0) + 1
        calls = torch.tensor(float(state["calls"] if state is not None else -1))
        return torch.zeros(system.n_atoms, dtype=system.dtype), None, {"calls": calls}


def test_charge_model_diagnostics_and_caller_state():
    model = hp.HybridPotential(charges=CountingCharges(), electrostatics=hp.Electrostatics()).double()
    system = hp.AtomicSystem.from_ase(random_cluster(4, symbols=("Na", "Cl")))
    assert float(model(system)["charges_calls"]) == -1.0
    state = {}
    model(system, state=state)
    out = model(system, state=state)
    assert float(out["charges_calls"]) == 2.0 and state == {"charges": {"calls": 2}}


def test_charge_solver_diagnostics_are_model_outputs():
    """QEq's solves appear in the outputs (charges_matrix_free, charges_cg_iterations,
    charges_preconditioner_fallback per structure), not only as module attributes."""
    import hybridpot as hp
    from ase.build import bulk

    desc = hp.SymmetryFunctions.default(["Na", "Cl"], r_cut=4.0, n_radial=2)
    qeq = hp.ChargeEquilibration(["Na", "Cl"], desc, hidden=(3,), solver="matrix_free", cg_tol=1e-8)
    model = hp.HybridPotential(charges=qeq, electrostatics=hp.Electrostatics(method="pme")).double()
    out = model(hp.AtomicSystem.from_ase(bulk("NaCl", "rocksalt", a=5.64) * (2, 2, 2)), compute_forces=False)
    assert out["charges_matrix_free"].tolist() == [True]
    assert out["charges_preconditioner_fallback"].tolist() == [False]
    # the forward solve's iterations (the record grows later by the adjoint and energy solves)
    assert 0 < int(out["charges_cg_iterations"][0]) == qeq.last_diagnostics[0]["iterations"][0]
