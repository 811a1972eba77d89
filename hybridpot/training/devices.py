"""Which device training and evaluation run on (``training.device``, ``--device``)."""

from __future__ import annotations

import os
import re

import torch

__all__ = ["resolve_device"]

_DEVICE = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")


def resolve_device(name: str = "cpu", ddp: bool = False) -> torch.device:
    """The torch device for ``name``.

    ``"cpu"``; ``"cuda"`` / ``"cuda:N"``; ``"auto"`` (CUDA when available, else CPU). Under
    ``torchrun`` (``ddp=True``) a plain ``"cuda"`` (or ``"auto"`` with a GPU) is the process's
    ``LOCAL_RANK`` GPU, so that every rank trains on its own GPU.
    """
    name = str(name).strip().lower()
    if not _DEVICE.match(name):
        raise ValueError(f"device {name!r} is not one of cpu, cuda, cuda:N, auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for, but torch sees no CUDA GPU (torch {torch.__version__}); "
                             "use device cpu")
        if name == "cuda" and ddp:
            name = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        index = torch.device(name).index
        if index is not None and index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    return torch.device(name)
