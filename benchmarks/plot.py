"""The benchmark's picture: p50 latency per variant and thread count, with the 10 and 20 ms lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # not pyplot: a file needs no display, and no backend is set

from .result import Result

__all__ = ["plot_latency"]


def plot_latency(result: Result, path: Path, *, photo: str, bands_ms: tuple[float, ...]) -> Path:
    """Grouped bars (model-only, end-to-end on the ``photo`` JPEG) on a log scale, with a line at
    each of ``bands_ms``; learn.predict is ~100x. ``report`` gives both (its targets)."""
    labels, model_only, e2e = [], [], []
    for v in result.variants:
        for r in v.by_threads:
            # "edge_infer OpenVINO int8" is wider than its bars: one word group per line
            title = v.title.replace(" ", "\n", 1) if len(v.title) > 18 else v.title
            labels.append(f"{title}\n{r.threads} thread{'s' if r.threads > 1 else ''}")
            model_only.append(r.model_only.p50_ms if r.model_only else np.nan)
            e2e.append(r.e2e_p50(photo) or np.nan)
    x = np.arange(len(labels))
    fig = Figure(figsize=(max(7.0, 1.2 * len(labels)), 4.8))
    ax = fig.subplots()
    for offset, values, name in ((-0.2, model_only, "model only (batch 1)"),
                                 (0.2, e2e, f"end to end, {photo} JPEG")):
        bars = ax.bar(x + offset, values, 0.4, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    for ms, style in zip(bands_ms, ("--", ":"), strict=False):
        ax.axhline(ms, color="black", ls=style, lw=1)
        ax.annotate(f"{ms:g} ms", (x[-1] + 0.45, ms), va="bottom", ha="right", fontsize=8)
    ax.set_yscale("log")
    shown = [v for v in model_only + e2e if not np.isnan(v)]
    ax.set_ylim(min(shown + [10.0]) / 1.6, max(shown + [20.0]) * 1.6)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("p50 latency (ms, log scale)")
    m = result.model
    ax.set_title(f"{m['arch']} {m['size'][0]}x{m['size'][1]} on {result.machine['cpu_model']}", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
