"""The model contract: the one JSON block that makes an ONNX file self-describing.

Every stage reads and writes the contract through this module: ``export`` builds a
``ModelInfo`` and stores ``to_json()`` under ``METADATA_KEY`` in the ONNX ``metadata_props``;
the runtime reads it back with onnxruntime alone (``custom_metadata_map``) and checks it against
the graph. ``docs/model-format.md`` is the prose version of this file.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping

from .errors import ModelFormatError

__all__ = [
    "SCHEMA_VERSION", "METADATA_KEY", "INPUT_NAME", "OUTPUT_NAME",
    "RESIZE_METHODS", "PAD_MODES", "PRECISIONS", "Preprocess", "ModelInfo",
]

# 2: the file may carry canaries (``canaries`` below, ``edge_infer.canaries``). Schema-1 files
# still load (they have none: ``edge-infer verify`` says to re-export).
SCHEMA_VERSION = 2
METADATA_KEY = "edge_infer"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"

# fastai's names: ResizeMethod.{Crop,Squish,Pad} and PadMode.{Zeros,Border,Reflection}.
RESIZE_METHODS = ("crop", "squish", "pad")
PAD_MODES = ("zeros", "border", "reflection")
PRECISIONS = ("fp32", "int8")

# The fixed part of the signature. Written into every file so a reader in another language
# needs no knowledge of this package to feed the model.
INPUT_SPEC = {"name": INPUT_NAME, "dtype": "uint8", "layout": "NHWC", "color": "RGB"}
OUTPUT_SPEC = {"name": OUTPUT_NAME, "dtype": "float32", "kind": "softmax"}

Resize = Literal["crop", "squish", "pad"]
PadMode = Literal["zeros", "border", "reflection"]
Precision = Literal["fp32", "int8"]


@dataclass(frozen=True)
class Preprocess:
    """How a decoded image becomes the model's [H, W, 3] uint8 input, with fastai's meanings.

    ``size`` is (height, width), as in fastai. ``resize``: ``crop`` takes the largest centred
    region of the target aspect ratio, ``squish`` stretches the whole image, ``pad`` fits the
    whole image and fills the rest with ``pad_mode``; all three then resize bilinearly (Pillow).
    ``background`` is the colour that transparent pixels are composited onto.
    """

    size: tuple[int, int]
    resize: Resize = "crop"
    pad_mode: PadMode = "reflection"
    interpolation: Literal["bilinear"] = "bilinear"
    exif_transpose: bool = True
    background: tuple[int, int, int] = (255, 255, 255)

    def __post_init__(self) -> None:
        h, w = self.size
        if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
            raise ValueError(f"size must be two positive ints (height, width), got {self.size!r}")
        _check_choice("resize", self.resize, RESIZE_METHODS)
        _check_choice("pad_mode", self.pad_mode, PAD_MODES)
        _check_choice("interpolation", self.interpolation, ("bilinear",))
        if len(self.background) != 3 or not all(0 <= int(c) <= 255 for c in self.background):
            raise ValueError(f"background must be three ints in 0..255, got {self.background!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples as lists); the one writer for the model's block and train.json."""
        return {**asdict(self), "size": list(self.size), "background": list(self.background)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Preprocess":
        return cls(
            size=(int(d["size"][0]), int(d["size"][1])),
            resize=d.get("resize", "crop"),
            pad_mode=d.get("pad_mode", "reflection"),
            interpolation=d.get("interpolation", "bilinear"),
            exif_transpose=bool(d.get("exif_transpose", True)),
            background=tuple(int(c) for c in d.get("background", (255, 255, 255))),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class ModelInfo:
    """Everything the runtime needs to know about a model, and what it can tell a user."""

    labels: tuple[str, ...]
    preprocess: Preprocess
    precision: Precision = "fp32"
    provenance: Mapping[str, Any] = field(default_factory=dict)
    parity: Mapping[str, Any] | None = None
    schema: int = SCHEMA_VERSION
    canaries: Mapping[str, Any] | None = None  # count, bytes, key: edge_infer.canaries says the rest

    def __post_init__(self) -> None:
        if len(self.labels) < 2:
            raise ValueError(f"a classifier needs at least two labels, got {list(self.labels)}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be unique, got {list(self.labels)}")
        _check_choice("precision", self.precision, PRECISIONS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "labels": list(self.labels),
            "input": dict(INPUT_SPEC),
            "output": dict(OUTPUT_SPEC),
            "preprocess": self.preprocess.to_dict(),
            "precision": self.precision,
            "provenance": dict(self.provenance),
            "parity": None if self.parity is None else dict(self.parity),
            "canaries": None if self.canaries is None else dict(self.canaries),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def replace(self, **changes: Any) -> "ModelInfo":
        """A copy with some fields changed (export uses it to add parity, int8 precision...)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_json(cls, text: str, *, source: str = "model") -> "ModelInfo":
        """Parse and validate the block; every problem is a ``ModelFormatError`` naming ``source``."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ModelFormatError(f"{source}: edge_infer metadata is not valid JSON ({e})") from None
        if not isinstance(d, dict) or not isinstance(d.get("schema"), int):
            raise ModelFormatError(f"{source}: edge_infer metadata has no integer 'schema' field")
        if d["schema"] > SCHEMA_VERSION:
            raise ModelFormatError(
                f"{source} uses edge_infer metadata schema {d['schema']}, this edge-infer reads "
                f"schema {SCHEMA_VERSION}: upgrade with pip install -U edge-infer")
        if d["schema"] < 1:
            raise ModelFormatError(f"{source}: unknown edge_infer metadata schema {d['schema']}")
        for key, want in (("input", INPUT_SPEC), ("output", OUTPUT_SPEC)):
            got = d.get(key)
            wrong = not isinstance(got, dict) or any(got.get(k) != v for k, v in want.items())
            if got is not None and wrong:
                raise ModelFormatError(
                    f"{source}: metadata {key} is {got}, edge_infer {SCHEMA_VERSION} needs {want}; "
                    "re-export it with python -m export")
        labels = d.get("labels", [])  # absent: reported below as a missing field
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise ModelFormatError(f"{source}: edge_infer metadata 'labels' must be a list of strings, "
                                   f"got {labels!r:.80}")
        try:
            return cls(
                labels=tuple(d["labels"]),
                preprocess=Preprocess.from_dict(d["preprocess"]),
                precision=d.get("precision", "fp32"),
                provenance=d.get("provenance") or {},
                parity=d.get("parity"),
                schema=d["schema"],
                canaries=d.get("canaries"),
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            what = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            raise ModelFormatError(f"{source}: invalid edge_infer metadata: {what}") from None


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} {value!r} is not one of {list(choices)}")
