"""Do two sets of probabilities make the same decisions? The one definition of "agreement".

Used wherever two computations of the same model are compared: export's int8 gate (fp32 vs
int8), ``edge-infer bench`` and ``benchmarks/`` (another backend vs onnxruntime), and
``edge-infer verify`` (a backend on this machine vs the probabilities stored in the file).

A **flip** is a changed top-1. Its reference top-2 margin (top-1 minus top-2 probability) says
what kind: below ``CONFIDENT_MARGIN`` a **near-tie** (the reference itself was hesitating and
rounding picks a side), at or above it a **confident flip** (a decision the reference was sure
of changed: a bug, not rounding).

Why ``CONFIDENT_MARGIN`` is 0.2 (it was 0.2 in the int8 gate and 0.1 in ``bench``): on the
Fashion-MNIST models measured for issue #11 (export/README.md, the gate) every flip that int8
rounding alone caused had an fp32 margin below 0.16. At 0.1 that honest rounding counts as a
confident flip, so a backend that computes faithfully (OpenVINO, another CPU's kernels) would be
called broken; 0.2 keeps a measured gap above the largest rounding flip, and is the margin the
int8 gate's numbers (export/README.md) were judged with, so the gate, ``bench`` and ``verify``
now mean the same thing by "confident".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["CONFIDENT_MARGIN", "Z95", "Agreement", "compare", "top2_margin", "wilson_lower"]

CONFIDENT_MARGIN = 0.2  # reference top-1 minus top-2 probability at or above this: confident
Z95 = 1.959964          # two-sided 95 %


def top2_margin(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row of [N, C] (C >= 2: a classifier has two labels)."""
    top = np.sort(probs, axis=1)
    return top[:, -1] - top[:, -2]


def wilson_lower(successes: int, n: int, z: float = Z95) -> float:
    """Wilson score lower bound of a binomial proportion (0 for n == 0)."""
    if n == 0:
        return 0.0
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


@dataclass(frozen=True)
class Agreement:
    """``probs`` against ``reference`` on ``images`` inputs (``compare`` makes it)."""

    images: int
    top1_same: int
    confident: int             # inputs whose reference margin is >= ``margin``
    confident_same: int        # ... of which the top-1 stayed
    lower95: float             # Wilson 95 % lower bound of top1_same / images
    max_abs_prob_diff: float
    reference_margin_min: float
    flipped: tuple[int, ...]   # indices of the changed top-1s, in input order
    flipped_margins: tuple[float, ...]  # their reference margins
    margin: float = CONFIDENT_MARGIN

    @property
    def top1_agreement(self) -> float:
        return self.top1_same / self.images if self.images else 1.0

    @property
    def confident_flips(self) -> int:
        return self.confident - self.confident_same

    @property
    def near_tie_flips(self) -> int:
        return len(self.flipped) - self.confident_flips

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the derived counts; lists for tuples."""
        d = asdict(self)
        d["flipped"], d["flipped_margins"] = list(self.flipped), list(self.flipped_margins)
        return {**d, "top1_agreement": self.top1_agreement, "confident_flips": self.confident_flips,
                "near_tie_flips": self.near_tie_flips}


def compare(reference: np.ndarray, probs: np.ndarray, *, margin: float = CONFIDENT_MARGIN) -> Agreement:
    """How ``probs`` [N, C] decides against ``reference`` [N, C] (the trusted computation)."""
    if reference.shape != probs.shape:
        raise ValueError(f"compare needs equal shapes, got {reference.shape} and {probs.shape}")
    ref_margin = top2_margin(reference) if len(reference) else np.zeros(0)
    same = reference.argmax(1) == probs.argmax(1)
    confident = ref_margin >= margin
    flipped = np.flatnonzero(~same)
    n, agree = int(len(same)), int(same.sum())
    return Agreement(
        images=n, top1_same=agree, confident=int(confident.sum()),
        confident_same=int(same[confident].sum()), lower95=round(wilson_lower(agree, n), 5),
        max_abs_prob_diff=float(np.abs(reference - probs).max()) if n else 0.0,
        reference_margin_min=float(ref_margin.min()) if n else 1.0,
        flipped=tuple(int(i) for i in flipped),
        flipped_margins=tuple(round(float(ref_margin[i]), 4) for i in flipped), margin=margin)
