"""The learning-rate finder: fastai's ``lr_find``, the suggestion ``--lr auto`` takes, ``lr_find.png``.

Which of fastai's suggestions, decided by measurement (Fashion-MNIST 300/class, ResNet34 at 64 px,
5 epochs from scratch, 1000 held-out test images):

* fine-tuning a pretrained body: ``valley``, fastai's default. The body's weights are already good;
  the cautious end of the steep slope keeps them (``fit`` divides it further for the body).
* from scratch (``--no-pretrained``): ``slide``. The valley sits at the cautious end of the slope
  (5.8e-4 here) and a random network at that rate is still underfitting after a few epochs:
  80.3% valid / 83.3% held-out against 82.7% / 85.3% with ``slide``'s 4.4e-3. Going further, to
  ``minimum`` (1.2e-2), was no better (79.2% vs 80.0% valid with augmentation on).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from export.train_config import TrainConfig

from .errors import TrainError

if TYPE_CHECKING:
    from fastai.learner import Learner

# torch, fastai and matplotlib are imported in the functions that use them: ``import train.lr`` is light.

__all__ = ["NUM_IT", "suggestion_rule", "suggest_lr", "find_lr"]

NUM_IT = 100  # fastai's default: iterations from 1e-7 to 10


def suggestion_rule(pretrained_body: bool) -> str:
    """The fastai suggestion ``--lr auto`` takes: ``valley`` to fine-tune, ``slide`` from scratch."""
    return "valley" if pretrained_body else "slide"


def suggest_lr(learn: "Learner", plot: Path, rule: str = "valley") -> float:
    """Run ``learn.lr_find()``, save the loss-vs-LR curve with both suggestions marked, and
    return the one named by ``rule`` (``suggestion_rule``)."""
    from fastai.callback.schedule import slide, valley

    from .progress import lr_find_progress

    try:
        with lr_find_progress(learn, NUM_IT):
            found = learn.lr_find(num_it=NUM_IT, suggest_funcs=(valley, slide), show_plot=False)
    except (IndexError, RuntimeError, ValueError) as e:  # too few batches to find a valley
        raise TrainError(f"lr_find could not suggest a learning rate ({e}); pass one with --lr") from None
    suggestions = {"valley": float(found.valley), "slide": float(found.slide)}
    save_plot(learn, suggestions, rule, plot)
    return suggestions[rule]


def save_plot(learn: "Learner", suggestions: dict[str, float], used: str, path: Path) -> None:
    # A Figure of its own, not pyplot: a file needs no display, and the caller's backend is left alone.
    from matplotlib.figure import Figure

    lrs, losses = learn.recorder.lrs[:-5], [float(x) for x in learn.recorder.losses[:-5]]
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(lrs, losses)
    if lrs:
        for colour, (name, lr) in zip(("C1", "C2"), suggestions.items(), strict=False):
            near = min(range(len(lrs)), key=lambda i: abs(lrs[i] - lr))
            ax.plot([lr], [losses[near]], "o", color=colour,
                    label=f"{name}: {lr:.2e}" + (" (used)" if name == used else ""))
        ax.legend(loc="best")
    ax.set(xscale="log", xlabel="learning rate", ylabel="loss (smoothed)",
           title=f"lr_find: {used} suggests {suggestions[used]:.2e}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def find_lr(data: str | Path, out: str | Path, config: TrainConfig) -> tuple[float, str]:
    """``python -m train lr-find``: what ``fit --lr auto`` would take with the same config, and
    the rule that chose it; writes ``out/lr_find.png``."""
    from .learner import build_learner

    out = Path(out)
    setup = build_learner(data, out, config)
    rule = suggestion_rule(setup.config.pretrained)
    return suggest_lr(setup.learn, out / "lr_find.png", rule), rule
