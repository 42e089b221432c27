"""Accuracy control: the all-int8 model first; if it misses, the fewest layers kept in float.

1. Quantise every Conv (``export.quantize``; the head is always float) and compare with fp32
   on the validation pixels (``export.int8_gate.compare``): the model, if the gate passes.
2. Otherwise measure each layer's sensitivity: the same QDQ model with only that layer back in
   float (``quantize.with_float_layers``, no re-calibration), scored by the mean total-variation
   distance between its probabilities and fp32's on the ``PROBE`` validation files with the
   smallest fp32 top-2 margins (where decisions flip; continuous, so it ranks layers even where
   no file flips).
3. Keep the 1, 2, ... ``budget`` (``export.defaults.MAX_FLOAT_LAYERS``) most sensitive layers in
   float, re-checking the gate on every validation file each time; stop at the first that passes.

None passing means the export refuses, and the message lists what was tried. Agreement alone
does not send the search on: a model that passes the gate with some near-tie flips is kept
all-int8. Layers in float did not lower the near-tie flips measurably on the 64 px
Fashion-MNIST model (every 1-4 layer candidate agreed less than the all-int8 one), and chasing
99.5 % on the validation files once kept 4 layers in float for 1.13x latency and gained nothing
on held-out images (export/README.md, issue #11).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort

from edge_infer.agreement import top2_margin
from edge_infer.backends import session_options
from edge_infer.bench import time_calls
from edge_infer.metadata import INPUT_NAME

from .defaults import MAX_FLOAT_LAYERS
from .int8_gate import Gate, compare
from .quantize import base_float_nodes, layers, prepare, quantize, with_float_layers

__all__ = ["PROBE", "Candidate", "Outcome", "search", "probabilities"]

PROBE = 150   # lowest-margin validation files that rank the layers
Echo = Callable[[str], None]


@dataclass(frozen=True)
class Candidate:
    """One int8 model tried: which layers stayed float and how it compared with fp32."""

    float_layers: tuple[str, ...]
    model: onnx.ModelProto
    result: Gate
    probs: np.ndarray  # its probabilities on the validation pixels (the canaries take some)

    def summary(self) -> dict:
        gate = self.result.to_dict()
        return {"float_layers": list(self.float_layers),
                **{k: gate[k] for k in ("agreement", "near_tie_flips", "confident_flips", "accuracy_drop", "passed")}}


@dataclass(frozen=True)
class Outcome:
    """What ``search`` did; ``chosen`` is None when no candidate passed the gate."""

    tried: list[Candidate]
    reference: np.ndarray  # the fp32 probabilities on the validation pixels
    budget: int
    chosen: Candidate | None
    sensitivity: list[dict]  # most sensitive first; empty when the all-int8 model passed
    seconds: float
    latency: dict | None

    def report(self) -> dict:
        return {"budget": self.budget, "probe_files": PROBE,
                "seconds": round(self.seconds, 1), "tried": [c.summary() for c in self.tried],
                "most_sensitive": self.sensitivity[:8], "latency": self.latency}


def probabilities(model: Path | onnx.ModelProto, pixels: np.ndarray, batch: int = 32) -> np.ndarray:
    """The model on uint8 pixels [N, H, W, 3], in batches (onnxruntime, CPU)."""
    session = _session(model, threads=None)
    return np.concatenate([session.run(None, {INPUT_NAME: pixels[i:i + batch]})[0]
                           for i in range(0, len(pixels), batch)])


def search(fp32: Path, folder: Path, *, calibration: np.ndarray, valid: np.ndarray, truth: np.ndarray,
           names: list[str], budget: int = MAX_FLOAT_LAYERS, echo: Echo = print,
           reference: np.ndarray | None = None) -> Outcome:
    """Quantise ``fp32`` under accuracy control, keeping at most ``budget`` layers in float (0:
    the all-int8 model only); ``folder`` holds the intermediate files. ``reference``: fp32's
    probabilities on ``valid`` where the caller has them (export does, for the canaries)."""
    start = time.perf_counter()
    prepped = prepare(fp32, folder / "prepped.onnx")
    quantize(folder / "prepped.onnx", folder / "int8.onnx", calibration=calibration,
             keep_float=base_float_nodes(prepped.graph))
    qdq = onnx.load(str(folder / "int8.onnx"))
    reference = probabilities(fp32, valid) if reference is None else reference

    def check(float_layers: tuple[str, ...]) -> Candidate:
        model = with_float_layers(qdq, prepped, float_layers) if float_layers else qdq
        probs = probabilities(model, valid)
        result = compare(reference, probs, truth, names)
        a = result.agreement
        which = f"{len(float_layers)} layer(s) in float {list(float_layers)}" if float_layers else "all layers int8"
        echo(f"int8: {which}: agreement {a.top1_agreement:.1%}, {a.near_tie_flips} near-tie and "
             f"{a.confident_flips} confident flip(s), accuracy drop "
             f"{result.accuracy_drop * 100:+.2f} points: {'passed' if result.passed else 'failed'} the gate")
        return Candidate(float_layers, model, result, probs)

    tried, sensitivity = [check(())], []
    candidates = layers(prepped.graph)
    if not tried[0].result.passed and candidates and budget > 0:
        probe = np.argsort(top2_margin(reference), kind="stable")[:PROBE]
        sensitivity = _sensitivity(candidates, reference[probe], valid[probe],
                                   lambda layer: with_float_layers(qdq, prepped, (layer,)))
        ranked = tuple(s["layer"] for s in sensitivity)
        echo(f"int8: sensitivity of {len(candidates)} layers on the {len(probe)} lowest-margin validation "
             "files; most sensitive: " + ", ".join(f"{s['layer']} ({s['distance']:.2e})" for s in sensitivity[:budget]))
        for k in range(1, min(budget, len(ranked)) + 1):
            tried.append(check(ranked[:k]))
            if tried[-1].result.passed:
                break
    chosen = next((c for c in tried if c.result.passed), None)  # the fewest float layers
    latency = _latency_cost(qdq, chosen.model, valid[:1]) if chosen is not None and chosen.float_layers else None
    return Outcome(tried, reference, budget, chosen, sensitivity, time.perf_counter() - start, latency)


def _sensitivity(candidates: list[str], reference: np.ndarray, pixels: np.ndarray,
                 one_float: Callable[[str], onnx.ModelProto]) -> list[dict]:
    """Per layer, the distance to fp32 left with only that layer in float (mean total-variation
    distance of the probabilities): smallest first, i.e. most sensitive first."""
    rows = [{"layer": layer, "distance": float(0.5 * np.abs(probabilities(one_float(layer), pixels)
                                                             - reference).sum(1).mean())}
            for layer in candidates]
    return sorted(rows, key=lambda r: r["distance"])


def _latency_cost(all_int8: onnx.ModelProto, chosen: onnx.ModelProto, pixels: np.ndarray,
                  runs: int = 60) -> dict:
    """Model-only batch-1 latency of the chosen model vs the all-int8 one, p50 of three rounds
    each, timed alternately (so a busy moment of a shared machine hits both)."""
    sessions = {"all_int8": _session(all_int8, threads=1), "chosen": _session(chosen, threads=1)}
    feed = {INPUT_NAME: pixels}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(3):
        for name, session in sessions.items():
            call = partial(session.run, None, feed)  # bound now, not when the loop has moved on
            times[name].append(time_calls(call, name=name, runs=runs // 3, warmup=3).p50_ms)
    p50 = {k: float(np.median(v)) for k, v in times.items()}
    return {"all_int8_p50_ms": round(p50["all_int8"], 3), "chosen_p50_ms": round(p50["chosen"], 3),
            "ratio": round(p50["chosen"] / p50["all_int8"], 3), "batch": 1, "threads": 1}


def _session(model: Path | onnx.ModelProto, *, threads: int | None) -> ort.InferenceSession:
    """onnxruntime on the CPU; one thread for the latency comparison (steadier on a shared
    machine, and a float layer's cost shows the same way), its default for the checks."""
    opts = session_options(threads)  # the runtime's settings: the gate sees what users will run
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    # Not edge_infer.backends.open_onnxruntime: candidates are in-memory ModelProtos with no
    # metadata yet, which the runtime's opener does not take.
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
