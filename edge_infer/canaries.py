"""Canaries: a few validation inputs stored in the model file with the probabilities export saw.

A file proves on the machine it runs on that it still computes what export checked: the runtime
feeds the stored inputs (already at the model's size, uint8 [K, H, W, 3]) to a backend and
compares its answers with the stored ones (``edge_infer.verify``). Export picks them where that
check is sensitive (``export.canaries``): the smallest fp32 top-2 margins, the smallest margins
that are still confident, and for an int8 file the smallest int8 margins.

Where: a second ``metadata_props`` entry, ``CANARIES_KEY``, holding JSON; the pixels are
zlib-compressed and base64-encoded, the probabilities are JSON numbers (float32 values, written
in their shortest form, so they read back bit for bit). Not an unused initializer: onnxruntime
drops initializers no node reads (with a warning) and has no API to read one back, while
``custom_metadata_map`` gives this entry to any reader with onnxruntime alone. Not inside the
main ``edge_infer`` block either: that block stays a few hundred bytes that ``edge-infer info``
prints, and a reader that does not verify never decodes the pixels; the block says how many
canaries there are (``ModelInfo.canaries``).
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ModelFormatError, first_line

__all__ = ["CANARIES_KEY", "Canaries"]

CANARIES_KEY = "edge_infer.canaries"


@dataclass(frozen=True, eq=False)
class Canaries:
    """``pixels`` uint8 [K, H, W, 3]; ``fp32`` the fp32 model's probabilities [K, C] on them (what
    export's checks took as the truth); ``int8`` the int8 file's own, as gated (int8 files only)."""

    pixels: np.ndarray
    fp32: np.ndarray
    int8: np.ndarray | None = None
    chosen: str = ""  # how export picked them, for people

    def __post_init__(self) -> None:
        k = len(self.pixels)
        if self.pixels.dtype != np.uint8 or self.pixels.ndim != 4 or self.pixels.shape[3] != 3:
            raise ValueError(f"canary pixels must be uint8 [K, H, W, 3], got {self.pixels.dtype} {self.pixels.shape}")
        for name, p in (("fp32", self.fp32), ("int8", self.int8)):
            if p is not None and (p.ndim != 2 or len(p) != k):
                raise ValueError(f"canary {name} probabilities must be [{k}, C], got {p.shape}")

    def __len__(self) -> int:
        return len(self.pixels)

    def to_json(self) -> str:
        d: dict[str, Any] = {
            "count": len(self), "shape": list(self.pixels.shape), "encoding": "zlib+base64",
            "pixels": base64.b64encode(zlib.compress(self.pixels.tobytes(), 9)).decode("ascii"),
            "fp32": _rows(self.fp32), "chosen": self.chosen}
        if self.int8 is not None:
            d["int8"] = _rows(self.int8)
        return json.dumps(d)

    def summary(self) -> dict[str, Any]:
        """What the main metadata block says about them (``ModelInfo.canaries``)."""
        return {"key": CANARIES_KEY, "count": len(self), "bytes": len(self.to_json()),
                "probabilities": ["fp32"] + (["int8"] if self.int8 is not None else [])}

    @classmethod
    def from_json(cls, text: str, *, source: str, size: tuple[int, int], classes: int) -> "Canaries":
        """Parse and check against the model's input ``size`` and ``classes``; ModelFormatError."""
        try:
            d = json.loads(text)
            shape = tuple(int(n) for n in d["shape"])
            raw = zlib.decompress(base64.b64decode(d["pixels"], validate=True))
            pixels = np.frombuffer(raw, np.uint8).reshape(shape)
            fp32 = np.asarray(d["fp32"], np.float32)
            int8 = np.asarray(d["int8"], np.float32) if d.get("int8") is not None else None
            canaries = cls(pixels, fp32, int8, str(d.get("chosen", "")))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error, zlib.error) as e:
            what = f"missing field {e}" if isinstance(e, KeyError) else first_line(e)
            raise ModelFormatError(f"{source}: invalid {CANARIES_KEY} metadata: {what}") from None
        h, w = size
        if pixels.shape[1:] != (h, w, 3) or fp32.shape[1] != classes:
            raise ModelFormatError(f"{source}: {CANARIES_KEY} holds {list(pixels.shape)} inputs and "
                                   f"{fp32.shape[1]} probabilities, the model takes [K, {h}, {w}, 3] "
                                   f"and has {classes} labels; re-export it with python -m export")
        return canaries


def _rows(probs: np.ndarray) -> list[list[float]]:
    # str() of a numpy float32 is its shortest round-tripping form: exact, and short in JSON.
    return [[float(str(v)) for v in row] for row in np.asarray(probs, np.float32)]
