"""One benchmark run: the same network and the same photos through every variant and thread count.

``run_comparison`` reads top to bottom: make the photos, get the model (a run folder or a random
ResNet), measure the compute floor, time the onnxruntime settings the fp32 target compares
against, time every variant per thread count, compare their top-1 answers, then time the cold
start in fresh interpreters. It returns a ``benchmarks.result.Result``; ``benchmarks.report``
judges it and writes it out.

Timings use ``edge_infer.bench.time_calls`` (perf_counter, untimed warm-up, percentiles). The
onnxruntime variants are timed before torch is first called: torch's OpenMP threads keep
spinning for a while after each call and would slow whatever runs next.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import timeit
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from edge_infer import Classifier
from edge_infer.agreement import compare
from edge_infer.bench import time_calls
from edge_infer.metadata import ModelInfo

from . import images, tuning
from .floor import measure_floor
from .machine import describe_machine
from .models import Models, prepare_models
from .result import Agreement, BackendAgreement, Result, Row, Throughput, Variant
from .variants import VARIANTS, Loaded, VariantSpec, available_variants, load_variant

__all__ = ["Settings", "run_comparison", "fresh"]

REPO = Path(__file__).resolve().parents[1]
FOLDER_PHOTO = "1920x1080"  # the folder-throughput images and the end-to-end target's photo
AGREEMENT_FILES, AGREEMENT_FILES_QUICK = 200, 50  # validation images of a trained run
FASHION_IMAGES, FASHION_IMAGES_QUICK = 1000, 100  # Fashion-MNIST test images, backend agreement


@dataclass(frozen=True)
class Settings:
    """What to run; ``quick`` cuts every count to a smoke-test size (numbers are then rough)."""

    threads: tuple[int, ...] = (1, 2)
    runs: int = 50
    warmup: int = 5
    quick: bool = False
    arch: str = "resnet34"
    size: int = 224
    run: Path | None = None           # a run folder; None: random weights
    fp32_onnx: Path | None = None     # already exported files of ``run`` (skip the export)
    int8_onnx: Path | None = None
    folder_images: int = 64
    variants: tuple[str, ...] = field(default_factory=available_variants)

    @property
    def fastai_runs(self) -> int:
        # learn.predict is 10-100x slower than the rest; fewer runs keep the total bounded.
        return max(3, self.runs // 5)

    def to_dict(self) -> dict:
        # paths as strings, tuples as lists
        return {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
                for k, v in asdict(self).items()}


def run_comparison(settings: Settings, workdir: Path, *, command: str = "",
                   log: Callable[[str], None] = print) -> Result:
    """Everything the report needs, measured on this machine now; ``command`` is recorded."""
    started = time.perf_counter()
    machine = describe_machine()
    log(f"machine: {machine['cpu_model']}, {machine['usable_cpus']} CPUs, load {machine['load_average']}")
    photos = images.write_photos(workdir / "photos")
    crops = images.write_crops(workdir / "crops", 4 if settings.quick else 8)
    models = prepare_models(settings, workdir, crops_folder=workdir / "crops", log=log)
    info = Classifier.load(models.onnx["fp32"]).info
    log("compute floor (onnxruntime's best GEMM on this machine):")
    floor = measure_floor(models.onnx["fp32"], settings.threads, quick=settings.quick, log=log)
    log("onnxruntime session settings (fp32, model only, batch 1):")
    sweep = tuning.sweep(models.onnx["fp32"], info.preprocess.size, settings.threads, runs=settings.runs,
                         warmup=settings.warmup, log=log)
    rows = _measure_variants(settings, models, info, photos, workdir, log)
    agreements = _agreement(settings, models, info, _agreement_files(settings, models, photos, crops), log)
    variants = tuple(Variant(k, _spec(k).title, _spec(k).runtime, _spec(k).precision, rows[k], agreements[k])
                     for k in settings.variants)
    backends = _backend_agreement(settings, models, info, log)
    cold = _cold_start(models, photos[FOLDER_PHOTO], max(settings.threads), settings, log)
    return Result(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), command=command or " ".join(sys.argv),
        seconds=round(time.perf_counter() - started, 1), machine=machine, settings=settings.to_dict(),
        model=models.describe(info), photos={k: {"path": str(p), "bytes": p.stat().st_size} for k, p in photos.items()},
        variants=variants, floor=floor, backend_agreement=backends, sweep={"fp32": sweep}, cold_start=cold,
        load_average_after=describe_machine()["load_average"])


# ----------------------------------------------------------------------------------- variants


def _measure_variants(settings: Settings, models: Models, info: ModelInfo, photos: dict[str, Path],
                      workdir: Path, log) -> dict[str, tuple[Row, ...]]:
    """Latency per variant and thread count; onnxruntime first (see the module docstring)."""
    order = sorted(settings.variants, key=lambda k: not _spec(k).is_edge_infer)
    folder = images.write_copies(photos[FOLDER_PHOTO], workdir / "folder", settings.folder_images)
    out = {}
    for key in order:
        rows = []
        for threads in settings.threads:
            loaded = load_variant(_spec(key), threads, learner_pkl=models.learner_pkl, onnx=models.onnx, info=info)
            rows.append(_time_loaded(loaded, settings, info, photos, folder, log))
        out[key] = tuple(rows)
    return out


def _spec(key: str) -> VariantSpec:
    return next(v for v in VARIANTS if v.key == key)


def _time_loaded(v: Loaded, settings: Settings, info: ModelInfo, photos: dict[str, Path],
                 folder: list[Path], log) -> Row:
    runs = settings.fastai_runs if v.spec.runtime == "fastai" else settings.runs
    warmup = min(settings.warmup, 2) if v.spec.runtime == "fastai" else settings.warmup
    start = time.perf_counter()
    v.end_to_end(photos[FOLDER_PHOTO])
    first_call_ms = round((time.perf_counter() - start) * 1000, 2)
    model_only = None
    if v.model_only is not None:
        h, w = info.preprocess.size
        pixels = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
        model_only = time_calls(lambda: v.model_only(pixels), name="model only", runs=runs, warmup=warmup)
    row = Row(threads=v.threads, load_s=round(v.load_s, 4), first_call_ms=first_call_ms, model_only=model_only,
              end_to_end={name: time_calls(lambda p=path: v.end_to_end(p), name=f"end to end {name}",
                                           runs=runs, warmup=warmup) for name, path in photos.items()},
              folder=None if v.classifier is None else
              _folder_throughput(v.classifier, folder, repeats=1 if settings.quick else 3))
    log(_row_line(v, row))
    return row


def _row_line(v: Loaded, row: Row) -> str:
    mo = f"model {row.model_only.p50_ms:7.2f} ms  " if row.model_only else " " * 18
    e2e = "  ".join(f"{k} {t.p50_ms:7.2f}" for k, t in row.end_to_end.items())
    folder = f"  folder {row.folder.images_per_s:6.1f} img/s" if row.folder else ""
    return f"  {v.spec.title:<22} threads={v.threads}  load {row.load_s:.3f} s  {mo}e2e p50 ms: {e2e}{folder}"


def _folder_throughput(clf: Classifier, files: list[Path], *, repeats: int, batch_size: int = 8) -> Throughput:
    """Images/s of ``classify_files`` over ``files``: the best of ``repeats`` full passes."""
    def one_pass() -> None:
        failed = sum(r.error is not None for r in clf.classify_files(files, batch_size=batch_size))
        if failed:
            raise RuntimeError(f"classify_files failed on {failed} of {len(files)} copies")

    seconds = timeit.repeat(one_pass, "gc.enable()", number=1, repeat=repeats)  # the collector on, as for a caller
    best = min(seconds)
    return Throughput(images=len(files), images_per_s=round(len(files) / best, 1), seconds=round(best, 4),
                      batch_size=batch_size, passes=tuple(round(s, 4) for s in seconds))


# ---------------------------------------------------------------------------------- agreement


def _agreement(settings: Settings, models: Models, info: ModelInfo, files: list[Path], log) -> dict[str, Agreement]:
    """Top-1 of each variant against PyTorch eager, per image, plus the largest probability gap."""
    threads = max(settings.threads)
    probs = {}
    for spec in VARIANTS:
        if spec.key in settings.variants or spec.key == "torch_fp32":
            v = load_variant(spec, threads, learner_pkl=models.learner_pkl, onnx=models.onnx, info=info)
            probs[spec.key] = np.stack([v.probabilities(f) for f in files])
    ref = probs["torch_fp32"]
    out = {}
    for key, p in probs.items():
        a = compare(ref, p)
        out[key] = Agreement(images=a.images, top1_agreement=round(a.top1_agreement, 4),
                             max_abs_prob_diff=round(a.max_abs_prob_diff, 5),
                             reference_margin_min=round(a.reference_margin_min, 5))
        log(f"  agreement {key:<16} top-1 {a.top1_agreement:.3f} over {a.images} images, "
            f"max |dp| {a.max_abs_prob_diff:.4f}")
    return out


def _backend_agreement(settings: Settings, models: Models, info: ModelInfo, log) -> tuple[BackendAgreement, ...]:
    """Each non-onnxruntime backend against onnxruntime on the same file: top-1 on real photos
    (scikit-learn's, matplotlib's, scikit-image's when installed) and on Fashion-MNIST's test
    set (Debian's dataset-fashion-mnist, when installed), overall and where onnxruntime is
    confident (``edge_infer.agreement``)."""
    keys = [k for k in settings.variants if _spec(k).runtime not in ("fastai", "torch", "onnxruntime")]
    if not keys:
        return ()
    threads = max(settings.threads)
    sets = {"real photos": images.real_photos(),
            "Fashion-MNIST test": images.fashion_mnist_test(FASHION_IMAGES_QUICK if settings.quick
                                                            else FASHION_IMAGES)}
    rows = []
    for key in keys:
        spec = _spec(key)
        ours = Classifier.load(models.onnx[spec.precision], threads=threads, backend=spec.runtime)
        reference = Classifier.load(models.onnx[spec.precision], threads=threads)
        for name, sources in sets.items():
            if not sources:
                continue
            pixels = np.stack([reference.preprocess(s) for s in sources])
            a = compare(_batched(reference, pixels), _batched(ours, pixels))
            row = BackendAgreement(variant=key, set=name, images=a.images, top1_same=a.top1_same,
                                   margin=a.margin, confident=a.confident, confident_same=a.confident_same,
                                   max_abs_prob_diff=a.max_abs_prob_diff)
            log(f"  {key} vs onnxruntime on {name}: top-1 {row.top1_same}/{row.images}, confident "
                f"{row.confident_same}/{row.confident}, max |dp| {row.max_abs_prob_diff:.2g}")
            rows.append(row)
    return tuple(rows)


def _batched(clf: Classifier, pixels: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([clf.probabilities(pixels[i:i + batch]) for i in range(0, len(pixels), batch)])


def _agreement_files(settings: Settings, models: Models, photos: dict[str, Path],
                     crops: dict[str, list[Path]]) -> list[Path]:
    """A trained run's validation images (what it was judged on); else the photos and crops."""
    if settings.run is None:
        return [*photos.values(), *sum(crops.values(), [])]
    from export.run_folder import RunFolder

    valid = RunFolder.load(models.run).files("valid")
    return valid[:AGREEMENT_FILES_QUICK if settings.quick else AGREEMENT_FILES]


# --------------------------------------------------------------------------------- cold start

_IMPORT_SCRIPT = """
import sys, time, json
t = time.perf_counter()
import edge_infer
print(json.dumps({"import_s": time.perf_counter() - t,
                  "torch_imported": "torch" in sys.modules, "click_imported": "click" in sys.modules}))
"""

_FIRST_SCRIPT = """
import sys, time, json
t0 = time.perf_counter()
from edge_infer import Classifier
t1 = time.perf_counter()
clf = Classifier.load(sys.argv[1], threads=int(sys.argv[3]))
t2 = time.perf_counter()
label = clf.predict(sys.argv[2]).label
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_prediction_s": t3 - t2,
                  "load_plus_first_s": t3 - t1, "label": label}))
"""


def fresh(script: str, *args: str, code: Path = REPO, env: dict[str, str] | None = None) -> dict:
    """``script``'s last line of JSON in a fresh interpreter, plus the process's seconds. It runs from
    checkout ``code`` (the repository, as `python -m benchmarks` runs: its edge_infer); ``env`` adds to ours."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=code,
                          env={**os.environ, **(env or {})})
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"a fresh interpreter failed to import or run edge_infer: {last}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]),
            "process_s": time.perf_counter() - start}


def _cold_start(models: Models, photo: Path, threads: int, settings: Settings, log) -> dict:
    """``import edge_infer`` and load + first prediction, each in fresh interpreters (median)."""
    repeats = 3 if settings.quick else 7
    out = {"repeats": repeats, "threads": threads, "photo": photo.name,
           "import": _median_dict([fresh(_IMPORT_SCRIPT) for _ in range(repeats)])}
    for precision in ("fp32", "int8"):
        out[precision] = _median_dict([fresh(_FIRST_SCRIPT, str(models.onnx[precision]), str(photo), str(threads))
                                       for _ in range(repeats)])
    log(f"  cold start: import {out['import']['import_s']:.3f} s; load + first prediction "
        f"int8 {out['int8']['load_plus_first_s']:.3f} s, fp32 {out['fp32']['load_plus_first_s']:.3f} s")
    return out


def _median_dict(rows: list[dict]) -> dict:
    """Numbers: the median over ``rows``; anything else: the first row's value."""
    return {k: (round(float(np.median([r[k] for r in rows])), 4)
                if isinstance(v, float) else v) for k, v in rows[0].items()}
