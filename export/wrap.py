"""``Deployable``: the learner's network wrapped to take uint8 NHWC RGB and return probabilities.

Everything the DataLoaders do to a validation batch goes into the graph, read from
``learn.dls``, never retyped: ``IntToFloatTensor`` (/255) and ``Normalize`` (when present;
fastai adds none for ``pretrained=False`` unless the training code does). The random
augmentations leave validation batches alone, so they stay out. ``check_pipeline`` refuses a
learner whose validation pipeline does something else, or resizes differently from train.json.
"""

from __future__ import annotations

import torch
from torch import nn

from edge_infer.metadata import Preprocess

from .errors import ExportError

__all__ = ["Deployable", "normalisation", "check_pipeline", "wrap"]


class Deployable(nn.Module):
    """uint8 [N, H, W, 3] RGB -> probabilities [N, C]; mean/std come from learn.dls."""

    mean: torch.Tensor  # buffers, registered only when normalising
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None) -> None:
        super().__init__()
        self.net = net.eval()
        self.normalise = mean is not None
        if mean is not None and std is not None:
            self.register_buffer("mean", mean.detach().float().reshape(1, 3, 1, 1).cpu())
            self.register_buffer("std", std.detach().float().reshape(1, 3, 1, 1).cpu())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2).float() / 255.0
        if self.normalise:
            x = (x - self.mean) / self.std
        return self.net(x).softmax(dim=1)


def normalisation(learn) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The (mean, std) of the ``Normalize`` in ``learn.dls.after_batch``, or None."""
    from fastai.vision.all import Normalize

    found = [t for t in learn.dls.valid.after_batch.fs if isinstance(t, Normalize)]
    if len(found) > 1:
        raise ExportError("the learner's DataLoaders normalise twice; export supports one Normalize")
    return (found[0].mean, found[0].std) if found else None


def check_pipeline(learn, pre: Preprocess, where: str) -> None:
    """Refuse a validation pipeline that the graph and ``edge_infer`` would not reproduce."""
    from fastai.vision.all import IntToFloatTensor, Normalize, RandTransform, Resize, ToTensor

    for t in learn.dls.valid.after_batch.fs:
        if isinstance(t, IntToFloatTensor) and float(t.div) != 255.0:
            raise ExportError(f"{where}: IntToFloatTensor divides by {t.div}, the graph assumes 255")
        if not isinstance(t, (IntToFloatTensor, Normalize, RandTransform)):
            raise ExportError(f"{where}: the DataLoaders apply {type(t).__name__} to validation batches; "
                              "export can bake in only IntToFloatTensor and Normalize")
    resizes = [t for t in learn.dls.valid.after_item.fs if isinstance(t, Resize)]
    others = [t for t in learn.dls.valid.after_item.fs if not isinstance(t, (Resize, ToTensor))]
    if len(resizes) != 1 or others:
        names = [type(t).__name__ for t in learn.dls.valid.after_item.fs]
        raise ExportError(f"{where}: item transforms {names}; export needs exactly one Resize")
    r = resizes[0]
    got = (tuple(int(s) for s in r.size), str(r.method), str(r.pad_mode))
    want = (pre.size, pre.resize, pre.pad_mode)
    if got[0] != want[0] or got[1] != want[1] or (want[1] == "pad" and got[2] != want[2]):
        raise ExportError(f"{where}: the learner resizes with size/method/pad_mode {got}, train.json "
                          f"says {want}; the run folder is inconsistent, train again")


def wrap(learn) -> Deployable:
    """The learner's model, in eval mode on the CPU, inside ``Deployable``."""
    return Deployable(learn.model.cpu().float(), *(normalisation(learn) or (None, None))).eval()
