"""DistributedDataParallel training: 2 gloo processes on CPU == 1 process, same global batch."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ase import Atoms
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator

import hybridpot as hp
from hybridpot import electrostatics as elec
from hybridpot import qeq
from hybridpot.training import AtomsDataset, SchedulerConfig, Trainer, TrainingConfig

CUTOFF = 4.0
pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")


def _images(n, seed, charges):
    """Na/Cl clusters with smooth LJ energies and forces; structure 2 has no forces."""
    rng = np.random.default_rng(seed)
    images = []
    for k in range(n):
        m = 3 + k % 3
        while True:
            pos = rng.uniform(0, 3.4, (m, 3))
            d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)[np.triu_indices(m, 1)]
            if d.min() > 1.6:
                break
        a = Atoms([("Na", "Cl")[(k + i) % 2] for i in range(m)], positions=pos)
        a.calc = LennardJones(sigma=1.8, epsilon=0.1, rc=CUTOFF, smooth=True)
        res = {"energy": a.get_potential_energy()}
        if k != 2:
            res["forces"] = a.get_forces()
        if charges:
            q = rng.normal(size=m) * 0.3
            res["charges"] = q - q.mean()
        a.calc = SinglePointCalculator(a, **res)
        images.append(a)
    return images


def _setup(kind):
    charges = kind == "4g"
    train = AtomsDataset.from_atoms(_images(9, 0, charges), CUTOFF)  # 9 = 4 + 4 + 1: one empty shard
    val = AtomsDataset.from_atoms(_images(3, 1, charges), CUTOFF)
    cfg = TrainingConfig(epochs=3, charge_epochs=2 if charges else 0, batch_size=4, lr=5e-3, charge_lr=5e-3,
                         dtype="float64", scheduler=SchedulerConfig(kind="none"), seed=7,
                         weights={"energy": 1.0, "forces": 0.5})
    return train, val, cfg


def _model(kind):
    torch.manual_seed(0)
    fs = [hp.SymmetryFunction(c, 2, (e,), eta, CUTOFF, rs) for c in (11, 17) for e in (11, 17)
          for eta, rs in [(2.0, 1.5), (2.0, 2.5), (1.0, 3.2)]]
    d = hp.SymmetryFunctions(fs, cutoff_type=6)
    if kind == "2g":
        return hp.HybridPotential(short_range=hp.ShortRange([11, 17], d, hidden=(6,))).double()
    return hp.HybridPotential(
        short_range=hp.ShortRange([11, 17], d, hidden=(4,), use_charges=True),
        charges=qeq.ChargeEquilibration([11, 17], d, hidden=(3,), real_space_cutoff=CUTOFF),
        electrostatics=elec.Electrostatics(real_space_cutoff=CUTOFF),
    ).double()


def _worker(rank, world_size, port, kind, out_dir):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        train, val, cfg = _setup(kind)
        trainer = Trainer(_model(kind), train, val, cfg, directory=out_dir, progress=False, ddp=True)
        final = trainer.fit()
        torch.save({"state": final.state_dict(), "history": trainer.history}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["2g", "4g"])
def test_two_gloo_processes_equal_one_process(tmp_path, kind):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train, val, cfg = _setup(kind)
        single_trainer = Trainer(_model(kind), train, val, cfg, progress=False)
        single = single_trainer.fit()
    finally:
        torch.set_num_threads(threads)
    mp.spawn(_worker, args=(2, _free_port(), kind, str(tmp_path)), nprocs=2, join=True)

    ref = single.state_dict()
    initial = _model(kind).state_dict()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert set(got["state"]) == set(ref)
        moved = 0
        for k, v in ref.items():
            if not (isinstance(v, torch.Tensor) and torch.is_floating_point(v)):
                continue
            torch.testing.assert_close(got["state"][k], v, rtol=1e-9, atol=1e-11, msg=k)
            if k in initial and initial[k].shape == v.shape and not torch.allclose(initial[k], v):
                moved += 1
        assert moved > 0  # training changed the weights: the comparison is not vacuous
        # the logged losses (merged over processes) equal the single-process ones
        h1, h2 = single_trainer.history, got["history"]
        assert [(h["stage"], h["epoch"]) for h in h2] == [(h["stage"], h["epoch"]) for h in h1]
        np.testing.assert_allclose([h["train_loss"] for h in h2], [h["train_loss"] for h in h1], rtol=1e-9)
        np.testing.assert_allclose([h["val_loss"] for h in h2], [h["val_loss"] for h in h1], rtol=1e-9)
    # only rank 0 writes the run directory
    assert (tmp_path / "model.pt").exists() and (tmp_path / "metrics.jsonl").exists()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == len(single_trainer.history)


def test_ddp_needs_a_process_group():
    train, val, cfg = _setup("2g")
    with pytest.raises(ValueError, match="process group"):
        Trainer(_model("2g"), train, val, cfg, progress=False, ddp=True)


def test_cli_train_ddp_under_torchrun(tmp_path):
    """`torchrun --nproc_per_node=2 -m hybridpot.cli train cfg --ddp` writes the model of a 1-process run."""
    import shutil
    import subprocess
    import sys

    import yaml

    from hybridpot.cli import main
    from hybridpot.io import write_extxyz

    if shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")):
        pytest.skip("torchrun not installed")
    write_extxyz(tmp_path / "data.xyz", _images(10, 3, charges=False))
    cfg = {
        "data": {"train": "data.xyz", "split": [0.7, 0.3, 0.0], "seed": 1},
        "model": {"kind": "2G", "cutoff": 3.5, "n_radial": 3, "angular_etas": [0.01], "zetas": [1.0], "hidden": [4]},
        "training": {"epochs": 2, "batch_size": 4, "dtype": "float64", "lr": 0.01},
        "output": {"directory": "run", "progress": False},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", str(tmp_path / "c.yaml"), "--no-progress", "--output", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(_free_port()),
           "-m", "hybridpot.cli", "train", str(tmp_path / "c.yaml"), "--no-progress", "--ddp",
           "--output", str(tmp_path / "two")]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    a = hp.load(tmp_path / "one" / "model.pt").state_dict()
    b = hp.load(tmp_path / "two" / "model.pt").state_dict()
    for k, v in a.items():
        if isinstance(v, torch.Tensor) and torch.is_floating_point(v):
            torch.testing.assert_close(b[k], v, rtol=1e-9, atol=1e-11, msg=k)
