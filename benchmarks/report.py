"""Judge a benchmark result against the targets and write results.json and results.md.

``TARGETS`` is the table of goals, as data: each names its limit and the measurement it is
judged on. A target is checked on the variant and thread count that does best for it, which is
stated next to every verdict; a missing measurement is "not measured", never a pass. The
targets are set for ResNet34 at 224 px (``REFERENCE``); on another model they are indicative.
Model-only latencies are also shown as multiples of the machine's measured compute floor
(``benchmarks.floor``), so results from different CPUs compare as ratios.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

from edge_infer.bench import Timing

from .machine import summary_line
from .result import Result, Row, md_table, write_json

__all__ = ["Target", "Verdict", "Band", "TARGETS", "LATENCY_BANDS_MS", "REFERENCE", "is_reference_model",
           "targets", "targets_table", "latency_verdicts", "to_markdown", "write_results"]

LATENCY_BANDS_MS = (10.0, 20.0)
REFERENCE = ("resnet34", 224)
PHOTO, BIG_PHOTO = "1920x1080", "4032x3024"
INT8_VARIANTS = ("edge_infer_int8", "openvino_int8")  # the int8 targets take the best of these


class Best(NamedTuple):
    value: float
    threads: int
    title: str

    def where(self) -> str:
        return f"{self.title}, threads={self.threads}"


Measured = tuple[float | None, str]  # (value, where or how it was measured)


@dataclass(frozen=True)
class Target:
    """A goal: ``measure(result)`` must be <= ``limit`` (or >= with ``at_least``)."""

    name: str
    limit: float
    unit: str
    at_least: bool
    measure: Callable[[Result], Measured]

    @property
    def goal(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.limit:g} {self.unit}"

    def judge(self, result: Result) -> Verdict:
        value, detail = self.measure(result)
        ok = None if value is None else (value >= self.limit if self.at_least else value <= self.limit)
        return Verdict(self.name, self.goal, None if value is None else round(value, 3), self.unit, ok, detail,
                       is_reference_model(result))


@dataclass(frozen=True)
class Verdict:
    """A judged target; ``passed`` None: not measured. ``reference_model``: the model is the one
    the targets are set for."""

    name: str
    target: str
    measured: float | None
    unit: str
    passed: bool | None
    detail: str
    reference_model: bool

    def to_dict(self) -> dict[str, Any]:
        return {"pass" if k == "passed" else k: v for k, v in asdict(self).items()}  # results.json says "pass"


# ---------------------------------------------------------------------------------- measures


def _best(result: Result, keys: tuple[str, ...], metric: Callable[[Row], float | None]) -> Best | None:
    """The lowest ``metric(row)`` over ``keys``' variants and thread counts."""
    found = [Best(m, r.threads, v.title) for v in result.variants if v.key in keys
             for r in v.by_threads if (m := metric(r)) is not None]
    return min(found) if found else None


def _model_p50(row: Row) -> float | None:
    return None if row.model_only is None else row.model_only.p50_ms


def _found(best: Best | None) -> Measured:
    return (None, "not measured") if best is None else (best.value, best.where())


def _int8_per_floor(result: Result) -> Measured:
    """An int8 row's model-only p50 as a multiple of the int8 floor at its thread count."""
    def ratio(row: Row) -> float | None:
        p50, floor = _model_p50(row), result.floor and result.floor.floor_ms("int8", row.threads)
        return p50 / floor if p50 is not None and floor else None
    return _found(_best(result, INT8_VARIANTS, ratio))


def _e2e(photo: str) -> Callable[[Result], Measured]:
    return lambda result: _found(_best(result, INT8_VARIANTS, lambda r: r.e2e_p50(photo)))


def _speedup(result: Result) -> Measured:
    """learn.predict's end-to-end p50 over the best int8's, at the latter's thread count."""
    fast, fastai = _best(result, INT8_VARIANTS, lambda r: r.e2e_p50(PHOTO)), result.variant("fastai")
    if fast is None or fastai is None:
        return None, "not measured"
    slow = next((r.e2e_p50(PHOTO) for r in fastai.by_threads if r.threads == fast.threads), None)
    if slow is None:
        return None, "not measured"
    return slow / fast.value, f"threads={fast.threads}: learn.predict {slow:.1f} ms vs {fast.title} {fast.value:.2f} ms"


def _folder(result: Result) -> Measured:
    best = _best(result, INT8_VARIANTS, lambda r: -r.folder.images_per_s if r.folder else None)
    return (None, "not measured") if best is None else (-best.value, best.where())


def _backends_agree(result: Result) -> Measured:
    rows = result.backend_agreement
    confident = sum(r.confident for r in rows)
    if not confident:
        return None, "no other backend measured" if not rows else "no confident predictions"
    same = sum(r.confident_same for r in rows)
    return same / confident, (f"{same}/{confident} confident predictions (top-2 margin >= {rows[0].margin}) "
                              f"over {', '.join(sorted({r.variant for r in rows}))}")


def _fp32_vs_best_setting(result: Result) -> Measured:
    fp32, best = _best(result, ("edge_infer_fp32",), _model_p50), result.best_setting("fp32")
    if fp32 is None or best is None:
        return None, "not measured"
    return fp32.value / best.timing.p50_ms, (f"Classifier threads={fp32.threads} {fp32.value:.2f} ms vs "
                                             f"{best.label} {best.timing.p50_ms:.2f} ms")


def _cold(result: Result, part: str, key: str) -> float | None:
    return result.cold_start.get(part, {}).get(key)


TARGETS: tuple[Target, ...] = (
    Target("int8 model-only p50 vs the int8 floor", 1.25, "x", False, _int8_per_floor),
    Target(f"end-to-end int8 p50, {PHOTO} JPEG", 9.0, "ms", False, _e2e(PHOTO)),
    Target(f"end-to-end speed-up over learn.predict ({PHOTO})", 5.0, "x", True, _speedup),
    Target(f"end-to-end int8 p50, {BIG_PHOTO} JPEG", 25.0, "ms", False, _e2e(BIG_PHOTO)),
    Target(f"folder throughput, int8 classify_files ({PHOTO})", 150.0, "images/s", True, _folder),
    Target("backends agree with onnxruntime on confident predictions", 1.0, "fraction", True, _backends_agree),
    Target("fp32 model-only vs best onnxruntime setting", 1.15, "x", False, _fp32_vs_best_setting),
    Target("import edge_infer (fresh interpreter)", 0.3, "s", False,
           lambda r: (_cold(r, "import", "import_s"), "median of fresh interpreters")),
    Target("load + first prediction, int8", 0.5, "s", False,
           lambda r: (_cold(r, "int8", "load_plus_first_s"),
                      f"onnxruntime, threads={r.cold_start.get('threads')}, {r.cold_start.get('photo')}")),
)


def is_reference_model(result: Result) -> bool:
    """The targets are set for ResNet34 at 224 px; on anything else they are indicative only."""
    m = result.model
    return m["arch"] == REFERENCE[0] and list(m["size"]) == [REFERENCE[1], REFERENCE[1]]


def targets(result: Result) -> list[Verdict]:
    """Every target of ``TARGETS``, judged on ``result``."""
    return [t.judge(result) for t in TARGETS]


@dataclass(frozen=True)
class Band:
    """Where one p50 falls against ``LATENCY_BANDS_MS``."""

    variant: str
    threads: int
    what: str
    p50_ms: float
    verdict: str


def latency_verdicts(result: Result) -> list[Band]:
    """Per variant and thread count: model-only and 1080p end-to-end p50 against 10 and 20 ms."""
    low, high = LATENCY_BANDS_MS
    return [Band(v.title, r.threads, what, round(ms, 2),
                 f"<= {low:g} ms" if ms <= low else f"<= {high:g} ms" if ms <= high else f"> {high:g} ms")
            for v in result.variants for r in v.by_threads
            for what, ms in (("model only", _model_p50(r)), (f"end to end {PHOTO}", r.e2e_p50(PHOTO)))
            if ms is not None]


# ------------------------------------------------------------------------------------ markdown


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    return md_table(head, rows, rule="|" + "---|" * len(head))  # results.md's rule since its first run


def _latency_table(result: Result) -> list[str]:
    photos = list(result.photos)
    head = ["variant", "threads", "load s", "first call ms", "model-only p50/p90/p99 ms", "x floor",
            *[f"e2e {p} p50/p90/p99 ms" for p in photos], "folder img/s", "top-1 vs torch"]
    rows = []
    for v in result.variants:
        agree = v.agreement.top1_agreement if v.agreement else None
        for r in v.by_threads:
            mo = r.model_only
            floor = result.floor and result.floor.floor_ms("int8" if v.key.endswith("int8") else "fp32", r.threads)
            rows.append([v.title, r.threads, _fmt(r.load_s, 3), _fmt(r.first_call_ms, 1), _pcts(mo),
                         _fmt(mo.p50_ms / floor) if mo and floor else "–",
                         *[_pcts(r.end_to_end.get(p)) for p in photos],
                         _fmt(r.folder.images_per_s if r.folder else None, 1), _fmt(agree, 3)])
    return _table(head, rows)


def _pcts(t: Timing | None) -> str:
    return "–" if t is None else f"{t.p50_ms:.2f} / {t.p90_ms:.2f} / {t.p99_ms:.2f}"


def targets_table(verdicts: list[Verdict]) -> list[str]:
    return _table(["target", "goal", "measured", "verdict", "setting"],
                  [[t.name, t.target, "–" if t.measured is None else f"{t.measured:g} {t.unit}",
                    {True: "PASS", False: "FAIL", None: "not measured"}[t.passed], t.detail] for t in verdicts])


def _floor_lines(result: Result) -> list[str]:
    f = result.floor
    if f is None:
        return ["Not measured."]
    return [f"Method: {f.method}; the model has {f.model_gmac} G multiply-adds (batch 1). "
            "A variant's 'x floor' is its model-only p50 divided by the floor below.", "",
            *_table(["threads", "int8 GMAC/s", "int8 floor ms", "fp32 GMAC/s", "fp32 floor ms"],
                    [[t, f"{r['int8'].gmac_per_s:.0f}", f"{r['int8'].floor_ms:.2f}", f"{r['fp32'].gmac_per_s:.0f}",
                      f"{r['fp32'].floor_ms:.2f}"] for t, r in f.by_threads.items()])]


def _agreement_table(result: Result) -> list[str]:
    if not result.backend_agreement:
        return ["No backend other than onnxruntime was measured (pip install 'edge-infer[openvino]')."]
    return _table(["variant", "images", "top-1 same", f"confident (margin >= {result.backend_agreement[0].margin}) same", "max abs prob diff"],
                  [[r.variant, r.set, f"{r.top1_same}/{r.images}", f"{r.confident_same}/{r.confident}",
                    f"{r.max_abs_prob_diff:.2g}"] for r in result.backend_agreement])


def _sweep_lines(result: Result) -> list[str]:
    lines = _table(["model", "setting", "p50 ms", "p90 ms"],
                   [[p, r.label, f"{r.timing.p50_ms:.2f}", f"{r.timing.p90_ms:.2f}"]
                    for p, rows in result.sweep.items() for r in rows])
    for p in result.sweep:
        best = result.best_setting(p)
        if best is not None:
            lines.append(f"\nBest {p} setting found: **{best.label}**, p50 {best.timing.p50_ms:.2f} ms.")
    return lines


# Sections of older results.json files that this version no longer measures (benchmarks/studies.md).
RECORDED_TITLES = {"decode": "Decode paths (difference from a full decode, grey levels)",
                   "decode_stages": "Where the time of edge_infer's own decode path goes (median ms per step)",
                   "folder_sweep": "Folder pipeline (classify_files, int8)"}


def _recorded_lines(result: Result) -> list[str]:
    lines: list[str] = []
    for key, rows in result.recorded.items():
        if isinstance(rows, list) and rows and isinstance(rows[0], dict):
            lines += [f"## {RECORDED_TITLES.get(key, key)}", "",
                      *_table(list(rows[0]), [[f"{v:.2f}" if isinstance(v, float) else v for v in r.values()]
                                              for r in rows]), ""]
    return lines


def _machine_lines(result: Result) -> list[str]:
    m = result.machine
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    lines = [f"- CPU: {summary_line(m)}", f"- OS: {m['os']}{' (virtual machine)' if m['hypervisor'] else ''}",
             f"- versions: {versions}",
             f"- load average (1, 5, 15 min) before: {m['load_average']}, after: {result.load_average_after}"]
    load = (m.get("load_average") or [0])[0]
    if load > 0.5 * (m.get("usable_cpus") or 1):
        lines.append(f"- **warning**: the machine was busy (1-min load {load} on {m['usable_cpus']} CPUs) "
                     "when this ran: every latency here is inflated; rerun on a quiet machine.")
    return lines


def _model_lines(result: Result) -> list[str]:
    m, s = result.model, result.settings
    accuracy = m.get("valid_accuracy")
    return [f"- model: {m['source']}; {m['arch']} at {m['size'][0]}x{m['size'][1]}, {len(m['labels'])} "
            f"classes; fp32 {m['fp32_mb']:.1f} MB, int8 {m['int8_mb']:.1f} MB"
            + (f"; validation accuracy (fastai) {accuracy:.3f}" if accuracy is not None else ""),
            f"- runs: {s['runs']} timed after {s['warmup']} warm-up (learn.predict: fewer, see JSON)"
            f"{'; **quick mode: rough numbers**' if s['quick'] else ''}",
            "- photos: " + ", ".join(f"{k} ({v['bytes'] / 1e6:.2f} MB)" for k, v in result.photos.items()),
            "- model-only: batch 1, pixels already at the model's size; end-to-end: decode + resize + "
            "model for one JPEG file per call; PyTorch eager uses edge_infer's preprocessing, "
            "learn.predict its own"]


def _cold_lines(result: Result) -> list[str]:
    cold = result.cold_start
    return [f"- `import edge_infer`: {_fmt(_cold(result, 'import', 'import_s'), 3)} s "
            f"(torch imported: {cold.get('import', {}).get('torch_imported')})",
            *[f"- {p}: load {_fmt(cold[p]['load_s'], 3)} s + first prediction "
              f"{_fmt(cold[p]['first_prediction_s'], 3)} s = {_fmt(cold[p]['load_plus_first_s'], 3)} s"
              for p in ("fp32", "int8") if p in cold]]


def to_markdown(result: Result, *, title: str = "edge-infer benchmark") -> str:
    """The whole report for people: machine, targets, latency table, search results."""
    verdicts = targets(result)
    met = sum(t.passed is True for t in verdicts)
    bands = [[b.variant, b.threads, b.what, b.p50_ms, b.verdict] for b in latency_verdicts(result)]
    sections = [
        f"# {title}", "", f"`{result.command}` on {result.created} ({result.seconds:.0f} s)", "",
        "## Machine", "", *_machine_lines(result), "", "## Model and method", "", *_model_lines(result), "",
        "## Targets", "", *targets_table(verdicts), "",
        f"Verdict: {met} of {len(verdicts)} targets met"
        + ("." if is_reference_model(result) else
           f" (indicative only: the targets are set for {REFERENCE[0]} at {REFERENCE[1]} px)."), "",
        "## Compute floor (measured on this machine)", "", *_floor_lines(result), "",
        "## Latency (ms) and throughput", "", *_latency_table(result), "",
        "## Backends against onnxruntime (same file, top-1)", "", *_agreement_table(result), "",
        "## Against 10 ms and 20 ms (p50)", "", *_table(["variant", "threads", "what", "p50 ms", "verdict"], bands), "",
        "## Cold start (fresh interpreter, median)", "", *_cold_lines(result), "",
        "## onnxruntime session settings (model only)", "", *_sweep_lines(result), "",
        *_recorded_lines(result),
    ]
    return "\n".join(sections)


def write_results(result: Result, out: Path, *, title: str = "edge-infer benchmark",
                  plot: bool = True) -> dict[str, Path]:
    """results.json (with the judged targets), results.md and latency.png under ``out``."""
    data = {**result.to_dict(), "targets": [t.to_dict() for t in targets(result)],
            "latency_verdicts": [asdict(b) for b in latency_verdicts(result)]}
    paths = {"json": write_json(out / "results.json", data, to_markdown(result, title=title)),
             "markdown": out / "results.md"}
    if plot:
        from .plot import plot_latency

        paths["plot"] = plot_latency(result, out / "latency.png", photo=PHOTO, bands_ms=LATENCY_BANDS_MS)
    return paths
