"""Training and evaluation devices (training.device, --device)."""

import pytest
import torch

from hybridpot.training import AtomsDataset, SchedulerConfig, Trainer, TrainingConfig
from hybridpot.training.devices import resolve_device

from test_training import CUTOFF, lj_clusters, small_model  # noqa: E402  (shared fixtures)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cpu_and_auto_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_bad_device_names_and_missing_gpus_are_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match="not one of cpu, cuda"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="training.device|no CUDA"):
        Trainer(small_model(), AtomsDataset.from_atoms(lj_clusters(2), CUTOFF), None, TrainingConfig(device="cuda"))


def test_ddp_rank_takes_its_local_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("cuda", ddp=True) == torch.device("cuda:3")
    assert resolve_device("cuda", ddp=False) == torch.device("cuda")
    with pytest.raises(ValueError, match="only 4 CUDA GPU"):
        resolve_device("cuda:7")


@cuda
def test_cuda_training_step_equals_cpu():
    """Two epochs of Adam on CUDA give the CPU weights (float64, to rounding)."""
    ds = AtomsDataset.from_atoms(lj_clusters(6), CUTOFF)
    weights = {}
    for device in ("cpu", "cuda"):
        cfg = TrainingConfig(epochs=2, batch_size=3, lr=1e-2, dtype="float64", device=device,
                             scheduler=SchedulerConfig(kind="none"), early_stopping_patience=0)
        weights[device] = Trainer(small_model(), ds, None, cfg, progress=False).fit().state_dict()
    for k, v in weights["cpu"].items():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            torch.testing.assert_close(weights["cuda"][k], v, rtol=1e-10, atol=1e-12)
