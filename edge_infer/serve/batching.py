"""Admission, decoding and cross-request batching for ``/predict``.

A request is *admitted* (at most ``max_queue`` at once, and at most ``body_memory`` bytes of
bodies, else ``Overloaded``: 503 + Retry-After) before its body is read,
decoded in a small thread pool (Pillow releases the GIL) once the *decode memory budget* has room
for it, then queued for the model. One task on the event loop takes up to ``max_batch`` queued
images, waiting at most ``max_wait_ms`` after the first for more, and runs them through
onnxruntime together in one inference thread; while a batch runs, the next one fills.

The budget is what keeps a small file that decodes to a huge image (a 95 KB 16-bit PNG of
7000x7000) from taking the machine's memory: each decode reserves the estimate of its peak bytes
that its header gave (``preprocess.Probe.decode_bytes``) before it starts, and waits, without
holding a thread, until it fits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Iterator

import numpy as np

from ..classifier import Classifier
from ..preprocess import Probe, named_bytes

__all__ = ["Batcher", "BatchConfig", "Refused", "Overloaded", "ShuttingDown"]


class Refused(Exception):
    """A request answered with ``status`` and this one line; ``kind`` counts it in ``/metrics``."""

    def __init__(self, status: int, message: str, *, retry_after: bool = False,
                 kind: str = "rejected") -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after, self.kind = status, message, retry_after, kind


class Overloaded(Refused):
    def __init__(self) -> None:
        super().__init__(503, "the server is busy (its queue of uploads is full); try again",
                         retry_after=True, kind="overloaded")


class ShuttingDown(Refused):
    def __init__(self) -> None:
        super().__init__(503, "the server is stopping; try again", retry_after=True, kind="stopping")


@dataclass(frozen=True)
class BatchConfig:
    """How ``/predict`` work is admitted and grouped. ``max_batch=1`` turns batching off."""

    max_batch: int = 8
    max_wait_ms: float = 2.0
    max_queue: int = 64
    decode_workers: int = 0  # 0: one per core
    decode_memory: int = 384 << 20  # bytes of estimated decode peak in flight at once
    body_memory: int = 128 << 20  # bytes of request bodies (by Content-Length) admitted at once

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "decode_memory", "body_memory"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0 or self.decode_workers < 0:
            raise ValueError("max_wait_ms and decode_workers must be >= 0")


class _Budget:
    """Bytes that decodes reserve before they start; a waiter that fits goes first (a small
    photo is not held up behind a huge one)."""

    def __init__(self, total: int) -> None:
        self.total, self.used = total, 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def reserve(self, n: int) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self.used + n <= self.total)
            self.used += n
        try:
            yield
        finally:
            async with self._changed:
                self.used -= n
                self._changed.notify_all()


@dataclass
class _Item:
    pixels: np.ndarray
    future: asyncio.Future


class Batcher:
    """Decode and classify uploads for one ``Classifier``; see the module docstring.

    Bound to the event loop it is first used on; ``close()`` answers queued work with
    ``ShuttingDown`` and stops the threads.
    """

    def __init__(self, classifier: Classifier, config: BatchConfig = BatchConfig(), *,
                 on_batch: Callable[[int], None] = lambda n: None) -> None:
        self.classifier, self.config = classifier, config
        self.in_flight, self.body_bytes, self.closing = 0, 0, False
        self._on_batch = on_batch
        workers = config.decode_workers or os.cpu_count() or 1
        self._decode_pool = ThreadPoolExecutor(workers, thread_name_prefix="edge-infer-decode")
        self._infer_pool = ThreadPoolExecutor(1, thread_name_prefix="edge-infer-infer")
        self._queue: deque[_Item] = deque()
        self._wake = asyncio.Event()  # asyncio's primitives bind to a loop when first awaited
        self._budget = _Budget(config.decode_memory)
        self._worker: asyncio.Task | None = None

    @contextlib.contextmanager
    def admit(self, body_bytes: int) -> Iterator[None]:
        """Count one request, whose body is ``body_bytes`` long, in for the block; raises
        ``Overloaded`` (the queue or the body memory is full) or ``ShuttingDown``."""
        if self.closing:
            raise ShuttingDown
        if self.in_flight >= self.config.max_queue or \
                self.body_bytes + body_bytes > self.config.body_memory:
            raise Overloaded
        self.in_flight += 1
        self.body_bytes += body_bytes
        try:
            yield
        finally:
            self.in_flight -= 1
            self.body_bytes -= body_bytes

    async def probabilities(self, image: Probe) -> np.ndarray:
        """Decode ``image`` and run it through the model with whatever else is queued; the
        probability row. Raises ``ImageError`` (bad image) or ``Refused`` (413: more decode
        memory than the whole budget; ``ShuttingDown``)."""
        # Started here, on the serving loop: a mounted sub-app gets no lifespan events of its own.
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="edge-infer-batcher")
        need = image.decode_bytes
        if need > self._budget.total:
            (w, h), total = image.size, self._budget.total
            raise Refused(413, f"{image.name}: {w}x{h} {image.mode} would need about {need / 2**20:,.0f} MB "
                         f"to decode, over this server's limit of {total / 2**20:,.0f} MB "
                         "(--decode-memory-mb)")
        loop = asyncio.get_running_loop()
        async with self._budget.reserve(need):
            if self.closing:
                raise ShuttingDown
            pixels = await loop.run_in_executor(self._decode_pool, self.classifier.preprocess,
                                                named_bytes(image.data, image.name))
        if self.closing:
            raise ShuttingDown
        item = _Item(pixels, loop.create_future())
        self._queue.append(item)
        self._wake.set()
        return await item.future

    def close(self) -> None:
        """Stop taking work; queued (not yet running) items get ``ShuttingDown``."""
        self.closing = True
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(ShuttingDown())
        self._wake.set()

    def shutdown(self) -> None:
        """``close()`` and let the threads go (a decode in progress finishes on its own)."""
        self.close()
        if self._worker is not None:
            self._worker.cancel()
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        self._infer_pool.shutdown(wait=False, cancel_futures=True)

    # -- inside ------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            await self._fill()
            batch = [self._queue.popleft() for _ in range(min(self.config.max_batch, len(self._queue)))]
            batch = [item for item in batch if not item.future.done()]  # the client gave up
            if not batch:
                continue
            self._on_batch(len(batch))
            try:
                probs = await loop.run_in_executor(self._infer_pool, self.classifier.probabilities,
                                                   np.stack([item.pixels for item in batch]))
            except Exception as e:  # a model that fails at run time: every caller gets the error
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(e)
                continue
            for item, row in zip(batch, probs, strict=True):
                if not item.future.done():
                    item.future.set_result(row)

    async def _fill(self) -> None:
        """Wait up to ``max_wait_ms`` for the batch to fill."""
        deadline = time.monotonic() + self.config.max_wait_ms / 1000.0
        while len(self._queue) < self.config.max_batch and not self.closing:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)
