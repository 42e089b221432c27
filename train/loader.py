"""``StoreDL``: a fastai ``TfmdDL`` whose batches are gathered from the decoded store (``train.store``).

It is the DataBlock's own loader with one method replaced, ``create_batches``: fastai still
shuffles (its own seeded ``rng``, so the order is what it was), and still runs ``after_batch``
(``IntToFloatTensor``, ``aug_transforms``, ``Normalize``), and the ``Learner`` cannot tell the
difference: ``lr_find``, ``fit_one_cycle``, callbacks, ``interpret`` and ``clean`` work as before.
What changes is how a batch is made:

1. the batch's rows are gathered from the memory-mapped store with one ``np.take`` (no item
   made in Python, no worker processes, nothing forked per epoch);
2. on CUDA into a pinned buffer (two, used in turn, each reused only once its copy is done),
   copied with ``non_blocking=True``: the host never waits for the GPU;
3. ``canvas`` stores (training images whose random crop or pad fastai would draw) are resampled
   on the device for the whole batch, through one ``grid_sample`` of fastai's own ``Resize``
   boxes (``store_batch_grid``).

``new`` with another dataset (``test_dl``, ``new_empty`` for ``learn.export``) gives a plain
``TfmdDL``: export's parity and the learner pickle read the original files, as fastai does.
``to_detach`` keeps 0-d values (a batch's loss, its metrics) on the device, so the Recorder's
accumulators do not copy to the host every batch; they are read once per epoch.
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from fastai.data.core import TfmdDL
from fastai.data.load import chunked  # fastcore's, as fastai's DataLoader chunks
from fastai.learner import AvgSmoothLoss
from fastai.torch_core import TensorCategory, TensorImage, to_detach

from edge_infer.metadata import Preprocess

from .store import Store, resize_box

__all__ = ["DeviceSmoothLoss", "StoreDL", "resample", "store_batch_grid"]

# fastai's pad modes in grid_sample: reflection is done on the coordinates (``_reflect``), since
# grid_sample's own repeats the edge pixel where fastai's (torchvision's "reflect") does not;
# zeros are a coverage mask (``_coverage``) over border sampling, since grid_sample's zeros fade
# over one stored pixel where fastai's antialiased resize fades over one output pixel
_PADDING = {"zeros": "border", "border": "border", "reflection": "border"}


class StoreDL(TfmdDL):
    """A ``TfmdDL`` over ``dataset`` reading pixels from ``store`` (row ``store.rows[i]`` is item i)."""

    def __init__(self, dataset=None, store: Store | None = None, labels: np.ndarray | None = None,
                 pre: Preprocess | None = None, **kwargs) -> None:
        super().__init__(dataset, **kwargs)
        self.store, self.labels, self.pre = store, labels, pre
        self._slots: list = [None, None]
        self._turn = 0

    def new(self, dataset=None, cls=None, **kwargs):
        if dataset is not None and dataset is not self.dataset:  # other items: fastai's own loader
            return super().new(dataset, cls=TfmdDL if cls in (None, StoreDL) else cls, **kwargs)
        return super().new(dataset, cls, store=self.store, labels=self.labels, pre=self.pre, **kwargs)

    def to_detach(self, b, cpu: bool = True, gather: bool = True):
        if isinstance(b, torch.Tensor) and b.ndim == 0:
            cpu = False  # a batch's loss or metric: summed on the device, read at the epoch's end
        return to_detach(b, cpu, gather)

    def create_batches(self, samps):
        for idx in chunked(samps, self.bs, self.drop_last):
            yield self.store_batch(np.asarray(idx, dtype=np.int64))

    def store_batch(self, idx: np.ndarray) -> tuple[TensorImage, TensorCategory]:
        """Items ``idx`` as (TensorImage [B, 3, H, W], TensorCategory [B]) on the loader's device."""
        assert self.store is not None and self.pre is not None
        device = self.device if self.device is not None else torch.device("cpu")
        if device.type == "cuda":
            x, e, boxed = self._to_cuda(idx, device)
        else:
            (h, w), b = self.store.layout.shape, len(idx)
            images, extra = np.empty((b, h, w, 3), np.uint8), np.zeros((b, 7))
            boxed = self.gather(idx, images, extra)
            x, e = torch.from_numpy(images), torch.from_numpy(extra)
        x = x.permute(0, 3, 1, 2)  # NHWC rows -> NCHW view (channels_last in memory)
        if boxed:
            x = resample(x, e[:, 1:], self.pre, device)
        if device.type != "cuda":
            x = x.contiguous()  # the CPU model is NCHW: the same kernels, and so numbers, as before
        return TensorImage(x), TensorCategory(e[:, 0].long())

    def gather(self, idx: np.ndarray, images: np.ndarray, extra: np.ndarray) -> bool:
        """The host's whole share of a batch: the rows of items ``idx`` into ``images`` [B, H, W, 3],
        their labels into ``extra[:, 0]`` and, for a canvas store in training, their resample
        boxes into ``extra[:, 1:]`` (then True)."""
        assert self.store is not None and self.labels is not None and self.pre is not None
        np.take(self.store.images, self.store.rows[idx], axis=0, out=images, mode="clip")  # no buffering
        extra[:, 0] = self.labels[idx]
        grid = store_batch_grid(self.store.sizes[idx], self.pre,
                                self.store.layout.kind == "canvas" and getattr(self.dataset, "split_idx", None) == 0)
        if grid is not None:
            extra[:, 1:] = grid
        return grid is not None

    def _to_cuda(self, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """One gather into a pinned buffer, copied without the host waiting for it."""
        assert self.store is not None
        b, (h, w) = len(idx), self.store.layout.shape
        slot = self._slots[self._turn]
        if slot is None or slot[0].shape[0] < b:
            slot = (torch.empty((max(b, self.bs), h, w, 3), dtype=torch.uint8).pin_memory(),
                    torch.zeros((max(b, self.bs), 7), dtype=torch.float64).pin_memory(), None)
        images, extra, done = slot
        if done is not None:
            done.synchronize()  # the copy from this buffer two batches ago, not the whole GPU
        boxed = self.gather(idx, images.numpy()[:b], extra.numpy()[:b])
        x = images[:b].to(device, non_blocking=True)
        e = extra[:b].to(device, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._slots[self._turn], self._turn = (images, extra, event), 1 - self._turn
        return x, e, boxed


def store_batch_grid(sizes: np.ndarray, pre: Preprocess, training: bool,
                     pcts: np.ndarray | None = None) -> np.ndarray | None:
    """Per item (ax, bx, ay, by, w, h): output pixel j samples normalised x = ax + bx * j (y
    likewise) of the image, ``w`` x ``h`` pixels as shown.

    The box is fastai's training ``Resize`` box at positions ``pcts`` [B, 2], by default drawn
    as fastai draws them (``random.random()`` twice per item); ``None`` when nothing is to be
    resampled.
    """
    if not training:
        return None
    th, tw = pre.size
    if pcts is None:
        pcts = np.array([[random.random(), random.random()] for _ in range(len(sizes))]).reshape(-1, 2)
    w, h = sizes[:, 0].astype(np.float64), sizes[:, 1].astype(np.float64)
    left, top, cw, ch = resize_box(w, h, pre, pcts)
    # output pixel j's centre sits at left + (j + 0.5) * cw / tw in the image; grid_sample's
    # normalised x (align_corners=False) of image coordinate u is 2u/w - 1, whatever the canvas
    return np.stack([(2 * left + cw / tw) / w - 1, 2 * cw / (tw * w),
                     (2 * top + ch / th) / h - 1, 2 * ch / (th * h), w, h], axis=1)


def resample(x: torch.Tensor, g: torch.Tensor, pre: Preprocess, device: torch.device) -> torch.Tensor:
    """Canvas rows [B, 3, Hc, Wc] uint8 -> [B, 3, H, W] float (0..255) at the training size."""
    th, tw = pre.size
    g = g.to(torch.float32)
    j = torch.arange(tw, device=device, dtype=torch.float32)
    i = torch.arange(th, device=device, dtype=torch.float32)
    gx, gy = g[:, 0, None] + g[:, 1, None] * j, g[:, 2, None] + g[:, 3, None] * i
    mask = None
    if pre.pad_mode == "reflection":
        gx, gy = _reflect(gx, g[:, 4, None]), _reflect(gy, g[:, 5, None])
    elif pre.pad_mode == "zeros":
        mask = (_coverage(gy, g[:, 3, None], g[:, 5, None])[:, :, None]
                * _coverage(gx, g[:, 1, None], g[:, 4, None])[:, None])
    gx, gy = gx.unsqueeze(1).expand(-1, th, -1), gy.unsqueeze(2).expand(-1, -1, tw)
    out = F.grid_sample(x.float(), torch.stack([gx, gy], dim=-1), mode="bilinear",
                        padding_mode=_PADDING[pre.pad_mode], align_corners=False)
    return out if mask is None else out * mask[:, None]


def _coverage(g: torch.Tensor, step: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """The part of each output pixel's footprint (centre ``g``, width ``step``, normalised) that
    lies on the image, which is ``n`` pixels across: 1 inside, 0 in the zeros band."""
    u, half = (g + 1) * n / 2, step * n / 4
    return ((torch.minimum(u + half, n) - torch.maximum(u - half, torch.zeros_like(u))) / (2 * half)).clamp(0, 1)


def _reflect(g: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Normalised coordinates mirrored about the image's first and last pixel centres (``n``
    pixels across, per item; fastai pads with torchvision's "reflect", which does not repeat
    the edge pixel): sampling the mirrored point is sampling the reflection-padded image."""
    u = (g + 1) * n / 2  # continuous image coordinates: pixel k spans [k, k + 1]
    u = torch.where(u < 0.5, 1 - u, u)
    u = torch.where(u > n - 0.5, 2 * n - 1 - u, u)
    return 2 * u / n - 1


class DeviceSmoothLoss(AvgSmoothLoss):
    """fastai's smoothed training loss, kept on the loss's device (fastai moves it to the CPU:
    a host sync every batch)."""

    def accumulate(self, learn) -> None:
        self.count += 1
        val: torch.Tensor = getattr(self, "val")  # noqa: B009 - set by fastai's untyped __init__/reset
        self.val = torch.lerp(learn.loss.mean().detach(), val.to(learn.loss.device), self.beta)
