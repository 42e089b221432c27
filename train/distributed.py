"""Training in several processes: fastai's ``distrib_ctx`` as ``torchrun`` launches it, GPUs or CPUs.

fastai's distributed training (``fastai.distributed``, on Hugging Face Accelerate) is made for
GPUs and NCCL. Two small things stand between it and CPUs (gloo), which is where the test runs:

* Accelerate picks its multi-CPU mode only when told ``cpu=True``; without it every process
  trains alone, unsynchronised;
* ``DistributedDL._broadcast`` (rank 0 sends the epoch's shuffled order to the others) moves the
  indices to CUDA, because NCCL only takes CUDA tensors; gloo takes CPU tensors as they are.

``distributed`` handles both and changes nothing on GPUs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["distributed"]


def _broadcast_on_cpu(self, t, rank: int) -> list:
    """``DistributedDL._broadcast`` for gloo: the same broadcast, without the ``.cuda()``."""
    t = torch.LongTensor(t)
    torch.distributed.broadcast(t, rank)
    return t.tolist()


@contextmanager
def distributed(learn) -> Iterator[None]:
    """``learn.distrib_ctx()`` (DistributedDataParallel, a shard of each epoch per process).

    SyncBatchNorm runs on GPUs only; on CPUs each process keeps its own batch statistics.
    """
    from fastai.distributed import DistributedDL  # needs accelerate: imported only when used

    cuda = torch.cuda.is_available()
    original = DistributedDL._broadcast
    if not cuda:
        DistributedDL._broadcast = _broadcast_on_cpu
    try:
        with learn.distrib_ctx(sync_bn=cuda, cpu=not cuda):
            yield
    finally:
        DistributedDL._broadcast = original
