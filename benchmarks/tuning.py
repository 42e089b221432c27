"""Search onnxruntime's session settings for the fastest model-only call on this machine.

One factor at a time, starting from the settings ``edge_infer.Classifier`` uses (graph
optimisation ``all``, sequential execution, one inter-op thread, spinning and the memory arena
on, plain ``session.run``), then the combination of every factor that helped. The best p50 is
what the benchmark's "fp32 model-only within 1.15x of the best setting found" target compares
``Classifier`` against.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort

from edge_infer.bench import time_calls
from edge_infer.metadata import INPUT_NAME, OUTPUT_NAME

__all__ = ["SessionSetting", "open_session", "run_function", "sweep", "best"]

OPT_LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
HELPS = 0.98  # a factor "helps" when its p50 is at least 2% below the baseline's


@dataclass(frozen=True)
class SessionSetting:
    """One point in the search; the defaults are exactly what ``Classifier.load`` sets."""

    threads: int
    opt_level: str = "all"
    execution: str = "sequential"  # or "parallel" (inter-op graph parallelism)
    spinning: bool = True          # session.intra_op.allow_spinning
    arena: bool = True             # enable_cpu_mem_arena
    io_binding: bool = False       # bind input/output once, run_with_iobinding

    def label(self) -> str:
        base = SessionSetting(self.threads)
        changed = [f"{k}={v}" for k, v in asdict(self).items()
                   if k != "threads" and v != getattr(base, k)]
        return f"threads={self.threads}" + (", " + ", ".join(changed) if changed else " (Classifier default)")

    def to_dict(self) -> dict:
        return {**asdict(self), "label": self.label()}


def open_session(model: str | Path, s: SessionSetting) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = s.threads
    opts.inter_op_num_threads = s.threads if s.execution == "parallel" else 1
    opts.graph_optimization_level = OPT_LEVELS[s.opt_level]
    opts.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if s.execution == "parallel"
                           else ort.ExecutionMode.ORT_SEQUENTIAL)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if s.spinning else "0")
    opts.enable_cpu_mem_arena = s.arena
    opts.log_severity_level = 3
    return ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])


def run_function(session: ort.InferenceSession, pixels: np.ndarray, io_binding: bool) -> Callable[[], object]:
    """A no-argument call that runs the model once on ``pixels`` (uint8 [N, H, W, 3])."""
    if not io_binding:
        return lambda: session.run([OUTPUT_NAME], {INPUT_NAME: pixels})
    binding = session.io_binding()
    binding.bind_cpu_input(INPUT_NAME, pixels)
    binding.bind_output(OUTPUT_NAME)
    return lambda: session.run_with_iobinding(binding)


def _measure(model: str | Path, s: SessionSetting, pixels: np.ndarray, runs: int, warmup: int) -> dict:
    session = open_session(model, s)
    timing = time_calls(run_function(session, pixels, s.io_binding), name=s.label(),
                        runs=runs, warmup=warmup)
    return {"setting": s.to_dict(), "timing": timing.to_dict()}


def _candidates(threads: int, quick: bool) -> list[SessionSetting]:
    """The one-factor changes worth trying at this thread count (spinning needs >1 thread)."""
    base = SessionSetting(threads)
    out = [replace(base, spinning=False)] if threads > 1 else []
    if quick:
        return out
    out += [replace(base, opt_level="basic"), replace(base, opt_level="extended"),
            replace(base, arena=False), replace(base, io_binding=True)]
    if threads > 1:
        out.append(replace(base, execution="parallel"))
    return out


def sweep(model: str | Path, size: tuple[int, int], threads: list[int], *, runs: int, warmup: int,
          quick: bool = False, log: Callable[[str], None] = print) -> list[dict]:
    """Time the baseline, each one-factor change and their combination, per thread count."""
    h, w = size
    pixels = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    results = []
    for n in threads:
        base = _measure(model, SessionSetting(n), pixels, runs, warmup)
        rows = [base] + [_measure(model, s, pixels, runs, warmup) for s in _candidates(n, quick)]
        combined = _combine(rows, base)
        if combined is not None:
            rows.append(_measure(model, combined, pixels, runs, warmup))
        for row in rows:
            log(f"  {Path(model).name:<24} {row['setting']['label']:<60} "
                f"p50 {row['timing']['p50_ms']:7.2f} ms")
        results += rows
    return results


def _combine(rows: list[dict], base: dict) -> SessionSetting | None:
    """Every factor whose one-factor row beat the baseline, together (None: fewer than two)."""
    limit = base["timing"]["p50_ms"] * HELPS
    setting = SessionSetting(**{k: v for k, v in base["setting"].items() if k != "label"})
    helped = 0
    for row in rows[1:]:
        if row["timing"]["p50_ms"] < limit:
            changes = {k: v for k, v in row["setting"].items()
                       if k != "label" and v != getattr(SessionSetting(setting.threads), k)}
            setting = replace(setting, **changes)
            helped += 1
    return setting if helped >= 2 else None


def best(results: list[dict]) -> dict:
    """The row with the lowest model-only p50."""
    return min(results, key=lambda r: r["timing"]["p50_ms"])
