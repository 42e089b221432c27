"""Readable logs: fastai's progress bars in a terminal, one plain line per epoch elsewhere.

fastprogress redraws its bars with carriage returns and decides whether to print with
``getattr(stdout, 'isatty', False)``, which is the method itself and so always true: a 64 px GPU
run's log was mostly bar redraws (issue 12). When stdout is not a terminal, ``plain_progress``
swaps fastai's ``ProgressCallback`` for ``EpochLines``, which prints the same table (header,
then a row per epoch) as plain lines and nothing per batch.

``lr_find`` is a ``fit`` of ``num_it // len(dls.train) + 1`` epochs cut short after ``num_it``
batches, so fastai's bar read "Epoch 1/34" on a small data set: 34 epochs that never run, and a
bar per epoch. ``lr_find_progress`` shows what it does: one bar over its iterations in a
terminal ("lr_find |###---| 37/100"), one line when it ends elsewhere.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TypeVar

from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback

# fastai has its own noop (fastcore.basics.noop is another object); progress_bar is the bar
# fastai's ProgressCallback draws (fastprogress, which comes with fastai)
from fastai.imports import noop, progress_bar

__all__ = ["EpochLines", "LRFindBar", "lr_find_progress", "plain_progress", "work_bar"]

T = TypeVar("T")


class EpochLines(Callback):
    """The epoch table as plain lines: ``epoch train_loss valid_loss ... time``."""

    order = ProgressCallback.order

    def before_fit(self) -> None:
        if self.learn.logger is noop:  # lr_find and get_preds log nothing
            return
        self.old_logger, self.learn.logger = self.learn.logger, self._line
        self._line(self.recorder.metric_names)

    def after_fit(self) -> None:
        if hasattr(self, "old_logger"):
            self.learn.logger = self.old_logger
            del self.old_logger

    @staticmethod
    def _line(values) -> None:
        cells = [f"{v:.6f}" if isinstance(v, float) else str(v) for v in values]
        print("  ".join(f"{c:>10}" for c in cells), flush=True)


@contextmanager
def _instead_of_bar(learn, callback: Callback, *, bar_after: bool) -> Iterator[None]:
    """``callback`` in place of fastai's ``ProgressCallback`` within the block; the bar back after it
    when ``bar_after``."""
    learn.remove_cb(ProgressCallback)
    learn.add_cb(callback)
    try:
        yield
    finally:
        learn.remove_cb(type(callback))
        if bar_after and not hasattr(learn, "progress"):
            learn.add_cb(ProgressCallback())


def plain_progress(learn, *, terminal: bool | None = None) -> AbstractContextManager:
    """Within the block, ``learn`` prints epoch lines instead of bars unless stdout is a terminal."""
    terminal = sys.stdout.isatty() if terminal is None else terminal
    # the bar comes back even to a learner without one: the learner pickle keeps fastai's usual callbacks
    return nullcontext() if terminal else _instead_of_bar(learn, EpochLines(), bar_after=True)


class LRFindBar(Callback):
    """``lr_find``'s progress in its own unit, iterations: a bar in a terminal, else one line."""

    order = ProgressCallback.order

    def __init__(self, num_it: int, terminal: bool) -> None:
        self.num_it, self.terminal = num_it, terminal

    def before_fit(self) -> None:
        self.started = time.perf_counter()
        if self.terminal:
            self.bar = progress_bar(range(self.num_it), leave=False)
            self.bar.prefix = "lr_find"  # the console bar's label; a notebook bar has none
            self.bar.update(0)

    def after_batch(self) -> None:
        if self.terminal:
            self.bar.comment = f"loss {float(self.smooth_loss):.4f}"
            self.bar.update(min(self.train_iter, self.num_it))

    def after_fit(self) -> None:
        done = min(self.train_iter, self.num_it)
        if self.terminal and done < self.num_it:  # a full bar has closed itself
            self.bar.on_iter_end()
        print(f"lr_find: {done} of {self.num_it} iterations in {time.perf_counter() - self.started:.1f} s"
              + (" (stopped early: the loss diverged)" if done < self.num_it else ""), flush=True)


def lr_find_progress(learn, num_it: int, *, terminal: bool | None = None) -> AbstractContextManager:
    """Within the block, ``learn.lr_find(num_it=num_it)`` reports with ``LRFindBar`` instead of
    fastai's epoch bar; fastai's bar (if the learner had it) comes back afterwards."""
    terminal = sys.stdout.isatty() if terminal is None else terminal
    return _instead_of_bar(learn, LRFindBar(num_it, terminal), bar_after=hasattr(learn, "progress"))


def work_bar(items: Iterable[T], total: int, label: str) -> Iterator[T]:
    """``items`` passed through, with fastai's bar over them in a terminal (the caller reports
    the total elsewhere: a log gets one line, not a bar)."""
    if not sys.stdout.isatty():
        yield from items
        return
    bar = progress_bar(items, total=total, leave=False)
    bar.prefix = label
    yield from bar
