"""``python -m benchmarks.train``: does ``train fit`` keep the GPU busy? Images/s and GPU use, one run.

For each training size (64, 128, 224 px) and each data set it makes itself (small PNGs: the
``shapes`` set, 40x40; photo-sized JPEGs: 640x480 up to 4032x3024), it trains ResNet34 for two
epochs three ways and reports the second epoch:

* ``train fit``: this repository's pipeline (``train.learner.build_learner``: the decoded
  store and ``StoreDL``, channels_last + bf16/fp16, fused AdamW, default batch), the whole network
  trained as ``fit --no-pretrained`` does (an unfrozen fine-tune costs the same per image);
* ``fastai defaults``: ``ImageDataLoaders.from_folder`` + ``vision_learner(...).to_fp16()`` with
  fastai's own defaults (batch 64, ``defaults.cpus`` workers, every photo decoded every epoch);
* ``ceiling``: the ResNet34 training step alone on synthetic tensors already on the device, at
  ``train fit``'s batch size and precision (channels_last, fused AdamW): what the GPU can do
  with perfect feeding. ``--sweep`` (``benchmarks.train_sweep``) sweeps batch x eager/compiled
  x fp16/bf16 over 300 steps; ``--loader-only`` (``benchmarks.train_proxies``) runs the CPU
  proxies of issue 24 with no GPU.

Images/s counts training and validation images over the epoch's wall time (as issue 12 did);
the ceiling counts training steps. GPU utilisation is ``nvidia-smi`` sampled every 200 ms in the
background during the timed epoch (``null`` without one). Each row also splits that epoch into
its training and validation phases and the wait for the first batch: where the time goes.
Results are rewritten after every row, so a run cut short (a lease's time limit) keeps its
numbers. ``--workers 1`` adds ``train fit`` rows with that many store-filling processes. Writes ``train_bench.json``, ``train_bench.md`` and ``train_bench.png`` under
``--out``. ``--quick``: tiny sizes and data, ResNet18, for a test on the CPU (under 2 minutes on
2 cores).

On a GPU machine (the device tool; its python3 has torch, onnxruntime, accelerate, not fastai):
here, in the repository root::

    echo /.whl/ >> "$(git rev-parse --git-common-dir)/info/exclude"
    bash /work/shared/gpu/fetch-wheels.sh .whl

then one device call, ``carry=[".whl"]``, ``timeout_s=540`` (4.3 minutes on an H200 in session 6)::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; mkdir -p $OUT/tb;
    PYTHONUNBUFFERED=1 python3 -m benchmarks.train --out $OUT/tb 2>&1 | tee $OUT/tb/log.txt
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import click
import numpy as np

from .images import photo_jpeg
from .machine import describe_machine, summary_line
from .report import Verdict, targets_table
from .result import md_table, write_json
from .train_sweep import run_steps, train_step

# (width, height) of the photos, cycled: a webcam frame up to a 12 MP phone photo.
PHOTO_SIZES = ((640, 480), (1280, 960), (1920, 1080), (2592, 1944), (4032, 3024))
QUICK_PHOTO_SIZES = ((640, 480), (1280, 960))


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...] = (64, 128, 224)
    arch: str = "resnet34"
    pngs_per_class: int = 2700        # 3 classes: 8,100 PNGs
    photos: int = 2000
    epochs: int = 2
    ceiling_bs: int = 128
    ceiling_steps: int = 30
    photo_sizes: tuple[tuple[int, int], ...] = PHOTO_SIZES


QUICK = Plan(sizes=(32,), arch="resnet18", pngs_per_class=24, photos=20, epochs=2, ceiling_bs=16,
             ceiling_steps=3, photo_sizes=QUICK_PHOTO_SIZES)


# ---------------------------------------------------------------------------------------------
# data sets, made here


def make_pngs(folder: Path, per_class: int) -> Path:
    from train.datasets import make_data

    make_data("shapes", folder, per_class=per_class)
    return folder


def _with_comment(jpeg: bytes, text: bytes) -> bytes:
    """The same JPEG with a COM segment after SOI: other bytes (another cache key), same pixels."""
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + jpeg[2:]


def make_photos(folder: Path, n: int, sizes: tuple[tuple[int, int], ...], classes: int = 3) -> Path:
    """``n`` JPEGs in ``classes`` folders, sizes cycled; each file's bytes are unique.

    One encode per (size, class) (``benchmarks.images.photo_jpeg``: china for even classes,
    flower for odd), then copies that differ in a comment: encoding 2,000 12 MP JPEGs would take
    longer than the benchmark; decoding them costs the same either way.
    """
    encoded = {(s, c): photo_jpeg(s, photo=("china", "flower")[c % 2], seed=c) for s in sizes for c in range(classes)}
    for i in range(n):
        c, s = i % classes, sizes[(i // classes) % len(sizes)]
        path = folder / f"class{c}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_with_comment(encoded[s, c], f"benchmark copy {i}".encode()))
    return folder


# ---------------------------------------------------------------------------------------------
# measuring


class GpuSampler:
    """``nvidia-smi`` utilisation samples (percent, timestamp) in a background thread."""

    def __init__(self, period_ms: int = 200) -> None:
        self.samples: list[tuple[float, int]] = []
        self.proc = None
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                 "-lms", str(period_ms)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.samples.append((time.time(), int(line.split(",")[0])))

    def between(self, start: float, end: float) -> dict | None:
        values = [u for t, u in self.samples if start <= t <= end]  # none without nvidia-smi
        if not values:
            return None
        return {"mean_pct": round(float(np.mean(values)), 1), "samples": len(values),
                "idle_share": round(sum(v == 0 for v in values) / len(values), 3)}

    def close(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()


def _epoch_timer():
    from fastai.callback.core import Callback

    class EpochTimer(Callback):
        order = 100

        def __init__(self) -> None:
            self.epochs: list[tuple[float, float]] = []
            self.phases: list[dict] = []  # per epoch: where the wall time went

        def before_epoch(self) -> None:
            self.started = time.time()
            self.first_batch = self.validating = None

        def before_batch(self) -> None:
            if self.training and self.first_batch is None:  # worker start-up plus one batch made
                self.first_batch = time.time()

        def before_validate(self) -> None:
            self.validating = time.time()

        def after_epoch(self) -> None:
            end = time.time()
            self.epochs.append((self.started, end))
            valid = self.validating or end
            self.phases.append({"train_s": round(valid - self.started, 2), "valid_s": round(end - valid, 2),
                                "first_batch_s": round((self.first_batch or valid) - self.started, 2)})

    return EpochTimer()


@dataclass
class Row:
    data: str
    size: int
    pipeline: str
    images_per_s: float
    epoch_s: float
    first_epoch_s: float | None = None
    prepare_s: float | None = None      # building the DataLoaders (the cache filled here)
    bs: int | None = None
    workers: int | None = None
    gpu: dict | None = None
    extra: dict = field(default_factory=dict)


def _fit_row(learn, pipeline: str, data: Path, size: int, plan: Plan, sampler: GpuSampler, prepare_s: float,
             bs: int | None, workers: int | None) -> Row:
    """``plan.epochs`` epochs of ``learn``; the row of the last (images/s, GPU use, phases)."""
    from train.progress import plain_progress

    timer = _epoch_timer()
    with plain_progress(learn):
        learn.fit_one_cycle(plan.epochs, 1e-3, cbs=timer)
    (start, end), (first_start, first_end) = timer.epochs[-1], timer.epochs[0]
    n = len(learn.dls.train_ds) + len(learn.dls.valid_ds)
    return Row(data.name, size, pipeline, n / (end - start), end - start, first_end - first_start, prepare_s, bs,
               workers, sampler.between(start, end), extra=timer.phases[-1])


def run_train_fit(data: Path, size: int, plan: Plan, sampler: GpuSampler, workers: int | None,
                  cache: Path) -> Row:
    import torch
    from fastai.vision.all import set_seed

    from export.train_config import TrainConfig
    from train.learner import build_learner

    set_seed(42)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        setup = build_learner(data, out, TrainConfig(arch=plan.arch, size=size, pretrained=False, augment=True,
                                                     workers=workers, store=cache))
        prepare = time.perf_counter() - started
        row = _fit_row(setup.learn, "train fit" if workers is None else f"train fit, {workers} workers", data, size,
                       plan, sampler, prepare, setup.config.bs, setup.config.workers)
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return row


def run_fastai_defaults(data: Path, size: int, plan: Plan, sampler: GpuSampler) -> Row:
    import torch
    import torchvision
    from fastai.vision.all import ImageDataLoaders, Resize, aug_transforms, error_rate, set_seed, vision_learner

    set_seed(42)
    started = time.perf_counter()
    dls = ImageDataLoaders.from_folder(data, valid_pct=0.2, seed=42, item_tfms=Resize(size),
                                       batch_tfms=aug_transforms())
    learn = vision_learner(dls, getattr(torchvision.models, plan.arch), pretrained=False,
                           metrics=error_rate)
    if torch.cuda.is_available():
        learn.to_fp16()  # the course's habit on a GPU
    return _fit_row(learn, "fastai defaults", data, size, plan, sampler, time.perf_counter() - started, dls.bs,
                    dls.train.fake_l.num_workers)


def run_ceiling(size: int, plan: Plan, sampler: GpuSampler) -> Row:
    """ResNet training steps on synthetic tensors already on the device: no data loading at all.

    On CUDA at ``train fit``'s own batch size and precision (``train.learner.default_bs``,
    ``mixed_precision_mode``), so the ratio compares like with like; ``--sweep`` has the rest.
    """
    import torch
    import torchvision

    from train.learner import default_bs, mixed_precision_mode

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    precision = mixed_precision_mode() if cuda else "fp32"
    bs = default_bs(True, (size, size)) if cuda and plan != QUICK else plan.ceiling_bs
    model = getattr(torchvision.models, plan.arch)(num_classes=3).to(device)
    x = torch.randn(bs, 3, size, size, device=device)
    y = torch.randint(0, 3, (bs,), device=device)
    if cuda:
        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3, **({"fused": True} if cuda else {}))
    step = train_step(model, x, y, opt, precision, device.type)
    run_steps(step, 3, cuda=cuda)
    start, end = run_steps(step, plan.ceiling_steps, cuda=cuda)
    seconds = (end - start) / plan.ceiling_steps
    return Row("synthetic", size, "ceiling", bs / seconds, end - start, bs=bs,
               gpu=sampler.between(start, end), extra={"precision": precision})


# ---------------------------------------------------------------------------------------------
# report

TARGET_SIZE = 224  # issue 12's targets are set for ResNet34 at 224 px on a 16-core GPU machine


def judge(result: dict) -> list[Verdict]:
    """Issue 12's GPU targets, judged on this run's rows; ``passed`` None where not measured.

    Only a CUDA run at 224 px is judged: on the CPU (``--quick``) every target reads "not measured".
    """
    cuda = "CUDA" in result["device"]
    rows = result["rows"]
    fit, plain, photos, photos_plain = (_find(rows, pipeline, TARGET_SIZE, data) for data in ("pngs", "photos")
                                        for pipeline in ("train fit", "fastai defaults"))
    ceiling = _find(rows, "ceiling", TARGET_SIZE)

    def ratio(a: dict | None, b: dict | None) -> float | None:
        return a["images_per_s"] / b["images_per_s"] if a and b else None

    measures = [
        ("train fit images/s, small PNGs", ">= 3500 images/s", fit and fit["images_per_s"], "images/s", 3500),
        ("train fit / synthetic ceiling", ">= 0.5x", ratio(fit, ceiling), "x", 0.5),
        ("train fit / fastai defaults, small PNGs", ">= 2x", ratio(fit, plain), "x", 2.0),
        ("train fit / fastai defaults, photos", ">= 2x", ratio(photos, photos_plain), "x", 2.0),
        ("GPU busy in the train fit epoch", ">= 70 %", fit and fit["gpu"] and fit["gpu"]["mean_pct"], "%", 70.0),
        ("photos / small PNGs, train fit", ">= 1x (later epochs as fast)", ratio(photos, fit), "x", 1.0),
    ]
    reference = result["plan"]["arch"] == "resnet34"
    return [Verdict(name, goal, None if value is None or not cuda else round(value, 3), unit,
                    None if value is None or not cuda else value >= limit,
                    f"{TARGET_SIZE} px" if cuda else "GPU targets: not judged without CUDA", reference)
            for name, goal, value, unit, limit in measures]


def to_markdown(result: dict) -> str:
    lines = [f"# train throughput: {result['device']}", "",
             f"- machine: {result['machine_line']}", f"- plan: {result['plan']}"]
    if not result.get("complete", True):
        lines.append(f"- **cut short** after {len(result['rows'])} rows: the plan's later rows are missing")
    lines += ["", *md_table(["data", "px", "pipeline", "images/s", "x fastai", "/ ceiling", "GPU busy (mean %)",
                             "epoch s", "train + valid s (fill)", "first epoch s", "prepare s", "bs", "workers"],
                            [_table_row(r, result["rows"]) for r in result["rows"]])]
    lines += ["", "images/s: training + validation images over the last epoch's wall time "
              "(ceiling: training steps only); train + valid: that epoch's two phases, fill: from its "
              "start to the first training batch (worker start-up and one batch made); prepare: "
              "DataLoaders built (image cache filled) before the first epoch."]
    verdicts = judge(result)
    lines += ["", "## Targets (issue 12)", "", *targets_table(verdicts), "",
              f"{sum(v.passed is True for v in verdicts)} of {len(verdicts)} targets met."]
    return "\n".join(lines) + "\n"


def _table_row(r: dict, rows: list[dict]) -> list:
    plain, ceiling = _find(rows, "fastai defaults", r["size"], r["data"]), _find(rows, "ceiling", r["size"])
    vs = f"{r['images_per_s'] / plain['images_per_s']:.2f}" if plain and r is not plain and r["pipeline"] != "ceiling" else ""
    of = f"{r['images_per_s'] / ceiling['images_per_s']:.2f}" if ceiling and r is not ceiling else ""
    x = r.get("extra") or {}
    phases = f"{x['train_s']:.1f} + {x['valid_s']:.1f} ({x['first_batch_s']:.1f})" if "train_s" in x else ""
    return [r["data"], r["size"], r["pipeline"], f"{r['images_per_s']:.0f}", vs, of,
            f"{r['gpu']['mean_pct']:.0f}" if r["gpu"] else "n/a", _f1(r["epoch_s"]), phases, _f1(r["first_epoch_s"]),
            _f1(r["prepare_s"]), r["bs"] or "", "" if r["workers"] is None else r["workers"]]


def _f1(v: float | None) -> str:
    return "" if v is None else f"{v:.1f}"


def _find(rows: list[dict], pipeline: str, size: int, data: str | None = None) -> dict | None:
    """The row of ``pipeline`` at ``size`` (and on ``data``), if the run has one."""
    return next((r for r in rows if (r["pipeline"], r["size"]) == (pipeline, size)
                 and (data is None or r["data"] == data)), None)


def plot(result: dict, path: Path) -> Path:
    from matplotlib.figure import Figure  # not pyplot: no backend is set for the caller

    rows = result["rows"]
    groups = sorted({(r["data"], r["size"]) for r in rows if r["pipeline"] != "ceiling"})
    pipelines = sorted({r["pipeline"] for r in rows if r["pipeline"] != "ceiling"})
    fig = Figure(figsize=(max(6, 1.6 * len(groups)), 4))
    ax = fig.subplots()
    width = 0.8 / max(1, len(pipelines))
    for j, name in enumerate(pipelines):
        values = [r["images_per_s"] if (r := _find(rows, name, size, data)) else 0 for data, size in groups]
        ax.bar([i + j * width for i in range(len(groups))], values, width, label=name)
    for i, (_, size) in enumerate(groups):
        if ceiling := _find(rows, "ceiling", size):
            ax.hlines(ceiling["images_per_s"], i - width / 2, i + 0.8 - width / 2, colors="k", linestyles="--",
                      label="ceiling (synthetic)" if i == 0 else None)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], [f"{d}\n{s} px" for d, s in groups])
    ax.set(ylabel="images/s", title=f"train throughput: {result['device']}")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA), {len(os.sched_getaffinity(0))} CPU cores"
    return f"CPU only, {len(os.sched_getaffinity(0))} cores, {torch.get_num_threads()} torch threads"


def run(out: Path, plan: Plan, workers: tuple[int, ...] = (), work: Path | None = None) -> dict:
    sampler = GpuSampler()
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        datasets = [make_pngs(tmp / "pngs", plan.pngs_per_class),
                    make_photos(tmp / "photos", plan.photos, plan.photo_sizes)]
        print(f"data made in {time.perf_counter() - started:.0f} s", flush=True)
        machine = describe_machine()
        result = {"device": _device(), "machine": machine, "machine_line": summary_line(machine),
                  "plan": asdict(plan), "complete": False, "rows": []}

        def record(row: Row) -> None:
            # Written after every row: a run cut short (a device lease's time limit) keeps its numbers.
            gpu = f", GPU {row.gpu['mean_pct']:.0f}%" if row.gpu else ""
            print(f"{row.data:>9} {row.size:>4} px  {row.pipeline:<22} {row.images_per_s:8.0f} images/s{gpu}", flush=True)
            result["rows"].append(asdict(row))
            _write(out, result)

        try:
            for size in plan.sizes:
                record(run_ceiling(size, plan, sampler))
                for data in datasets:
                    for w in (None, *workers):
                        record(run_train_fit(data, size, plan, sampler, w, tmp / "cache"))
                    record(run_fastai_defaults(data, size, plan, sampler))
        finally:
            sampler.close()
    result["complete"] = True
    _write(out, result)
    plot(result, out / "train_bench.png")
    return result


def _write(out: Path, result: dict) -> None:
    result["targets"] = [v.to_dict() for v in judge(result)]
    write_json(out / "train_bench.json", result, to_markdown(result))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("benchmarks/results/train"),
              show_default=True)
@click.option("--quick", is_flag=True, help="Tiny data, 32 px, ResNet18: a CPU smoke run (< 2 min).")
@click.option("--workers", default="", help="Also run train fit at these store-filling process counts, e.g. 1.")
@click.option("--sizes", default=None, help="Comma-separated sizes instead of the plan's, e.g. 224.")
@click.option("--loader-only", is_flag=True,
              help="The CPU proxies (benchmarks.train_proxies): the loader's host side and the step's op count.")
@click.option("--sweep", is_flag=True, help="The ceiling sweep, CUDA only (benchmarks.train_sweep).")
def main(out: Path, quick: bool, workers: str, sizes: str | None, loader_only: bool, sweep: bool) -> None:
    """Images/s and GPU use: train fit vs plain fastai vs the synthetic ceiling."""
    if loader_only:
        from . import train_proxies

        with tempfile.TemporaryDirectory() as work:
            proxies = train_proxies.run(Path(work))
        text = train_proxies.to_markdown(proxies)
        write_json(out / "loader_proxies.json", proxies, text)
        print(text)
        return
    if sweep:
        from . import train_sweep

        rows = train_sweep.sweep()
        text = train_sweep.to_markdown(rows)
        write_json(out / "ceiling_sweep.json", {"device": _device(), "rows": rows}, text)
        print(text)
        return
    plan = QUICK if quick else Plan()
    if sizes:
        plan = replace(plan, sizes=tuple(int(s) for s in sizes.split(",")))
    counts = tuple(int(w) for w in workers.split(",") if w.strip())
    result = run(out, plan, counts)
    print((out / "train_bench.md").read_text())
    print(f"wrote {out / 'train_bench.json'}, train_bench.md, train_bench.png ({len(result['rows'])} rows)")


if __name__ == "__main__":
    sys.exit(main())
