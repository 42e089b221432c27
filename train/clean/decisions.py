"""Decisions (keep / relabel / delete) from the page or a CSV, checked, then carried out.

Every decision is checked before the first file moves, so a bad row changes nothing. Carrying
one out is a journalled move (``train/quarantine/journal.py``):

* delete: ``DATA/<path>`` -> ``DATA/.quarantine/<path>``;
* relabel, folder layouts: the class folder changes, the split folder stays
  (``train/cat/x.jpg`` -> ``train/dog/x.jpg``, ``cat/x.jpg`` -> ``dog/x.jpg``);
* relabel, ``labels.csv`` layout: the file stays, its row's ``label`` is rewritten.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from export.run_folder import RunFolder

from ..quarantine import QUARANTINE, Journal, new_batch
from .ranking import CleanError, Item, current_items, data_path

__all__ = ["ACTIONS", "Decision", "ApplyReport", "read_decisions_csv", "check", "apply_decisions",
           "export_ranking"]

ACTIONS = ("keep", "relabel", "delete")
EXPORT_COLUMNS = ["path", "label", "predicted", "loss", "probability", "split", "action"]


@dataclass(frozen=True)
class Decision:
    path: str
    action: str
    label: str | None = None
    where: str = ""  # "decisions.csv line 4": how errors name it (else its path)


@dataclass
class ApplyReport:
    relabelled: list[str] = field(default_factory=list)  # "a/x.png -> b/x.png"
    deleted: list[str] = field(default_factory=list)  # "a/y.png -> .quarantine/a/y.png"
    journal: Path | None = None

    def summary(self) -> str:
        return (f"{len(self.relabelled)} relabelled, {len(self.deleted)} moved to {QUARANTINE}/; "
                f"journal: {self.journal}")


def read_decisions_csv(path: Path) -> list[Decision]:
    """Rows ``path,action,label`` (other columns ignored); each remembers its line number."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        try:
            missing = {"path", "action"} - set(reader.fieldnames or ())
            if missing:
                raise CleanError(f"{path.name} line 1: missing column(s) "
                                 f"{', '.join(sorted(missing))}; expected path,action,label")
            return [Decision(path=row.get("path") or "",
                             action=(row.get("action") or "").strip().lower(),
                             label=(row.get("label") or "").strip() or None,
                             where=f"{path.name} line {reader.line_num}")
                    for row in reader]
        except (csv.Error, UnicodeDecodeError) as e:
            raise CleanError(f"{path.name} line {reader.line_num}: not readable as CSV ({e})") from None


def check(run: RunFolder, decisions: list[Decision], items: dict[str, Item]) -> list[Decision]:
    """The decisions that change something, or CleanError naming the first bad one."""
    errors: list[str] = []
    todo: list[Decision] = []
    seen: dict[str, str] = {}
    for d in decisions:
        try:
            if _check_one(run, d, items, seen):
                todo.append(d)
        except CleanError as e:
            errors.append(f"{d.where or d.path}: {e}")
    if errors:
        more = f" (and {len(errors) - 1} more bad rows)" if len(errors) > 1 else ""
        raise CleanError(errors[0] + more)
    return todo


def _check_one(run: RunFolder, d: Decision, items: dict[str, Item], seen: dict[str, str]) -> bool:
    if d.action not in ACTIONS:
        raise CleanError(f"unknown action {d.action!r}; expected one of: {', '.join(ACTIONS)}")
    data_path(run.data, d.path)
    if d.path not in items:
        raise CleanError(f"{d.path} is not an image of the data set now (a typo, or moved already?)")
    if d.path in seen:
        raise CleanError(f"{d.path} already has a decision ({seen[d.path]})")
    seen[d.path] = d.where or d.action
    if d.action == "relabel":
        if not d.label:
            raise CleanError(f"relabel needs a label; expected one of: {', '.join(run.labels)}")
        if d.label not in run.labels:
            raise CleanError(f"unknown label {d.label!r}; expected one of: {', '.join(run.labels)}")
        return d.label != items[d.path].label
    return d.action == "delete"


def apply_decisions(run: RunFolder, decisions: list[Decision]) -> ApplyReport:
    """Check every decision, then carry them out one journalled move at a time."""
    items, layout = current_items(run)
    todo = check(run, decisions, items)
    journal = Journal(run.data)
    report = ApplyReport(journal=journal.path)
    if not todo:
        return report
    batch = new_batch()
    with journal.batch():
        for n, d in enumerate(todo):
            try:
                _carry_out(run, d, items[d.path], layout, journal, batch, report)
            except OSError as e:
                where = f" ({e.filename})" if e.filename else ""
                raise CleanError(f"{d.path}: {e.strerror or e}{where}; {n} change(s) before it "
                                 "were made and journalled, --undo puts them back") from e
    return report


def _carry_out(run: RunFolder, d: Decision, item: Item, layout: str, journal: Journal, batch: str,
               report: ApplyReport) -> None:
    if d.action == "delete":
        rec = journal.quarantine(d.path, why="delete", batch=batch)
        report.deleted.append(f"{rec['src']} -> {rec['dst']}")
        return
    assert d.label is not None  # check() lets no relabel without a label through
    if layout == "csv":
        journal.relabel_csv(d.path, d.label, batch=batch)
        report.relabelled.append(f"{d.path}: {item.label} -> {d.label} (labels.csv)")
    else:
        rec = journal.move(d.path, relabelled_path(run, d.path, d.label), why="relabel", batch=batch)
        report.relabelled.append(f"{rec['src']} -> {rec['dst']}")


def relabelled_path(run: RunFolder, path: str, label: str) -> str:
    """The same file in the other class folder: the parent folder's name is the label."""
    p = PurePosixPath(path)
    new = (p.parent.parent / label / p.name).as_posix()
    data_path(run.data, new)  # a label such as '..' must not lead anywhere
    return new


def export_ranking(items: list[Item], out: Path) -> None:
    """The ranked list as CSV; set ``action`` (and ``label`` for relabel) and pass it to --apply."""
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=EXPORT_COLUMNS)
        w.writeheader()
        for it in items:
            w.writerow({"path": it.path, "label": it.label, "predicted": it.predicted or "",
                        "loss": "" if it.loss is None else f"{it.loss:.6g}",
                        "probability": "" if it.probability is None else f"{it.probability:.6g}",
                        "split": it.split or "", "action": "keep"})
