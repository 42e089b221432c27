"""Moves that can be undone: a write-ahead journal, ``DATA/.quarantine/journal.jsonl``.

Every command that moves a user's file goes through it (``verify`` and ``download`` quarantine
the images that do not decode, ``clean`` deletes and relabels), and none deletes or overwrites a
byte of the user's data: quarantining moves a file to ``DATA/.quarantine/<its relative path>``,
a relabel moves it into the other class folder (or rewrites its one line of ``labels.csv``), and
a name already taken gets a suffix (``free_name``, the one clash rule). Each action is appended
and fsynced *before* the file is touched, so after a crash the journal lists everything that
may have moved. ``undo`` puts back everything pending, newest first, and appends an ``undo``
line for each, so a second ``undo`` does nothing. A torn or damaged line costs only itself
(``records.py``).

It lives in the data folder, not a run folder: it describes the data folder's files, which
outlive any one run (``verify`` runs before there is a run at all), undo needs nothing else, and
``.quarantine`` is hidden, so ``train.data`` never trains on it. ``log.jsonl``, written by an
older ``verify``, is not read (no checksums: undo could not tell the file is still the one
moved); ``undo`` notes it.

One JSON object per line, paths relative to the data folder:

* ``{"op": "move", "id": 1, "time": ..., "batch": ..., "why": "delete" | "relabel" |
  "verify" | "download", "src": "a/x.png", "dst": ".quarantine/a/x.png", "sha256": ...,
  "bytes": 812, "made_dirs": [...]}`` (``made_dirs``: folders the move created, removed again
  by undo when empty; ``verify`` and ``download`` add ``"reason"``: why it did not decode);
* ``{"op": "csv", "id": 2, ..., "csv": "labels.csv", "line": 7, "path": "img/x.png",
  "old": "a", "new": "b", "old_line": "img/x.png,a\\n", "new_line": "img/x.png,b\\n"}``
  (the old row verbatim, so undo restores the CSV byte for byte);
* ``{"op": "undo", "id": 3, ..., "undoes": 1}``.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from os.path import lexists
from pathlib import Path, PurePosixPath
from typing import IO, Iterator

from edge_infer.files import sha256_file

from ..errors import CleanError
from .records import JournalText, read_journal

__all__ = ["QUARANTINE", "JOURNAL_NAME", "Journal", "UndoReport", "new_batch", "free_name"]

QUARANTINE = ".quarantine"
JOURNAL_NAME = "journal.jsonl"
OLD_LOG = "log.jsonl"  # verify's log before the journal: left alone, noted by undo


def new_batch() -> str:
    """A label shared by the records of one command run (``20260101T120000-1a2b3c4d``)."""
    return f"{datetime.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


@dataclass
class UndoReport:
    restored: list[str] = field(default_factory=list)  # "b/x.png -> a/x.png"
    skipped: list[str] = field(default_factory=list)  # one line each: what and why
    notes: list[str] = field(default_factory=list)  # torn lines, an old log.jsonl: nothing to do


class Journal:
    """The journal of one data folder; ``batch()`` holds its lock while moving files."""

    def __init__(self, data: Path):
        self.data = Path(data).resolve()
        self.path = self.data / QUARANTINE / JOURNAL_NAME
        self._fh: IO[bytes] | None = None
        self._last_id = 0

    # -- reading -----------------------------------------------------------------------------
    def read(self) -> JournalText:
        """Every record undo can trust, and one line for each it cannot (``records.py``)."""
        return read_journal(self.path)

    def records(self) -> list[dict]:
        """Every record undo can trust, oldest first; torn and damaged lines are left out."""
        return self.read().records

    def pending(self, records: list[dict] | None = None) -> list[dict]:
        """The moves and CSV edits not undone yet, oldest first."""
        recs = self.records() if records is None else records
        undone = {r["undoes"] for r in recs if r["op"] == "undo"}
        return [r for r in recs if r["op"] in ("move", "csv") and r["id"] not in undone]

    def moved_paths(self) -> dict[str, str]:
        """Original path -> where the file is now, following every pending move in order."""
        origin: dict[str, str] = {}  # current path -> original path
        for r in self.pending():
            if r["op"] == "move":
                origin[r["dst"]] = origin.pop(r["src"], r["src"])
        return {orig: now for now, orig in origin.items()}

    # -- writing -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def batch(self) -> Iterator["Journal"]:
        """Open the journal for appending under an exclusive lock (one cleaner at a time)."""
        if not (self.data / QUARANTINE).exists():
            (self.data / QUARANTINE).mkdir(exist_ok=True)
            _fsync_dir(self.data)
        with open(self.path, "a+b") as fh:  # bytes: a torn UTF-8 character must not stop us
            fcntl.flock(fh, fcntl.LOCK_EX)
            if _ends_mid_line(fh):
                fh.write(b"\n")  # close a torn line so the next record starts on its own
            self._last_id = self.read().last_id
            self._fh = fh
            try:
                yield self
            finally:
                self._fh = None

    def append(self, record: dict) -> dict:
        """Write one record and fsync it; returns it with its ``id`` and ``time``."""
        if self._fh is None:
            raise RuntimeError("Journal.append outside `with journal.batch():`")
        self._last_id += 1
        record = {"op": record["op"], "id": self._last_id,
                  "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **record}
        self._fh.write(_record_line(record))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return record

    def move(self, src: str, dst: str, *, why: str, batch: str, reason: str | None = None) -> dict:
        """Move ``DATA/src`` to ``DATA/dst`` (or ``dst`` with a suffix if that name is taken),
        journalled first."""
        source = self.data / src
        dst = free_name(self.data, dst)
        target = self.data / dst
        made = _missing_dirs(self.data, target.parent)
        extra = {} if reason is None else {"reason": reason}
        record = self.append({"op": "move", "batch": batch, "why": why, **extra, "src": src,
                              "dst": dst, "sha256": sha256_file(source),
                              "bytes": source.stat().st_size, "made_dirs": made})
        target.parent.mkdir(parents=True, exist_ok=True)
        move_no_clobber(source, target)
        return record

    def quarantine(self, src: str, *, why: str, batch: str, reason: str | None = None) -> dict:
        """Move ``DATA/src`` to ``DATA/.quarantine/src`` (suffixed if taken), journalled first:
        what verify, download and clean's "delete" all do to a file."""
        return self.move(src, f"{QUARANTINE}/{src}", why=why, batch=batch, reason=reason)

    def relabel_csv(self, path: str, label: str, *, batch: str, csv_name: str = "labels.csv") -> dict:
        """Rewrite the label of ``path`` in ``DATA/labels.csv``; only that line changes."""
        csv_path = self.data / csv_name
        lines = _read_lines(csv_path)
        i, old, old_line, new_line = _relabelled_line(lines, path, label, csv_name)
        record = self.append({"op": "csv", "batch": batch, "csv": csv_name, "line": i + 1,
                              "path": path, "old": old, "new": label,
                              "old_line": old_line, "new_line": new_line})
        lines[i] = new_line
        atomic_write(csv_path, "".join(lines))
        return record

    # -- undo --------------------------------------------------------------------------------
    def undo(self) -> UndoReport:
        """Put back everything pending, newest first; each success is journalled as undone.

        A record that cannot be put back safely (its file changed or is gone, or a different
        file took its old name) is skipped and stays pending, so undo can run again once the
        user has sorted it out. A journal line undo cannot trust is skipped and named too
        (``records.py``); a torn one, which never moved anything, is only noted.
        """
        report = UndoReport()
        old_log = self.data / QUARANTINE / OLD_LOG
        if old_log.is_file():
            report.notes.append(f"{old_log}: written by an older train verify, not read by undo; "
                                "move the files it lists back by hand (moved_to -> path) if wanted")
        if not self.path.is_file():
            return report
        with self.batch():
            text = self.read()
            report.notes.extend(text.torn)
            report.skipped.extend(f"{line}; skipped: if it moved a file, put that file back by "
                                  "hand, then delete the line" for line in text.damaged)
            for rec in reversed(self.pending(text.records)):
                try:
                    line = self._undo_move(rec) if rec["op"] == "move" else self._undo_csv(rec)
                except CleanError as e:
                    report.skipped.append(str(e))
                except OSError as e:  # e.g. no permission: the others may still go back
                    where = rec["dst"] if rec["op"] == "move" else rec["csv"]
                    report.skipped.append(f"{where}: {e.strerror or e}; not restored")
                else:
                    self.append({"op": "undo", "undoes": rec["id"]})
                    report.restored.append(line)
        return report

    def _undo_move(self, rec: dict) -> str:
        src, dst = self.data / rec["src"], self.data / rec["dst"]
        done = f"{rec['dst']} -> {rec['src']}"
        if lexists(src) and lexists(dst) and os.path.samefile(src, dst):
            dst.unlink()  # a crash between link and unlink: both names are the same file
        elif lexists(dst) and not lexists(src):
            if sha256_file(dst) != rec["sha256"]:
                raise CleanError(f"{rec['dst']}: changed since it was moved there (sha256 differs); "
                                 f"left in place, {rec['src']} not restored")
            src.parent.mkdir(parents=True, exist_ok=True)
            move_no_clobber(dst, src)
        elif lexists(src) and not lexists(dst):
            done = f"{rec['src']} (never moved)"  # a crash after the journal line, before the move
        elif lexists(src):
            raise CleanError(f"{rec['src']}: a different file has that name now; "
                             f"{rec['dst']} left in place")
        else:
            raise CleanError(f"{rec['dst']}: missing; cannot restore {rec['src']}")
        for d in reversed(rec.get("made_dirs", [])):
            with contextlib.suppress(OSError):
                (self.data / d).rmdir()  # only if empty: something else may live there now
        return done

    def _undo_csv(self, rec: dict) -> str:
        csv_path = self.data / rec["csv"]
        lines = _read_lines(csv_path)
        i = rec["line"] - 1
        if i < len(lines) and lines[i] == rec["old_line"] and rec["old_line"] != rec["new_line"]:
            return f"{rec['csv']} line {rec['line']} (never changed)"
        hits = [j for j, line in enumerate(lines) if line == rec["new_line"]]
        if i < len(lines) and lines[i] == rec["new_line"]:
            hits = [i]
        if len(hits) != 1:
            raise CleanError(f"{rec['csv']}: the row for {rec['path']} changed since it was "
                             f"relabelled {rec['old']} -> {rec['new']}; not restored")
        lines[hits[0]] = rec["old_line"]
        atomic_write(csv_path, "".join(lines))
        return f"{rec['csv']}: {rec['path']} {rec['new']} -> {rec['old']}"


def _ends_mid_line(fh: IO[bytes]) -> bool:
    """Whether the file's last byte is not a newline (a record torn by a crash)."""
    if fh.seek(0, os.SEEK_END) == 0:
        return False
    fh.seek(-1, os.SEEK_END)
    return fh.read(1) != b"\n"


def _record_line(record: dict) -> bytes:
    """One journal line. Readable UTF-8 where it can be; a file name that is not UTF-8 (held
    by Python as surrogate escapes) is written as ``\\udcxx`` escapes, which read back to it."""
    try:
        return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(record) + "\n").encode("ascii")


# -- files ---------------------------------------------------------------------------------------
def free_name(data: Path, rel: str) -> str:
    """``rel`` if nothing has that name in ``data``, else ``stem-1.ext``, ``stem-2.ext``..."""
    p = PurePosixPath(rel)
    candidate, n = p, 0
    while lexists(data / candidate):
        n += 1
        candidate = p.with_name(f"{p.stem}-{n}{p.suffix}")
    return candidate.as_posix()


def move_no_clobber(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, refusing (FileExistsError) rather than overwriting.

    ``os.rename`` replaces an existing target silently; a hard link does not, so the move is a
    link then an unlink. Filesystems without hard links fall back to check-then-rename.
    """
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:
        if lexists(dst):
            raise FileExistsError(f"{dst}: already exists") from None
        os.rename(src, dst)
    else:
        os.unlink(src)
    _fsync_dir(dst.parent)
    if src.parent != dst.parent:
        _fsync_dir(src.parent)


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8, newlines as given) via a fsynced temporary file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _missing_dirs(data: Path, folder: Path) -> list[str]:
    """The folders ``mkdir(parents=True)`` would create, outermost first, relative to data."""
    missing = []
    while not lexists(folder) and folder != data:
        missing.append(folder.relative_to(data).as_posix())
        folder = folder.parent
    return missing[::-1]


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- labels.csv ----------------------------------------------------------------------------------
def _read_lines(path: Path) -> list[str]:
    """The file's lines with their own endings (\\n, \\r\\n or \\r), so joining gives it back."""
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CleanError(f"{path}: cannot read ({e})") from None
    return io.StringIO(text, newline="").readlines()


def _relabelled_line(lines: list[str], path: str, label: str, name: str) -> tuple[int, str, str, str]:
    if not lines:
        raise CleanError(f"{name}: empty")
    header = next(csv.reader([lines[0].lstrip("\ufeff")]))
    if "path" not in header or "label" not in header:
        raise CleanError(f"{name} line 1: needs the columns path and label")
    pcol, lcol = header.index("path"), header.index("label")
    rows = {i: next(csv.reader([line]), []) for i, line in enumerate(lines) if i}
    hits = [i for i, row in rows.items() if len(row) > max(pcol, lcol) and row[pcol] == path]
    if len(hits) != 1:
        raise CleanError(f"{name}: {path} is on {len(hits)} rows, not one; relabel it by hand")
    i = hits[0]
    row = rows[i]
    old = row[lcol]
    row[lcol] = label
    ending = lines[i][len(lines[i].rstrip("\r\n")):]
    buf = io.StringIO()
    csv.writer(buf, lineterminator=ending).writerow(row)
    return i, old, lines[i], buf.getvalue()
