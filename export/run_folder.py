"""The run folder contract: what ``python -m train fit`` writes and every later stage reads.

``train.json`` is a ``TrainInfo``, ``split.csv`` a ``SplitTable``; ``RunFolder.load`` reads and
checks both once, so every reader (export, ``train interpret``/``clean``/``doctor``, the
benchmarks) gets the same typed view, and a damaged folder is one ``RunFolderError`` line naming
the file. ``docs/run-folder.md`` is the prose version (a test parses its example).

It lives in ``export``, not ``train``, because imports go train -> export -> edge_infer: the
reader sits below the writer, as ``edge_infer.metadata`` sits below ``export``. At import it
needs only the standard library and ``edge_infer`` (numpy, onnxruntime; pandas only in
``SplitTable.frame``), so ``clean`` and the benchmarks read a run without torch or fastai.

``schema`` follows ``edge_infer.metadata.ModelInfo``: a newer one is refused with the fix; a
``train.json`` without the key (written before it existed) is schema 1.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from edge_infer.errors import EdgeInferError
from edge_infer.labelled import LAYOUTS
from edge_infer.metadata import Preprocess

from .train_config import TrainConfig, is_a

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SCHEMA_VERSION", "TRAIN_JSON", "SPLIT_CSV", "LEARNER", "LAYOUTS", "SPLITS", "SPLIT_COLUMNS",
           "RunFolderError", "TrainInfo", "SplitRow", "SplitTable", "RunFolder"]

SCHEMA_VERSION = 1
TRAIN_JSON, SPLIT_CSV, LEARNER = "train.json", "split.csv", "learner.pkl"
SPLITS = ("train", "valid")
SPLIT_COLUMNS = ("path", "label", "split")
FIX = "python -m train fit --out RUN writes one; see docs/run-folder.md"


class RunFolderError(EdgeInferError, ValueError):
    """A run folder that is missing, incomplete or damaged: one line naming the file."""


@dataclass(frozen=True)
class TrainInfo:
    """``train.json``: the resolved options and the facts of one training run."""

    data: Path                                   # the data folder, absolute
    layout: str                                  # LAYOUTS
    labels: tuple[str, ...]                      # learn.dls.vocab, in order
    preprocess: Preprocess
    options: TrainConfig                         # the resolved options
    device: str                                  # "cpu", "cuda", ...
    mixed_precision: bool
    counts: Mapping[str, Mapping[str, int]]      # split -> label -> images
    metrics: Mapping[str, float]                 # the last epoch's valid_loss, error_rate, accuracy
    history: tuple[Mapping[str, float], ...]     # history.csv's rows
    versions: Mapping[str, str]                  # library -> version that trained it
    seconds: float                               # the whole fit
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:  # the checks from_json makes, for a TrainInfo built in code
        _layout(self.layout)
        _labels(list(self.labels))

    def to_dict(self) -> dict[str, Any]:
        """train.json's keys: ``schema``, then every field, as JSON values."""
        return {"schema": self.schema, **{f.name: _plain(getattr(self, f.name)) for f in fields(self)}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def from_json(cls, text: str, *, source: str = TRAIN_JSON) -> "TrainInfo":
        """Parse and validate; every problem is a ``RunFolderError`` naming ``source``."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise RunFolderError(f"{source}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise RunFolderError(f"{source}: not a JSON object; {FIX}")
        schema = d.get("schema", 1)  # written before the key existed: schema 1
        if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
            raise RunFolderError(f"{source}: unknown run folder schema {schema!r}")
        if schema > SCHEMA_VERSION:
            raise RunFolderError(f"{source} uses run folder schema {schema}, this code reads schema "
                                 f"{SCHEMA_VERSION}: update this repository, or train again with it")
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in d]
        if missing:
            raise RunFolderError(f"{source}: missing key(s) {missing}; see docs/run-folder.md")
        values = {key: _parse(source, key, d[key], parse) for key, parse in _PARSERS.items()}
        options = _parse(source, "options", d["options"], lambda v: TrainConfig.from_dict(v, values["preprocess"]))
        return cls(schema=schema, options=options, **values)

    @classmethod
    def read(cls, path: str | Path) -> "TrainInfo":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise RunFolderError(f"{path}: not valid JSON (not UTF-8: {e.reason})") from None
        except OSError as e:
            raise RunFolderError(f"{path}: cannot read it ({e.strerror or e})") from None
        return cls.from_json(text, source=str(path))


def _plain(v: Any) -> Any:
    """A field as JSON: its own ``to_dict``, a path as text, mappings as dicts, tuples as lists."""
    if hasattr(v, "to_dict"):
        return v.to_dict()
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return str(v) if isinstance(v, Path) else v


def _of(name: str, *kinds: type) -> Callable[[Any], Any]:
    """A parser that takes a value of one of ``kinds`` as it is (``is_a``: a bool is no number)."""
    def parse(v: Any) -> Any:
        if not is_a(v, kinds):
            raise TypeError(f"{name} must be {' or '.join(k.__name__ for k in kinds)}, got {v!r:.60}")
        return v
    return parse


_str, _bool, _count = _of("value", str), _of("value", bool), _of("count", int)
_number = _of("value", int, float)  # an int stays one: history's stage and epoch read back as written


def _layout(v: Any) -> str:
    if v not in LAYOUTS:
        raise ValueError(f"{v!r:.60} is not one of {list(LAYOUTS)}")
    return str(v)


def _labels(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise TypeError(f"expected a list of strings, got {v!r:.60}")
    if len(v) < 2 or len(set(v)) != len(v):
        raise ValueError(f"expected at least two unique labels, got {v!r:.60}")
    return tuple(v)


def _mapping(value: Callable[[Any], Any]) -> Callable[[Any], dict[str, Any]]:
    def parse(v: Any) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise TypeError(f"expected an object, got {v!r:.60}")
        return {str(k): value(x) for k, x in v.items()}
    return parse


def _history(v: Any) -> tuple[dict[str, float], ...]:
    if not isinstance(v, list):
        raise TypeError(f"expected a list of rows, got {v!r:.60}")
    return tuple(_mapping(_number)(row) for row in v)


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "data": lambda v: Path(_str(v)), "layout": _layout, "labels": _labels, "preprocess": Preprocess.from_dict,
    "device": _str, "mixed_precision": _bool,
    "counts": _mapping(_mapping(_count)), "metrics": _mapping(_number), "history": _history,
    "versions": _mapping(_str), "seconds": _number,
}


def _parse(source: str, key: str, value: Any, parse: Callable[[Any], Any]) -> Any:
    try:
        return parse(value)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        why = str(e).strip("'\"") if isinstance(e, KeyError) else str(e)
        raise RunFolderError(f"{source}: invalid {key!r} ({why})") from None


@dataclass(frozen=True)
class SplitRow:
    path: str   # relative to the data folder, posix
    label: str
    split: str  # SPLITS


@dataclass(frozen=True)
class SplitTable:
    """``split.csv``: every image ``fit`` used, with its label and split, in training order."""

    rows: tuple[SplitRow, ...]

    def paths(self, split: str) -> list[str]:
        return [r.path for r in self.rows if r.split == split]

    def labels(self, split: str) -> list[str]:
        return [r.label for r in self.rows if r.split == split]

    def split_of(self) -> dict[str, str]:
        """path -> split."""
        return {r.path: r.split for r in self.rows}

    def counts(self) -> dict[str, dict[str, int]]:
        """split -> label -> images, labels sorted: ``train.json``'s ``counts``."""
        return {s: dict(sorted(Counter(self.labels(s)).items())) for s in SPLITS if self.labels(s)}

    def frame(self) -> "pd.DataFrame":
        """The table as a DataFrame (``path``, ``label``, ``split``), all strings."""
        import pandas as pd  # only for the readers that want one

        return pd.DataFrame([(r.path, r.label, r.split) for r in self.rows], columns=list(SPLIT_COLUMNS),
                            dtype=str)

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, str, str]]) -> "SplitTable":
        return cls(tuple(SplitRow(str(p), str(lab), str(s)) for p, lab, s in rows))

    def write(self, path: str | Path) -> None:
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(SPLIT_COLUMNS)
            writer.writerows((r.path, r.label, r.split) for r in self.rows)

    @classmethod
    def read(cls, path: str | Path) -> "SplitTable":
        path = Path(path)
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                missing = sorted(set(SPLIT_COLUMNS) - set(reader.fieldnames or ()))
                if missing:
                    raise RunFolderError(f"{path}: missing column(s) {missing}; expected {','.join(SPLIT_COLUMNS)}")
                rows = []
                for r in reader:
                    row = SplitRow(r["path"] or "", r["label"] or "", r["split"] or "")
                    if not row.path or not row.label or row.split not in SPLITS:
                        raise RunFolderError(f"{path}: line {reader.line_num}: expected a path, a label "
                                             f"and a split in {list(SPLITS)}, got {list(r.values())}")
                    rows.append(row)
        except (csv.Error, UnicodeDecodeError) as e:
            why = e.reason if isinstance(e, UnicodeDecodeError) else str(e)
            raise RunFolderError(f"{path}: not a readable UTF-8 CSV ({why})") from None
        except OSError as e:
            raise RunFolderError(f"{path}: cannot read it ({e.strerror or e})") from None
        return cls(tuple(rows))


@dataclass(frozen=True)
class RunFolder:
    """A checked run folder: ``train.json`` and ``split.csv`` parsed, the data folder present."""

    folder: Path
    info: TrainInfo
    split: SplitTable = field(repr=False)

    @property
    def data(self) -> Path:
        return self.info.data

    @property
    def layout(self) -> str:
        return self.info.layout

    @property
    def labels(self) -> tuple[str, ...]:
        return self.info.labels

    @property
    def preprocess(self) -> Preprocess:
        return self.info.preprocess

    @property
    def learner(self) -> Path:
        return self.folder / LEARNER

    def files(self, split: str) -> list[Path]:
        """The images of one split ("train" or "valid"), in ``split.csv`` order."""
        return [self.data / p for p in self.split.paths(split)]

    @classmethod
    def load(cls, folder: str | Path, *, learner: bool = False) -> "RunFolder":
        """Read and check ``folder`` (and that ``learner.pkl`` is there, for ``learner=True``).

        Every problem is a ``RunFolderError`` of one line that names the file."""
        folder = Path(folder)
        if not folder.exists():
            raise RunFolderError(f"{folder}: no such run folder")
        if not folder.is_dir():
            raise RunFolderError(f"{folder}: is a file, not a run folder ({FIX})")
        wanted = ((LEARNER,) if learner else ()) + (TRAIN_JSON, SPLIT_CSV)
        missing = [name for name in wanted if not (folder / name).is_file()]
        if missing:
            raise RunFolderError(f"{folder}: not a run folder, {', '.join(missing)} missing ({FIX})")
        info = TrainInfo.read(folder / TRAIN_JSON)
        split = SplitTable.read(folder / SPLIT_CSV)
        unknown = sorted({r.label for r in split.rows} - set(info.labels))
        if unknown:
            raise RunFolderError(f"{folder / SPLIT_CSV}: labels {unknown} are not among train.json's "
                                 f"{list(info.labels)}; the run folder is inconsistent, train again")
        if not info.data.is_dir():
            raise RunFolderError(f"{folder / TRAIN_JSON}: its data folder {info.data} does not exist")
        return cls(folder, info, split)
