"""The learning-rate finder: fastai's ``lr_find``, its valley suggestion, and ``lr_find.png``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import TrainError

if TYPE_CHECKING:
    from fastai.learner import Learner

# torch, fastai and matplotlib are imported in the functions that use them, so that the CLI can
# check --lr without them.

__all__ = ["parse_lr", "suggest_lr", "find_lr"]


def parse_lr(value: str | float) -> float | str:
    """``"auto"`` or a positive float (``--lr``)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        lr = float(value)
    except (TypeError, ValueError):
        raise TrainError(f"--lr must be 'auto' or a number such as 1e-3, got {value!r}") from None
    if not 0 < lr < 10:
        raise TrainError(f"--lr must be between 0 and 10, got {lr}")
    return lr


def suggest_lr(learn: "Learner", plot: Path) -> float:
    """Run ``learn.lr_find()``, save the loss-vs-LR curve with the valley marked, return it."""
    from fastai.callback.schedule import valley

    try:
        lr = float(learn.lr_find(suggest_funcs=(valley,), show_plot=False).valley)
    except (IndexError, RuntimeError, ValueError) as e:  # too few batches to find a valley
        raise TrainError(f"lr_find could not suggest a learning rate ({e}); pass one with --lr") from None
    save_plot(learn, lr, plot)
    return lr


def save_plot(learn: "Learner", lr: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: training machines often have no display
    import matplotlib.pyplot as plt

    lrs, losses = learn.recorder.lrs[:-5], [float(x) for x in learn.recorder.losses[:-5]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    near = min(range(len(lrs)), key=lambda i: abs(lrs[i] - lr)) if lrs else None
    if near is not None:
        ax.plot([lr], [losses[near]], "o", color="C1", label=f"valley: {lr:.2e}")
        ax.legend(loc="best")
    ax.set(xscale="log", xlabel="learning rate", ylabel="loss (smoothed)",
           title=f"lr_find: suggested learning rate {lr:.2e}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def find_lr(data: str | Path, out: str | Path = ".", **options) -> float:
    """``python -m train lr-find``: the suggestion for ``fit``'s data options; writes ``out/lr_find.png``."""
    from .learner import build_learner

    out = Path(out)
    setup = build_learner(data, out, **options)
    return suggest_lr(setup.learn, out / "lr_find.png")
