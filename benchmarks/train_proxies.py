"""CPU proxies for issue 24's GPU targets (``python -m benchmarks.train --loader-only``): no GPU needed.

Two questions a GPU would answer, asked where there is none:

* **Can the host keep up?** The host side of ``train.loader.StoreDL`` (gather the batch's rows
  from the memory-mapped store, labels, resample boxes: ``StoreDL.gather``, what runs before the
  pinned copy on CUDA), in images/s of 224-px batches on one core (one thread, one process), from
  the second epoch on (the first reads the store into the page cache), for small PNGs and for
  phone-sized JPEGs made here. Beside it fastai's item pipeline (open, decode, ``Resize``, to
  tensor, collate: ``DataLoader.do_item`` + ``do_batch``) on the same core and the same files.
  Target: >= 20,000 images/s for both, against about 500 for fastai.
* **Is the step launch-lean?** The aten operations one training step issues (loader + forward +
  backward + optimizer + fastai's callbacks; bs 2, 32 px, ResNet34, counted by ``torch.profiler``
  on the CPU), against the bare synthetic step (the same model, tensors already made, PyTorch's
  AdamW, nothing else). Each op is at least one kernel launch on a GPU, so at small batches the
  ratio is the time ratio. Target: <= 1.2x. Counted for both optimizers (``export.train_config.OPTIMIZERS``).

Host syncs in our code are counted by a test instead (tests/test_train_store.py).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from .result import md_table

PX = 224
BS = 128


def loader_host_rate(dl, images: int = 8192) -> float:
    """Images/s of ``StoreDL.gather`` over whole shuffled epochs after the first (which reads the
    store into the page cache), as many as make at least ``images`` images."""
    h, w = dl.store.layout.shape
    buf, extra = np.empty((dl.bs, h, w, 3), np.uint8), np.zeros((dl.bs, 7))
    done, seconds, epoch = 0, 0.0, 0
    while done < images:
        idxs = np.asarray(dl.get_idxs(), dtype=np.int64)  # fastai's shuffled order
        start = time.perf_counter()
        for k in range(0, len(idxs) - dl.bs + 1, dl.bs):
            dl.gather(idxs[k:k + dl.bs], buf, extra)
        if epoch:
            done, seconds = done + (len(idxs) // dl.bs) * dl.bs, seconds + time.perf_counter() - start
        epoch += 1
    return done / seconds


def fastai_item_rate(dl, n: int) -> float:
    """Images/s of fastai's item pipeline (``do_item`` + ``do_batch``) for ``n`` items, after a warm-up."""
    idxs = list(range(min(n, len(dl.dataset))))
    for i in idxs[:4]:
        dl.do_item(i)
    start = time.perf_counter()
    for k in range(0, len(idxs), dl.bs):
        dl.do_batch([dl.do_item(i) for i in idxs[k:k + dl.bs]])
    return len(idxs) / (time.perf_counter() - start)


def loader_rows(datasets: dict[str, Path], store: Path, fastai_items: dict[str, int]) -> list[dict]:
    import torch

    from edge_infer.metadata import Preprocess
    from train.data import make_dls

    torch.set_num_threads(1)
    rows, pre = [], Preprocess(size=(PX, PX))
    for name, data in datasets.items():
        train = make_dls(data, pre, bs=BS, augment=True, store=store).train
        (h, w), kind = train.store.layout.shape, train.store.layout.kind
        rows.append({"data": name, "pipeline": "store (host side)", "px": PX, "bs": BS, "layout": f"{kind} {w}x{h}",
                     "row_kb": round(h * w * 3 / 1024, 1),
                     "images_per_s": round(loader_host_rate(train)), "items": len(train.dataset)})
        plain = make_dls(data, pre, bs=BS, augment=True, store=False, num_workers=0).train
        rows.append({"data": name, "pipeline": "fastai item pipeline", "px": PX, "bs": BS,
                     "images_per_s": round(fastai_item_rate(plain, fastai_items[name]), 1),
                     "items": min(fastai_items[name], len(plain.dataset))})
    return rows


def warm_start(work: Path, files: int = 10_000) -> dict:
    """Seconds to open a filled store of ``files`` images again (a stat per file, the manifest
    read, nothing decoded): what every run after the first pays. 28x28 PNGs, cheap to make."""
    from PIL import Image

    from edge_infer.metadata import Preprocess
    from train.store import open_store

    data = work / "many"
    rng = np.random.default_rng(0)
    paths = []
    for i in range(files):
        path = data / f"c{i % 10}" / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(path)
        paths.append(str(path.relative_to(data)))
    pre = Preprocess(size=(32, 32))
    start = time.perf_counter()
    cold = open_store(data, paths, pre, "train", root=work / "many-store")
    cold_s = time.perf_counter() - start
    start = time.perf_counter()
    warm = open_store(data, paths, pre, "train", root=work / "many-store")
    return {"files": files, "cold_s": round(cold_s, 2), "cold_decoded": cold.decoded,
            "warm_s": round(time.perf_counter() - start, 3), "warm_decoded": warm.decoded}


def _count_ops(prof) -> int:
    return sum(1 for e in prof.events() if e.name.startswith("aten::"))


def step_ops(data: Path, store: Path, optimizer: str, augment: bool, steps: int = 3) -> float:
    """aten ops per ``fit`` step (the batch's loading included), bs 2, 32 px, ResNet34."""
    import torch
    from fastai.vision.all import Callback, CancelFitException, set_seed

    from export.train_config import TrainConfig
    from train.learner import build_learner

    class Profile(Callback):
        order = 99  # after the Recorder: a step ends when every callback has seen it

        def after_batch(self) -> None:
            if not self.training:
                return
            if self.iter == 1:
                self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                self.prof.__enter__()
            elif self.iter == 1 + steps:
                self.prof.__exit__(None, None, None)
                self.ops = _count_ops(self.prof) / steps
                raise CancelFitException()

    set_seed(0)
    with tempfile.TemporaryDirectory() as out:
        setup = build_learner(data, out, TrainConfig(arch="resnet34", size=32, bs=2, pretrained=False,
                                                     augment=augment, store=store, optimizer=optimizer))
        prof = Profile()
        setup.learn.fit(1, 1e-3, cbs=prof)
    return prof.ops


def bare_step_ops(steps: int = 3) -> float:
    """aten ops per bare synthetic step: ResNet34 (fastai's head), tensors made, PyTorch AdamW."""
    import torch
    import torchvision
    from fastai.vision.all import create_vision_model

    torch.manual_seed(0)
    model = create_vision_model(torchvision.models.resnet34, 3, pretrained=False)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2,))
    opt = torch.optim.AdamW(model.parameters(), 1e-3, fused=True)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    return _count_ops(prof) / steps


def op_rows(data: Path, store: Path) -> list[dict]:
    from export.train_config import OPTIMIZERS

    bare = bare_step_ops()
    rows = [{"step": "bare synthetic (PyTorch AdamW, fused)", "aten_ops": round(bare), "ratio": 1.0}]
    for augment in (False, True):
        for optimizer in OPTIMIZERS:
            ops = step_ops(data, store, optimizer, augment)
            rows.append({"step": f"train fit step, optimizer {optimizer}, aug_transforms {'on' if augment else 'off'}",
                         "aten_ops": round(ops), "ratio": round(ops / bare, 3)})
    return rows


def run(work: Path, pngs: int = 3000, photos: int = 640, fastai_items: dict[str, int] | None = None) -> dict:
    """Both proxies on data made under ``work``: ``pngs`` 40x40 PNGs, ``photos`` JPEGs of 640x480
    to 4032x3024 (``benchmarks.train.PHOTO_SIZES``); fastai's pipeline timed on the first
    ``fastai_items`` of each (a 12 MP decode takes a tenth of a second)."""
    from .machine import describe_machine, summary_line
    from .train import PHOTO_SIZES, QUICK_PHOTO_SIZES, make_photos, make_pngs

    fastai_items = fastai_items or {"pngs": 512, "photos": 40}
    started = time.perf_counter()
    datasets = {"pngs": make_pngs(work / "pngs", pngs // 3), "photos": make_photos(work / "photos", photos, PHOTO_SIZES)}
    print(f"data made in {time.perf_counter() - started:.0f} s", flush=True)
    machine = describe_machine()
    loader = loader_rows(datasets, work / "store", fastai_items)
    for row in loader:
        print(row, flush=True)
    # photos of another aspect than the square crop: the canvas store and the device resample run
    ops = op_rows(make_photos(work / "tiny", 12, QUICK_PHOTO_SIZES), work / "store")
    for row in ops:
        print(row, flush=True)
    warm = warm_start(work)
    print(warm, flush=True)
    return {"machine": machine, "machine_line": summary_line(machine), "loader": loader, "ops": ops,
            "warm_start": warm,
            "targets": {"host images/s per core": 20000, "ops ratio": 1.2}}


def to_markdown(result: dict) -> str:
    lines = ["# CPU proxies for issue 24 (`python -m benchmarks.train --loader-only`)", "",
             f"Machine: {result['machine_line']}. One run: read the rows against each other (a shared "
             "machine moves absolute numbers between runs).", "",
             f"## Host side of the loader, one core, {PX}-px batches of {BS}, from the second epoch", "",
             *md_table(["data", "pipeline", "store row", "images/s", "items"],
                       [[r["data"], r["pipeline"], f"{r['layout']} ({r['row_kb']} KB)" if "layout" in r else "-",
                         f"{r['images_per_s']:,}", r["items"]] for r in result["loader"]]),
             "", "Target: >= 20,000 images/s per core for both data sets.", "",
             "## aten ops per training step (CPU, torch.profiler), bs 2, 32 px, ResNet34", "",
             *md_table(["step", "aten ops", "x bare"],
                       [[r["step"], f"{r['aten_ops']:,}", f"{r['ratio']:.2f}"] for r in result["ops"]]),
             "", "Target: <= 1.2x the bare synthetic step.", ""]
    if "warm_start" in result:
        w = result["warm_start"]
        lines += ["## Opening the store again", "",
                  f"{w['files']:,} files (28x28 PNGs at 32 px): {w['cold_s']} s to fill ({w['cold_decoded']:,} decoded, "
                  f"every core), {w['warm_s']} s to open again ({w['warm_decoded']} decoded). Target: well under 1 s.", ""]
    return "\n".join(lines)
