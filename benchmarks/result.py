"""One benchmark run, typed: what ``compare`` measures, ``report`` judges and ``plot`` draws.

``Result.to_dict()`` is results.json (schema 1, the keys it has always had) and
``Result.from_dict`` reads one back, so a committed results.json can be judged and rendered
again. Files from older runs lack parts (the floor, the backend agreement): those stay empty and
their targets read "not measured". Sections the benchmark no longer measures (the decode paths,
the folder-pipeline sweep: see benchmarks/studies.md) are kept verbatim in ``recorded`` and
rendered as plain tables. The descriptive blocks (machine, settings, model, photos, cold start)
stay dicts: they are written by one function each and only printed, never judged by key.

``md_table`` and ``write_json`` are how every benchmark in benchmarks/ writes its tables and files.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from edge_infer.bench import Timing

__all__ = ["SCHEMA", "Throughput", "Row", "Agreement", "Variant", "BackendAgreement", "Gemm", "Floor",
           "SweepRow", "Result", "md_table", "write_json"]

SCHEMA = 1


@dataclass(frozen=True)
class Throughput:
    """``Classifier.classify_files`` over a folder of copies of one photo: the best of ``passes``."""

    images: int
    images_per_s: float
    seconds: float
    batch_size: int = 8
    workers: int | None = None
    passes: tuple[float, ...] = ()


@dataclass(frozen=True)
class Row:
    """One variant at one thread count. ``model_only``: None for learn.predict (no such notion);
    ``folder``: None for the variants that are not a ``Classifier``."""

    threads: int
    load_s: float
    first_call_ms: float
    end_to_end: dict[str, Timing]  # photo name ("1920x1080") -> timing
    model_only: Timing | None = None
    folder: Throughput | None = None

    def e2e_p50(self, photo: str) -> float | None:
        t = self.end_to_end.get(photo)
        return None if t is None else t.p50_ms

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}  # results.json leaves them out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Row:
        f = d.get("folder")
        return cls(threads=d["threads"], load_s=d["load_s"], first_call_ms=d["first_call_ms"],
                   end_to_end={k: Timing(**t) for k, t in d["end_to_end"].items()},
                   model_only=None if d.get("model_only") is None else Timing(**d["model_only"]),
                   folder=None if f is None else Throughput(**{**f, "passes": tuple(f.get("passes", ()))}))


@dataclass(frozen=True)
class Agreement:
    """A variant's top-1 against PyTorch eager on the same files, and its largest probability gap."""

    images: int
    top1_agreement: float
    max_abs_prob_diff: float
    reference_margin_min: float


@dataclass(frozen=True)
class Variant:
    """One way of running the network (``benchmarks.variants.VARIANTS``), at every thread count."""

    key: str
    title: str
    runtime: str
    precision: str
    by_threads: tuple[Row, ...]
    agreement: Agreement | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {**asdict(self), "by_threads": [r.to_dict() for r in self.by_threads]}
        return d if self.agreement is not None else {k: v for k, v in d.items() if k != "agreement"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Variant:
        a = d.get("agreement")
        return cls(d["key"], d["title"], d["runtime"], d["precision"],
                   tuple(Row.from_dict(r) for r in d["by_threads"]), None if a is None else Agreement(**a))


@dataclass(frozen=True)
class BackendAgreement:
    """A non-onnxruntime variant against onnxruntime on one image set (``edge_infer.agreement``)."""

    variant: str
    set: str
    images: int
    top1_same: int
    margin: float
    confident: int
    confident_same: int
    max_abs_prob_diff: float


@dataclass(frozen=True)
class Gemm:
    """onnxruntime's best n x n x n product at ``threads`` (``benchmarks.floor``), and the model's
    floor that it implies."""

    kind: str  # int8 | fp32
    threads: int
    n: int
    best_ms: float
    gmac_per_s: float
    floor_ms: float

    def to_dict(self) -> dict[str, Any]:
        """Rounded for the JSON file only; the measurement itself keeps every digit."""
        return {**asdict(self), "best_ms": round(self.best_ms, 4), "gmac_per_s": round(self.gmac_per_s, 1),
                "floor_ms": round(self.floor_ms, 3)}


@dataclass(frozen=True)
class Floor:
    method: str
    model_gmac: float
    by_threads: dict[int, dict[str, Gemm]]  # threads -> {"int8": ..., "fp32": ...}

    def floor_ms(self, precision: str, threads: int) -> float | None:
        g = self.by_threads.get(threads, {}).get(precision)
        return None if g is None else g.floor_ms

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "model_gmac": self.model_gmac,
                "by_threads": {str(t): {k: g.to_dict() for k, g in row.items()} for t, row in self.by_threads.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Floor:
        return cls(d["method"], d["model_gmac"],
                   {int(t): {k: Gemm(**g) for k, g in row.items()} for t, row in d["by_threads"].items()})


@dataclass(frozen=True)
class SweepRow:
    """One onnxruntime session setting, model only, batch 1 (``benchmarks.tuning``)."""

    setting: dict[str, Any]  # SessionSetting.to_dict(): its fields and a "label"
    timing: Timing

    @property
    def label(self) -> str:
        return str(self.setting["label"])


@dataclass(frozen=True)
class Result:
    created: str
    command: str
    seconds: float
    machine: dict[str, Any]            # benchmarks.machine.describe_machine()
    settings: dict[str, Any]           # compare.Settings.to_dict()
    model: dict[str, Any]              # models.Models.describe()
    photos: dict[str, dict[str, Any]]  # name -> {"path", "bytes"}
    variants: tuple[Variant, ...]
    floor: Floor | None = None
    backend_agreement: tuple[BackendAgreement, ...] = ()
    sweep: dict[str, tuple[SweepRow, ...]] = field(default_factory=dict)  # precision -> rows
    cold_start: dict[str, Any] = field(default_factory=dict)  # compare._cold_start()
    load_average_after: list[float] | None = None
    recorded: dict[str, Any] = field(default_factory=dict)  # older runs' sections, verbatim
    schema: int = SCHEMA

    def variant(self, key: str) -> Variant | None:
        return next((v for v in self.variants if v.key == key), None)

    def best_setting(self, precision: str) -> SweepRow | None:
        """The onnxruntime setting with the lowest model-only p50 for ``precision``."""
        rows = self.sweep.get(precision)
        return min(rows, key=lambda r: r.timing.p50_ms) if rows else None

    def to_dict(self) -> dict[str, Any]:
        sweep = {"results": {p: [asdict(r) for r in rows] for p, rows in self.sweep.items()},
                 "best": {p: asdict(self.best_setting(p)) for p in self.sweep}}
        return {"schema": self.schema, "created": self.created, "command": self.command, "machine": self.machine,
                "settings": self.settings, "model": self.model, "photos": self.photos,
                **({"floor": self.floor.to_dict()} if self.floor else {}),
                "variants": [v.to_dict() for v in self.variants],
                "backend_agreement": [asdict(b) for b in self.backend_agreement],
                "onnxruntime_sweep": sweep, "cold_start": self.cold_start, **self.recorded,
                "load_average_after": self.load_average_after, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Result:
        """A results.json read back; its judged ``targets`` and ``latency_verdicts`` are left out
        (``report`` judges again), any section this version does not know goes to ``recorded``."""
        sweep = d.get("onnxruntime_sweep", {}).get("results", {})
        return cls(
            created=d["created"], command=d["command"], seconds=d["seconds"], machine=d["machine"],
            settings=d["settings"], model=d["model"], photos=d["photos"],
            variants=tuple(Variant.from_dict(v) for v in d["variants"]),
            floor=Floor.from_dict(d["floor"]) if d.get("floor") else None,
            backend_agreement=tuple(BackendAgreement(**b) for b in d.get("backend_agreement") or ()),
            sweep={p: tuple(SweepRow(r["setting"], Timing(**r["timing"])) for r in rows) for p, rows in sweep.items()},
            cold_start=d.get("cold_start", {}), load_average_after=d.get("load_average_after"),
            recorded={k: v for k, v in d.items() if k not in _KNOWN}, schema=d.get("schema", SCHEMA))


_KNOWN = {"schema", "created", "command", "seconds", "machine", "settings", "model", "photos", "variants",
          "floor", "backend_agreement", "onnxruntime_sweep", "cold_start", "load_average_after",
          "targets", "latency_verdicts"}


def md_table(head: Sequence[str], rows: Iterable[Sequence[Any]], rule: str = "") -> list[str]:
    """A markdown table's lines: ``head``, ``rule`` under it (default ``| --- | ... |``), ``rows``."""
    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(map(str, cells)) + " |"
    return [line(head), rule or line(["---"] * len(head)), *map(line, rows)]


def write_json(path: Path, data: Any, markdown: str | None = None) -> Path:
    """``data`` as indented JSON at ``path`` (its folder made), and ``markdown`` beside it as .md."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    if markdown is not None:
        path.with_suffix(".md").write_text(markdown)
    return path
