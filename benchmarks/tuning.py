"""The onnxruntime settings that "fp32 model-only vs best onnxruntime setting" compares against.

``Classifier.load`` uses graph optimisation ``all``, sequential execution, one inter-op thread,
spinning and the memory arena on, and plain ``session.run``. A full one-factor sweep
(benchmarks/studies.md) found lower optimisation levels and parallel execution 1.4-3x slower and
the arena without effect; the only changes that ever came out ahead of the default were turning
spinning off (more than one thread, on a loaded machine) and binding the input and output once
(``run_with_iobinding``). So those two are what the benchmark still times next to the default:
if one of them beats ``Classifier`` by more than the target allows, its default should change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort

from edge_infer.backends import session_options
from edge_infer.bench import time_calls
from edge_infer.metadata import INPUT_NAME, OUTPUT_NAME

from .result import SweepRow

__all__ = ["SessionSetting", "open_session", "run_function", "sweep"]


@dataclass(frozen=True)
class SessionSetting:
    """One point of the sweep; the defaults are what ``Classifier.load`` sets."""

    threads: int
    spinning: bool = True     # session.intra_op.allow_spinning
    io_binding: bool = False  # bind input/output once, run_with_iobinding

    def label(self) -> str:
        changed = [f"{k}={v}" for k, v in asdict(self).items()
                   if k != "threads" and v != getattr(SessionSetting(self.threads), k)]
        return f"threads={self.threads}" + (", " + ", ".join(changed) if changed else " (Classifier default)")

    def to_dict(self) -> dict:
        return {**asdict(self), "label": self.label()}


def open_session(model: str | Path, s: SessionSetting) -> ort.InferenceSession:
    opts = session_options(s.threads)  # Classifier's settings, then the one this point varies
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if s.spinning else "0")
    return ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])


def run_function(session: ort.InferenceSession, pixels: np.ndarray, io_binding: bool) -> Callable[[], object]:
    """A no-argument call that runs the model once on ``pixels`` (uint8 [N, H, W, 3])."""
    if not io_binding:
        return lambda: session.run([OUTPUT_NAME], {INPUT_NAME: pixels})
    binding = session.io_binding()
    binding.bind_cpu_input(INPUT_NAME, pixels)
    binding.bind_output(OUTPUT_NAME)
    return lambda: session.run_with_iobinding(binding)


def sweep(model: str | Path, size: tuple[int, int], threads: tuple[int, ...], *, runs: int, warmup: int,
          log: Callable[[str], None] = print) -> tuple[SweepRow, ...]:
    """Model-only p50 of the default, spinning off (more than one thread) and I/O binding."""
    h, w = size
    pixels = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    settings = [s for n in threads for s in (SessionSetting(n), SessionSetting(n, spinning=False),
                                             SessionSetting(n, io_binding=True)) if n > 1 or s.spinning]
    rows = []
    for s in settings:
        timing = time_calls(run_function(open_session(model, s), pixels, s.io_binding), name=s.label(),
                            runs=runs, warmup=warmup)
        log(f"  {Path(model).name:<24} {s.label():<40} p50 {timing.p50_ms:7.2f} ms")
        rows.append(SweepRow(s.to_dict(), timing))
    return tuple(rows)
