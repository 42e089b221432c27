"""Time the ways a photo can become the model's input, and how far each is from the exact one.

``full`` (decode every pixel, then fastai's crop + bilinear resize) is the reference: it is what
fastai's validation transform gives. The others trade pixels for time:

* ``edge_infer``: ``Classifier``'s own path (``prepare(..., fast_decode=True)``: JPEG draft mode);
* ``draft 1x``: libjpeg DCT scaling down to just the model's input size (no margin);
* ``reduce gap 2``: full decode, then ``Image.reduce`` by an integer factor that keeps at least
  twice the input size (what Pillow's ``reducing_gap=2`` does inside ``resize``);

The pixel columns are the maximum and mean absolute difference from ``full``, in grey levels.

``profile_stages`` splits ``Classifier``'s own path into its steps (read and parse the header,
DCT-scaled decode, EXIF check, colour rule, crop + resize, array) so the report shows where the
milliseconds of an end-to-end call go.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from edge_infer.bench import time_calls
from edge_infer.metadata import Preprocess
from edge_infer import preprocess
from edge_infer.preprocess import draft_size_for, fit_to_size, load_image, prepare

__all__ = ["PATHS", "compare_paths", "profile_stages"]


def _full(path: Path, pre: Preprocess) -> np.ndarray:
    return prepare(path, pre, fast_decode=False)


def _edge_infer(path: Path, pre: Preprocess) -> np.ndarray:
    return prepare(path, pre, fast_decode=True)


def _draft_1x(path: Path, pre: Preprocess) -> np.ndarray:
    img = Image.open(path)
    img.draft("RGB", draft_size_for(img.size, pre))  # ignores EXIF rotation: test photos have none
    return fit_to_size(load_image(img), pre)


def _reduce_gap2(path: Path, pre: Preprocess) -> np.ndarray:
    img = load_image(path)
    need_w, need_h = draft_size_for(img.size, pre)
    factor = max(1, math.floor(min(img.width / need_w, img.height / need_h) / 2))
    return fit_to_size(img.reduce(factor) if factor > 1 else img, pre)


PATHS: dict[str, Callable[[Path, Preprocess], np.ndarray]] = {
    "full": _full,
    "edge_infer": _edge_infer,
    "draft 1x": _draft_1x,
    "reduce gap 2": _reduce_gap2,
}


def compare_paths(photos: dict[str, Path], pre: Preprocess, *, runs: int, warmup: int,
                  log: Callable[[str], None] = print) -> list[dict]:
    """One row per (photo, path): p50/p90 ms and pixel difference from ``full``."""
    rows = []
    for size_name, path in photos.items():
        reference = _full(path, pre).astype(np.int16)
        for name, fn in PATHS.items():
            timing = time_calls(lambda: fn(path, pre), name=f"{name} {size_name}", runs=runs, warmup=warmup)
            diff = np.abs(fn(path, pre).astype(np.int16) - reference)
            rows.append({"photo": size_name, "path": name, "p50_ms": timing.p50_ms,
                         "p90_ms": timing.p90_ms, "max_abs_diff": int(diff.max()),
                         "mean_abs_diff": round(float(diff.mean()), 3)})
            log(f"  decode {size_name:>10} {name:<13} p50 {timing.p50_ms:7.2f} ms  "
                f"max diff {int(diff.max()):3d}  mean diff {diff.mean():.2f}")
    return rows


def _stages(path: Path, pre: Preprocess) -> dict[str, float]:
    """One fast-decode ``prepare`` of ``path``, step by step: seconds per step."""
    t = [time.perf_counter()]
    img, owned = preprocess._open(path, str(path), preprocess.DEFAULT_MAX_PIXELS)
    t.append(time.perf_counter())
    preprocess._draft(img, pre, pre.exif_transpose)
    img.load()
    owned.close()
    t.append(time.perf_counter())
    img = preprocess._exif_transpose(img, str(path)) if pre.exif_transpose else img
    t.append(time.perf_counter())
    img = preprocess.to_rgb(img, background=pre.background)
    t.append(time.perf_counter())
    fit_to_size(img, pre)
    t.append(time.perf_counter())
    names = ("open + header", "decode (DCT-scaled)", "EXIF check", "colour rule", "crop + resize + array")
    return {name: t[i + 1] - t[i] for i, name in enumerate(names)}


def profile_stages(photos: dict[str, Path], pre: Preprocess, *, runs: int,
                   log: Callable[[str], None] = print) -> list[dict]:
    """Median ms of each step of ``Classifier``'s decode path, per photo."""
    rows = []
    for size_name, path in photos.items():
        _stages(path, pre)  # warm-up: file cache, Pillow's lazy plugin imports
        samples = [_stages(path, pre) for _ in range(runs)]
        row = {"photo": size_name, **{k: round(float(np.median([s[k] for s in samples])) * 1000, 3)
                                     for k in samples[0]}}
        rows.append(row)
        log(f"  stages {size_name:>10}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in row.items() if k != "photo"))
    return rows
