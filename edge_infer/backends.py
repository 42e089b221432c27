"""What runs the graph: onnxruntime (always there) or OpenVINO (the ``openvino`` extra), one interface.

A backend takes the model's uint8 [N, H, W, 3] pixels and returns float32 [N, C] probabilities;
everything else (metadata, preprocessing, labels) stays in ``Classifier``. Both read the same
``.onnx`` file, so the file remains the only contract. OpenVINO is imported only when chosen.

Inference precision (not the file's precision, ``ModelInfo.precision``): OpenVINO's CPU plugin
runs fp32 layers in bf16 by default on CPUs that have bf16 instructions; export's parity numbers
are for f32, so ``inference_precision="f32"`` (the default) sets ``INFERENCE_PRECISION_HINT`` to
f32 and ``"bf16"`` is an explicit opt-in. int8 (QDQ) layers run in int8 either way.

``auto`` takes the fastest installed backend that reproduces the file's canaries on this machine
(``edge_infer.verify``, whose canary calls are also the timing). Which backend computes what the gate checked
depends on the CPU: on a 64 px Fashion-MNIST model on an AVX2 CPU, OpenVINO's int8 answers
differed from onnxruntime's int8 on 2.5 % of the files, with confident flips against fp32
(README.md, Benchmarks), while on a Zen 4 with VNNI both agreed with fp32 on 99.6 %. A file
without canaries stays on onnxruntime: nothing shows that another backend computes what export
checked (onnxruntime's answers) there.
"""

from __future__ import annotations

import importlib.util
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import onnxruntime as ort

from . import auto_cache
from .canaries import Canaries
from .cpu import int8_products_saturate
from .errors import EdgeInferError, ModelFormatError, first_line
from .metadata import INPUT_NAME, OUTPUT_NAME
from .verify import Check, auto_reason, fastest, refuse, run_on

__all__ = ["Backend", "OnnxRuntimeBackend", "OpenVinoBackend", "BACKENDS", "INFERENCE_PRECISIONS",
           "openvino_installed", "open_onnxruntime", "open_backend", "resolve_providers",
           "Choice"]

BACKENDS = ("onnxruntime", "openvino", "auto")
INFERENCE_PRECISIONS = ("f32", "bf16")  # OpenVINO's INFERENCE_PRECISION_HINT


class Backend(Protocol):
    """Runs the graph: ``run(uint8 [N, H, W, 3]) -> float32 [N, C]``."""

    name: str

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def describe(self) -> str: ...


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


# ---------------------------------------------------------------------------------- onnxruntime

# Short names people type; any full onnxruntime provider name is accepted too.
_PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                     "tensorrt": "TensorrtExecutionProvider", "rocm": "ROCMExecutionProvider",
                     "migraphx": "MIGraphXExecutionProvider", "dml": "DmlExecutionProvider",
                     "coreml": "CoreMLExecutionProvider", "openvino": "OpenVINOExecutionProvider",
                     "dnnl": "DnnlExecutionProvider", "qnn": "QNNExecutionProvider"}


def resolve_providers(providers: Sequence[str] | None) -> list[str]:
    """Full provider names, CPU last as the fallback; raises naming what this install has."""
    available = ort.get_available_providers()
    names = [_PROVIDER_ALIASES.get(p.lower(), p) for p in (providers or ["CPUExecutionProvider"])]
    missing = [p for p in names if p not in available]
    if missing:
        raise EdgeInferError(f"provider {missing[0]} is not available. Available: {available}")
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")  # nodes the accelerator lacks run on the CPU
    return names


def session_options(threads: int | None, *, optimize: bool = True) -> ort.SessionOptions:
    """edge_infer's onnxruntime settings, shared with export's int8 gate so that it measures what
    the runtime computes: int8 products exact on every x86 CPU (``edge_infer.cpu`` says why)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if threads is not None:
        opts.intra_op_num_threads = _check_threads(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: graph-cleaning warnings are not the user's business
    if int8_products_saturate():
        opts.add_session_config_entry("session.x64quantprecision", "1")
    return opts


def open_onnxruntime(name: str, threads: int | None, providers: Sequence[str] | None, *,
                     optimize: bool = True) -> ort.InferenceSession:
    """An onnxruntime session with edge_infer's settings; a file it cannot read is a ModelFormatError.

    ``optimize=False`` skips graph optimisation: a session that only reads the metadata and the
    signature (for another backend) opens faster.
    """
    providers = resolve_providers(providers)
    opts = session_options(threads, optimize=optimize)
    try:
        return ort.InferenceSession(name, sess_options=opts, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types per failure kind
        raise ModelFormatError(f"{name}: not a valid ONNX model ({first_line(e)}){_not_onnx_hint(name)}") from None


def _not_onnx_hint(name: str) -> str:
    """Point a training artifact (learner.pkl, weights.pth) to the exporter."""
    try:
        with open(name, "rb") as f:
            head = f.read(2)
    except OSError:
        return ""
    if name.lower().endswith((".pkl", ".pth", ".pt")) or head[:1] == b"\x80" or head == b"PK":
        return ("; it looks like a PyTorch/fastai file, which edge_infer does not run: "
                "export the training run to ONNX with python -m export RUN --out model.onnx")
    return ""


class OnnxRuntimeBackend:
    """An ``onnxruntime.InferenceSession`` behind the backend interface."""

    name = "onnxruntime"

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    def describe(self) -> str:
        return f"onnxruntime {ort.__version__} ({', '.join(self.session.get_providers())})"


# ------------------------------------------------------------------------------------- OpenVINO


class OpenVinoBackend:
    """OpenVINO's CPU plugin compiling the same ``.onnx`` file, tuned for one call at a time."""

    name = "openvino"

    def __init__(self, path: str, *, threads: int | None = None, inference_precision: str = "f32") -> None:
        if inference_precision not in INFERENCE_PRECISIONS:
            raise ValueError(f"inference_precision must be one of {list(INFERENCE_PRECISIONS)}, "
                             f"got {inference_precision!r}")
        try:
            import openvino as ov
        except ImportError:
            raise EdgeInferError("backend 'openvino' needs OpenVINO: pip install 'edge-infer[openvino]'") from None
        config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
                  "INFERENCE_PRECISION_HINT": inference_precision}
        cache = auto_cache.openvino_cache_dir()
        if cache is not None:
            config["CACHE_DIR"] = cache  # later loads read the compiled model back (auto_cache)
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = str(_check_threads(threads))
        try:
            self._compiled = ov.Core().compile_model(path, "CPU", config)
        except Exception as e:  # OpenVINO raises RuntimeError subclasses for every failure kind
            raise ModelFormatError(f"{path}: OpenVINO cannot compile it ({first_line(e)})") from None
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()  # one request, one stream: calls from a server's threads queue here
        self._output = self._compiled.output(OUTPUT_NAME)
        self.inference_precision = inference_precision
        self.version = ov.__version__ if hasattr(ov, "__version__") else ov.get_version()

    def run(self, batch: np.ndarray) -> np.ndarray:
        # share_inputs: no copy of the pixels; the result is copied out of OpenVINO's buffer,
        # which the next call overwrites.
        with self._lock:
            result = self._request.infer({INPUT_NAME: batch}, share_inputs=True)
            return np.array(result[self._output], dtype=np.float32, copy=True)

    def describe(self) -> str:
        return f"OpenVINO {self.version} (CPU, {self.inference_precision})"


# ----------------------------------------------------------------------------------------- choose


@dataclass(frozen=True)
class Choice:
    """The backend that runs a file, why (for ``info``/``bench``), and the canary checks behind it."""

    backend: Backend
    reason: str
    checks: tuple[Check, ...] = ()
    verified: bool = False  # the backend reproduced the canaries (now, or when auto remembered it)
    later: "Future[Choice] | None" = None  # auto's verdict, being reached in the background

    def final(self) -> "Choice":
        """The verdict once every backend is compiled, checked and timed (waits for ``later``)."""
        return self.later.result() if self.later is not None else self


def _in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
    """``fn`` in a thread of its own; the interpreter waits for it at exit (no native call cut off)."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="edge-infer-auto")
    future = pool.submit(fn, *args, **kwargs)
    pool.shutdown(wait=False)
    return future


def open_backend(name: str, path: str, session: ort.InferenceSession, *, threads: int | None,
                 inference_precision: str, int8: bool = False,
                 canaries: Canaries | None = None, openvino: "Future[OpenVinoBackend] | None" = None,
                 remember: str | None = None) -> Choice:
    """The backend ``name`` for ``path``; ``session`` (already open, it read the metadata) is reused.

    ``auto`` (the module docstring says what it picks): onnxruntime runs the ``canaries`` first
    (``run_on``: the check is the timing); when it reproduces them the choice returns at once
    with onnxruntime, and OpenVINO's compile (``openvino``: one under way) and check go on in the
    background as ``Choice.later``. The compile starts after onnxruntime's check, not beside it:
    on the 2-core AVX2 EPYC (224 px ResNet34 int8) running both at once put the first load
    0.38 s above a plain one, after each other 0.16 s (``benchmarks.load_time``). A verified
    verdict is stored under ``remember`` (an ``auto_cache`` key)."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {name!r}")
    if name == "onnxruntime":
        return Choice(OnnxRuntimeBackend(session), "onnxruntime: asked for by name")
    if name == "openvino":
        return Choice(OpenVinoBackend(path, threads=threads, inference_precision=inference_precision),
                      "openvino: asked for by name")
    found: list[Backend] = [OnnxRuntimeBackend(session)]
    if canaries is None:
        return Choice(found[0], "auto: onnxruntime (the file has no canaries that could show another backend "
                      "computes what export checked; re-export it, or name the backend)")
    precision = "int8" if int8 else "fp32"
    first = run_on(found[0], canaries, precision)  # alone: OpenVINO's compile starts after it
    pending = openvino
    if pending is None and openvino_installed():  # the compile (0.4-0.7 s at 224 px), in a thread
        pending = _in_thread(OpenVinoBackend, path, threads=threads, inference_precision=inference_precision)
    if first.passed and pending is not None:
        later = _in_thread(_settle, path, found, first, pending, canaries, remember)
        return Choice(found[0], f"auto: onnxruntime for now (reproduces the {len(canaries)} canaries); OpenVINO "
                      "is being compiled, checked and timed in the background", (first,), verified=True,
                      later=later)
    return _settle(path, found, first, pending, canaries, remember)


def _settle(path: str, found: list[Backend], first: Check, pending: "Future[OpenVinoBackend] | None",
            canaries: Canaries, remember: str | None) -> Choice:
    """auto's verdict once OpenVINO's compile is done (``first``: onnxruntime's check, taken
    before it began): the fastest that reproduces the canaries, or ``CanaryMismatch``."""
    notes = _join(pending, found)
    checks = [first] + [run_on(b, canaries, first.precision) for b in found[1:]]
    best = fastest(checks)
    if best is None:
        raise refuse(path, checks)
    notes += [f"{c.name} refused: it does not reproduce the canaries (max |dp| {c.max_diff:.2g} > "
              f"{c.tolerance:g}, or a confident flip)" for c in checks if not c.passed]
    reason = auto_reason(best, checks, notes)
    if remember:
        auto_cache.store(remember, best.name, reason)
    return Choice(found[checks.index(best)], reason, tuple(checks), verified=True)


def _join(pending: "Future[OpenVinoBackend] | None", found: list[Backend]) -> list[str]:
    """Wait for OpenVINO's compile; add it to ``found``, or say why not."""
    if pending is None:
        return ["OpenVINO not installed"]
    try:
        found.append(pending.result())
    except ModelFormatError:  # an operator OpenVINO lacks: onnxruntime runs every valid file
        return ["OpenVINO cannot compile it"]
    return []


def _check_threads(threads: int) -> int:
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return threads
