"""``Classifier``: one backend that runs the graph plus the ``ModelInfo`` read from the same file.

The object is just (backend, info); everything it knows about preprocessing comes from the
model's metadata, so a model and its runtime can never drift apart. The metadata is always read
with onnxruntime (``custom_metadata_map``), whichever backend then runs the graph
(``edge_infer.backends``: onnxruntime, or OpenVINO from the ``openvino`` extra).
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import onnxruntime as ort

from . import auto_cache
from .backends import Backend, Choice, OnnxRuntimeBackend, open_backend, open_onnxruntime
from .canaries import CANARIES_KEY, Canaries
from .errors import EdgeInferError, ImageError, ModelFormatError, first_line
from .metadata import INPUT_NAME, METADATA_KEY, OUTPUT_NAME, ModelInfo
from .preprocess import DEFAULT_MAX_PIXELS, ImageSource, describe, prepare
from .verify import no_canaries, refuse, run_on

__all__ = ["Classifier", "Prediction", "FileResult", "UNKNOWN_LABEL", "top_k_columns", "read_model"]

UNKNOWN_LABEL = "unknown"
_log = logging.getLogger("edge_infer.classifier")


@dataclass(frozen=True)
class Prediction:
    """The best class (``label``/``score``/``index``) and the ``top_k`` (label, probability) pairs.

    Below ``min_confidence`` the label is ``"unknown"`` and ``index`` is -1; ``score`` and
    ``top_k`` still say what the model thought.
    """

    label: str
    score: float
    index: int
    top_k: tuple[tuple[str, float], ...]

    def to_dict(self) -> dict:
        return {"label": self.label, "score": self.score, "index": self.index,
                "top_k": [[label, p] for label, p in self.top_k]}


def top_k_columns(k: int) -> list[str]:
    """A table's flat columns for ``Prediction.top_k`` (CSV, Parquet): ``top1_label``,
    ``top1_score``, ``top2_label``... up to ``k``."""
    return [f"top{i}_{col}" for i in range(1, k + 1) for col in ("label", "score")]


@dataclass(frozen=True)
class FileResult:
    """One image of a folder run: a prediction, or the error that stopped it (never both)."""

    source: str
    prediction: Prediction | None
    error: EdgeInferError | None = None


class Classifier:
    """An image classifier read from one edge_infer ``.onnx`` file.

    >>> clf = Classifier.load("bears.onnx", threads=2)
    >>> clf.predict("photo.jpg").label
    'grizzly'
    """

    def __init__(self, backend: Backend, info: ModelInfo, *, source: str = "model",
                 max_pixels: int = DEFAULT_MAX_PIXELS, fast_decode: bool = True) -> None:
        """``backend`` runs the graph that ``info`` describes (``load`` checks the two agree)."""
        self.backend = backend
        self.info = info
        self.source = source
        self.max_pixels = max_pixels
        self.fast_decode = fast_decode
        self.chosen = f"{self.backend.name}: given"  # why this backend (Classifier.load says more)
        self._later: Future[Choice] | None = None  # auto's verdict, still being reached (settle())
        self._taking = threading.Lock()  # settle() waits for a take the future's callback has begun

    @classmethod
    def load(cls, path: str | os.PathLike, *, threads: int | None = None,
             providers: Sequence[str] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
             fast_decode: bool = True, backend: str = "onnxruntime",
             inference_precision: str = "f32", verify: bool = False) -> "Classifier":
        """Open ``path``, check its metadata against its graph, and pick what runs it.

        ``threads`` sets the backend's threads (None: one per core). ``providers`` (onnxruntime
        execution providers, e.g. ``["cuda"]``) defaults to the CPU. ``backend``:
        ``"onnxruntime"``, ``"openvino"`` (``pip install 'edge-infer[openvino]'``) or ``"auto"``:
        the fastest installed backend that reproduces the file's canaries here (``edge_infer.backends``;
        the load returns on onnxruntime, OpenVINO takes over from the background if faster, and
        ``settle()`` waits for that verdict, which is remembered: ``edge_infer.auto_cache``).
        ``verify``: raise ``CanaryMismatch`` (a ``ModelFormatError``) when the chosen backend does
        not reproduce the canaries, ``NoCanaries`` for a file without them. ``chosen`` says which
        backend runs the file and why. ``inference_precision`` is OpenVINO's for fp32 layers:
        ``"f32"`` (export's parity holds) or ``"bf16"`` (opt-in; faster where the CPU has bf16).
        ``fast_decode`` lets large JPEGs decode at reduced scale (docs/model-format.md gives the
        measured effect).
        """
        name = os.fspath(path)
        if not Path(name).is_file():
            raise ModelFormatError(f"{name}: no such model file")
        if backend != "onnxruntime" and providers:
            raise EdgeInferError(f"providers are onnxruntime's; backend {backend!r} takes none "
                                 "(use backend='onnxruntime')")
        # auto's remembered verdict (edge_infer.auto_cache) opens only the backend it chose.
        key = (auto_cache.key(name, threads=threads, inference_precision=inference_precision)
               if backend == "auto" else None)
        cached = auto_cache.lookup(key) if key else None
        runs = cached["backend"] if cached else backend
        # Only onnxruntime itself (or auto's check) runs this session's graph; OpenVINO needs it
        # for the metadata and the signature alone.
        session = open_onnxruntime(name, threads, providers, optimize=runs != "openvino")
        info, canaries = read_model(session, name)
        choice = open_backend(runs, name, session, threads=threads, inference_precision=inference_precision,
                              int8=info.precision == "int8", canaries=canaries, remember=key)
        if cached:
            choice = Choice(choice.backend, f"{cached['reason']}; remembered in {auto_cache.cache_path()}",
                            verified=True)
        if verify:
            _verify(choice, canaries, info, name)
        clf = cls(choice.backend, info, source=name, max_pixels=max_pixels, fast_decode=fast_decode)
        clf.chosen = choice.reason
        if choice.later is not None:  # auto goes on in the background: the faster backend takes over
            clf._later = choice.later
            choice.later.add_done_callback(clf._take)
        return clf

    def settle(self) -> str:
        """Wait until ``auto`` has compiled, checked and timed every backend (it runs on onnxruntime
        meanwhile), then say which backend runs the file and why (``chosen``). Nothing to wait
        for after any other load."""
        later = self._later
        if later is not None:
            wait([later])
            self._take(later)
        return self.chosen

    def _take(self, later: "Future[Choice]") -> None:
        """auto's background verdict: its backend runs the file from the next call on. Both the
        future's callback (in the pool's thread) and ``settle`` call this; the first applies it,
        and the other waits until it has (backend, reason and log line), under ``_taking``."""
        with self._taking:
            if self._later is not later:
                return
            self._later = None
            try:
                final = later.result()
            except Exception as e:  # onnxruntime reproduced the canaries: it stays, and says why
                self.chosen = f"{self.chosen}; the background check failed ({first_line(e)})"
                return
            self.backend, self.chosen = final.backend, final.reason
            _log.info("%s: %s", self.source, final.reason)  # a server says which backend took over

    @property
    def session(self) -> ort.InferenceSession | None:
        """The onnxruntime session, when onnxruntime runs the graph (None for OpenVINO)."""
        return self.backend.session if isinstance(self.backend, OnnxRuntimeBackend) else None

    @property
    def labels(self) -> tuple[str, ...]:
        return self.info.labels

    def preprocess(self, image: ImageSource) -> np.ndarray:
        """The model's input for one image, uint8 [H, W, 3]; raises ``ImageError``."""
        return prepare(image, self.info.preprocess, max_pixels=self.max_pixels,
                       fast_decode=self.fast_decode)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Run the graph on uint8 [N, H, W, 3] pixels; float32 [N, C]."""
        return self.backend.run(self._check_batch(batch))

    def predict(self, image: ImageSource, *, top_k: int = 1,
                min_confidence: float | None = None) -> Prediction:
        """Classify one image: a path, bytes, a binary file object, a PIL image or an array."""
        probs = self.probabilities(self.preprocess(image)[None])
        return self.prediction(probs[0], top_k=top_k, min_confidence=min_confidence)

    def predict_array(self, batch: np.ndarray, *, top_k: int = 1,
                      min_confidence: float | None = None) -> list[Prediction]:
        """Classify pixels that are already at the model's size: uint8 [N, H, W, 3] RGB."""
        return [self.prediction(p, top_k=top_k, min_confidence=min_confidence)
                for p in self.probabilities(batch)]

    def predict_batch(self, images: Iterable[ImageSource], *, batch_size: int = 8, top_k: int = 1,
                      min_confidence: float | None = None, workers: int | None = None) -> list[Prediction]:
        """Classify many images, in input order; the first bad image raises its ``ImageError``.

        Decoding runs in ``workers`` threads (Pillow releases the GIL) while the previous batch is
        in onnxruntime. To carry on past bad files, use ``classify_files``.
        """
        out = []
        for result in self.classify_files(images, batch_size=batch_size, top_k=top_k,
                                          min_confidence=min_confidence, workers=workers):
            if result.error is not None:
                raise result.error
            out.append(result.prediction)
        return out  # type: ignore[return-value]

    def classify_files(self, images: Iterable[ImageSource], *, batch_size: int = 8, top_k: int = 1,
                       min_confidence: float | None = None,
                       workers: int | None = None) -> Iterator[FileResult]:
        """Yield a ``FileResult`` per image, in input order; bad images do not stop the run.

        ``images`` is a list (or any iterable) of images; for a folder, pass
        ``edge_infer.find_images(folder)``.
        """
        _refuse_one_path(images)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        workers = workers or min(4, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edge-infer-decode") as pool:
            # Keep a window of decodes in flight: they overlap with inference on the current batch.
            pending = (pool.submit(self._safe_preprocess, img) for img in images)
            window: list = []
            for future in pending:
                window.append(future)
                if len(window) >= 2 * batch_size:
                    yield from self._run_window(window[:batch_size], top_k, min_confidence)
                    del window[:batch_size]
            while window:
                yield from self._run_window(window[:batch_size], top_k, min_confidence)
                del window[:batch_size]

    def _safe_preprocess(self, image: ImageSource) -> tuple[str, np.ndarray | None, ImageError | None]:
        name = describe(image)
        try:
            return name, self.preprocess(image), None
        except ImageError as e:
            return name, None, e

    def _run_window(self, futures: list, top_k: int, min_confidence: float | None) -> Iterator[FileResult]:
        decoded = [f.result() for f in futures]
        good = [pixels for _, pixels, _ in decoded if pixels is not None]
        probs = iter(self.probabilities(np.stack(good)) if good else ())
        for name, _, error in decoded:
            pred = None if error else self.prediction(next(probs), top_k=top_k, min_confidence=min_confidence)
            yield FileResult(name, pred, error)

    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        h, w = self.info.preprocess.size
        if not isinstance(batch, np.ndarray) or batch.dtype != np.uint8 or batch.ndim != 4 \
                or batch.shape[1:] != (h, w, 3):
            got = f"{batch.dtype} {batch.shape}" if isinstance(batch, np.ndarray) else type(batch).__name__
            raise ValueError(f"{self.source} takes uint8 [N, {h}, {w}, 3] RGB pixels, got {got}")
        return np.ascontiguousarray(batch)

    def prediction(self, probs: np.ndarray, *, top_k: int = 1,
                   min_confidence: float | None = None) -> Prediction:
        """One row of ``probabilities()`` as a ``Prediction``: for callers that batch the model
        themselves (``edge-infer serve`` does), the same rule as ``predict``."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        order = np.argsort(-probs, kind="stable")[:top_k]
        best = int(order[0])
        score = float(probs[best])
        pairs = tuple((self.labels[i], float(probs[i])) for i in order)
        if min_confidence is not None and score < min_confidence:
            return Prediction(UNKNOWN_LABEL, score, -1, pairs)
        return Prediction(self.labels[best], score, best, pairs)

    def __repr__(self) -> str:
        h, w = self.info.preprocess.size
        return (f"Classifier({self.source!r}, backend={self.backend.describe()!r}, "
                f"labels={len(self.labels)}, size={h}x{w}, precision={self.info.precision})")


def _verify(choice: Choice, canaries: Canaries | None, info: ModelInfo, source: str) -> None:
    """``Classifier.load(verify=True)``: the chosen backend reproduces the canaries, or an error."""
    if canaries is None:
        raise no_canaries(source, info)
    if not choice.verified:  # auto's choice (fresh or remembered) rests on the check already
        result = run_on(choice.backend, canaries, info.precision)
        if not result.passed:
            raise refuse(source, [result])


def read_model(session: ort.InferenceSession, source: str) -> tuple[ModelInfo, Canaries | None]:
    """The metadata (checked against the graph) and the canaries of an open file."""
    meta = session.get_modelmeta().custom_metadata_map
    raw = meta.get(METADATA_KEY)
    if raw is None:
        raise ModelFormatError(
            f"{source} has no edge_infer metadata; export it with python -m export, "
            "or inspect it with edge-infer info")
    info = ModelInfo.from_json(raw, source=source)
    _check_signature(session, info, source)
    text = meta.get(CANARIES_KEY)  # None: a file without canaries
    return info, None if text is None else Canaries.from_json(text, source=source, size=info.preprocess.size,
                                                              classes=len(info.labels))


def _refuse_one_path(images: object) -> None:
    """A bare path would be iterated character by character: say what to pass instead."""
    if isinstance(images, (str, bytes, os.PathLike)):
        what = "bytes" if isinstance(images, bytes) else repr(os.fspath(images))
        raise TypeError(f"expected a list of images, got one path or bytes ({what[:80]}); for one image "
                        "use predict(), for a folder pass edge_infer.find_images(folder, recursive=...)")


def _check_signature(session: ort.InferenceSession, info: ModelInfo, source: str) -> None:
    """Refuse a file whose graph does not take/return what its metadata promises."""
    fix = "re-export it with python -m export"
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [INPUT_NAME]:
        raise ModelFormatError(f"{source}: graph inputs are {[i.name for i in inputs]}, expected "
                               f"['{INPUT_NAME}']; {fix}")
    inp = inputs[0]
    h, w = info.preprocess.size
    if inp.type != "tensor(uint8)" or len(inp.shape) != 4 or not _dims_match(inp.shape[1:], [h, w, 3]):
        raise ModelFormatError(f"{source}: input '{INPUT_NAME}' is {inp.type} {inp.shape}, metadata "
                               f"says uint8 [N, {h}, {w}, 3]; {fix}")
    out = next((o for o in outputs if o.name == OUTPUT_NAME), None)
    if out is None:
        raise ModelFormatError(f"{source}: graph has no '{OUTPUT_NAME}' output "
                               f"(outputs: {[o.name for o in outputs]}); {fix}")
    n = len(info.labels)
    if out.type != "tensor(float)" or len(out.shape) != 2 or not _dims_match(out.shape[1:], [n]):
        raise ModelFormatError(f"{source}: output '{OUTPUT_NAME}' is {out.type} {out.shape}, but the "
                               f"metadata lists {n} labels; {fix}")


def _dims_match(got: list, want: list[int]) -> bool:
    # A symbolic or unknown dimension (str/None) accepts any size; a number must be exact.
    return all(not isinstance(g, int) or g == w for g, w in zip(got, want, strict=True))
