"""Does a backend, on this machine, compute what export checked? The canary check.

The file's canaries (``edge_infer.canaries``) are run through a backend and judged against the
probabilities stored at export:

* **fp32 file**: every probability within ``FP32_MAX_DIFF`` of the stored fp32 one. The same
  float network on another kernel or CPU differs by summation order only (1e-7..1e-5 measured);
  1e-3 is export's own file-tier bound (fastai vs edge_infer), and bf16 arithmetic (OpenVINO's
  opt-in) or altered weights are far outside it.
* **int8 file**: the gate's rules against the stored fp32 probabilities (no confident flip:
  no canary whose fp32 top-2 margin is >= ``CONFIDENT_MARGIN`` gets another top-1), and every
  probability within ``INT8_MAX_DIFF`` of the int8 probabilities the gated kernel gave. int8
  kernels legitimately round differently (VNNI vs AVX2, onnxruntime vs OpenVINO): on the
  README recipe's int8 file OpenVINO's int8 differed from onnxruntime's by 0.049 on the canaries
  (0.116 over 1,000 test images) with no confident flip, so the bound catches what moves
  decisions, not every rounding difference (README.md, "Verify a model on this machine").

The canaries run one at a time (at most 16 calls at the model's size), and the calls are timed:
the check is also ``auto``'s latency probe (``edge_infer.backends``), so choosing a backend costs
no model call beyond verifying it. Batch 1 and one batch give the same answers within the fp32
bound (the rows are independent; only the summation order may change).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .agreement import CONFIDENT_MARGIN, compare
from .canaries import Canaries
from .errors import ModelFormatError

if TYPE_CHECKING:  # backends imports this module (auto verifies before it times)
    from .backends import Backend
    from .metadata import ModelInfo

__all__ = ["FP32_MAX_DIFF", "INT8_MAX_DIFF", "PROBE_RUNS", "Check", "CanaryMismatch", "NoCanaries", "check", "run_on",
           "refuse", "fastest", "auto_reason", "no_canaries", "verify_model", "judge", "remember_for_auto"]

FP32_MAX_DIFF = 1e-3
INT8_MAX_DIFF = 0.1
PROBE_RUNS = 3  # timed calls at least, after the first (a warm-up), per backend


class CanaryMismatch(ModelFormatError):
    """A backend did not reproduce the canaries stored in the file."""


class NoCanaries(ModelFormatError):
    """The file carries no canaries (exported before schema 2, or with --no-check)."""


@dataclass(frozen=True)
class Check:
    """One backend on one file's canaries."""

    backend: str          # what ran it, with version and kernel precision (``Backend.describe``)
    name: str             # onnxruntime | openvino
    precision: str        # the file's: fp32 | int8
    canaries: int
    max_diff: float       # max |p - stored p| against the stored probabilities of ``precision``
    max_diff_fp32: float  # ... against the stored fp32 probabilities
    top1_same: int        # top-1 equal to the stored ``precision`` probabilities'
    confident_flips: int  # against fp32, margin >= CONFIDENT_MARGIN
    tolerance: float      # the bound on ``max_diff``
    passed: bool
    seconds: float | None = None  # median batch-1 call on the canaries, first call left out

    def line(self) -> str:
        """One line for people: what ran, what it measured, the verdict with the tolerance."""
        rule = f"max |dp| <= {self.tolerance:g}" + (
            f", no confident flip vs fp32 (margin >= {CONFIDENT_MARGIN:g})" if self.precision == "int8" else "")
        extra = f", vs fp32 {self.max_diff_fp32:.2g}, confident flips {self.confident_flips}" \
            if self.precision == "int8" else ""
        return (f"{self.backend}: {self.precision} file, {self.canaries} canaries, max |dp| "
                f"{self.max_diff:.2g}{extra}, top-1 equal {self.top1_same}/{self.canaries}: "
                f"{'PASS' if self.passed else 'FAIL'} ({rule})")


def check(probs: np.ndarray, canaries: Canaries, *, precision: str, backend: str, name: str) -> Check:
    """Judge ``probs``, a backend's answers on ``canaries.pixels``, by the rules above."""
    int8 = precision == "int8" and canaries.int8 is not None
    stored = canaries.int8 if int8 and canaries.int8 is not None else canaries.fp32
    tolerance = INT8_MAX_DIFF if int8 else FP32_MAX_DIFF
    same = compare(stored, probs)
    against_fp32 = compare(canaries.fp32, probs)
    passed = same.max_abs_prob_diff <= tolerance and against_fp32.confident_flips == 0
    return Check(backend=backend, name=name, precision=precision, canaries=len(canaries),
                 max_diff=same.max_abs_prob_diff, max_diff_fp32=against_fp32.max_abs_prob_diff,
                 top1_same=same.top1_same, confident_flips=against_fp32.confident_flips,
                 tolerance=tolerance, passed=bool(passed))


def refuse(source: str, checks: list[Check]) -> CanaryMismatch:
    """The error for backends that failed: one clause per backend, and what to do."""
    failed = "; ".join(c.line() for c in checks if not c.passed)
    return CanaryMismatch(f"{source}: the file's canaries are not reproduced on this machine by {failed}; "
                          "run edge-infer verify for every backend, or re-export the model")


def run_on(backend: "Backend", canaries: Canaries, precision: str) -> Check:
    """Run the canaries through ``backend`` one at a time, judge the answers and time the calls
    (``Check.seconds``; with fewer than ``PROBE_RUNS + 1`` canaries the first is run again)."""
    probs, seconds = [], []
    for i in range(max(len(canaries), PROBE_RUNS + 1)):
        start = time.perf_counter()
        out = backend.run(np.ascontiguousarray(canaries.pixels[i % len(canaries)][None]))
        seconds.append(time.perf_counter() - start)
        if i < len(canaries):
            probs.append(out[0])
    result = check(np.stack(probs), canaries, precision=precision, backend=backend.describe(), name=backend.name)
    return replace(result, seconds=float(np.median(seconds[1:])))


def fastest(checks: Sequence[Check]) -> Check | None:
    """auto's pick: the check that passed with the quickest median call (None: none passed)."""
    passed = [c for c in checks if c.passed]
    return min(passed, key=lambda c: c.seconds or 0.0) if passed else None


def auto_reason(best: Check, checks: Sequence[Check], notes: Sequence[str]) -> str:
    """``Choice.reason`` for auto's verdict, also when ``edge-infer verify`` stores it."""
    timed = ", ".join(f"{c.name} {(c.seconds or 0.0) * 1000:.2f} ms" for c in checks)
    return (f"auto: {best.name} (reproduces the {best.canaries} canaries; batch-1 median on them: {timed}"
            + "".join(f"; {n}" for n in notes) + ")")


def no_canaries(source: str, info: "ModelInfo") -> NoCanaries:
    why = (f"it was exported with schema {info.schema}, before files carried them" if info.schema < 2
           else "it was exported without checks (--no-check)")
    return NoCanaries(f"{source} has no canaries to verify ({why}); re-export it with python -m export")


def verify_model(path: str, *, threads: int | None = None) -> tuple["ModelInfo", list[Check], list[str]]:
    """Every installed backend on the file's canaries: its info, one ``Check`` per backend that
    could run it, and one line per backend that could not (e.g. OpenVINO cannot compile it).
    Raises ``NoCanaries`` for a file without them."""
    from .backends import OnnxRuntimeBackend, OpenVinoBackend, open_onnxruntime, openvino_installed
    from .classifier import read_model

    session = open_onnxruntime(path, threads, None)
    info, canaries = read_model(session, path)
    if canaries is None:
        raise no_canaries(path, info)
    found: list[Backend] = [OnnxRuntimeBackend(session)]
    skipped = [] if openvino_installed() else ["OpenVINO: not installed (pip install 'edge-infer[openvino]')"]
    if openvino_installed():
        try:
            found.append(OpenVinoBackend(path, threads=threads))
        except ModelFormatError as e:
            skipped.append(str(e))
    return info, [run_on(b, canaries, info.precision) for b in found], skipped


def remember_for_auto(path: str, checks: list[Check], *, threads: int | None) -> str | None:
    """Store the fastest backend that reproduced the canaries as ``auto``'s verdict
    (``edge_infer.auto_cache``), so that ``verify`` once on a machine spares every later ``auto``
    load its checks and OpenVINO's compile (about 1 s of background work on a 224 px ResNet34
    int8 file on a 2-core AVX2 EPYC). verify's calls are timed the way auto's are: one backend
    after the other, after every compile.
    Returns the line to print, or None (nothing passed, or the cache is off)."""
    from . import auto_cache

    best = fastest(checks)
    if best is None or auto_cache.cache_path() is None:
        return None
    auto_cache.store(auto_cache.key(path, threads=threads, inference_precision="f32"), best.name,
                     auto_reason(best, checks, ["checked by edge-infer verify"]))
    return f"auto will use {best.name} here (remembered in {auto_cache.cache_path()})"


def judge(checks: list[Check], skipped: list[str], backend: str) -> tuple[list[str], bool]:
    """``edge-infer verify``'s lines and whether ``backend`` passed (``auto``: whether any did)."""
    lines = [c.line() for c in checks] + [f"skipped: {s}" for s in skipped]
    ran = [c for c in checks if backend in ("auto", c.name)]
    ok = any(c.passed for c in ran)
    if not ran:
        lines.append(f"{backend}: not run on this machine, so not verified")
    elif backend == "auto":
        passed = [c.name for c in checks if c.passed]
        lines.append(f"auto may use: {', '.join(passed)}" if passed else
                     "auto: no backend reproduces the canaries; the file does not compute here what export checked")
    else:
        lines.append(f"{backend}: {'verified' if ok else 'does NOT reproduce the canaries'} on this machine")
    return lines, ok
