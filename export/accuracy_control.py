"""Accuracy control: the all-int8 model first; if it misses, the fewest layers kept in float.

1. Quantise every Conv/MatMul (``export.quantize``) and compare with fp32 on the validation
   pixels (``export.int8_gate.compare``). If the gate passes and agreement reaches
   ``TARGET_AGREEMENT``, that is the model.
2. Otherwise measure each layer's sensitivity: quantise all but that one layer and take the
   mean total-variation distance between the fp32 and int8 probabilities over the validation
   pixels (continuous, so it ranks layers even where no file flips). One re-quantisation is about
   a second: the calibration ranges are cached.
3. Keep the 1, 2, ... ``BUDGET`` most sensitive layers in float, re-checking the gate each time;
   stop at the first that passes and reaches the target.

The result is the candidate that passes the gate with the highest agreement (fewer float layers
on a tie); none passing means the export refuses, and the message lists what was tried.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort

from edge_infer.bench import time_calls
from edge_infer.metadata import INPUT_NAME

from .int8_gate import TARGET_AGREEMENT, compare
from .quantize import base_float_nodes, layers, prepare, quantize

__all__ = ["BUDGET", "Candidate", "Outcome", "search", "probabilities"]

BUDGET = 4  # at most this many layers kept in float
Echo = Callable[[str], None]


@dataclass(frozen=True)
class Candidate:
    """One int8 model tried: which layers stayed float and how it compared with fp32."""

    float_layers: tuple[str, ...]
    path: Path
    result: dict

    @property
    def good(self) -> bool:
        return self.result["passed"] and self.result["agreement"] >= TARGET_AGREEMENT

    def summary(self) -> dict:
        r = self.result
        return {"float_layers": list(self.float_layers), "agreement": r["agreement"],
                "confident_flips": r["confident_flips"], "accuracy_drop": r["accuracy_drop"],
                "passed": r["passed"]}


@dataclass
class Outcome:
    """What ``search`` did; ``chosen`` is None when no candidate passed the gate."""

    tried: list[Candidate]
    chosen: Candidate | None
    sensitivity: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    latency: dict | None = None

    def report(self) -> dict:
        return {"budget": BUDGET, "target_agreement": TARGET_AGREEMENT, "seconds": round(self.seconds, 1),
                "tried": [c.summary() for c in self.tried], "sensitivity": self.sensitivity[:8],
                "latency": self.latency}


def probabilities(path: Path, pixels: np.ndarray, batch: int = 32) -> np.ndarray:
    """The model at ``path`` on uint8 pixels [N, H, W, 3], in batches (onnxruntime, CPU)."""
    session = _session(path, threads=None)
    return np.concatenate([session.run(None, {INPUT_NAME: pixels[i:i + batch]})[0]
                           for i in range(0, len(pixels), batch)])


def search(fp32: Path, folder: Path, *, calibration: np.ndarray, valid: np.ndarray, truth: np.ndarray,
           names: list[str], echo: Echo = print) -> Outcome:
    """Quantise ``fp32`` under accuracy control, working in ``folder`` (which must persist until
    the chosen file is copied out of it)."""
    start = time.perf_counter()
    graph = prepare(fp32, folder / "prepped.onnx").graph
    always, candidates = base_float_nodes(graph), layers(graph)
    reference = probabilities(fp32, valid)
    cache = folder / "ranges.json"

    def build(float_layers: tuple[str, ...], tag: str) -> Path:
        path = folder / f"{tag}.onnx"
        quantize(folder / "prepped.onnx", path, cache=cache, calibration=calibration,
                 keep_float=always + list(float_layers))
        return path

    def check(float_layers: tuple[str, ...]) -> Candidate:
        path = build(float_layers, f"float{len(float_layers)}")
        result = compare(reference, probabilities(path, valid), truth, names)
        echo(f"int8: {len(float_layers)} layer(s) in float {list(float_layers) or ''}: "
             f"agreement {result['agreement']:.1%}, {result['confident_flips']} confident flip(s), "
             f"accuracy drop {result['accuracy_drop'] * 100:+.2f} points: "
             f"{'passed' if result['passed'] else 'failed'} the gate")
        return Candidate(float_layers, path, result)

    tried = [check(())]
    outcome = Outcome(tried, None)
    if not tried[0].good and candidates:
        outcome.sensitivity = _sensitivity(candidates, reference, valid, lambda l: build((l,), "one"))
        ranked = tuple(s["layer"] for s in outcome.sensitivity)
        echo(f"int8: sensitivity of {len(candidates)} layers measured; most sensitive: "
             + ", ".join(f"{s['layer']} ({s['gain']:.1e})" for s in outcome.sensitivity[:BUDGET]))
        for k in range(1, min(BUDGET, len(ranked)) + 1):
            tried.append(check(ranked[:k]))
            if tried[-1].good:
                break
    passing = [c for c in tried if c.result["passed"]]
    outcome.chosen = max(passing, key=lambda c: (c.result["agreement"], -len(c.float_layers)), default=None)
    if outcome.chosen is not None and outcome.chosen.float_layers:
        outcome.latency = _latency_cost(tried[0].path, outcome.chosen.path, valid[:1])
    outcome.seconds = time.perf_counter() - start
    return outcome


def _sensitivity(candidates: list[str], reference: np.ndarray, valid: np.ndarray,
                 build_without: Callable[[str], Path]) -> list[dict]:
    """Per layer: how much closer to fp32 the model gets with only that layer in float
    (mean total-variation distance, all-int8 minus one-float), most sensitive first."""
    rows = []
    for layer in candidates:
        int8 = probabilities(build_without(layer), valid)
        rows.append({"layer": layer, "distance": float(0.5 * np.abs(int8 - reference).sum(1).mean())})
    worst = max(r["distance"] for r in rows)
    for r in rows:
        r["gain"] = worst - r["distance"]
    return sorted(rows, key=lambda r: r["distance"])


def _latency_cost(all_int8: Path, chosen: Path, pixels: np.ndarray, runs: int = 60) -> dict:
    """Model-only batch-1 latency of the chosen model vs the all-int8 one, timed alternately in
    rounds on this machine (so a busy moment hits both)."""
    a, b = _session(all_int8, threads=1), _session(chosen, threads=1)
    feed = {INPUT_NAME: pixels}
    times: dict[str, list[float]] = {"all_int8": [], "chosen": []}
    for _ in range(3):
        for name, s in (("all_int8", a), ("chosen", b)):
            times[name].append(time_calls(lambda: s.run(None, feed), name=name, runs=runs // 3, warmup=3).p50_ms)
    p50 = {k: float(np.median(v)) for k, v in times.items()}
    return {"all_int8_p50_ms": round(p50["all_int8"], 3), "chosen_p50_ms": round(p50["chosen"], 3),
            "ratio": round(p50["chosen"] / p50["all_int8"], 3), "batch": 1, "threads": 1}


def _session(path: Path, *, threads: int | None) -> ort.InferenceSession:
    """onnxruntime on the CPU; one thread for the latency comparison (steadier on a shared
    machine, and a float layer's cost shows the same way), its default for the checks."""
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

