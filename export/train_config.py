"""``TrainConfig``: the one list of training options. The CLI makes one from its flags (whose
defaults are its fields'), ``build_learner``/``fit``/``find_lr`` take it, ``fit`` writes the one it
used as train.json's ``options``, ``export.run_folder`` reads it back; a bad value is one
``ConfigError`` line. Here beside the run folder contract, as imports go train -> export -> edge_infer;
no torch or click, so ``--help`` and the readers stay light."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, cast

from edge_infer.errors import EdgeInferError
from edge_infer.metadata import PAD_MODES, RESIZE_METHODS, PadMode, Preprocess, Resize

__all__ = ["ARCHS", "OPTIMIZERS", "RECORDED", "ConfigError", "TrainConfig", "is_a"]

# torchvision's ResNets: fastai knows how to cut and split them, and they export to ONNX cleanly.
ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
OPTIMIZERS = ("adam", "adamw")  # train.learner.make_opt_func says what each is
# train.json's "options", in order (its "preprocess" holds size, resize, pad_mode); the last three came later
RECORDED = ("arch", "epochs", "freeze_epochs", "lr", "lr_source", "bs", "valid_pct", "seed", "pretrained",
            "weights", "augment", "workers", "processes")


class ConfigError(EdgeInferError, ValueError):
    """A training option of the wrong type or out of range: one line naming it and its value."""


@dataclass(frozen=True)
class TrainConfig:
    """The options of one training run; ``None``: ``fit`` decides (``train.learner``). ``lr_source``
    and ``processes`` are facts ``fit`` records (did lr_find choose ``lr``; torchrun's processes)."""

    arch: str = "resnet34"
    size: int | tuple[int, int] = 224            # square, or (height, width)
    resize: str = "crop"
    pad_mode: str = "reflection"
    bs: int | None = None                        # None: train.learner.default_bs
    workers: int | None = None                   # processes filling the decoded store; None: every core
    valid_pct: float = 0.2                       # random validation share (folders layout only)
    seed: int = 42
    pretrained: bool = True                      # torchvision's ImageNet weights (or ``weights``)
    weights: str | os.PathLike | None = None     # a local torchvision state dict
    augment: bool | None = None                  # None: on to fine-tune, off from scratch
    epochs: int = 4
    freeze_epochs: int = 1
    lr: float | Literal["auto"] = "auto"
    optimizer: str | None = None                 # None: train.learner.default_optimizer
    store: Path | Literal[False] | None = None   # None: train.store.default_store_dir(); False: fastai's items
    lr_source: str = "given"
    processes: int = 1

    def __post_init__(self) -> None:
        # (option, valid?, what it must be): each test is safe for a value of any type
        for name, ok, want in (
            ("arch", self.arch in ARCHS, f"one of {list(ARCHS)}"),
            ("size", _size(self.size) is not None, "an int >= 16 (the ResNets' minimum) or two of them"),
            ("resize", self.resize in RESIZE_METHODS, f"one of {list(RESIZE_METHODS)}"),
            ("pad_mode", self.pad_mode in PAD_MODES, f"one of {list(PAD_MODES)}"),
            ("bs", self.bs is None or _int(self.bs, 1), "an int >= 1 or null"),
            ("workers", self.workers is None or _int(self.workers, 0), "an int >= 0 or null"),
            ("valid_pct", is_a(self.valid_pct, (int, float)) and 0 < self.valid_pct < 1, "between 0 and 1"),
            ("seed", _int(self.seed, None), "an int"),
            ("pretrained", isinstance(self.pretrained, bool), "true or false"),
            ("weights", self.weights is None or isinstance(self.weights, (str, os.PathLike)), "a path or null"),
            ("augment", self.augment is None or isinstance(self.augment, bool), "true, false or null"),
            ("epochs", _int(self.epochs, 1), "an int >= 1"),
            ("freeze_epochs", _int(self.freeze_epochs, 0), "an int >= 0"),
            ("lr", self.lr == "auto" or (is_a(self.lr, (int, float)) and 0 < self.lr < 10), "'auto' or in (0, 10)"),
            ("optimizer", self.optimizer is None or self.optimizer in OPTIMIZERS, f"one of {list(OPTIMIZERS)}"),
            ("store", self.store is False or isinstance(self.store, (Path, type(None))), "a Path, false or null"),
            ("lr_source", isinstance(self.lr_source, str), "text"),
            ("processes", _int(self.processes, 1), "an int >= 1"),
        ):
            if not ok:
                raise ConfigError(f"{name} must be {want}, got {getattr(self, name)!r:.60}")

    @property
    def preprocess(self) -> Preprocess:
        """How images become the network's input (train.json's ``preprocess``)."""
        size = _size(self.size)
        assert size is not None  # checked on construction, as resize and pad_mode (mypy cannot narrow a str)
        return Preprocess(size=size, resize=cast(Resize, self.resize), pad_mode=cast(PadMode, self.pad_mode))

    def to_dict(self) -> dict[str, Any]:
        """train.json's ``options``, JSON-ready (``store`` and ``optimizer`` are not recorded)."""
        return {**{n: getattr(self, n) for n in RECORDED}, "weights": self.weights and os.fspath(self.weights)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], preprocess: Preprocess) -> "TrainConfig":
        """train.json's ``options``, with ``size``, ``resize`` and ``pad_mode`` from its ``preprocess``."""
        if not isinstance(d, Mapping):
            raise TypeError(f"expected an object, got {d!r:.60}")
        missing = [name for name in RECORDED[:-3] if name not in d]
        if missing:
            raise KeyError(f"missing key(s) {missing}")
        return cls(**{name: d[name] for name in RECORDED if name in d}, size=preprocess.size,
                   resize=preprocess.resize, pad_mode=preprocess.pad_mode)


def is_a(value: Any, kinds: tuple[type, ...]) -> bool:
    """``isinstance``, except that a bool is no int: in train.json a true where a number belongs is a mistake."""
    return isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))


def _int(v: Any, low: int | None) -> bool:
    return is_a(v, (int,)) and (low is None or v >= low)


def _size(v: Any) -> tuple[int, int] | None:  # (height, width) from an int or a pair of them, each >= 16
    hw = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    return (hw[0], hw[1]) if len(hw) == 2 and all(_int(x, 16) for x in hw) else None
