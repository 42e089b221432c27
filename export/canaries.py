"""Which validation inputs become a file's canaries (``edge_infer.canaries`` is the format).

A canary is useful where a computation that differs shows first, so the picks alternate between:

* the smallest fp32 top-2 margins (near-ties: the probabilities there move most with any change
  in the arithmetic, and a changed kernel flips them first);
* the smallest margins that are still confident (>= ``edge_infer.agreement.CONFIDENT_MARGIN``):
  where a confident flip, the gate's failure, would appear first;
* for an int8 file, the smallest int8 margins (where the int8 kernels are closest to a flip).

Budget: at most ``MAX_COUNT`` canaries and ``BUDGET_FRACTION`` (5 %) of the model file, by their
encoded bytes; a file smaller than ``MIN_BUDGET / BUDGET_FRACTION`` (1.3 MB: test models, not
networks) gets ``MIN_BUDGET`` so that it still carries a few. A 32 px input is 3 KB, so a 32 px
ResNet carries all 16; a 224 px one (150 KB each before compression) as many as 5 % of the file
holds. At least one canary is always stored.
"""

from __future__ import annotations

import base64
import json
import zlib

import numpy as np

from edge_infer.agreement import CONFIDENT_MARGIN, top2_margin
from edge_infer.canaries import Canaries

__all__ = ["MAX_COUNT", "BUDGET_FRACTION", "MIN_BUDGET", "budget", "select"]

MAX_COUNT = 16
BUDGET_FRACTION = 0.05
MIN_BUDGET = 64 * 1024


def budget(model_bytes: int) -> int:
    """Encoded canary bytes allowed in a file of ``model_bytes``."""
    return max(int(BUDGET_FRACTION * model_bytes), MIN_BUDGET)


def select(pixels: np.ndarray, fp32: np.ndarray, int8: np.ndarray | None = None, *,
           model_bytes: int) -> Canaries:
    """Canaries from validation ``pixels`` [N, H, W, 3] with the fp32 (and int8) probabilities
    [N, C] the gated models gave on them."""
    if len(pixels) == 0:
        raise ValueError("no validation inputs to take canaries from")
    margins = top2_margin(fp32)
    rankings = [_ascending(margins), [i for i in _ascending(margins) if margins[i] >= CONFIDENT_MARGIN]]
    if int8 is not None:
        rankings.append(_ascending(top2_margin(int8)))
    picked: list[int] = []
    left = budget(model_bytes)
    per_row = len(json.dumps(fp32[0].tolist())) * (1 if int8 is None else 2)  # its probabilities
    for i in _round_robin(rankings):
        cost = _encoded_bytes(pixels[i]) + per_row
        if len(picked) >= MAX_COUNT or (picked and cost > left):
            break
        picked.append(i)
        left -= cost
    chosen = ("alternately the smallest fp32 top-2 margins, the smallest margins >= "
              f"{CONFIDENT_MARGIN:g}" + (", the smallest int8 margins" if int8 is not None else "")
              + f"; {len(picked)} of {len(pixels)} validation inputs")
    take = np.asarray(picked)
    return Canaries(np.ascontiguousarray(pixels[take]), fp32[take],
                    None if int8 is None else int8[take], chosen)


def _ascending(margins: np.ndarray) -> list[int]:
    return [int(i) for i in np.argsort(margins, kind="stable")]


def _round_robin(rankings: list[list[int]]):
    """Each ranking's next index in turn, each index once."""
    seen: set[int] = set()
    iters = [iter(r) for r in rankings]
    while iters:
        for it in list(iters):
            i = next((j for j in it if j not in seen), None)
            if i is None:
                iters.remove(it)
                continue
            seen.add(i)
            yield i


def _encoded_bytes(image: np.ndarray) -> int:
    return len(base64.b64encode(zlib.compress(image.tobytes(), 9)))
