"""A damaged journal costs only its damaged lines: real journals, torn and edited, then `--undo`.

The journal (``DATA/.quarantine/journal.jsonl``) is written with ``ensure_ascii=False``, so a
crash can cut a record inside a multi-byte character. Each test writes a real journal through
``apply_decisions`` on real files, damages its bytes the way a crash or a hand edit would, and
runs the command a user would run (``clean --undo`` / ``--export`` through click).
"""

from __future__ import annotations

import csv
import json
import os
import sys

import pytest
from click.testing import CliRunner
from test_clean_fixtures import make_run, snapshot

from export.run_folder import RunFolder
from train.clean import Decision, Journal, apply_decisions
from train.clean.cli import clean
from train.quarantine.records import read_journal

pytestmark = pytest.mark.torch  # train.data (fastai) says what an image of the data set is

ACCENTED = "cat/chat été.png"  # é is two bytes in UTF-8: a tear can fall between them


@pytest.fixture
def cleaned(tmp_path):
    """A run whose data has an accented name; that image relabelled and another deleted.
    Returns (run folder, snapshot before the clean, journal)."""
    r = make_run(tmp_path, "folders")
    (r.data / ACCENTED).write_bytes((r.data / "cat" / "cat0.png").read_bytes())
    before = snapshot(r.data)
    apply_decisions(RunFolder.load(r.folder), [Decision(ACCENTED, "relabel", "dog"),
                                         Decision("bird/bird1.png", "delete")])
    return r, before, Journal(r.data)


def invoke(*args) -> object:
    return CliRunner().invoke(clean, [str(a) for a in args])


def lines(journal: Journal) -> list[bytes]:
    return journal.path.read_bytes().splitlines(keepends=True)


def torn_inside_a_character(line: bytes) -> bytes:
    """The line cut after the first byte of its first multi-byte character."""
    at = next(i for i, b in enumerate(line) if b >= 0xC0)
    return line[:at + 1]


def test_a_record_torn_inside_a_character_is_noted_and_everything_else_undone(cleaned):
    r, before, journal = cleaned
    relabel = lines(journal)[0]
    assert "été".encode() in relabel  # written with ensure_ascii=False, as the docstring says
    # a third record, torn mid-character by a crash: its move never started
    with journal.path.open("ab") as f:
        f.write(torn_inside_a_character(relabel.replace(b'"id": 1', b'"id": 3')))

    result = invoke(r.folder, "--undo")
    assert result.exit_code == 0, result.output
    assert "undo: 2 restored" in result.output
    assert f"note: {journal.path} line 3: ends inside a UTF-8 character" in result.output
    assert "Traceback" not in result.output and "UnicodeDecodeError" not in result.output
    assert snapshot(r.data) == before
    assert invoke(r.folder, "--undo").exit_code == 0  # nothing left, and the torn line is no failure


def test_a_torn_last_line_is_closed_before_the_next_clean_writes(cleaned):
    r, before, journal = cleaned
    with journal.path.open("ab") as f:
        f.write(torn_inside_a_character(lines(journal)[0]))  # no newline: the crash case
    apply_decisions(RunFolder.load(r.folder), [Decision("dog/dog3.png", "delete")])
    text = read_journal(journal.path)
    assert [rec["id"] for rec in text.records] == [1, 2, 3]
    assert len(text.torn) == 1 and text.damaged == []
    assert text.records[-1]["src"] == "dog/dog3.png"  # a record of its own, not glued to the tear
    assert not journal.undo().skipped
    assert snapshot(r.data) == before


def test_a_journal_cut_part_way_through_a_record_still_exports(cleaned, tmp_path):
    r, _, journal = cleaned
    whole = journal.path.read_bytes()
    journal.path.write_bytes(whole[:-25])  # the last record loses its end (ASCII this time)
    out = tmp_path / "ranked.csv"
    result = invoke(r.folder, "--export", out)
    assert result.exit_code == 0, result.output
    paths = [row["path"] for row in csv.DictReader(out.open())]
    assert "dog/chat été.png" in paths  # the first record is still followed
    assert "bird/bird1.png" not in paths  # its line is torn, but the file is in .quarantine


# record 1 (the relabel of ACCENTED) damaged the way a hand edit or a disk error would
DAMAGE = {
    "missing key": (lambda rec: rec.pop("sha256"), "move record 1: no 'sha256'"),
    "wrong type": (lambda rec: rec.update(id="1"), "move record: id '1' is not a whole number"),
    "bool id": (lambda rec: rec.update(id=True), "move record: id True is not a whole number"),
    "path leading out": (lambda rec: rec.update(src="../run/train.json"),
                         "move record 1: src '../run/train.json' is not a relative path inside"),
    "absolute path": (lambda rec: rec.update(dst="/etc/passwd"), "move record 1: dst '/etc/passwd' is not a relative"),
    "made_dirs not a list": (lambda rec: rec.update(made_dirs="dog"), "move record 1: made_dirs 'dog' is not a list"),
    "unknown op": (lambda rec: rec.update(op="copy"), "op 'copy' is none of move, csv, undo"),
    "op not a string": (lambda rec: rec.update(op=["move"]), "op ['move'] is none of move, csv, undo"),
    "line zero": (lambda rec: rec.update(op="csv", line=0, csv="labels.csv", path="x", old="a",
                                         new="b", old_line="x,a", new_line="x,b"),
                  "csv record 1: line 0 is not a whole number from 1 up"),
}


@pytest.mark.parametrize("damage,message", list(DAMAGE.values()), ids=list(DAMAGE))
def test_a_damaged_record_is_skipped_and_named_and_the_rest_undone(cleaned, damage, message):
    r, before, journal = cleaned
    first, *rest = lines(journal)
    rec = json.loads(first)
    damage(rec)
    journal.path.write_bytes(json.dumps(rec, ensure_ascii=False).encode() + b"\n" + b"".join(rest))

    result = invoke(r.folder, "--undo")
    assert result.exit_code == 1
    assert "undo: 1 restored" in result.output  # the delete, from line 2, went back
    assert f"not restored: {journal.path} line 1: {message}" in result.output
    assert "put that file back by hand" in result.output and "Traceback" not in result.output
    assert (r.data / "bird" / "bird1.png").is_file()
    assert (r.data / "dog" / "chat été.png").is_file()  # the damaged move's file: left as it is
    after = snapshot(r.data)
    assert after == {**{k: v for k, v in before.items() if k != ACCENTED},
                     "dog/chat été.png": before[ACCENTED]}


@pytest.mark.parametrize("line,message", [
    (b'{"op": "move", "id": 9, "src": "a\xff.png"}', "not UTF-8 at byte 34 (invalid start byte)"),
    (b"<<<<<<< HEAD", "not a JSON record"),
    (b'["move", 9]', "a JSON list, not a record"),
    (b'{"op": "move", "id": 9} trailing', "not a JSON record (Extra data"),
], ids=["bad utf-8 mid-line", "not json", "json list", "extra data"])
def test_a_line_that_is_not_a_record_is_named_with_its_line_number(cleaned, line, message):
    r, before, journal = cleaned
    first, second = lines(journal)
    journal.path.write_bytes(first + line + b"\n" + second)
    text = read_journal(journal.path)
    assert [rec["id"] for rec in text.records] == [1, 2] and text.torn == []
    assert len(text.damaged) == 1 and text.damaged[0].startswith(f"{journal.path} line 2: {message}")
    result = invoke(r.folder, "--undo")
    assert result.exit_code == 1 and "undo: 2 restored" in result.output
    assert snapshot(r.data) == before


def test_the_ranking_warns_about_a_damaged_journal_and_still_exports(cleaned, tmp_path):
    r, _, journal = cleaned
    journal.path.write_bytes(b"{ not json\n" + journal.path.read_bytes())
    result = CliRunner().invoke(clean, [str(r.folder), "--export", str(tmp_path / "x.csv")])
    assert result.exit_code == 0, result.output
    assert f"warning: {journal.path} line 1: not a JSON record" in result.output


def test_ids_continue_after_a_damaged_line_so_undo_records_stay_unambiguous(cleaned):
    r, _, journal = cleaned
    with journal.path.open("ab") as f:
        f.write(b'{"op": "move", "id": 40, "src": "x.png"}\n')  # damaged: no dst, but id 40 is taken
    apply_decisions(RunFolder.load(r.folder), [Decision("dog/dog3.png", "delete")])
    assert journal.records()[-1]["id"] == 41


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses file names that are not UTF-8")
def test_a_file_name_that_is_not_utf8_is_journalled_and_put_back(tmp_path):
    data = tmp_path / "data"
    (data / "cat").mkdir(parents=True)
    name = os.fsdecode(b"cat/caf\xe9.png")  # Latin-1 bytes: a surrogate escape in Python
    (data / name).write_bytes(b"not really a png")
    journal = Journal(data)
    with journal.batch():
        journal.move(name, f".quarantine/{name}", why="delete", batch="b")
    assert b"\\udce9" in journal.path.read_bytes()  # escaped, so the line is still UTF-8
    assert journal.undo().restored == [f".quarantine/{name} -> {name}"]
    assert (data / name).read_bytes() == b"not really a png"
