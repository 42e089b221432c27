"""``python -m train fit``: the fast.ai course recipe, leaving a run folder (docs/run-folder.md).

Reads top to bottom: take a ``TrainConfig``, build the learner (``train.learner``), pick the LR
(``train.lr``: fastai's ``valley`` to fine-tune, ``slide`` from scratch, unless ``--lr`` is
given), train (``_train``: a pretrained body gets ``Learner.fine_tune``'s schedule, the head
alone then the whole network with discriminative LRs; ``--no-pretrained`` has nothing to freeze
and trains the whole network in one ``fit_one_cycle``), then write the run folder. Stage 1 is
always the frozen stage and stage 2 the whole network, so a ``--no-pretrained`` run has only
stage 2 (``models/stage2.pth`` and no ``models/stage1.pth``).

Under ``torchrun`` (several GPUs or machines) training runs inside fastai's
``learn.distrib_ctx()`` (``train.distributed``: DistributedDataParallel, each process a shard of
every epoch). Every process builds the same learner from the same seed; only rank 0 writes the
run folder. ``--lr auto`` is refused there: each process would run its own ``lr_find``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import fastai
import torch
import torchvision
from fastai.torch_core import num_distrib, rank_distrib
from fastai.vision.all import Callback, Recorder, set_seed
from matplotlib.figure import Figure  # not pyplot: a file needs no display, and no backend is set

import edge_infer
from export.run_folder import SPLIT_CSV, TRAIN_JSON, TrainInfo
from export.train_config import TrainConfig

from .data import split_table
from .distributed import distributed
from .doctor import HISTORY_COLUMNS, write_report
from .errors import TrainError
from .learner import Setup, build_learner
from .lr import suggest_lr, suggestion_rule
from .progress import plain_progress

__all__ = ["fit"]


def fit(data: str | Path, out: str | Path, config: TrainConfig) -> Path:
    """Train a classifier on the images in ``data``; write the run folder ``out`` and return it.

    Raises ``TrainError`` (one line) for bad data, and when the pretrained weights cannot be
    downloaded (use ``pretrained=False`` or ``weights=``); ``TrainConfig`` refuses bad options.
    """
    start = time.perf_counter()
    data, out = Path(data).resolve(), Path(out).resolve()
    _check_out(data, out)
    processes, rank = max(1, num_distrib()), rank_distrib()
    if processes > 1 and config.lr == "auto":
        raise TrainError(f"--lr auto under torchrun would run lr_find in each of the {processes} processes; "
                         "run python -m train lr-find DATA once and pass its suggestion as --lr")
    if processes > 1 and torch.cuda.is_available():  # one GPU per process, before any tensor is made
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    # Only rank 0 reports: the other processes print the same lines (and fastai its table).
    with contextlib.redirect_stdout(io.StringIO()) if rank else contextlib.nullcontext():
        set_seed(config.seed)
        setup = build_learner(data, out, config)
        learn = setup.learn
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)  # only now: a rejected option leaves nothing behind
        _say(setup, config.augment, processes)
        used, auto, rule = setup.config, config.lr == "auto", suggestion_rule(setup.config.pretrained)
        history = History()
        with plain_progress(learn):
            lr = suggest_lr(learn, out / "lr_find.png", rule) if auto else float(config.lr)
            print(f"learning rate: {lr:.2e}" + (f" (lr_find {rule}, see lr_find.png)" if auto else ""))
            with distributed(learn) if processes > 1 else contextlib.nullcontext():
                _train(learn, used.pretrained, history, lr, used.epochs, used.freeze_epochs)
        if setup.mixed_precision:
            learn.to_contiguous(to_fp32=True)  # the pickle must load on a CPU, export traces NCHW
        if rank != 0:
            return out
        learn.export("learner.pkl")
        resolved = replace(used, lr=lr, lr_source=f"auto ({rule})" if auto else "given", processes=processes,
                           freeze_epochs=used.freeze_epochs if used.pretrained else 0,
                           weights=None if used.weights is None else str(Path(used.weights).resolve()))
        _write_run(out, data, setup, history, resolved, time.perf_counter() - start)
        return out


def _say(setup: Setup, augment: bool | None, processes: int) -> None:
    print(f"device: {setup.device}" + (f" with mixed precision ({setup.precision}), channels_last" if setup.mixed_precision
                                       else f" ({torch.get_num_threads()} torch threads)")
          + (f", {processes} processes (torchrun)" if processes > 1 else ""))
    used = setup.config
    print(f"data loading: decoded store, filled by {used.workers} process{'es' if used.workers != 1 else ''}; "
          f"batch size {used.bs}")
    why = "--augment/--no-augment" if augment is not None else "default: on to fine-tune, off from scratch"
    print(f"augmentation: {'on' if used.augment else 'off'} ({why})")


def _check_out(data: Path, out: Path) -> None:
    if (out / TRAIN_JSON).exists():
        raise TrainError(f"{out} already holds a run ({TRAIN_JSON}); choose another --out")
    if out == data or data in out.parents:
        raise TrainError(f"--out {out} is inside the data folder {data}; its files would be read as images")
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out} is a file, not a folder")


def _train(learn, pretrained_body: bool, history: "History", lr: float, epochs: int,
           freeze_epochs: int) -> None:
    if pretrained_body:
        if freeze_epochs:
            print(f"stage 1: {freeze_epochs} epoch(s) of the new head, body frozen")
            history.stage, history.stage_lr = 1, lr
            learn.freeze()
            learn.fit_one_cycle(freeze_epochs, slice(lr), pct_start=0.99, cbs=history)
            learn.save("stage1", with_opt=False)
        print(f"stage 2: {epochs} epoch(s) of the whole network, "
              f"discriminative LRs {lr / 200:.1e}..{lr / 2:.1e}")
        history.stage, history.stage_lr = 2, lr / 2
        learn.unfreeze()
        learn.fit_one_cycle(epochs, slice(lr / 200, lr / 2), pct_start=0.3, div=5.0, cbs=history)
    else:
        print(f"--no-pretrained: nothing to freeze, training the whole network from the first epoch "
              f"({epochs} epoch(s), one cycle; --freeze-epochs is not used)")
        history.stage, history.stage_lr = 2, lr
        learn.fit_one_cycle(epochs, lr, cbs=history)
    learn.save("stage2", with_opt=False)  # weights only: Adam's state would triple the file


class History(Callback):
    """One ``history.csv`` row per epoch across both stages, plus the smoothed batch losses.

    ``lr`` is the stage's one-cycle peak for the head's parameter group (what ``--lr`` sets).
    The batch losses stay on the device during the epoch and are read once at its end: reading
    each one (``float``) made the host wait for the GPU every batch (issue 24).
    """

    order = Recorder.order + 1  # after the Recorder has stored the epoch's losses and metrics

    def __init__(self) -> None:
        self.stage, self.stage_lr = 1, 0.0
        self.rows: list[dict] = []
        self.batches: list[float] = []
        self.pending: list[torch.Tensor] = []

    def before_epoch(self) -> None:
        self.started = time.perf_counter()

    def after_batch(self) -> None:
        if self.training:
            self.pending.append(self.recorder.smooth_loss.value.detach())

    def after_epoch(self) -> None:
        if self.pending:
            self.batches += torch.stack(self.pending).float().cpu().tolist()
            self.pending = []
        names = [str(n) for n in self.recorder.metric_names[1:-1]]  # train_loss valid_loss error_rate accuracy
        values = dict(zip(names, (float(v) for v in self.recorder.values[-1]), strict=False))
        self.rows.append({"stage": self.stage, "epoch": self.epoch, **values, "lr": self.stage_lr,
                          "seconds": round(time.perf_counter() - self.started, 3),
                          "batches": len(self.batches)})


def _write_run(out: Path, data: Path, setup: Setup, history: History, options: TrainConfig,
               seconds: float) -> None:
    """The run folder, through ``export.run_folder``: the definition its readers parse with."""
    split = split_table(setup.learn.dls)
    split.write(out / SPLIT_CSV)
    rows = [{k: r[k] for k in HISTORY_COLUMNS} for r in history.rows]
    with open(out / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    _plot_losses(history, out / "losses.png")
    last = rows[-1]
    TrainInfo(
        data=data, layout=setup.layout, labels=tuple(str(v) for v in setup.learn.dls.vocab),
        preprocess=options.preprocess, options=options, device=setup.device, mixed_precision=setup.mixed_precision,
        counts=split.counts(), metrics={k: last[k] for k in ("valid_loss", "error_rate", "accuracy")},
        history=tuple(rows),
        versions={"fastai": fastai.__version__, "torch": torch.__version__,
                  "torchvision": torchvision.__version__, "edge_infer": edge_infer.__version__,
                  "python": platform.python_version()},
        seconds=round(seconds, 1),
    ).write(out / TRAIN_JSON)
    diagnosis = write_report(out, rows)
    print(f"done in {seconds:.0f} s: error rate {last['error_rate']:.4f}, accuracy {last['accuracy']:.4f}; "
          f"doctor: {diagnosis.verdict} (see {out / 'doctor.md'})")


def _plot_losses(history: History, path: Path) -> None:
    """Smoothed train loss per batch and valid loss per epoch, both stages on one axis."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(range(1, len(history.batches) + 1), history.batches, label="train (smoothed)")
    ends = [r["batches"] for r in history.rows]
    ax.plot(ends, [r["valid_loss"] for r in history.rows], "o-", label="valid")
    first_stage2 = next((r for r in history.rows if r["stage"] == 2), None)
    if history.rows[0]["stage"] == 1 and first_stage2 is not None:
        ax.axvline(ends[history.rows.index(first_stage2) - 1], color="grey", ls="--", label="unfreeze")
    values = [v for v in history.batches + [r["valid_loss"] for r in history.rows] if v > 0 and v == v]
    if values and max(values) > 10 * min(values):  # a first-epoch spike would flatten the rest
        ax.set_yscale("log")
    ax.set(xlabel="batch", ylabel="loss", title="losses")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
