"""Data-parallel training with ``torch.distributed`` (DistributedDataParallel).

Every process holds the whole dataset and draws the same shuffled order of *global*
batches (same seed); process ``r`` of ``W`` takes the structures ``r, r + W, ...`` of each
global batch. Each loss term of :func:`~hybridpot.training.losses.compute_loss` is a mean
over the entries of the global batch, so each process computes its share

    loss_r = W * sum_k w_k * (sum of squared errors on process r)_k / (entries in the global batch)_k

(the entry counts are summed over processes with one ``all_reduce``); DDP averages the
gradients over processes, which gives exactly the gradient of the single-process loss on
the same global batch (up to floating-point summation order). Gradient clipping and the
optimiser then see identical gradients on every process.

Launch with ``torchrun --nproc_per_node=W hybridpot train config.yaml --ddp`` (backend
``gloo`` on CPU, ``nccl`` on CUDA).
"""

from __future__ import annotations

import os
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from .dataset import AtomsDataset, Batch, collate
from .losses import QUANTITIES, LossWeights, MetricAccumulator, _errors

__all__ = ["init_from_env", "shutdown", "shard_batches", "distributed_loss", "merge_metrics", "is_main_process", "StageForward"]


def init_from_env(backend: Optional[str] = None) -> Tuple[int, int]:
    """Initialise the default process group from torchrun's environment variables.

    Returns ``(rank, world_size)``. Does nothing (but returns the values) when the group
    already exists.
    """
    if not dist.is_available():
        raise ValueError("torch.distributed is not available in this torch build")
    if not dist.is_initialized():
        missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise ValueError(f"--ddp needs torchrun (environment variables {missing} are not set), e.g. "
                             "torchrun --nproc_per_node=2 -m hybridpot.cli train config.yaml --ddp")
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def shutdown() -> None:
    """Leave the process group cleanly (all ranks together): a rank that exits with the gloo
    group still alive can abort at interpreter shutdown ("terminate called ...")."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def is_main_process() -> bool:
    """True without a process group or on rank 0."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def shard_batches(
    dataset: AtomsDataset, batch_size: int, rank: int, world_size: int, shuffle: bool = False,
    generator: Optional[torch.Generator] = None,
) -> Iterator[Tuple[Batch, bool]]:
    """This process's part of each global batch of ``batch_size`` structures.

    Yields ``(batch, real)``: a process whose share of a (last, short) global batch is empty
    gets the batch's first structure with ``real=False``; its loss must then be multiplied
    by zero (it still runs forward and backward, which DDP needs on every process).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(dataset)
    order = torch.randperm(n, generator=generator).tolist() if shuffle else list(range(n))
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        mine = idx[rank::world_size]
        real = len(mine) > 0
        if not real:
            mine = idx[:1]
        yield collate([dataset.samples[k] for k in mine], mine), real


def distributed_loss(
    pred: Dict[str, torch.Tensor], batch: Batch, weights: LossWeights, world_size: int, real: bool = True
) -> Tuple[torch.Tensor, Dict[str, float]]:
    """This process's share of the global-batch loss, scaled for DDP's gradient average.

    Parameters
    ----------
    pred, batch, weights
        As for :func:`~hybridpot.training.losses.compute_loss` (local shard).
    world_size : int
        Number of processes.
    real : bool
        False for a placeholder shard (contributes zero loss and zero entries).

    Returns
    -------
    (loss, parts)
        ``loss`` such that the average over processes equals the single-process loss of
        the global batch; ``parts`` the local sums of squared errors.
    """
    errors = _errors(pred, batch)
    some = next(v for v in pred.values() if v.is_floating_point())  # not a diagnostic (bool, int)
    # a fixed list of names: every process takes part in the same all_reduce, even when its
    # shard lacks a quantity (e.g. no forces) that another process has
    names = list(QUANTITIES)
    local_sq, counts = [], []
    for name in names:
        if name not in errors:
            local_sq.append(torch.zeros((), dtype=some.dtype, device=some.device))
            counts.append(0.0)
            continue
        err, mask = errors[name]
        sel = err[mask] if real else err[mask] * 0.0
        local_sq.append((sel**2).sum())
        counts.append(float(sel.numel()) if real else 0.0)
    total = torch.tensor(counts, dtype=torch.float64)
    dist.all_reduce(total)
    loss = torch.zeros((), dtype=some.dtype, device=some.device)
    parts: Dict[str, float] = {}
    for name, sq, n in zip(names, local_sq, total.tolist()):
        w = getattr(weights, name)
        if w == 0 or n == 0:
            continue
        loss = loss + (w * world_size / n) * sq
        parts[name] = float(sq.detach())
    if not loss.requires_grad:
        # keep every process's backward connected to the parameters (DDP must reduce on all)
        loss = loss + 0.0 * sum(v.sum() for v in pred.values() if v.requires_grad)
    return loss, parts


def merge_metrics(acc: MetricAccumulator) -> MetricAccumulator:
    """Sum the accumulators of all processes (every process gets the merged one)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return acc
    gathered: List[Optional[tuple]] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (dict(acc.sq), dict(acc.abs), dict(acc.count)))
    out = MetricAccumulator()
    for sq, ab, count in gathered:
        for k in count:
            out.sq[k] += sq[k]
            out.abs[k] += ab[k]
            out.count[k] += count[k]
    return out


class StageForward(nn.Module):
    """The training forward of one stage as a module, so that DDP can wrap it.

    ``forward(batch, need_forces)`` returns the prediction dict of
    :meth:`hybridpot.training.Trainer._predict`.
    """

    def __init__(self, trainer, stage: str):
        super().__init__()
        self.model = trainer.model
        self._trainer = [trainer]  # not a submodule
        self.stage = stage

    def forward(self, batch: Batch, training: bool = True) -> Dict[str, torch.Tensor]:
        return self._trainer[0]._predict(self.stage, batch, training)
