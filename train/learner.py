"""Build the fastai ``Learner`` that ``fit`` and ``lr-find`` share: data, arch, weights, device.

The body starts from one of three places: torchvision's pretrained ImageNet weights (the
default; downloaded once into ``$TORCH_HOME``), a local torchvision state dict (``--weights``),
or random weights (``--no-pretrained``). The ImageNet mean/std normalisation is added to the
DataLoaders in all three cases, so ``learn.dls`` always carries the ``Normalize`` that export
bakes into the graph.
"""

from __future__ import annotations

import http.client
import urllib.error
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal, cast

import torch
import torchvision
from fastai.vision.all import (Learner, Normalize, accuracy, create_body, error_rate,
                               imagenet_stats, model_meta, vision_learner)

from edge_infer.errors import first_line
from edge_infer.metadata import PAD_MODES, RESIZE_METHODS, PadMode, Preprocess, Resize

from .archs import ARCHS
from .data import default_workers, find_items, make_dls
from .errors import TrainError

__all__ = ["ARCHS", "Setup", "build_learner", "pretrained_unavailable"]

# What a failed weight download raises (torch.hub uses urllib): no network, DNS, proxy, timeout.
NETWORK_ERRORS = (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException)


@dataclass
class Setup:
    learn: Learner
    pre: Preprocess
    layout: str
    device: str            # "cuda" or "cpu"
    mixed_precision: bool
    pretrained_body: bool  # pretrained or --weights: freeze first, then discriminative LRs
    bs: int                # the batch size actually used
    augment: bool          # training-set augmentation on (``augment_default`` unless given)
    workers: int           # DataLoader worker processes (``train.data.default_workers`` unless given)


def augment_default(pretrained_body: bool) -> bool:
    """Augment when fine-tuning, not from scratch, unless ``--augment/--no-augment`` says.

    Augmentation is regularisation: it fights overfitting, which is the risk when a pretrained
    body meets a few hundred images. A random network trained for a few epochs has the opposite
    problem (train loss above valid loss: underfitting) and augmentation only slows it down.
    Measured on Fashion-MNIST 300/class, ResNet34 64 px, 5 epochs from scratch: 80.0% valid with
    augmentation, 82.7% without (same LR). Long from-scratch runs should pass ``--augment``.
    """
    return pretrained_body


def default_bs(cuda: bool) -> int:
    """64, or 128 on a GPU with at least 16 GiB: ResNet34 at 224 px in fp16 takes about 10 GiB
    at 128, and the H100 ceiling in issue 12 was measured at 128 (a batch of 64 leaves it waiting
    on the optimizer step more often). An explicit ``--bs`` always wins."""
    if cuda and torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory >= 16 << 30:
        return 128
    return 64


def pretrained_unavailable(arch: str, error: BaseException) -> str:
    """The one-line message for a pretrained-weight download that failed (e.g. offline)."""
    reason = getattr(error, "reason", None) or error
    reason = " ".join(str(reason).split())
    return (f"cannot download the pretrained {arch} weights ({reason}); train from random weights "
            f"with --no-pretrained, or use a local torchvision {arch} state dict with --weights FILE")


def check_options(data: Path, *, arch: str, size: int | tuple[int, int], resize: str, pad_mode: str,
                  bs: int | None, valid_pct: float, weights: str | Path | None) -> tuple[Preprocess, str]:
    """Every option checked before any slow work starts; returns the preprocessing and layout."""
    if arch not in ARCHS:
        raise TrainError(f"--arch {arch!r} is not one of {list(ARCHS)}")
    if resize not in RESIZE_METHODS or pad_mode not in PAD_MODES:
        raise TrainError(f"--resize must be one of {list(RESIZE_METHODS)} and --pad-mode one of "
                         f"{list(PAD_MODES)}, got {resize!r} and {pad_mode!r}")
    h, w = (size, size) if isinstance(size, int) else size
    if min(h, w) < 16:
        raise TrainError(f"--size {size} is too small: the ResNets need at least 16 pixels")
    if (bs is not None and bs < 1) or not 0 < valid_pct < 1:
        raise TrainError(f"--bs must be >= 1 and --valid-pct between 0 and 1, got {bs} and {valid_pct}")
    if weights is not None and not Path(weights).is_file():
        raise TrainError(f"{weights}: no such file (--weights takes a torchvision state dict, .pth)")
    try:
        df, layout = find_items(data)
    except (FileNotFoundError, ValueError) as e:
        raise TrainError(str(e)) from None
    labels = sorted(df["label"].unique())
    if len(labels) < 2:
        raise TrainError(f"{data}: only one label ({labels}); a classifier needs at least two")
    # Checked against RESIZE_METHODS and PAD_MODES above, which mypy cannot narrow a str with.
    return Preprocess(size=(int(h), int(w)), resize=cast(Resize, resize),
                      pad_mode=cast(PadMode, pad_mode)), layout


def build_learner(data: str | Path, out: str | Path, *, arch: str = "resnet34",
                  size: int | tuple[int, int] = 224, resize: str = "crop",
                  pad_mode: str = "reflection", bs: int | None = None, valid_pct: float = 0.2,
                  seed: int = 42, pretrained: bool = True,
                  weights: str | Path | None = None, augment: bool | None = None,
                  workers: int | None = None, cache: Path | Literal[False] | None = None) -> Setup:
    """DataLoaders (``train.data.make_dls``) + ``vision_learner``; checkpoints go under ``out``.

    On CUDA: pinned memory, ``workers`` DataLoader processes (default: every core but one),
    fp16 autocast with channels_last (fastai's ``to_channelslast``: tensor cores read NHWC),
    and batch augmentation on the GPU (fastai's ``aug_transforms`` already run on the batch).
    On the CPU the run stays what it was: no workers, fp32, deterministic with the seed.
    """
    data = Path(data).resolve()
    pre, layout = check_options(data, arch=arch, size=size, resize=resize, pad_mode=pad_mode, bs=bs,
                        valid_pct=valid_pct, weights=weights)
    cuda = torch.cuda.is_available()
    pretrained_body = pretrained or weights is not None
    augment = augment_default(pretrained_body) if augment is None else augment
    bs = default_bs(cuda) if bs is None else bs
    workers = default_workers(cuda) if workers is None else workers
    loading = partial(make_dls, data, pre, valid_pct=valid_pct, seed=seed, augment=augment,
                      num_workers=workers, pin_memory=cuda, cache=cache)
    dls = loading(bs=bs)
    if len(dls.valid_ds) == 0:
        raise TrainError(f"{data}: the validation set is empty; raise --valid-pct or add images")
    if len(dls.train) == 0:  # fastai drops the last partial training batch: fewer items than bs
        bs = len(dls.train_ds)
        print(f"only {bs} training images: using --bs {bs}")
        dls = loading(bs=bs)
    dls.add_tfms([Normalize.from_stats(*imagenet_stats)], "after_batch")
    learn = _learner(dls, arch, pretrained and weights is None, Path(out).resolve())
    if weights is not None:
        _load_body(learn, arch, Path(weights))
    if cuda:
        learn.to_channelslast()  # adds fastai's MixedPrecision (fp16) too
    return Setup(learn, pre, layout, "cuda" if cuda else "cpu", cuda, pretrained_body, bs, augment,
                 workers)


def _learner(dls, arch: str, download: bool, out: Path) -> Learner:
    try:
        return vision_learner(dls, getattr(torchvision.models, arch), metrics=[error_rate, accuracy],
                              pretrained=download, path=out)
    except NETWORK_ERRORS as e:
        raise TrainError(pretrained_unavailable(arch, e)) from None


def _load_body(learn: Learner, arch: str, weights: Path) -> None:
    """A torchvision state dict into the body, cut exactly as fastai cuts the pretrained model."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and tensor errors all mean "not a state dict"
        raise TrainError(f"{weights}: not a PyTorch state dict ({type(e).__name__}: {first_line(e)})") from None
    model = getattr(torchvision.models, arch)(weights=None)
    if not isinstance(state, dict):
        raise TrainError(f"{weights}: holds a {type(state).__name__}, not a state dict")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # same keys, other shapes: another ResNet depth or width
        detail = str(e).splitlines()[1].strip()
        raise TrainError(f"{weights}: does not fit torchvision {arch} ({detail})") from None
    if missing or unexpected:
        some = ", ".join((missing or unexpected)[:3])
        raise TrainError(f"{weights}: not a torchvision {arch} state dict "
                         f"({len(missing)} missing and {len(unexpected)} unexpected keys, e.g. {some})")
    body = create_body(model, pretrained=True, cut=model_meta[getattr(torchvision.models, arch)]["cut"])
    learn.model[0].load_state_dict(body.state_dict())
    learn.freeze()
    learn.pretrained = True
