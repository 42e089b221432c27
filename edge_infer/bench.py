"""Timing machinery for ``edge-infer bench`` and ``benchmarks/``: warm-up, perf_counter, percentiles.

Model-only (the onnxruntime session on pixels already at the model's size) and end-to-end
(decode, resize and run, one image at a time, as a caller with one photo sees it) are timed
apart, and the thread count is part of every result, because a latency without it means little.
The test photos are made here with numpy and Pillow (smooth multi-scale noise, saved as JPEG),
so a benchmark needs no data set and no extra dependency.

Every image is decoded once before timing: a file that cannot be read is reported in
``skipped`` and left out (one bad file in a folder does not abort the run). When the backend is
not onnxruntime, the same images also go through onnxruntime and ``agreement`` says how often
the two give the same top-1, overall and where onnxruntime is confident (``edge_infer.agreement``).
"""

from __future__ import annotations

import io
import os
import platform
import time
import timeit
from dataclasses import asdict, dataclass
from itertools import cycle
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import onnxruntime as ort
from PIL import Image

from .agreement import Agreement, compare
from .backends import OnnxRuntimeBackend, open_onnxruntime
from .classifier import Classifier
from .errors import EdgeInferError, ImageError
from .preprocess import ImageSource

__all__ = ["Timing", "BenchResult", "time_calls", "summarize", "synthetic_photo",
           "synthetic_photos", "run_benchmark", "SYNTHETIC_SIZES"]

# A webcam frame and a 1080p photo: the two sizes most callers send.
SYNTHETIC_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (1920, 1080))


@dataclass(frozen=True)
class Timing:
    """``runs`` timed calls after ``warmup`` untimed ones; milliseconds."""

    name: str
    runs: int
    warmup: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(name: str, seconds: Sequence[float], *, warmup: int = 0) -> Timing:
    """Percentiles (numpy's linear interpolation) of per-call durations given in seconds."""
    if len(seconds) == 0:
        raise ValueError(f"{name}: no timed calls to summarize")
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    return Timing(name=name, runs=len(ms), warmup=warmup, p50_ms=p50, p90_ms=p90, p99_ms=p99,
                  mean_ms=float(ms.mean()), min_ms=float(ms.min()), max_ms=float(ms.max()))


def time_calls(fn: Callable[[], object], *, name: str, runs: int, warmup: int) -> Timing:
    """Call ``fn`` ``warmup`` times untimed (caches, lazy allocations), then ``runs`` times timed."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    # perf_counter around each call, with the garbage collector on as it is for the caller
    return summarize(name, timeit.repeat(fn, "gc.enable()", number=1, repeat=runs), warmup=warmup)


@dataclass(frozen=True)
class BenchResult:
    """One ``run_benchmark``: load, first call, model-only and end-to-end timings, and the setup."""

    model: str
    threads: int | None  # onnxruntime intra-op threads; None: its default, one per physical core
    fast_decode: bool
    cpu_count: int
    onnxruntime: str
    machine: str
    input_size: tuple[int, int]  # (height, width)
    load_ms: float
    first_call_ms: float
    model_only: Timing
    end_to_end: tuple[Timing, ...]
    backend: str = "onnxruntime"
    skipped: tuple[str, ...] = ()       # "<path>: <what is wrong>" per image that was left out
    agreement: Agreement | None = None  # against onnxruntime, when the backend is another
    chosen: str = ""  # why this backend (``Classifier.chosen``: auto's canary checks and timing)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "input_size": list(self.input_size), "skipped": list(self.skipped),
                "end_to_end": [t.to_dict() for t in self.end_to_end],
                "agreement": None if self.agreement is None else self.agreement.to_dict()}

    def to_text(self) -> str:
        """A table for people: one row per timing, threads and machine stated above it."""
        threads = (f"{self.threads}" if self.threads is not None
                   else "onnxruntime default (one per physical core)")
        h, w = self.input_size
        head = [
            f"model        {self.model} (input {h}x{w})",
            f"threads      {threads}; os.cpu_count() = {self.cpu_count}",
            f"runtime      {self.backend} on {self.machine}, "
            f"JPEG decode {'fast (draft)' if self.fast_decode else 'full'}",
            *([f"chosen       {self.chosen}"] if self.chosen else []),
            f"load         {self.load_ms:.1f} ms",
            f"first call   {self.first_call_ms:.2f} ms",
            "",
        ]
        rows = [self.model_only, *self.end_to_end]
        width = max(len(t.name) for t in rows)
        table = [f"{'':{width}}  {'runs':>5}  {'p50 ms':>8}  {'p90 ms':>8}  {'p99 ms':>8}"]
        table += [f"{t.name:{width}}  {t.runs:>5}  {t.p50_ms:>8.2f}  {t.p90_ms:>8.2f}  {t.p99_ms:>8.2f}"
                  for t in rows]
        return "\n".join(head + table + self._agreement_lines())

    def _agreement_lines(self) -> list[str]:
        a = self.agreement
        if a is None:
            return []
        return ["", f"agreement with onnxruntime over {a.images} images: top-1 "
                f"{a.top1_same}/{a.images}; confident (margin >= {a.margin}) "
                f"{a.confident_same}/{a.confident}; max |probability difference| "
                f"{a.max_abs_prob_diff:.2g}"]


def synthetic_photo(width: int, height: int, *, seed: int = 0, quality: int = 90) -> bytes:
    """A photo-like JPEG: smooth colour blobs at three scales plus sensor-like grain.

    Flat or pure-noise images decode unrealistically fast or slow; a 1/f-ish mix gives file
    sizes and decode times close to a real photo of the same size.
    """
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.float32)
    for cell, amplitude in ((256, 90.0), (48, 40.0), (8, 12.0)):
        grid = rng.integers(0, 256, (height // cell + 2, width // cell + 2, 3), dtype=np.uint8)
        layer = Image.fromarray(grid, "RGB").resize((width, height), Image.Resampling.BICUBIC)
        img += (np.asarray(layer, np.float32) - 127.5) * (amplitude / 127.5)
    img += 128.0 + 3.0 * rng.standard_normal(img.shape, dtype=np.float32)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def synthetic_photos(sizes: Sequence[tuple[int, int]] = SYNTHETIC_SIZES,
                     per_size: int = 3) -> dict[str, list[bytes]]:
    """``per_size`` different JPEGs per (width, height), keyed ``"end to end 640x480 JPEG"``."""
    return {f"end to end {w}x{h} JPEG": [synthetic_photo(w, h, seed=i) for i in range(per_size)]
            for w, h in sizes}


def run_benchmark(model: str | os.PathLike, *, images: Mapping[str, Sequence[ImageSource]] | None = None,
                  runs: int = 50, warmup: int = 5, threads: int | None = None,
                  fast_decode: bool = True, backend: str = "onnxruntime", inference_precision: str = "f32",
                  providers: Sequence[str] | None = None) -> BenchResult:
    """Time loading ``model``, its first call, model-only and end-to-end classification.

    ``images`` maps a row name to the images it cycles through (paths, bytes...); by default
    ``synthetic_photos()``. End-to-end is ``Classifier.predict`` on one image per call. Images
    that cannot be decoded are left out and listed in ``skipped``; none left is an error.
    """
    images = dict(images) if images is not None else synthetic_photos()
    if not images or not all(images.values()):
        raise ValueError("run_benchmark needs at least one image in every group")
    start = time.perf_counter()
    clf = Classifier.load(model, threads=threads, fast_decode=fast_decode, backend=backend,
                          inference_precision=inference_precision, providers=providers)
    load_ms = (time.perf_counter() - start) * 1000.0
    clf.settle()  # auto: time the backend it settles on, not the one it starts on
    images, pixels, skipped = _decodable(clf, images)
    start = time.perf_counter()
    clf.probabilities(pixels[0][None])
    first_call_ms = (time.perf_counter() - start) * 1000.0
    model_only = time_calls(lambda: clf.probabilities(pixels[0][None]), name="model only (batch 1)",
                            runs=runs, warmup=warmup)
    end_to_end = tuple(_time_end_to_end(clf, name, sources, runs, warmup)
                       for name, sources in images.items())
    return BenchResult(
        model=os.fspath(model), threads=threads, fast_decode=fast_decode,
        cpu_count=os.cpu_count() or 1, onnxruntime=ort.__version__,
        machine=f"{platform.machine()} {platform.system()}",
        input_size=clf.info.preprocess.size, load_ms=load_ms, first_call_ms=first_call_ms,
        model_only=model_only, end_to_end=end_to_end, backend=clf.backend.describe(),
        skipped=tuple(skipped), agreement=_against_onnxruntime(clf, pixels, threads), chosen=clf.chosen)


def _decodable(clf: Classifier, images: Mapping[str, Sequence[ImageSource]]
               ) -> tuple[dict[str, list[ImageSource]], list[np.ndarray], list[str]]:
    """The groups minus the images that fail to decode, every decoded input, and the failures."""
    kept: dict[str, list[ImageSource]] = {}
    pixels, skipped = [], []
    for name, sources in images.items():
        for source in sources:
            try:
                pixels.append(clf.preprocess(source))
            except ImageError as e:
                skipped.append(str(e))
                continue
            kept.setdefault(name, []).append(source)
    if not pixels and len(skipped) == 1:
        raise ImageError(skipped[0])
    if not pixels:
        raise EdgeInferError(f"none of the {len(skipped)} images could be decoded (first: {skipped[0]})")
    return kept, pixels, skipped


def _against_onnxruntime(clf: Classifier, pixels: list[np.ndarray], threads: int | None) -> Agreement | None:
    if clf.backend.name == "onnxruntime":
        return None
    reference = OnnxRuntimeBackend(open_onnxruntime(clf.source, threads, None))
    ours = np.concatenate([clf.probabilities(p[None]) for p in pixels])
    theirs = np.concatenate([reference.run(p[None]) for p in pixels])
    return compare(theirs, ours)


def _time_end_to_end(clf: Classifier, name: str, sources: Sequence[ImageSource],
                     runs: int, warmup: int) -> Timing:
    # bytes are wrapped afresh each call by predict; cycling spreads the runs over all images.
    next_image = cycle(sources).__next__
    return time_calls(lambda: clf.predict(next_image()), name=name, runs=runs, warmup=warmup)
