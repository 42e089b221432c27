"""The ceiling, swept (``python -m benchmarks.train --sweep``, CUDA only): what the GPU can do.

ResNet34 (fastai's head, 3 classes) training steps on synthetic 224-px tensors already on the
GPU, channels_last, PyTorch's fused AdamW: batch 128 / 256 / 512 x eager / ``torch.compile`` x
fp16 (with ``GradScaler``) / bf16 (none), each timed over ``steps`` (>= 300) steps after a
warm-up (``torch.compile``'s compilation included in the warm-up, reported apart). ``train fit``
is then judged against the row of its own batch size and precision (``benchmarks.train``), not
against a ceiling it never could reach at another batch size. Issue 24 measured the eager fp16
ceiling at batch 128 as launch-bound (about 60 % of a 224-px step was host time), which is what
a bigger batch and ``torch.compile`` pay against.
"""

from __future__ import annotations

import time
from typing import Callable

from .result import md_table

BATCHES = (128, 256, 512)
PRECISIONS = ("fp16", "bf16")


def train_step(model, x, y, opt, precision: str, device_type: str) -> Callable[[], None]:
    """One training step on the fixed tensors ``x``, ``y``: autocast at ``precision`` (off for
    fp32), fp16 through a ``GradScaler``; the ceiling of ``benchmarks.train`` and this sweep."""
    import torch

    scaler = torch.amp.GradScaler(device_type, enabled=precision == "fp16")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16

    def step() -> None:
        with torch.autocast(device_type, dtype=dtype, enabled=precision != "fp32"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return step


def run_steps(step: Callable[[], None], n: int, *, cuda: bool) -> tuple[float, float]:
    """``n`` calls of ``step``, then the GPU synchronised: the wall-clock (start, end)."""
    import torch

    start = time.time()
    for _ in range(n):
        step()
    if cuda:
        torch.cuda.synchronize()
    return start, time.time()


def ceiling_step(bs: int, precision: str, compiled: bool, *, size: int = 224, steps: int = 300,
                 warmup: int = 20) -> dict:
    """One sweep row: images/s over ``steps`` timed steps, and the warm-up's seconds."""
    import torch
    import torchvision
    from fastai.vision.all import create_vision_model

    device = torch.device("cuda")
    model = create_vision_model(torchvision.models.resnet34, 3, pretrained=False).to(device)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(bs, 3, size, size, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (bs,), device=device)
    opt = torch.optim.AdamW(model.parameters(), 1e-3, betas=(0.9, 0.99), eps=1e-5, fused=True)
    step = train_step(torch.compile(model) if compiled else model, x, y, opt, precision, "cuda")
    start, end = run_steps(step, warmup, cuda=True)
    warm = end - start
    start, end = run_steps(step, steps, cuda=True)
    seconds = end - start
    return {"bs": bs, "precision": precision, "compiled": compiled, "steps": steps, "px": size,
            "images_per_s": round(bs * steps / seconds, 1), "warmup_s": round(warm, 1),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def sweep(steps: int = 300, say=print) -> list[dict]:
    """Every (batch, mode, precision) row; a batch that does not fit says so instead."""
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("benchmarks.train --sweep needs a CUDA GPU (the CPU proxies: --loader-only)")
    rows = []
    for bs in BATCHES:
        for compiled in (False, True):
            for precision in PRECISIONS:
                if precision == "bf16" and not torch.cuda.is_bf16_supported():
                    continue
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                try:
                    row = ceiling_step(bs, precision, compiled, steps=steps)
                except torch.cuda.OutOfMemoryError:
                    row = {"bs": bs, "precision": precision, "compiled": compiled, "images_per_s": None,
                           "error": "out of GPU memory"}
                say(row)
                rows.append(row)
    return rows


def to_markdown(rows: list[dict]) -> str:
    return "\n".join(md_table(["bs", "mode", "precision", "images/s", "warm-up s", "peak GiB"], [
        [r["bs"], "compiled" if r["compiled"] else "eager", r["precision"],
         f"{r['images_per_s']:,.0f}" if r.get("images_per_s") else r.get("error", ""),
         r.get("warmup_s", ""), r.get("peak_memory_gib", "")] for r in rows])) + "\n"
