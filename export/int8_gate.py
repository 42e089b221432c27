"""The int8 gate: does the int8 model decide like the fp32 one, with known statistical power?

Compared on the validation files, fp32 vs int8 probabilities (both through ``edge_infer``):

* **agreement**: top-1 equal, with ``n`` and its Wilson 95 % lower bound, so a reader sees how
  much one file moves it (1/600 = 0.17 points on the Fashion-MNIST runs);
* **flips** split by the fp32 top-2 margin (top-1 minus top-2 probability): below
  ``NEAR_TIE`` a flip is a near-tie (the fp32 model itself was hesitating; rounding picks a side),
  at or above it a **confident flip** (int8 changed a decision fp32 was sure of).

The gate passes when no accuracy is lost (int8 accuracy >= fp32 accuracy - ``MAX_ACCURACY_DROP``)
and no confident prediction changed. Near-tie flips are allowed and reported: they go either way
(int8 accuracy is above fp32's as often as below on the measured models), and how many there are
depends on the CPU's float rounding and the model's margins, not on the quantisation being wrong
(on a 64 px Fashion-MNIST model even int8 weights with float activations flip 1 % of the
validation files: export/README.md, issue #11). Numbers behind the choices: export/README.md.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["MAX_ACCURACY_DROP", "NEAR_TIE", "Z95", "wilson_lower", "compare"]

MAX_ACCURACY_DROP = 0.005  # 0.5 accuracy points
NEAR_TIE = 0.2             # fp32 top-1 minus top-2 probability below this: a near-tie
Z95 = 1.959964             # two-sided 95 %


def wilson_lower(successes: int, n: int, z: float = Z95) -> float:
    """Wilson score lower bound of a binomial proportion (0 for n == 0)."""
    if n == 0:
        return 0.0
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


def top2_margin(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row (1.0 for a single-class model)."""
    if probs.shape[1] < 2:
        return np.ones(len(probs))
    top = np.sort(probs, axis=1)
    return top[:, -1] - top[:, -2]


def compare(fp32: np.ndarray, int8: np.ndarray, truth: np.ndarray, names: list[str]) -> dict:
    """fp32 vs int8 probabilities [N, C] on ``names`` (for the report): JSON-ready, with ``passed``."""
    a, b = fp32.argmax(1), int8.argmax(1)
    n, same = len(truth), a == b
    margin = top2_margin(fp32)
    flips = np.flatnonzero(~same)
    confident = [int(i) for i in flips if margin[i] >= NEAR_TIE]
    acc32, acc8 = float((a == truth).mean()), float((b == truth).mean())
    return {
        "files": n, "agreement": float(same.mean()), "agreement_lower95": round(wilson_lower(int(same.sum()), n), 5),
        "flips": int(len(flips)), "near_tie_flips": int(len(flips) - len(confident)),
        "confident_flips": len(confident),
        "fp32_accuracy": acc32, "int8_accuracy": acc8, "accuracy_drop": acc32 - acc8,
        "max_prob_diff": float(np.abs(fp32 - int8).max()),
        "flipped": [{"file": names[i], "fp32_margin": round(float(margin[i]), 4)} for i in flips[:20]],
        "gate": {"max_accuracy_drop": MAX_ACCURACY_DROP, "near_tie_margin": NEAR_TIE,
                 "confident_flips": 0},
        "passed": acc32 - acc8 <= MAX_ACCURACY_DROP + 1e-12 and not confident,
    }
