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
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch
import torchvision
from fastai.vision.all import (
    Learner,
    Normalize,
    accuracy,
    create_body,
    error_rate,
    imagenet_stats,
    model_meta,
    vision_learner,
)

from edge_infer.errors import first_line
from export.train_config import TrainConfig

from .data import default_workers, find_items, make_dls
from .errors import TrainError
from .loader import DeviceSmoothLoss

__all__ = ["Setup", "build_learner", "pretrained_unavailable"]

# What a failed weight download raises (torch.hub uses urllib): no network, DNS, proxy, timeout.
NETWORK_ERRORS = (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException)


@dataclass
class Setup:
    learn: Learner
    layout: str
    device: str            # "cuda" or "cpu"
    mixed_precision: bool
    precision: str         # "fp32", "bf16" (autocast, no GradScaler) or "fp16" (autocast + GradScaler)
    # as used: bs, augment, workers as chosen; pretrained: a trained body (ImageNet, --weights) to fine-tune
    config: TrainConfig


def augment_default(pretrained_body: bool) -> bool:
    """Augment when fine-tuning, not from scratch, unless ``--augment/--no-augment`` says.

    Augmentation is regularisation: it fights overfitting, which is the risk when a pretrained
    body meets a few hundred images. A random network trained for a few epochs has the opposite
    problem (train loss above valid loss: underfitting) and augmentation only slows it down.
    Measured on Fashion-MNIST 300/class, ResNet34 64 px, 5 epochs from scratch: 80.0% valid with
    augmentation, 82.7% without (same LR). Long from-scratch runs should pass ``--augment``.
    """
    return pretrained_body


def default_bs(cuda: bool, size: tuple[int, int] = (224, 224)) -> int:
    """64 on the CPU; on a GPU the largest of 64..512 (powers of two) whose activations fit half
    of its memory, at about 80 MB per 224-px image (ResNet34, fp16/bf16: about 10 GiB at 128,
    issue 12) scaled by the image's pixels. An explicit ``--bs`` always wins."""
    if not cuda:
        return 64
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    per_image = 80e6 * size[0] * size[1] / (224 * 224)
    bs = 64
    while bs < 512 and 2 * bs * per_image <= total / 2:
        bs *= 2
    return bs


def default_optimizer(cuda: bool) -> str:
    """PyTorch's fused AdamW on CUDA, fastai's Adam on the CPU.

    Measured on the CPU (Fashion-MNIST 100/class, 32 px, ResNet18, 4 epochs at 4e-3, seeds 42
    and 1; benchmarks/results/train/optimizers_cpu.json): valid accuracy 0.745 / 0.795 with
    fastai's Adam, 0.790 / 0.825 with AdamW: no worse. On a GPU fastai's Adam is several small
    kernels per parameter tensor, launched from Python, where fused AdamW is one; on the CPU it
    stays, so the README's Fashion-MNIST recipe trains bit for bit the model it trained before
    (tests/test_train_store.py checks the weights)."""
    return "adamw" if cuda else "adam"


def mixed_precision_mode() -> str:
    """bf16 where the GPU has it: fp32's range, so no GradScaler, whose overflow check reads the
    gradients' scale back to the host every step; fp16 with the scaler elsewhere."""
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def make_opt_func(optimizer: str):
    """fastai's ``Adam`` (``"adam"``), or PyTorch's ``AdamW`` through fastai's ``OptimWrapper``
    (``"adamw"``: PyTorch's fused kernel, on CUDA and on the CPU, where fastai's updates one
    tensor at a time in Python and the ``foreach`` form reads each step count back with
    ``.item()``). Same hyper-parameters as fastai's Adam (betas 0.9/0.99, eps 1e-5, decoupled
    weight decay 0.01); fastai's one-cycle drives its LR and first beta as it drives Adam's."""
    if optimizer == "adam":
        from fastai.optimizer import Adam

        return Adam
    from fastai.optimizer import OptimWrapper

    return partial(OptimWrapper, opt=torch.optim.AdamW, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01,
                   fused=True)


def pretrained_unavailable(arch: str, error: BaseException) -> str:
    """The one-line message for a pretrained-weight download that failed (e.g. offline)."""
    reason = getattr(error, "reason", None) or error
    reason = " ".join(str(reason).split())
    return (f"cannot download the pretrained {arch} weights ({reason}); train from random weights "
            f"with --no-pretrained, or use a local torchvision {arch} state dict with --weights FILE")


def check_data(data: Path, config: TrainConfig) -> str:
    """What the config cannot check alone, before any slow work starts; returns the layout."""
    if config.weights is not None and not Path(config.weights).is_file():
        raise TrainError(f"{config.weights}: no such file (--weights takes a torchvision state dict, .pth)")
    try:
        df, layout = find_items(data)
    except (FileNotFoundError, ValueError) as e:
        raise TrainError(str(e)) from None
    labels = sorted(df["label"].unique())
    if len(labels) < 2:
        raise TrainError(f"{data}: only one label ({labels}); a classifier needs at least two")
    return layout


def build_learner(data: str | Path, out: str | Path, config: TrainConfig) -> Setup:
    """DataLoaders (``train.data.make_dls``) + ``vision_learner``; checkpoints go under ``out``.

    Batches come from the decoded store (``train.loader.StoreDL``; ``config.store=False``:
    fastai's item pipeline). On CUDA: mixed precision with channels_last (tensor cores read
    NHWC), the crop/pad and the augmentation on the GPU for the whole batch. On the CPU: fp32,
    deterministic with the seed. Either way the smoothed loss stays on the device.
    """
    data, pre, c = Path(data).resolve(), config.preprocess, config
    layout = check_data(data, c)
    cuda = torch.cuda.is_available()
    pretrained_body = c.pretrained or c.weights is not None
    augment = augment_default(pretrained_body) if c.augment is None else c.augment
    bs = default_bs(cuda, pre.size) if c.bs is None else c.bs
    workers = default_workers() if c.workers is None else c.workers
    loading = partial(make_dls, data, pre, valid_pct=c.valid_pct, seed=c.seed, augment=augment,
                      num_workers=workers, pin_memory=cuda, store=c.store)
    dls = loading(bs=bs)
    if len(dls.valid_ds) == 0:
        raise TrainError(f"{data}: the validation set is empty; raise --valid-pct or add images")
    if len(dls.train) == 0:  # fastai drops the last partial training batch: fewer items than bs
        bs = len(dls.train_ds)
        print(f"only {bs} training images: using --bs {bs}")
        dls = loading(bs=bs)
    dls.add_tfms([Normalize.from_stats(*imagenet_stats)], "after_batch")
    optimizer = default_optimizer(cuda) if c.optimizer is None else c.optimizer
    learn = _learner(dls, c.arch, c.pretrained and c.weights is None, Path(out).resolve(), make_opt_func(optimizer))
    if c.weights is not None:
        _load_body(learn, c.arch, Path(c.weights))
    learn.recorder.smooth_loss = DeviceSmoothLoss(beta=learn.recorder.smooth_loss.beta)
    precision = mixed_precision_mode() if cuda else "fp32"
    if cuda:
        learn.to_channelslast(amp_mode=precision)  # adds fastai's MixedPrecision too
    used = replace(c, size=pre.size, pretrained=pretrained_body, bs=bs, augment=augment, workers=workers)
    return Setup(learn, layout, "cuda" if cuda else "cpu", cuda, precision, used)


def _learner(dls, arch: str, download: bool, out: Path, opt_func) -> Learner:
    try:
        return vision_learner(dls, getattr(torchvision.models, arch), metrics=[error_rate, accuracy],
                              pretrained=download, path=out, opt_func=opt_func)
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
