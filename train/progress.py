"""Readable logs: fastai's progress bars in a terminal, one plain line per epoch elsewhere.

fastprogress redraws its bars with carriage returns and decides whether to print with
``getattr(stdout, 'isatty', False)``, which is the method itself and so always true: a 64 px GPU
run's log was mostly bar redraws (issue 12). When stdout is not a terminal, ``plain_progress``
swaps fastai's ``ProgressCallback`` for ``EpochLines``, which prints the same table (header,
then a row per epoch) as plain lines and nothing per batch.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastai.imports import noop  # fastai has its own noop; fastcore.basics.noop is another object

__all__ = ["EpochLines", "plain_progress"]


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
def plain_progress(learn, *, terminal: bool | None = None) -> Iterator[None]:
    """Within the block, ``learn`` prints epoch lines instead of bars unless stdout is a terminal."""
    terminal = sys.stdout.isatty() if terminal is None else terminal
    if terminal:
        yield
        return
    learn.remove_cb(ProgressCallback)
    learn.add_cb(EpochLines())
    try:
        yield
    finally:
        learn.remove_cb(EpochLines)
        if not hasattr(learn, "progress"):  # the learner pickle keeps fastai's usual callbacks
            learn.add_cb(ProgressCallback())
