"""``/metrics`` in the Prometheus text format (version 0.0.4), kept in this process.

A handful of counters and histograms written out by hand: the format is a few lines of text, and
``prometheus_client`` would be a fourth package in the ``serve`` extra for them. Everything is
updated and read on the event loop's thread, so nothing needs a lock.
"""

from __future__ import annotations

import bisect
from collections import Counter
from itertools import accumulate
from typing import Callable, Sequence

__all__ = ["Histogram", "Metrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Histogram:
    """Cumulative buckets, a sum and a count, as Prometheus histograms are."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum, self.count = 0.0, 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        buckets = zip([*map(_number, self.bounds), "+Inf"], accumulate(self.counts), strict=True)  # cumulative
        return [f'{name}_bucket{{le="{bound}"}} {below}' for bound, below in buckets] + [
            f"{name}_sum {self.sum:.6f}", f"{name}_count {self.count}"]


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


class Metrics:
    """The server's counters, updated by the app. ``queue_depth`` is read when ``/metrics`` is asked for."""

    def __init__(self, queue_depth: Callable[[], int]) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()  # (method, route, status)
        self.errors: Counter[str] = Counter()  # Refused.kind: rejected, overloaded, stopping, timeout
        self.latency = Histogram(LATENCY_BUCKETS)  # /predict, headers to answer
        self.batch_sizes = Histogram(BATCH_BUCKETS)
        self.queue_depth = queue_depth

    def text(self) -> str:
        requests, errors = sorted(self.requests.items()), sorted(self.errors.items())
        families = [  # (name, type, help, samples)
            ("edge_infer_requests_total", "counter", "HTTP requests answered, by route and status.",
             [f'edge_infer_requests_total{{method="{m}",route="{r}",status="{s}"}} {n}' for (m, r, s), n in requests]),
            ("edge_infer_errors_total", "counter", "Requests refused or failed, by kind.",
             [f'edge_infer_errors_total{{kind="{k}"}} {n}' for k, n in errors]),
            ("edge_infer_request_seconds", "histogram", "/predict latency, from headers to answer.",
             self.latency.lines("edge_infer_request_seconds")),
            ("edge_infer_batch_size", "histogram", "Images per onnxruntime call.",
             self.batch_sizes.lines("edge_infer_batch_size")),
            ("edge_infer_queue_depth", "gauge", "Predictions admitted and not yet answered.",
             [f"edge_infer_queue_depth {self.queue_depth()}"]),
        ]
        return "".join(f"# HELP {name} {text}\n# TYPE {name} {kind}\n" + "".join(f"{s}\n" for s in samples)
                       for name, kind, text, samples in families)
