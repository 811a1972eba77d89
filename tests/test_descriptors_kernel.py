"""The compiled descriptor kernels against the torch reference, finite differences and direct sums.

Every n2p2 type (2, 3, 9, 20-25), mixed sets and the default set, on random environments
with several elements: triclinic periodic cells, cells smaller than the cutoff (many images),
clusters with an atom that has no neighbours.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

import hybridpot as hp
from hybridpot.descriptors import SymmetryFunction
from hybridpot.neighbors import build_graph, compute_neighbors

from conftest import random_cluster, random_periodic
from test_descriptors import ref_cutoff, ref_neighbors, some_functions
from test_descriptors_polynomial import polynomial_functions

ELEMENTS = ["Na", "Cl", "O"]


def function_sets():
    gaussian, compact = some_functions(), [f for f in polynomial_functions() if f.is_compact]
    sets = {str(t): [f for f in gaussian + compact if f.type == t] for t in (2, 3, 9, 20, 21, 22, 23, 24, 25)}
    sets["all"] = gaussian + compact
    sets["compact_grid"] = compact_grid()
    return sets


def compact_grid():
    """DMABN_SCAN-like compact angular functions: every (radial support x angle support) of a channel.

    Functions of one channel share radial supports (one value per neighbour in the kernel) and
    angle supports (one value per triplet); subtypes differ between supports, some radial
    supports start beyond part of the neighbours (exact zeros skipped), narrow and wide types,
    element pairs and the weighted types.
    """
    na, cl, o = 11, 17, 8
    radial = [(-4.4, 4.4, "p2"), (1.2, 4.6, "p2"), (0.0, 3.1, "p3a"), (2.0, 4.2, "e")]
    angles = [(-90.0, 90.0), (0.0, 120.0), (60.0, 180.0), (90.0, 270.0)]
    fs = []
    for c in (na, cl, o):
        for t, pair in ((21, (na, cl)), (22, (na, cl)), (22, (o, o)), (24, ()), (25, ())):
            for rl, rc, sub in radial:
                for al, ar in angles:
                    fs.append(SymmetryFunction(c, t, pair, 0.0, rc, r_left=rl, angle_left=al, angle_right=ar,
                                               subtype=sub))
    return fs


def environments():
    small = Atoms("NaClO", scaled_positions=[[0.1, 0.2, 0.3], [0.6, 0.5, 0.55], [0.3, 0.8, 0.9]],
                  cell=[[2.9, 0.0, 0.0], [0.6, 3.1, 0.0], [0.4, -0.5, 3.3]], pbc=True)
    lonely = random_cluster(8, seed=4, box=4.0)
    lonely += Atoms("O", positions=[[30.0, 30.0, 30.0]])  # no neighbour within any cutoff
    return {"triclinic": random_periodic(10, seed=3), "small_cell": small, "cluster_lonely_atom": lonely}


def descriptor(name, cutoff_type=6, alpha=0.0):
    if name == "default":
        return hp.SymmetryFunctions.default(ELEMENTS, r_cut=4.5, n_radial=4)
    return hp.SymmetryFunctions(function_sets()[name], cutoff_type=cutoff_type, cutoff_alpha=alpha, elements=ELEMENTS)


def model_for(desc, atoms, seed=0):
    """Random-weight short-range model whose scaled inputs are O(1) on ``atoms``."""
    system = hp.AtomicSystem.from_ase(atoms)
    with torch.no_grad():
        desc.engine = "reference"
        raw = desc(system.numbers, build_graph(system, compute_neighbors(system, desc.cutoff)), scaled=False)
        desc.engine = "auto"
    g_max = torch.ones(len(desc.elements), desc.max_features, dtype=torch.float64)
    slots = desc.slots(system.numbers)
    for e in range(len(desc.elements)):
        if bool((slots == e).any()):
            g_max[e] = raw[slots == e].abs().max(0).values.clamp_min(1e-3)
    desc.set_scaling("scale", torch.zeros_like(g_max), g_max, g_max, g_max, s_min=0.0, s_max=1.0)
    torch.manual_seed(seed)
    short = hp.ShortRange(ELEMENTS, desc, hidden=(7, 5), activation="tanh")
    return hp.HybridPotential(short_range=short).double()


def run(model, atoms, engine, dtype=torch.float64, **kwargs):
    model.short_range.descriptor.engine = engine
    try:
        return model.to(dtype)(hp.AtomicSystem.from_ase(atoms, dtype=dtype), **kwargs)
    finally:
        model.short_range.descriptor.engine = "auto"
        model.double()


def raw_features(desc, atoms, engine, dtype=torch.float64):
    system = hp.AtomicSystem.from_ase(atoms, dtype=dtype)
    desc.engine = engine
    try:
        return desc.to(dtype)(system.numbers, build_graph(system, compute_neighbors(system, desc.cutoff)),
                              scaled=False)
    finally:
        desc.engine = "auto"
        desc.double()


def close(a, b, rtol):
    """Max deviation relative to the largest entry (entries span many orders of magnitude)."""
    scale = max(float(b.abs().max()), 1e-300)
    return float((a - b).abs().max()) <= rtol * scale


# ----------------------------------------------------------------------------- kernel == reference
@pytest.mark.parametrize("env", list(environments()))
@pytest.mark.parametrize("name", list(function_sets()) + ["default"])
def test_kernel_equals_reference(name, env):
    atoms = environments()[env]
    desc = descriptor(name)
    g_kernel, g_ref = raw_features(desc, atoms, "kernel"), raw_features(desc, atoms, "reference")
    assert float(g_ref.abs().max()) > 1e-3  # something to compare
    assert close(g_kernel, g_ref, 1e-12), float((g_kernel - g_ref).abs().max())
    model = model_for(desc, atoms)
    k, r = run(model, atoms, "kernel"), run(model, atoms, "reference")
    assert abs(float(k["energy"][0] - r["energy"][0])) <= 1e-12 * max(1.0, abs(float(r["energy"][0])))
    assert float(r["forces"].abs().max()) > 1e-6
    assert close(k["forces"], r["forces"], 1e-12)
    if atoms.pbc.any():
        assert close(k["stress"], r["stress"], 1e-12)
    if env == "cluster_lonely_atom":
        assert torch.all(g_kernel[-1] == 0.0) and torch.all(k["forces"][-1] == 0.0)


@pytest.mark.parametrize("ctype,alpha", [(0, 0.0), (1, 0.2), (2, 0.0), (3, 0.0), (4, 0.0), (5, 0.1), (6, 0.3),
                                         (7, 0.0), (8, 0.1)])
def test_every_cutoff_type_equals_reference(ctype, alpha):
    atoms = environments()["triclinic"]
    desc = descriptor("all", ctype, alpha)
    assert close(raw_features(desc, atoms, "kernel"), raw_features(desc, atoms, "reference"), 1e-12)
    if ctype == 0:
        return  # a hard cutoff has no continuous derivative to compare
    model = model_for(desc, atoms)
    assert close(run(model, atoms, "kernel")["forces"], run(model, atoms, "reference")["forces"], 1e-12)


# ----------------------------------------------------------------------------- finite differences
@pytest.mark.parametrize("name", ["all", "default"])
def test_forces_and_stress_match_finite_differences(name):
    atoms = random_periodic(7, seed=11)
    desc = descriptor(name)
    model = model_for(desc, atoms)
    out = run(model, atoms, "kernel")
    forces, stress = out["forces"].numpy(), out["stress"][0].numpy()
    assert np.abs(forces).max() > 1e-3
    energy = lambda at: float(run(model, at, "kernel", compute_forces=False, compute_stress=False)["energy"][0])
    h = 1e-5
    for i in (0, 3, 6):
        for a in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[i, a] += h
            minus.positions[i, a] -= h
            fd = -(energy(plus) - energy(minus)) / (2 * h)
            assert abs(fd - forces[i, a]) < 1e-7 * max(1.0, abs(forces[i, a])), (i, a, fd, forces[i, a])
    volume = atoms.get_volume()
    for a, b in ((0, 0), (1, 2), (2, 1), (2, 2)):
        e = []
        for sign in (1, -1):
            strain = np.eye(3)
            strain[a, b] += sign * h / 2
            strain[b, a] += sign * h / 2
            at = atoms.copy()
            at.set_cell(atoms.cell.array @ strain, scale_atoms=True)
            e.append(energy(at))
        fd = (e[0] - e[1]) / (2 * h) / volume
        assert abs(fd - stress[a, b]) < 1e-7 * max(1.0, abs(stress[a, b])), (a, b, fd, stress[a, b])


# ----------------------------------------------------------------------------- float32, threads
@pytest.mark.parametrize("name", ["all", "default"])
def test_float32_within_1e_5_of_float64(name):
    atoms = environments()["triclinic"]
    desc = descriptor(name)
    g64 = raw_features(desc, atoms, "kernel")
    g32 = raw_features(desc, atoms, "kernel", dtype=torch.float32)
    assert g32.dtype == torch.float32
    assert close(g32.double(), g64, 1e-5)
    model = model_for(desc, atoms)
    f64 = run(model, atoms, "kernel")["forces"]
    f32 = run(model, atoms, "kernel", dtype=torch.float32)["forces"]
    assert f32.dtype == torch.float32 and close(f32.double(), f64, 1e-5)


def test_thread_count_does_not_change_results():
    atoms = random_periodic(10, seed=3).repeat((2, 1, 1))
    desc = descriptor("all")
    model = model_for(desc, atoms)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run(model, atoms, "kernel")
        assert torch.get_num_threads() == 1  # the kernels' thread pool leaves torch's setting alone
        torch.set_num_threads(2)
        two = run(model, atoms, "kernel")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(n)
    # each centre atom is one unit of work: the same sums in the same order
    assert torch.equal(one["energy"], two["energy"]) and torch.equal(one["forces"], two["forces"])


def test_fresh_process_keeps_torch_thread_count():
    """Starting numba's thread pool (OpenMP layer) once reset torch's thread count: not any more."""
    code = textwrap.dedent("""
        import sys, torch
        sys.path.insert(0, {root!r})
        torch.set_num_threads(1)
        import hybridpot as hp, numba
        from ase.build import bulk
        desc = hp.SymmetryFunctions.default(["Cu"], r_cut=4.0)
        model = hp.HybridPotential(short_range=hp.ShortRange(["Cu"], desc, hidden=(4,))).double()
        model(hp.AtomicSystem.from_ase(bulk("Cu", cubic=True).repeat(2)))
        print("THREADS", torch.get_num_threads(), numba.get_num_threads())
    """).format(root=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert "THREADS 1 1" in out.stdout, out.stdout + out.stderr[-2000:]


# ----------------------------------------------------------------------------- training, second derivatives
def test_force_training_parameter_gradients_equal_reference():
    """Force training differentiates forces w.r.t. the weights: the kernel's recorded backward."""
    atoms = random_periodic(9, seed=7)
    desc = descriptor("all")
    model = model_for(desc, atoms)
    target = torch.randn(len(atoms), 3, dtype=torch.float64)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = {}
    for engine in ("kernel", "reference"):
        out = run(model, atoms, engine, create_graph=True)
        loss = ((out["forces"] - target) ** 2).sum() + out["energy"].sum() ** 2 + (out["stress"] ** 2).sum()
        grads[engine] = torch.autograd.grad(loss, params)
    for gk, gr in zip(grads["kernel"], grads["reference"]):
        assert close(gk, gr, 1e-10)
    assert max(float(g.abs().max()) for g in grads["reference"]) > 1e-6


def test_second_derivatives_through_the_reference_fallback():
    """d(forces . v)/d positions (a Hessian-vector product) needs d2G/dr2: recomputed exactly."""
    atoms = random_cluster(6, seed=9, box=3.5)
    desc = descriptor("all")
    model = model_for(desc, atoms)
    v = torch.randn(len(atoms), 3, dtype=torch.float64)
    hvp = {}
    for engine in ("kernel", "reference"):
        desc.engine = engine
        system = hp.AtomicSystem.from_ase(atoms)
        positions = system.positions.clone().requires_grad_(True)
        nl = compute_neighbors(system, desc.cutoff)
        graph = build_graph(system, nl, positions=positions)
        energy = model.short_range(system, graph).sum()
        (grad,) = torch.autograd.grad(energy, positions, create_graph=True)
        (hvp[engine],) = torch.autograd.grad((grad * v).sum(), positions)
    desc.engine = "auto"
    assert float(hvp["reference"].abs().max()) > 1e-6
    assert close(hvp["kernel"], hvp["reference"], 1e-10)


# ----------------------------------------------------------------------------- recomputed dG (large systems)
@pytest.fixture
def recompute_derivatives(monkeypatch):
    """Every kernel call takes the large-system path: dG recomputed in the backward, never stored."""
    from hybridpot.descriptors import engine

    monkeypatch.setattr(engine, "STORED_DERIVATIVES_LIMIT", -1)
    calls = []
    original = engine._recompute_contract
    monkeypatch.setattr(engine, "_recompute_contract", lambda *a: calls.append(1) or original(*a))
    return calls


@pytest.mark.parametrize("env", list(environments()))
@pytest.mark.parametrize("name", ["2", "3", "9", "21", "22", "24", "all", "default"])
def test_recomputed_derivatives_equal_reference(name, env, recompute_derivatives):
    atoms = environments()[env]
    model = model_for(descriptor(name), atoms)
    k, r = run(model, atoms, "kernel"), run(model, atoms, "reference")
    assert recompute_derivatives, "the recomputing backward was not used"
    assert float(r["forces"].abs().max()) > 1e-6
    assert close(k["forces"], r["forces"], 1e-12)
    if atoms.pbc.any():
        assert close(k["stress"], r["stress"], 1e-12)
    if env == "triclinic":  # float32 (as test_float32_within_1e_5_of_float64)
        f32 = run(model, atoms, "kernel", dtype=torch.float32)["forces"]
        assert f32.dtype == torch.float32 and close(f32.double(), k["forces"], 1e-5)


def test_recomputed_derivatives_in_force_training_and_hessians(recompute_derivatives, monkeypatch):
    """A recorded backward (create_graph) in the large-system path computes the full dG once: force-training
    gradients and Hessian-vector products equal the reference's, as on the stored path."""
    from hybridpot.descriptors import engine

    applied = []
    original = engine.SymmetryFunctionsRecompute.apply
    monkeypatch.setattr(engine.SymmetryFunctionsRecompute, "apply", lambda *a: applied.append(1) or original(*a))
    test_force_training_parameter_gradients_equal_reference()
    test_second_derivatives_through_the_reference_fallback()
    assert applied, "the large-system path was not used"


# ----------------------------------------------------------------------------- zeta < 0 (n2p2 AlAuMgO_4G)
def direct_angular(atoms, i, f: SymmetryFunction, ctype=6, alpha=0.0):
    """n2p2 SymFncExpAngn/w: 0 where 1 + lambda cos <= 0, else 2^(1-zeta) (1 + lambda cos)^zeta ..."""
    z = atoms.get_atomic_numbers()
    ri = atoms.get_positions()[i]
    nb = ref_neighbors(atoms, i, f.r_cut)
    total = 0.0
    for a in range(len(nb)):
        for b in range(a + 1, len(nb)):
            (j, rj), (k, rk) = nb[a], nb[b]
            if sorted((z[j], z[k])) != sorted(f.neighbors):
                continue
            rij, rik = rj - ri, rk - ri
            dij, dik, djk = np.linalg.norm(rij), np.linalg.norm(rik), np.linalg.norm(rk - rj)
            plam = 1.0 + f.lam * (rij @ rik) / (dij * dik)
            if plam <= 0.0:
                continue
            expo = (dij - f.r_shift) ** 2 + (dik - f.r_shift) ** 2
            fc = ref_cutoff(dij, f.r_cut, ctype, alpha) * ref_cutoff(dik, f.r_cut, ctype, alpha)
            if f.type == 3:
                expo += (djk - f.r_shift) ** 2
                fc *= ref_cutoff(djk, f.r_cut, ctype, alpha)
            total += 2.0 ** (1.0 - f.zeta) * plam**f.zeta * math.exp(-f.eta * expo) * fc
    return total


def test_negative_and_fractional_zeta_as_n2p2():
    lines = """
    symfunction_short Na 3 Na O 0.02 -1 -1.0 4.5
    symfunction_short Na 3 Cl O 0.05 1 -2.0 4.5
    symfunction_short Cl 9 Na O 0.02 -1 -2.0 4.5 0.5
    symfunction_short Cl 9 Cl Na 0.03 1 2.5 4.5
    symfunction_short O 3 Na Cl 0.01 1 0.5 4.5
    symfunction_short O 9 O O 0.01 -1 -1.0 4.4
    """
    desc = hp.SymmetryFunctions.from_n2p2(lines, cutoff_type=6, elements=ELEMENTS)
    assert [f.zeta for f in desc.functions] == [-1.0, -2.0, -2.0, 2.5, 0.5, -1.0]
    assert hp.SymmetryFunctions.from_n2p2(desc.to_n2p2()).functions == desc.functions
    atoms = random_periodic(10, seed=3)
    z = atoms.get_atomic_numbers()
    got = {e: raw_features(desc, atoms, e).numpy() for e in ("kernel", "reference")}
    for i in range(len(atoms)):
        own = [f for f in desc.functions if f.center == z[i]]
        want = np.array([direct_angular(atoms, i, f) for f in own])
        for engine in got:
            np.testing.assert_allclose(got[engine][i, : len(own)], want, rtol=1e-12, atol=1e-14)
    model = model_for(desc, atoms)
    assert close(run(model, atoms, "kernel")["forces"], run(model, atoms, "reference")["forces"], 1e-12)


# ----------------------------------------------------------------------------- engine selection
def test_cuda_without_kernels_falls_back_with_one_warning(monkeypatch):
    from hybridpot.descriptors import engine

    monkeypatch.setattr(engine, "cuda_kernel_available", lambda: False)
    monkeypatch.setattr(engine, "_WARNED", set())
    desc = descriptor("2")
    with pytest.warns(RuntimeWarning, match="numba-cuda"):
        assert desc.resolved_engine(torch.device("cuda")) == "reference"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        assert desc.resolved_engine(torch.device("cuda")) == "reference"
    desc.engine = "kernel"
    with pytest.raises(RuntimeError, match="engine='reference'"):
        desc.resolved_engine(torch.device("cuda"))
    desc.engine = "auto"


def test_engine_choice_and_errors():
    desc = descriptor("2")
    assert desc.resolved_engine(torch.device("cpu")) == "kernel"
    desc.engine = "reference"
    assert desc.resolved_engine(torch.device("cpu")) == "reference"
    desc.engine = "fast"
    with pytest.raises(ValueError, match="unknown descriptor engine"):
        desc.resolved_engine(torch.device("cpu"))
    desc.engine = "auto"


# ----------------------------------------------------------------------------- CUDA kernels (simulator)
CUDA_SCRIPT = textwrap.dedent("""
    import sys, torch
    sys.path[:0] = [{tests!r}, {root!r}]
    from numba import cuda
    import numpy as np
    import hybridpot as hp
    from hybridpot.descriptors import engine
    from hybridpot.descriptors.cuda_kernels import run_cuda_arrays
    from hybridpot.neighbors import build_graph, compute_neighbors
    from test_descriptors_kernel import descriptor, environments
    for env in ("triclinic", "cluster_lonely_atom"):
        atoms = environments()[env]
        for name in ("all", "default"):
            desc = descriptor(name)
            system = hp.AtomicSystem.from_ase(atoms)
            graph = build_graph(system, compute_neighbors(system, desc.cutoff))
            plan = engine.build_plan(desc)
            layout = engine.pair_layout(desc, system.numbers, desc.slots(system.numbers), graph)
            g_cpu, dg_cpu = engine._run_cpu(plan, layout.vectors, layout, True)
            g_gpu, dg_gpu = run_cuda_arrays(plan, layout, True)
            scale = float(g_cpu.abs().max())
            assert float((g_gpu - g_cpu).abs().max()) <= 1e-12 * scale, (env, name)
            assert float((dg_gpu - dg_cpu).abs().max()) <= 1e-12 * float(dg_cpu.abs().max()), (env, name)
    print("CUDA-SIMULATOR-OK")
""")


def test_cuda_kernel_equals_cpu_in_simulator():
    pytest.importorskip("numba.cuda", reason="numba-cuda not installed (optional extra 'cuda')")
    try:
        import numba_cuda  # noqa: F401
    except ImportError:
        pytest.skip("numba-cuda not installed (optional extra 'cuda')")
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    script = CUDA_SCRIPT.format(tests=str(root / "tests"), root=str(root))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900,
                            cwd=root)
    assert "CUDA-SIMULATOR-OK" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_kernel_equals_cpu_on_gpu():
    pytest.importorskip("numba_cuda", reason="numba-cuda not installed (optional extra 'cuda')")
    atoms = environments()["triclinic"]
    desc = descriptor("all")
    model = model_for(desc, atoms)
    cpu = run(model, atoms, "kernel")
    model.cuda()
    out = model(hp.AtomicSystem.from_ase(atoms).to(device="cuda"))
    model.cpu()
    assert close(out["forces"].cpu(), cpu["forces"], 1e-12)


def test_saved_models_carry_no_kernel_plan(tmp_path):
    """The plan is a cache of the function set: rebuilt after loading, never stored in model files."""
    atoms = environments()["triclinic"]
    desc = descriptor("all")
    model = model_for(desc, atoms)
    before = run(model, atoms, "kernel")
    assert "_kernel_plan" in desc.__dict__
    hp.save(model, tmp_path / "model.pt")
    loaded = hp.load(tmp_path / "model.pt")
    assert "_kernel_plan" not in loaded.short_range.descriptor.__dict__
    after = run(loaded, atoms, "kernel")
    assert torch.equal(before["forces"], after["forces"])
