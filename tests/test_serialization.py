"""Model files: safe loading (no code runs), bit-exact round trips, clear errors for bad files."""

from __future__ import annotations

import json
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

import hybridpot as hp
from hybridpot.serialization import ModelFileError, UntrustedFileError, architecture_of, read_architecture
from conftest import make_short_range_model, random_cluster, random_periodic

N2P2 = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "n2p2"
LEGACY_MODEL = Path(__file__).resolve().parent / "data" / "legacy_molten_nacl_4G.pt"


# ---------------------------------------------------------------------------- crafted files
class _WritesFile:
    """Unpickling this object runs ``exec``, which writes ``target``."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (exec, (f"with open({self.target!r}, 'w') as fh: fh.write('code ran')",))


def _crafted_model_file(path: Path, target: Path) -> Path:
    torch.save({"format": "hybridpot-model", "version": "0.1.0", "model": _WritesFile(target)}, path)
    return path


def test_crafted_file_would_run_code_with_plain_unpickling(tmp_path):
    # the crafted file is a real attack: plain torch.load (weights_only=False) runs its code
    target = tmp_path / "ran.txt"
    path = _crafted_model_file(tmp_path / "evil.pt", target)
    torch.load(path, weights_only=False)
    assert target.read_text() == "code ran"


def _tiny_dataset(path: Path) -> Path:
    from hybridpot.data import load_nacl_clusters

    images = [a for a in load_nacl_clusters() if a.info["source"] == "dimer_scan"][:6]
    hp.write_extxyz(path, images)
    return path


def test_crafted_model_file_refused_by_every_loading_path(tmp_path, capsys):
    from hybridpot.cli import main
    from hybridpot.training.builder import build_model
    from hybridpot.training.config import ModelConfig

    target = tmp_path / "ran.txt"
    evil = _crafted_model_file(tmp_path / "evil.pt", target)

    with pytest.raises(UntrustedFileError, match="refused.*nothing was executed"):
        hp.load(evil)
    with pytest.raises(UntrustedFileError, match="evil.pt"):
        hp.HybridCalculator(str(evil))
    data = _tiny_dataset(tmp_path / "train.xyz")
    assert main(["evaluate", str(evil), str(data), "--output", str(tmp_path / "eval")]) == 2
    assert "refused" in capsys.readouterr().err
    with pytest.raises(UntrustedFileError):
        build_model(ModelConfig(from_file=str(evil)), [11, 17], tmp_path)

    # --resume: a crafted checkpoint in the run directory
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"format": "hybridpot-checkpoint", "model_state": _WritesFile(target)}, run / "checkpoint.pt")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"data: {{train: {data}}}\nmodel: {{cutoff: 4.0, n_radial: 3, hidden: [4]}}\n"
        f"training: {{epochs: 1, batch_size: 2}}\noutput: {{directory: {run}, progress: false}}\n"
    )
    assert main(["train", str(config), "--resume"]) == 2
    assert "checkpoint.pt: refused" in capsys.readouterr().err
    assert not target.exists()


def test_raw_pickle_refused_without_running(tmp_path):
    target = tmp_path / "ran.txt"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as fh:
        pickle.dump(_WritesFile(target), fh)
    with pytest.raises(UntrustedFileError):
        hp.load(path)
    assert not target.exists()


# ---------------------------------------------------------------------------- bad files
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.pt"
    hp.save(make_short_range_model(), path)
    return path


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"empty.pt.*empty \(0 bytes\)"):
        hp.load(path)


def test_truncated_file(tmp_path, saved_model):
    path = tmp_path / "truncated.pt"
    path.write_bytes(saved_model.read_bytes()[: saved_model.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="truncated.pt.*truncated or corrupted"):
        hp.load(path)


def test_corrupted_file(tmp_path, saved_model):
    data = bytearray(saved_model.read_bytes())
    rng = np.random.default_rng(0)
    for k in rng.integers(200, len(data) - 200, 64):
        data[k] ^= 0xFF
    path = tmp_path / "corrupted.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="corrupted.pt"):
        hp.load(path)


def test_text_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_text("this is not a model\n")
    with pytest.raises(ModelFileError, match="model.pt: not a hybridpot/torch file"):
        hp.load(path)


def test_directory_and_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="is a directory"):
        hp.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such model file"):
        hp.load(tmp_path / "nothing.pt")


def test_non_model_objects(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    with pytest.raises(ModelFileError, match="plain.pt: not a hybridpot model file"):
        hp.load(plain)
    listed = tmp_path / "list.pt"
    torch.save([1, 2, 3], listed)
    with pytest.raises(ModelFileError, match="list.pt: not a hybridpot model file .* list"):
        hp.load(listed)
    # a pickled object that is not a model: refused, and with trust_pickle still a clear error
    obj = tmp_path / "object.pt"
    torch.save({"format": "hybridpot-model", "model": Path("x")}, obj)
    with pytest.raises(UntrustedFileError):
        hp.load(obj)
    with pytest.warns(UserWarning, match="trust_pickle"):
        with pytest.raises(ModelFileError, match="object.pt: not a hybridpot model file"):
            hp.load(obj, trust_pickle=True)


def test_checkpoint_given_as_model(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "hybridpot-checkpoint", "model_state": {}}, path)
    with pytest.raises(ModelFileError, match="training checkpoint"):
        hp.load(path)


def test_newer_format_version_refused(tmp_path, saved_model):
    payload = torch.load(saved_model, weights_only=True)
    arch = json.loads(payload["architecture"])
    arch["format_version"] = 99
    payload["architecture"] = json.dumps(arch)
    path = tmp_path / "newer.pt"
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match="format version 99 is newer"):
        hp.load(path)


# ---------------------------------------------------------------------------- round trips
def _descriptor(elements, r_cut=4.0, mode="scalecenter", seed=0):
    desc = hp.SymmetryFunctions.default(list(elements), r_cut=r_cut, n_radial=3)
    g = torch.Generator().manual_seed(seed)
    n_el, f = len(desc.elements), desc.max_features
    lo = torch.rand(n_el, f, generator=g, dtype=torch.float64) * 0.1
    hi = lo + 0.5 + torch.rand(n_el, f, generator=g, dtype=torch.float64)
    desc.set_scaling(mode, lo, hi, 0.5 * (lo + hi), hi - lo, s_min=-1.0, s_max=1.0)
    return desc


def _randomise(model):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    if model.short_range is not None:
        model.short_range.atomic_energy_offset[[11, 17]] = torch.tensor([-1.25, -2.5], dtype=torch.float64)
    return model


def _model_4g(screening=None, dispersion=None, learn_sigma=True):
    desc = _descriptor(["Na", "Cl"])
    qeq = hp.ChargeEquilibration(["Na", "Cl"], desc, hidden=(5,), hardness={"Na": 1.3, "Cl": 0.7}, sigma=1.1,
                                 learn_sigma=learn_sigma, accuracy=1e-5, real_space_cutoff=8.0)
    short = hp.ShortRange(["Na", "Cl"], desc, hidden=(6, 4), activation=["tanh", "softplus"], use_charges=True)
    elec = hp.Electrostatics(accuracy=1e-5, real_space_cutoff=8.0, screening=screening)
    disp = None if dispersion is None else hp.Dispersion(["Na", "Cl"], **dispersion)
    return _randomise(hp.HybridPotential(short_range=short, charges=qeq, electrostatics=elec,
                                         dispersion=disp).double())


def _structures():
    cluster = Atoms("NaClNaCl", positions=[[0, 0, 0], [2.4, 0.1, 0], [2.5, 2.6, 0.2], [0.1, 2.3, -0.1]])
    cluster.info["charge"] = 0
    periodic = random_periodic(8, symbols=("Na", "Cl"), seed=4, min_distance=2.0)
    return [cluster, periodic]


def _bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bits (NaN entries included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        view = {torch.float64: torch.int64, torch.float32: torch.int32}[a.dtype]
        return torch.equal(a.contiguous().view(view), b.contiguous().view(view))
    return torch.equal(a, b)


def _assert_same(model, again):
    assert architecture_of(again) == architecture_of(model)
    s1, s2 = model.state_dict(), again.state_dict()
    assert s1.keys() == s2.keys()
    for k in s1:
        if isinstance(s1[k], torch.Tensor):
            assert _bit_equal(s1[k], s2[k]), k
        else:
            assert s1[k] == s2[k], k
    b1 = dict(model.named_buffers(remove_duplicate=False))
    for k, b in again.named_buffers(remove_duplicate=False):
        assert _bit_equal(b, b1[k]), k
    for atoms in _structures():
        if not set(atoms.get_atomic_numbers()) <= set(model.elements or atoms.get_atomic_numbers()):
            continue
        system = hp.AtomicSystem.from_ase(atoms, dtype=model.dtype)
        o1, o2 = model(system), again(system)
        assert o1.keys() == o2.keys()
        for k in o1:
            assert _bit_equal(o1[k], o2[k]), k


def _round_trip(model, tmp_path):
    path = tmp_path / "model.pt"
    hp.save(model, path)
    again = hp.load(path)
    _assert_same(model, again)
    return again


@pytest.mark.parametrize("mode", ["none", "scale", "center", "scalecenter", "sigma"])
def test_round_trip_2g_scaling_modes(tmp_path, mode):
    desc = _descriptor(["Na", "Cl"], mode=mode)
    model = _randomise(hp.HybridPotential(short_range=hp.ShortRange(["Na", "Cl"], desc, hidden=(7,))).double())
    again = _round_trip(model, tmp_path)
    assert again.short_range.descriptor.scaling_mode == mode


def test_round_trip_float32_and_angular_types(tmp_path):
    _round_trip(make_short_range_model(angular_type=3).float(), tmp_path)
    _round_trip(make_short_range_model(angular_type=9, activation="shifted_softplus"), tmp_path)


def test_round_trip_4g_with_screening_shares_descriptor(tmp_path):
    model = _model_4g(screening=(1.0, 3.5, "c"), learn_sigma=False)
    again = _round_trip(model, tmp_path)
    assert again.short_range.descriptor is again.charges.descriptor
    assert again.electrostatics.screening == (1.0, 3.5, "c")
    assert not isinstance(again.charges.raw_sigma, torch.nn.Parameter)


@pytest.mark.parametrize("dispersion", [
    {"damping": "bj"},
    {"damping": "fermi", "tail_correction": False, "switch_width": 0.0, "cutoff": 9.0},
    {"damping": "bj", "learnable_scale": True, "s6": 0.75, "c6": {"Na": 10.0}, "r0": {"Cl": 1.9}},
])
def test_round_trip_dispersion_variants(tmp_path, dispersion):
    model = _model_4g(dispersion=dispersion)
    again = _round_trip(model, tmp_path)
    assert isinstance(again.dispersion.scale, torch.nn.Parameter) == bool(dispersion.get("learnable_scale"))


def test_round_trip_dispersion_only_and_fixed_charges(tmp_path):
    _round_trip(hp.HybridPotential(dispersion=hp.Dispersion(["Na", "Cl"], damping="fermi")).double(), tmp_path)
    for sigma in (None, {"Na": 0.9, "Cl": 1.2}):
        model = hp.HybridPotential(short_range=make_short_range_model(("Na", "Cl")).short_range,
                                   charges=hp.FixedCharges(sigma=sigma), electrostatics=hp.Electrostatics()).double()
        again = _round_trip(model, tmp_path)
        assert again.charges.point_charges == (sigma is None)
        atoms = _structures()[0]
        atoms.set_initial_charges([0.5, -0.5, 0.5, -0.5])
        system = hp.AtomicSystem.from_ase(atoms)
        assert torch.equal(model(system)["energy"], again(system)["energy"])


@pytest.mark.skipif(not N2P2.is_dir(), reason="n2p2 reference potentials not available")
@pytest.mark.parametrize("name,kwargs", [
    ("Cu2S_PBE", {"units": "file"}),
    ("DMABN_SCAN", {"units": "ase"}),
    ("H2O_RPBE-D3_4G", {"units": "ase"}),
])
def test_round_trip_n2p2_imports(tmp_path, name, kwargs):
    from hybridpot.io.input_data import read_input_data

    model = hp.from_n2p2(N2P2 / name, **kwargs)
    path = tmp_path / "model.pt"
    hp.save(model, path)
    again = hp.load(path)
    assert architecture_of(again) == architecture_of(model)
    atoms = read_input_data(N2P2 / name / "input.data", units="angstrom_ev")[0][:12]  # a finite piece: fast
    atoms.pbc = False
    system = hp.AtomicSystem.from_ase(atoms)
    o1, o2 = model(system), again(system)
    for k in o1:
        assert _bit_equal(o1[k], o2[k]), k


def test_architecture_is_readable_json(saved_model):
    arch = read_architecture(saved_model)
    assert arch["format"] == "hybridpot-model" and arch["format_version"] == 1
    assert arch["model"]["class"] == "HybridPotential"
    assert arch["descriptors"][0]["n2p2"][0].startswith("cutoff_type")


def test_unknown_module_cannot_be_saved(tmp_path):
    class Custom(torch.nn.Module):
        cutoff = 1.0

        def forward(self, system, graph):
            return torch.zeros(system.n_atoms, dtype=system.dtype)

    with pytest.raises(ValueError, match="cannot save a module of class Custom"):
        hp.save(hp.HybridPotential(terms={"custom": Custom()}), tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


# ---------------------------------------------------------------------------- old pickled files
@pytest.mark.skipif(not LEGACY_MODEL.exists(), reason="legacy model file not in the checkout")
def test_old_pickled_file_loads_only_with_trust_pickle(tmp_path):
    with pytest.raises(UntrustedFileError, match="trust_pickle=True"):
        hp.load(LEGACY_MODEL)
    with pytest.warns(UserWarning, match="runs code stored in the file"):
        old = hp.load(LEGACY_MODEL, trust_pickle=True)
    assert old.term_names == ["charges", "short_range", "electrostatics"]
    assert old.dispersion is None
    # it evaluates, and re-saved in the safe format it loads without trust_pickle
    atoms = _structures()[0]
    system = hp.AtomicSystem.from_ase(atoms)
    e_old = old(system)["energy"]
    hp.save(old, tmp_path / "new.pt")
    new = hp.load(tmp_path / "new.pt")
    # the old file's descriptor buffers had been rounded through float32 by the trainer; the
    # new file rebuilds them from the exact n2p2 lines: same model to ~1e-9 relative
    assert torch.allclose(new(system)["energy"], e_old, rtol=1e-8, atol=0)


def test_shipped_models_are_in_the_safe_format():
    from hybridpot.data import DATA_DIR

    for path in sorted(DATA_DIR.glob("*.pt")):
        arch = read_architecture(path)
        assert arch["format_version"] == 1, path
        model = hp.load(path)
        assert model.charges is not None and model.electrostatics is not None


def test_legacy_file_written_by_old_save(tmp_path):
    model = make_short_range_model()
    path = tmp_path / "old.pt"
    torch.save({"format": "hybridpot-model", "version": "0.1.0", "model": model}, path)
    with pytest.raises(UntrustedFileError):
        hp.load(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = hp.load(path, trust_pickle=True)
    system = hp.AtomicSystem.from_ase(random_cluster(6))
    assert torch.equal(model(system)["energy"], again(system)["energy"])
