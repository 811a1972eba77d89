"""Datasets, splits, preprocessing, losses and the trainer (tiny synthetic data)."""

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator

import hybridpot as hp
from hybridpot.training import (
    AtomsDataset,
    LossWeights,
    MetricAccumulator,
    SchedulerConfig,
    Trainer,
    TrainingConfig,
    TrainingInterrupted,
    collate,
    compute_loss,
    evaluate_model,
    fit_descriptor_scaling,
    fit_energy_offsets,
    raw_features,
)

CUTOFF = 4.0


def lj_clusters(n_structures=8, seed=0, symbols=("H",), charges=False):
    """Small finite clusters with Lennard-Jones energies and forces (eV, Å)."""
    rng = np.random.default_rng(seed)
    images = []
    for k in range(n_structures):
        n = 3 + k % 2
        while True:
            pos = rng.uniform(0, 3.2, (n, 3))
            d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)[np.triu_indices(n, 1)]
            if d.min() > 1.0 and d.max() < 3.5:
                break
        a = Atoms([symbols[(k + i) % len(symbols)] for i in range(n)], positions=pos)
        a.calc = LennardJones(sigma=1.0, epsilon=0.1, rc=CUTOFF, smooth=True)
        results = dict(energy=a.get_potential_energy(), forces=a.get_forces())
        if charges:
            q = rng.normal(size=n) * 0.3
            results["charges"] = q - q.mean()
        a.calc = SinglePointCalculator(a, **results)
        images.append(a)
    return images


def radial_descriptor(elements=(1,)):
    fs = [
        hp.SymmetryFunction(c, 2, (e,), eta, CUTOFF, rs)
        for c in elements
        for e in elements
        for eta, rs in [(4.0, 0.8), (4.0, 1.2), (4.0, 1.6), (4.0, 2.0), (2.0, 2.6), (1.0, 3.2)]
    ]
    return hp.SymmetryFunctions(fs, cutoff_type=6)


def small_model(seed=0, elements=(1,), hidden=(10,)):
    torch.manual_seed(seed)
    return hp.HybridPotential(short_range=hp.ShortRange(list(elements), radial_descriptor(elements), hidden=hidden)).double()


# ------------------------------------------------------------------------------ dataset
def test_split_is_reproducible_disjoint_and_complete():
    ds = AtomsDataset.from_atoms(lj_clusters(20), CUTOFF)
    ids = lambda d: [id(s) for s in d.samples]
    a = ds.split((0.6, 0.2, 0.2), seed=3)
    b = AtomsDataset.from_atoms(lj_clusters(20), CUTOFF).split((0.6, 0.2, 0.2), seed=3)
    c = ds.split((0.6, 0.2, 0.2), seed=4)
    pos = {id(s): k for k, s in enumerate(ds.samples)}
    idx_a = [[pos[i] for i in ids(part)] for part in a]
    posb = lambda d, ref: [k for k, s in enumerate(ref.samples) if id(s) in set(ids(d))]
    assert [len(p) for p in a] == [12, 4, 4]
    assert sorted(sum(idx_a, [])) == list(range(20))  # disjoint and complete
    # same seed on an independently built dataset -> same indices
    full_b = AtomsDataset.from_atoms(lj_clusters(20), CUTOFF)
    bb = full_b.split((0.6, 0.2, 0.2), seed=3)
    assert [posb(p, full_b) for p in bb] == idx_a
    # the split is numpy's default_rng(seed) permutation: an independent statement of it
    perm = np.random.default_rng(3).permutation(20)
    assert idx_a[1] == sorted(perm[12:16].tolist()) and idx_a[2] == sorted(perm[16:].tolist())
    idx_c = [[pos[i] for i in ids(part)] for part in c]
    assert idx_c != idx_a
    assert len(b[0]) == 12


def test_batches_concatenate_structures_of_different_sizes():
    images = lj_clusters(5, symbols=("H", "He"))
    ds = AtomsDataset.from_atoms(images, CUTOFF)
    batch = next(ds.batches(5))
    assert batch.system.n_systems == 5 and batch.system.n_atoms == sum(len(a) for a in images)
    # neighbour list of the batch == list computed directly on the concatenated system
    direct = hp.compute_neighbors(batch.system, CUTOFF)
    pairs = lambda nl: sorted(zip(nl.i.tolist(), nl.j.tolist(), map(tuple, nl.shifts.tolist())))
    assert pairs(batch.neighbors) == pairs(direct)
    np.testing.assert_array_equal(batch.energy.numpy(), [a.get_potential_energy() for a in images])
    np.testing.assert_array_equal(batch.forces.numpy(), np.concatenate([a.get_forces() for a in images]))
    assert not batch.has_charges.any() and batch.has_forces.all()
    # shuffled batches cover every structure once, in a seeded order
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    o1 = torch.cat([b.index for b in ds.batches(2, shuffle=True, generator=g1)]).tolist()
    o2 = torch.cat([b.index for b in ds.batches(2, shuffle=True, generator=g2)]).tolist()
    assert o1 == o2 and sorted(o1) == list(range(5))


def test_periodic_structures_and_missing_references():
    from ase.build import bulk

    a = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    a.calc = SinglePointCalculator(a, energy=-1.0)
    b = Atoms("H2", positions=[[0, 0, 0], [0, 0, 1.0]])
    ds = AtomsDataset.from_atoms([a, b], 4.0)
    batch = collate(ds.samples)
    assert batch.has_energy.tolist() == [True, False]
    assert not batch.has_forces.any()
    assert len(ds[0].neighbors.i) == len(hp.compute_neighbors(hp.AtomicSystem.from_ase(a), 4.0).i)


# ------------------------------------------------------------------------------ preprocessing
def test_scaling_uses_training_split_only():
    images = lj_clusters(10)
    # a compressed outlier that will be in the validation split only
    outlier = Atoms("H3", positions=[[0, 0, 0], [0.8, 0, 0], [1.6, 0, 0]])
    outlier.calc = SinglePointCalculator(outlier, energy=0.0)
    ds = AtomsDataset.from_atoms(images + [outlier], CUTOFF)
    train, val = ds[list(range(10))], ds[[10]]
    desc = radial_descriptor()
    fit_descriptor_scaling(desc, train, mode="scale", s_min=-1.0, s_max=1.0)
    # independent check: raw features of the training atoms, scaled by hand with min/max of the train split
    g_train, _ = raw_features(radial_descriptor(), train)
    lo, hi = g_train.min(0).values, g_train.max(0).values
    np.testing.assert_allclose(desc.scale_shift[0].numpy(), lo.numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(desc.scale_factor[0].numpy(), (2.0 / (hi - lo)).numpy(), rtol=1e-15)
    scaled_train = torch.cat([desc(b.system.numbers, hp.build_graph(b.system, b.neighbors)) for b in train.batches(4)])
    assert torch.allclose(scaled_train.min(0).values, torch.full((6,), -1.0, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(scaled_train.max(0).values, torch.full((6,), 1.0, dtype=torch.float64), atol=1e-12)
    # the validation outlier lies outside [-1, 1]: its statistics were not used
    b = next(val.batches(1))
    assert desc(b.system.numbers, hp.build_graph(b.system, b.neighbors)).abs().max() > 1.0 + 1e-6


def test_energy_offsets_least_squares_and_train_only():
    rng = np.random.default_rng(0)
    images, e0 = [], {1: -13.6, 8: -432.1}
    for k in range(6):
        n_h, n_o = 1 + k % 3, 1 + k // 3
        a = Atoms("H" * n_h + "O" * n_o, positions=rng.uniform(0, 6, (n_h + n_o, 3)))
        a.calc = SinglePointCalculator(a, energy=n_h * e0[1] + n_o * e0[8])
        images.append(a)
    ds = AtomsDataset.from_atoms(images, 1.5)
    offsets = fit_energy_offsets(ds, [1, 8])
    assert offsets[1].item() == pytest.approx(-13.6, abs=1e-10)
    assert offsets[8].item() == pytest.approx(-432.1, abs=1e-10)
    assert offsets[[0, 2, 6]].abs().max() == 0
    # the trainer fits them on its training split only (a wild validation energy changes nothing)
    bad = images[0].copy()
    bad.calc = SinglePointCalculator(bad, energy=1e4)
    val = AtomsDataset.from_atoms([bad], 6.5)
    desc = hp.SymmetryFunctions([hp.SymmetryFunction(c, 2, (e,), 1.0, 6.0) for c in (1, 8) for e in (1, 8)])
    model = hp.HybridPotential(short_range=hp.ShortRange([1, 8], desc, hidden=(2,))).double()
    trainer = Trainer(model, AtomsDataset.from_atoms(images, 6.5), val,
                      TrainingConfig(epochs=1, dtype="float64", weights={"energy": 1.0, "forces": 0.0}), progress=False)
    final = trainer.fit()
    assert final.short_range.atomic_energy_offset[1].item() == pytest.approx(-13.6, abs=1e-9)
    assert final.short_range.atomic_energy_offset[8].item() == pytest.approx(-432.1, abs=1e-9)


# ------------------------------------------------------------------------------ losses and metrics
def test_loss_and_metrics_against_direct_formulas():
    images = lj_clusters(3, symbols=("H", "He"), charges=True)
    batch = collate(AtomsDataset.from_atoms(images, CUTOFF).samples)
    rng = np.random.default_rng(1)
    n, s = batch.system.n_atoms, batch.system.n_systems
    pred = {
        "energy": batch.energy + torch.as_tensor(rng.normal(size=s)),
        "forces": batch.forces + torch.as_tensor(rng.normal(size=(n, 3))),
        "charges": batch.charges + torch.as_tensor(rng.normal(size=n)) * 0.1,
    }
    w = LossWeights(energy=2.0, forces=3.0, charges=5.0, total_charge=7.0)
    loss, parts = compute_loss(pred, batch, w)
    counts = np.array([len(a) for a in images])
    de = (pred["energy"].numpy() - [a.get_potential_energy() for a in images]) / counts
    df = pred["forces"].numpy() - np.concatenate([a.get_forces() for a in images])
    dq = pred["charges"].numpy() - np.concatenate([a.get_charges() for a in images])
    qtot = np.add.reduceat(pred["charges"].numpy(), np.r_[0, np.cumsum(counts)[:-1]])
    expected = 2 * np.mean(de**2) + 3 * np.mean(df**2) + 5 * np.mean(dq**2) + 7 * np.mean(qtot**2)
    assert float(loss) == pytest.approx(expected, rel=1e-12)
    acc = MetricAccumulator()
    acc.update(pred, batch)
    m = acc.compute()
    assert m["energy_rmse"] == pytest.approx(np.sqrt(np.mean(de**2)), rel=1e-12)
    assert m["forces_mae"] == pytest.approx(np.mean(np.abs(df)), rel=1e-12)
    numbers = np.concatenate([a.numbers for a in images])
    assert m["forces_He_rmse"] == pytest.approx(np.sqrt(np.mean(df[numbers == 2] ** 2)), rel=1e-12)
    assert m["charges_H_mae"] == pytest.approx(np.mean(np.abs(dq[numbers == 1])), rel=1e-12)
    assert "energy" in acc.table() and "forces_He" in acc.table()


# ------------------------------------------------------------------------------ trainer
def test_tiny_model_overfits_tiny_dataset():
    """8 Lennard-Jones clusters, 10 hidden units: the loss falls from ~0.7 to below 2e-4."""
    ds = AtomsDataset.from_atoms(lj_clusters(8), CUTOFF)
    cfg = TrainingConfig(epochs=300, batch_size=8, lr=2e-2, dtype="float64", early_stopping_patience=0,
                         scheduler=SchedulerConfig(kind="none"))
    trainer = Trainer(small_model(), ds, None, cfg, progress=False)
    final = trainer.fit()
    first, best = trainer.history[0]["train_loss"], min(h["train_loss"] for h in trainer.history)
    assert first > 0.1
    assert best < 2e-4
    metrics = evaluate_model(final, ds).compute()
    # reference spread: 18 meV/atom in energy, 73 meV/Å in forces
    assert metrics["energy_rmse"] < 6e-3 and metrics["forces_rmse"] < 1e-2


def _resume_setup(tmp_path, name):
    images = lj_clusters(9)
    ds = AtomsDataset.from_atoms(images, CUTOFF)
    train, val, _ = ds.split((0.7, 0.3, 0.0), seed=0)
    cfg = TrainingConfig(epochs=6, batch_size=3, lr=5e-3, dtype="float32", early_stopping_patience=4,
                         scheduler=SchedulerConfig(kind="plateau", patience=1, factor=0.5))
    return Trainer(small_model(seed=1), train, val, cfg, directory=tmp_path / name, progress=False)


def test_resume_after_interruption_is_bit_exact(tmp_path):
    reference = _resume_setup(tmp_path, "full").fit()

    def kill(trainer, stage, epoch, record):
        if epoch == 3:
            raise TrainingInterrupted("simulated kill")

    interrupted = _resume_setup(tmp_path, "resumed")
    interrupted.callback = kill
    with pytest.raises(TrainingInterrupted):
        interrupted.fit()
    resumed = _resume_setup(tmp_path, "resumed")  # fresh process state: new model, new trainer
    final = resumed.fit(resume=True)
    ref_state, new_state = reference.state_dict(), final.state_dict()
    assert ref_state.keys() == new_state.keys()
    for k in ref_state:
        if isinstance(ref_state[k], torch.Tensor):
            assert torch.equal(ref_state[k], new_state[k]), k
    strip = lambda h: [{k: v for k, v in r.items() if k != "time_s"} for r in h]
    assert strip(resumed.history) == strip(_load_history(tmp_path / "full"))
    assert len(resumed.history) == 6
    # the metrics log was rewritten without duplicated epochs
    assert [json.loads(l)["epoch"] for l in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()] == list(range(1, 7))


def _load_history(directory):
    return [json.loads(l) for l in (directory / "metrics.jsonl").read_text().splitlines()]


def test_float32_training_float64_model(tmp_path):
    ds = AtomsDataset.from_atoms(lj_clusters(4), CUTOFF)
    cfg = TrainingConfig(epochs=2, batch_size=4, dtype="float32")
    trainer = Trainer(small_model(), ds, ds, cfg, directory=tmp_path, progress=False)
    final = trainer.fit()
    assert trainer.model.dtype == torch.float32  # trained in float32
    assert final.dtype == torch.float64
    # float64 evaluation agrees with the float32 validation metrics to float32 precision
    m64 = evaluate_model(final, ds).compute()
    best = min(trainer.history, key=lambda h: h["val_loss"])
    assert m64["forces_rmse"] == pytest.approx(best["val_forces_rmse"], rel=1e-4)
    assert m64["energy_rmse"] == pytest.approx(best["val_energy_rmse"], rel=1e-3, abs=1e-6)
    assert hp.load(tmp_path / "best_model.pt").dtype == torch.float64
    assert hp.load(tmp_path / "model.pt").dtype == torch.float64
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    rec = json.loads(lines[-1])
    assert rec["epoch"] == 2 and {"train_loss", "val_loss", "lr", "train_forces_rmse", "val_energy_rmse"} <= set(rec)


def test_early_stopping_restores_best(tmp_path):
    ds = AtomsDataset.from_atoms(lj_clusters(4), CUTOFF)
    # a learning rate so large that validation gets worse: training stops after `patience` bad epochs
    cfg = TrainingConfig(epochs=50, batch_size=4, lr=5.0, dtype="float64", early_stopping_patience=2,
                         scheduler=SchedulerConfig(kind="none"), clip_grad_norm=0.0)
    trainer = Trainer(small_model(), ds, ds, cfg, progress=False)
    final = trainer.fit()
    hist = trainer.history
    assert len(hist) < 50
    best = min(h["val_loss"] for h in hist)
    assert all(h["val_loss"] >= best for h in hist[-2:])
    assert evaluate_model(final, ds).compute()["energy_rmse"] == pytest.approx(
        min(hist, key=lambda h: h["val_loss"])["val_energy_rmse"], rel=1e-9)


def test_energy_only_training_learns():
    """Training without forces (weight 0) still updates the weights: the energy loss falls 10x."""
    ds = AtomsDataset.from_atoms(lj_clusters(6), CUTOFF)
    cfg = TrainingConfig(epochs=40, batch_size=6, lr=2e-2, dtype="float64", weights={"energy": 1.0, "forces": 0.0},
                         scheduler=SchedulerConfig(kind="none"), early_stopping_patience=0)
    trainer = Trainer(small_model(), ds, None, cfg, progress=False)
    trainer.fit()
    losses = [h["train_loss"] for h in trainer.history]
    assert min(losses) < 0.1 * losses[0]
    assert "train_forces_rmse" not in trainer.history[0]


def test_neighbour_cutoff_too_short_is_refused():
    ds = AtomsDataset.from_atoms(lj_clusters(2), 2.0)
    with pytest.raises(ValueError, match="shorter than the model cutoff"):
        Trainer(small_model(), ds, None, TrainingConfig(epochs=1), progress=False)


# ------------------------------------------------------------------------------ 4G two-stage schedule
def _na_cl_4g_setup(seed_data=0):
    """10 Na2Cl2 clusters; reference charges and electrostatics from a random 'teacher' QEq model."""
    qeq = pytest.importorskip("hybridpot.qeq")
    elec = pytest.importorskip("hybridpot.electrostatics")

    def desc():
        fs = [hp.SymmetryFunction(c, 2, (e,), 1.0, CUTOFF, rs) for c in (11, 17) for e in (11, 17) for rs in (2.0, 3.0)]
        return hp.SymmetryFunctions(fs, cutoff_type=6)

    def model(seed, hardness=1.0):
        torch.manual_seed(seed)
        d = desc()
        return hp.HybridPotential(
            short_range=hp.ShortRange([11, 17], d, hidden=(4,), use_charges=True),
            charges=qeq.ChargeEquilibration([11, 17], d, hidden=(3,), hardness=hardness, real_space_cutoff=CUTOFF),
            electrostatics=elec.Electrostatics(real_space_cutoff=CUTOFF),
        ).double()

    teacher = model(123, hardness={11: 4.0, 17: 3.0})
    with torch.no_grad():
        for p in teacher.charges.nets.parameters():
            p.mul_(3.0)
    rng = np.random.default_rng(seed_data)
    images = []
    for _ in range(10):
        while True:
            pos = rng.uniform(0, 3.0, (4, 3))
            if np.linalg.norm(pos[:, None] - pos[None], axis=-1)[np.triu_indices(4, 1)].min() > 1.8:
                break
        a = Atoms(["Na", "Cl", "Na", "Cl"], positions=pos)
        a.calc = LennardJones(sigma=1.8, epsilon=0.1, rc=CUTOFF, smooth=True)
        e, f = a.get_potential_energy(), a.get_forces()
        out = teacher(hp.AtomicSystem.from_ase(a))
        a.calc = SinglePointCalculator(a, energy=e + float(out["energy"][0]), forces=f + out["forces"].numpy(),
                                       charges=out["charges"].numpy())
        images.append(a)
    train, val, _ = AtomsDataset.from_atoms(images, CUTOFF).split((0.7, 0.3, 0.0), seed=0)
    return model, train, val


def test_4g_two_stage_schedule():
    make_model, train, val = _na_cl_4g_setup()
    cfg = TrainingConfig(charge_epochs=20, epochs=3, batch_size=4, lr=1e-2, charge_lr=2e-2, dtype="float32",
                         scheduler=SchedulerConfig(kind="none"))
    snapshots = {}

    def watch(trainer, stage, epoch, record):
        if stage == "energy" and epoch == 1:
            snapshots["charges_after_stage1"] = {k: v.clone() for k, v in trainer.model.charges.state_dict().items()
                                                 if isinstance(v, torch.Tensor)}

    model = make_model(0)
    initial = {k: v.clone() for k, v in model.charges.state_dict().items() if isinstance(v, torch.Tensor)}
    trainer = Trainer(model, train, val, cfg, progress=False, callback=watch)
    assert trainer.stages == ["charges", "energy"]
    final = trainer.fit()
    h1 = [h for h in trainer.history if h["stage"] == "charges"]
    h2 = [h for h in trainer.history if h["stage"] == "energy"]
    assert len(h1) == 20 and len(h2) == 3
    # stage 1 fits the charges: training loss down > 10x, validation charge RMSE down > 2x
    assert h1[-1]["train_loss"] < 0.1 * h1[0]["train_loss"]
    assert min(h["val_charges_rmse"] for h in h1) < 0.5 * h1[0]["val_charges_rmse"]
    # stage 2 leaves the charge model frozen (bit for bit) and fits energies
    after = snapshots["charges_after_stage1"]
    final_charges = final.charges.to(torch.float32).state_dict()
    assert any(not torch.equal(initial[k].float(), after[k]) for k in after)
    for k in after:
        assert torch.equal(after[k], final_charges[k]), k
    assert all(h["val_charges_rmse"] == h2[0]["val_charges_rmse"] for h in h2)
    assert h2[-1]["train_loss"] < h2[0]["train_loss"]


@pytest.mark.parametrize("stop_at", [("charges", 2), ("energy", 1)])
def test_4g_resume_bit_exact(tmp_path, stop_at):
    make_model, train, val = _na_cl_4g_setup()
    cfg = TrainingConfig(charge_epochs=4, epochs=2, batch_size=3, lr=1e-2, charge_lr=2e-2, dtype="float32",
                         scheduler=SchedulerConfig(kind="plateau", patience=1))
    reference = Trainer(make_model(0), train, val, cfg, directory=tmp_path / "full", progress=False).fit()

    def kill(trainer, stage, epoch, record):
        if (stage, epoch) == stop_at:
            raise TrainingInterrupted("simulated kill")

    with pytest.raises(TrainingInterrupted):
        Trainer(make_model(0), train, val, cfg, directory=tmp_path / "cut", progress=False, callback=kill).fit()
    resumed = Trainer(make_model(0), train, val, cfg, directory=tmp_path / "cut", progress=False)
    final = resumed.fit(resume=True)
    a, b = reference.state_dict(), final.state_dict()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
    assert len(resumed.history) == 6


def test_build_model_from_config():
    from hybridpot.training import ModelConfig, build_model

    m2 = build_model(ModelConfig(kind="2G", cutoff=4.0, n_radial=3, hidden=[5]), [1, 8])
    assert m2.charges is None and m2.electrostatics is None and not m2.short_range.use_charges
    assert m2.short_range.elements == [1, 8] and m2.cutoff == 4.0 and m2.dtype == torch.float64
    assert m2.short_range.nets.hidden == (5,)
    pytest.importorskip("hybridpot.qeq")
    m4 = build_model(ModelConfig(kind="4G", cutoff=4.0, n_radial=3, hidden=[5], charge_hidden=[3],
                                 dispersion={"damping": "bj", "cutoff": 8.0}), [11, 17])
    assert m4.short_range.use_charges and m4.charges is not None and m4.electrostatics is not None
    assert m4.dispersion is not None and m4.charges.nets.hidden == (3,)
    with pytest.raises(ValueError, match="2G"):
        build_model(ModelConfig(kind="3G"), [1])


def test_4g_charge_stage_from_dipoles_only():
    """Without reference charges, stage 1 fits the charge model to dipoles (sum_i q_i r_i)."""
    make_model, train, val = _na_cl_4g_setup()
    for ds in (train, val):
        for s in ds.samples:
            s.dipole = (s.charges.unsqueeze(1) * s.system.positions).sum(0)
            s.charges = None
    assert not train.has("charges") and train.has("dipole")
    cfg = TrainingConfig(charge_epochs=12, epochs=0, batch_size=4, charge_lr=2e-2, dtype="float64",
                         scheduler=SchedulerConfig(kind="none"))
    trainer = Trainer(make_model(0), train, val, cfg, progress=False)
    assert trainer.stages == ["charges"]
    trainer.fit()
    h = trainer.history
    assert "val_charges_rmse" not in h[0] and "val_dipole_rmse" in h[0]
    assert min(r["val_dipole_rmse"] for r in h) < 0.5 * h[0]["val_dipole_rmse"]


def test_trained_4g_model_knows_the_training_total_charges(tmp_path):
    """The exported model's QEq holds the training split's total-charge range (kept by save/load);
    a total charge far outside it gives a TotalChargeWarning."""
    from hybridpot.qeq import TotalChargeWarning

    make_model, train, val = _na_cl_4g_setup()
    cfg = TrainingConfig(charge_epochs=1, epochs=1, batch_size=4, dtype="float64", scheduler=SchedulerConfig(kind="none"))
    final = Trainer(make_model(0), train, val, cfg, progress=False).fit()
    assert final.charges.training_charge_range == (0.0, 0.0)
    hp.save(final, tmp_path / "m.pt")
    loaded = hp.load(tmp_path / "m.pt")
    assert loaded.charges.training_charge_range == (0.0, 0.0)
    system = train.samples[0].system
    with pytest.warns(TotalChargeWarning):
        loaded(hp.AtomicSystem(system.positions, system.numbers, system.cell, system.pbc,
                               torch.tensor([3.0], dtype=torch.float64), system.batch, system.ptr))
