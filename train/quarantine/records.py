"""The journal's reader: its bytes in, checked records and one line per damaged record out.

The journal is written with ``ensure_ascii=False``, one fsynced record per line, each before
the move it announces (``journal.py``). So it is read as bytes and decoded line by line: one
bad line must not cost the others (a whole-file ``read_text`` dies on the first broken
character). Two kinds of bad line, told apart because they call for different things:

* **torn**: the line stops part-way (inside a UTF-8 character, a string or a number), which is
  what a crash while writing leaves. The journal line is written before the move, so the move
  it announced never started: nothing to undo, the line is noted and ignored.
* **damaged**: whole but not a record ``undo`` can trust (not UTF-8, not JSON, a key missing,
  a value of the wrong type, a path leading out of the data folder). It may describe a move
  that happened, so ``undo`` skips it and names it; the user puts that file back by hand.

A path in a record is checked here too: undo moves files to the paths the journal names, and a
hand-edited ``"src": "../../x"`` must not send a file out of the data folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

__all__ = ["JournalText", "read_journal"]

# What undo reads from each kind of record: key -> kind of value. (``time``, ``batch`` and
# ``why`` are for people; undo does not need them.)
REQUIRED = {
    "move": {"src": "path", "dst": "path", "sha256": "text"},
    "csv": {"csv": "path", "line": "count", "path": "text", "old": "text", "new": "text",
            "old_line": "text", "new_line": "text"},
    "undo": {"undoes": "count"},
}


@dataclass
class JournalText:
    """The records ``undo`` can trust, oldest first, and what was wrong with the other lines."""

    records: list[dict] = field(default_factory=list)
    torn: list[str] = field(default_factory=list)  # "JOURNAL line 7: ...": nothing had moved
    damaged: list[str] = field(default_factory=list)  # "JOURNAL line 4: ...": may have moved
    last_id: int = 0  # the highest id on any line that has one, damaged lines included


def read_journal(path: Path) -> JournalText:
    """Every line of the journal at ``path`` (none if it does not exist), checked."""
    out = JournalText()
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return out
    for n, line in enumerate(raw.split(b"\n"), 1):
        line = line.rstrip(b"\r")
        if not line.strip():
            continue  # a record torn before its first byte, or a blank line added by hand
        rec, problem, torn = _parse(line)
        if isinstance(rec, dict) and _is_count(rec.get("id")):
            out.last_id = max(out.last_id, rec["id"])
        if problem is None:
            assert isinstance(rec, dict)  # _wrong() finds a problem in anything but a dict
            out.records.append(rec)
        elif torn:
            out.torn.append(f"{path} line {n}: {problem}; a record cut off by a crash while it "
                            "was written, before its move started: ignored")
        else:
            out.damaged.append(f"{path} line {n}: {problem}")
    return out


def _parse(line: bytes) -> tuple[object, str | None, bool]:
    """(record, problem or None, whether the line is torn rather than damaged)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.end == len(line) and e.reason == "unexpected end of data":
            return None, f"ends inside a UTF-8 character (after {len(line)} bytes)", True
        return None, f"not UTF-8 at byte {e.start + 1} ({e.reason})", False
    try:
        rec = json.loads(text)
    except ValueError as e:
        if text.lstrip().startswith("{") and _cut_off(text, e):
            return None, f"ends part-way through a record (after {len(line)} bytes)", True
        return None, f"not a JSON record ({e})", False
    return rec, _wrong(rec), False


def _cut_off(text: str, e: ValueError) -> bool:
    """Whether the JSON error says the text stopped early rather than went wrong."""
    pos = getattr(e, "pos", -1)
    return getattr(e, "msg", "").startswith("Unterminated string") or pos >= len(text.rstrip())


def _wrong(rec: object) -> str | None:
    """What keeps ``rec`` from being a record undo can act on, or None."""
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not a record"
    op = rec.get("op")
    if not isinstance(op, str) or op not in REQUIRED:
        return f"op {op!r} is none of {', '.join(REQUIRED)}"
    if not _is_count(rec.get("id")):
        return f"{op} record: id {rec.get('id')!r} is not {KINDS['count'][1]}"
    for key, kind in REQUIRED[op].items():
        if key not in rec:
            return f"{op} record {rec['id']}: no {key!r}"
        fits, want = KINDS[kind]
        if not fits(rec[key]):
            return f"{op} record {rec['id']}: {key} {rec[key]!r} is not {want}"
    dirs = rec.get("made_dirs", [])
    if not (isinstance(dirs, list) and all(_inside(d) for d in dirs)):
        return f"{op} record {rec['id']}: made_dirs {dirs!r} is not a list of relative paths"
    return None


def _is_count(value: object) -> bool:
    """A whole number from 1 up (ids, CSV line numbers): JSON's true is not one."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _inside(rel: object) -> bool:
    """A relative POSIX path with no ``..`` and no NUL: it names something under the data folder."""
    if not isinstance(rel, str):
        return False
    p = PurePosixPath(rel)
    return bool(rel) and "\0" not in rel and not p.is_absolute() and ".." not in p.parts \
        and p.as_posix() != "."


KINDS = {  # kind -> (its check, how an error names it)
    "path": (_inside, "a relative path inside the data folder"),
    "text": (lambda value: isinstance(value, str), "a string"),
    "count": (_is_count, "a whole number from 1 up"),
}
