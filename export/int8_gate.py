"""The int8 gate: does the int8 model decide like the fp32 one, with known statistical power?

Compared on the validation files, fp32 vs int8 probabilities (both through ``edge_infer``):

* **agreement**: top-1 equal, with ``n`` and its Wilson 95 % lower bound, so a reader sees how
  much one file moves it (1/600 = 0.17 points on the Fashion-MNIST runs);
* **flips** split by the fp32 top-2 margin into near-ties and **confident flips** (int8 changed
  a decision fp32 was sure of), with ``edge_infer.agreement``'s one margin (``NEAR_TIE`` here,
  the name parity.json's ``gate.near_tie_margin`` keeps).

The gate passes when no accuracy is lost (int8 accuracy >= fp32 accuracy - ``MAX_ACCURACY_DROP``)
and no confident prediction changed. Near-tie flips are allowed and reported: they go either way
(int8 accuracy is above fp32's as often as below on the measured models), and how many there are
depends on the CPU's float rounding and the model's margins, not on the quantisation being wrong
(on a 64 px Fashion-MNIST model even int8 weights with float activations flip 1 % of the
validation files: export/README.md, issue #11). Numbers behind the choices: export/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_infer.agreement import CONFIDENT_MARGIN, Agreement
from edge_infer.agreement import compare as agreement

__all__ = ["MAX_ACCURACY_DROP", "NEAR_TIE", "Gate", "compare"]

MAX_ACCURACY_DROP = 0.005  # 0.5 accuracy points
NEAR_TIE = CONFIDENT_MARGIN  # fp32 top-1 minus top-2 probability below this: a near-tie


@dataclass(frozen=True)
class Gate:
    """fp32 vs int8 on the validation files: ``edge_infer.agreement``'s counts plus accuracy."""

    agreement: Agreement
    fp32_accuracy: float
    int8_accuracy: float
    flipped_files: tuple[str, ...]  # of the first 20 flips, for the report
    backend: str | None = None      # what computed ``int8`` where not onnxruntime (reported, not gated)

    @property
    def accuracy_drop(self) -> float:
        return self.fp32_accuracy - self.int8_accuracy

    @property
    def passed(self) -> bool:
        return self.accuracy_drop <= MAX_ACCURACY_DROP + 1e-12 and not self.agreement.confident_flips

    def to_dict(self) -> dict[str, Any]:
        """parity.json's gate keys (the ``int8`` section and each of its ``backends``)."""
        a = self.agreement
        return {
            **({"backend": self.backend} if self.backend else {}),
            "files": a.images, "agreement": a.top1_agreement, "agreement_lower95": a.lower95,
            "flips": len(a.flipped), "near_tie_flips": a.near_tie_flips, "confident_flips": a.confident_flips,
            "fp32_accuracy": self.fp32_accuracy, "int8_accuracy": self.int8_accuracy,
            "accuracy_drop": self.accuracy_drop, "max_prob_diff": a.max_abs_prob_diff,
            "flipped": [{"file": f, "fp32_margin": m}
                        for f, m in zip(self.flipped_files, a.flipped_margins, strict=False)],  # the first 20
            "gate": {"max_accuracy_drop": MAX_ACCURACY_DROP, "near_tie_margin": NEAR_TIE, "confident_flips": 0},
            "passed": self.passed,
        }


def compare(fp32: np.ndarray, int8: np.ndarray, truth: np.ndarray, names: list[str]) -> Gate:
    """fp32 vs int8 probabilities [N, C] on the files ``names``, with their label indices ``truth``."""
    a = agreement(fp32, int8)
    return Gate(a, float((fp32.argmax(1) == truth).mean()), float((int8.argmax(1) == truth).mean()),
                tuple(names[i] for i in a.flipped[:20]))
