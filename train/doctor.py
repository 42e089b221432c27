"""The training doctor: the fast.ai course's rules for reading a training history.

Pure Python over the rows of ``history.csv`` (``stage, epoch, train_loss, valid_loss,
error_rate, accuracy, lr, seconds``, in training order), so it runs and is tested without torch.
``python -m train doctor RUN`` (and ``fit`` itself) writes ``RUN/doctor.md`` and
``RUN/doctor.json``.

The rules, each finding paired with what to change:

* ``lr_too_high`` (problem): a loss is NaN or infinite; or the validation loss is far (``FAR``
  times) above the training loss from the first epoch on, in every epoch (a first-epoch spike
  that recovers is normal from random weights: BatchNorm's running statistics are still
  settling); or the validation loss rises from the first epoch on and the error rate never
  improves on the first epoch's.
* ``underfitting`` (warning, "LR too low or too few epochs"): at the end the training loss is
  still above the validation loss while the error rate is still improving. When the run used
  augmentation (``train.json``), the advice adds ``--no-augment`` for short runs: the training
  loss is measured on augmented images, which are harder.
* ``overfitting`` (warning): the error rate improved and then got worse (by more than ``TOL``).
  **A training loss below the validation loss is NOT overfitting**: as the course says, a
  well-trained model almost always fits its training set better than data it has not seen; the
  only sign of overfitting is a validation metric that gets worse. The doctor says so in a
  ``train_below_valid`` note rather than raising an alarm.
* ``still_improving`` (info): nothing wrong, the error rate fell in the last epoch: more epochs
  may help.
* ``converged`` (ok): nothing wrong and the error rate has stopped improving.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["FAR", "TOL", "Finding", "Diagnosis", "diagnose", "read_history", "write_report"]

FAR = 3.0    # valid loss this many times the train loss in every epoch: the weights never settle
TOL = 0.005  # error-rate changes smaller than this (absolute) count as no change

# Most serious first: the verdict is the first code found in this order.
SEVERITY_ORDER = ("lr_too_high", "overfitting", "underfitting", "still_improving", "converged",
                  "train_below_valid")
HISTORY_COLUMNS = ("stage", "epoch", "train_loss", "valid_loss", "error_rate", "accuracy", "lr",
                   "seconds")


@dataclass(frozen=True)
class Finding:
    """One thing the history shows (``message``) and what to change about it (``advice``)."""

    code: str
    severity: str  # problem | warning | info | ok
    message: str
    advice: str


@dataclass(frozen=True)
class Diagnosis:
    verdict: str
    findings: tuple[Finding, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "findings": [asdict(f) for f in self.findings]}

    def to_markdown(self) -> str:
        lines = [f"# Training doctor: {self.verdict.replace('_', ' ')}", ""]
        for f in self.findings:
            lines += [f"## {f.code} ({f.severity})", "", f.message, "", f"**What to change:** {f.advice}", ""]
        return "\n".join(lines)


def diagnose(rows: Sequence[Mapping[str, Any]], *, augment: bool | None = None) -> Diagnosis:
    """Apply the rules above to a training history (one mapping per epoch, in order);
    ``augment`` is whether the run augmented its training batches (None: not known)."""
    if not rows:
        raise ValueError("the history is empty: no epoch finished")
    h = _History(rows)
    too_high = _lr_too_high(h)
    if too_high:  # the other rules read a broken run wrongly; fix this first
        return Diagnosis("lr_too_high", (too_high,))
    findings = [f for f in (_overfitting(h, augment), _underfitting(h, augment)) if f]
    if not findings:
        findings.append(_still_improving(h) or _converged(h))
    if h.train[-1] < h.valid[-1] and not any(f.code == "overfitting" for f in findings):
        findings.append(_train_below_valid(h))
    findings.sort(key=lambda f: SEVERITY_ORDER.index(f.code))
    return Diagnosis(findings[0].code, tuple(findings))


class _History:
    def __init__(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self.rows = rows
        self.train = [float(r["train_loss"]) for r in rows]
        self.valid = [float(r["valid_loss"]) for r in rows]
        self.error = [float(r["error_rate"]) for r in rows]
        lrs = [float(r["lr"]) for r in rows if r.get("lr") not in (None, "")]
        self.lr = max(lrs) if lrs else None
        self.epochs = sum(1 for r in rows if int(r.get("stage", 2)) == 2) or len(rows)

    def where(self, i: int) -> str:
        r = self.rows[i]
        return f"stage {int(r.get('stage', 1))} epoch {int(r.get('epoch', i))}"

    def lower_lr(self) -> str:
        return f"--lr {self.lr / 10:.1e}" if self.lr else "a 10x lower --lr"


def _lr_too_high(h: _History) -> Finding | None:
    advice = (f"lower the learning rate about 10x ({h.lower_lr()}), or run python -m train lr-find "
              "DATA and pick a value well before the loss shoots up (the valley)")
    bad = [i for i, vals in enumerate(zip(h.train, h.valid, strict=False)) if not all(map(math.isfinite, vals))]
    if bad:
        return Finding("lr_too_high", "problem",
                       f"the loss became NaN or infinite at {h.where(bad[0])}: training diverged.", advice)
    if all(v > FAR * t for t, v in zip(h.train, h.valid, strict=False)):
        return Finding("lr_too_high", "problem",
                       f"the valid loss is more than {FAR:g}x the train loss from the first epoch on "
                       f"({h.valid[0]:.3g} vs {h.train[0]:.3g}, last {h.valid[-1]:.3g} vs {h.train[-1]:.3g}): "
                       "the updates are too large for the weights to settle.", advice)
    rising = (len(h.rows) >= 2 and h.error[0] > 0 and h.valid[-1] > h.valid[0]
              and min(h.valid[1:]) >= h.valid[0] and min(h.error[1:]) >= h.error[0])
    if rising:
        return Finding("lr_too_high", "problem",
                       f"the valid loss rose from the first epoch ({h.valid[0]:.3g} -> {h.valid[-1]:.3g}) "
                       f"and the error rate never improved on the first epoch's ({h.error[0]:.3g}).", advice)
    return None


def _overfitting(h: _History, augment: bool | None) -> Finding | None:
    best = min(range(len(h.error)), key=h.error.__getitem__)
    if not (h.error[best] < h.error[0] and h.error[-1] > h.error[best] + TOL):
        return None
    best_epoch = int(h.rows[best].get("epoch", best)) + 1
    return Finding(
        "overfitting", "warning",
        f"the error rate improved to {h.error[best]:.4f} at {h.where(best)} and then got worse, to "
        f"{h.error[-1]:.4f} at the end: that, and only that, is overfitting.",
        f"retrain from the start with fewer epochs so the one-cycle schedule ends near the best epoch "
        f"(about --epochs {best_epoch}); more data or "
        + ("augmentation (--augment)" if augment is False else "more augmentation")
        + " also help. Do not just keep an "
        "earlier checkpoint: its learning rate had not annealed yet.")


def _underfitting(h: _History, augment: bool | None) -> Finding | None:
    improving = len(h.error) == 1 or h.error[-1] < h.error[-2] - TOL
    if not (h.train[-1] > h.valid[-1] and improving):
        return None
    return Finding(
        "underfitting", "warning",
        f"the train loss ({h.train[-1]:.3g}) is still above the valid loss ({h.valid[-1]:.3g}) and the "
        "error rate is still improving: the learning rate is too low or there were too few epochs.",
        f"train for more epochs (e.g. --epochs {2 * h.epochs}) or with a higher learning rate "
        "(python -m train lr-find DATA shows how high it can go)"
        + ("; augmentation was on, and for a short run --no-augment lets the network fit faster."
           if augment else "."))


def _still_improving(h: _History) -> Finding | None:
    if len(h.error) < 2 or not h.error[-1] < h.error[-2] - TOL:
        return None
    return Finding(
        "still_improving", "info",
        f"the error rate was still falling in the last epoch ({h.error[-2]:.4f} -> {h.error[-1]:.4f}).",
        f"more epochs may help (e.g. --epochs {h.epochs + max(1, h.epochs // 2)}); retrain from the start.")


def _converged(h: _History) -> Finding:
    return Finding(
        "converged", "ok",
        f"the error rate has stopped improving (last {h.error[-1]:.4f}, best {min(h.error):.4f}) "
        "without getting worse.",
        "nothing to fix in the schedule. For a lower error: clean the data (python -m train "
        "interpret RUN, then python -m train clean RUN), add data, use a larger --size or --arch.")


def _train_below_valid(h: _History) -> Finding:
    return Finding(
        "train_below_valid", "info",
        f"the train loss ({h.train[-1]:.3g}) is below the valid loss ({h.valid[-1]:.3g}). That alone "
        "is NOT overfitting: a model fits the data it trains on better than data it has not seen. "
        "Only an error rate that gets worse is.",
        "nothing.")


def read_history(path: str | Path) -> list[dict[str, float]]:
    """``history.csv`` as a list of rows of floats, with a one-line error for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (python -m train fit writes it)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = set(HISTORY_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; "
                             f"expected {','.join(HISTORY_COLUMNS)}")
        try:
            return [{k: float(r[k]) if r[k] != "" else math.nan for k in HISTORY_COLUMNS} for r in reader]
        except ValueError as e:
            raise ValueError(f"{path}: not a number in line {reader.line_num} ({e})") from None


def _augmented(run: Path) -> bool | None:
    """``options.augment`` of ``RUN/train.json``; None without one (a bare history.csv) or from
    a run before the option. A damaged train.json is a ``RunFolderError``, as everywhere."""
    # here, not on top: ``edge_infer``'s package import loads onnxruntime, and doctor stays quick
    from export.run_folder import TRAIN_JSON, TrainInfo

    if not (run / TRAIN_JSON).is_file():
        return None
    return TrainInfo.read(run / TRAIN_JSON).options.augment


def write_report(run: str | Path, rows: Sequence[Mapping[str, Any]] | None = None) -> Diagnosis:
    """Diagnose ``RUN/history.csv`` (or ``rows``) and write ``RUN/doctor.md`` and ``RUN/doctor.json``.

    Whether the run augmented comes from ``RUN/train.json`` when it is there and says."""
    run = Path(run)
    diagnosis = diagnose(read_history(run / "history.csv") if rows is None else rows,
                         augment=_augmented(run))
    (run / "doctor.json").write_text(json.dumps(diagnosis.to_dict(), indent=2) + "\n")
    (run / "doctor.md").write_text(diagnosis.to_markdown())
    return diagnosis
