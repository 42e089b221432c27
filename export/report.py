"""parity.json as frozen results: what an export checked and wrote.

``ExportReport.to_dict`` gives parity.json's keys, unchanged since they were dicts (a test holds
the list); ``summary`` the short form that goes into the file's metadata, made of each
section's ``SUMMARY`` keys (the one list of them). Sections: ``export.parity``'s two tiers,
``Int8Report`` (the gate is ``export.int8_gate.Gate``, on ``edge_infer.agreement.Agreement``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

from .int8_gate import MAX_ACCURACY_DROP, NEAR_TIE, Gate
from .parity import FileParity, TensorParity
from .quantize import ALWAYS_FLOAT, SETTINGS

__all__ = ["Int8Report", "ExportReport"]


@dataclass(frozen=True, kw_only=True)
class Int8Report:
    """parity.json's ``int8``: the gate on the chosen candidate, how it was made, and (once the
    file is written, ``size_bytes`` set) what onnxruntime runs and the other backends' gates."""

    SUMMARY: ClassVar[tuple[str, ...]] = ("files", "agreement", "agreement_lower95", "near_tie_flips",
                                          "confident_flips", "fp32_accuracy", "int8_accuracy", "accuracy_drop",
                                          "gate", "calibration_images", "float_layers", "passed")
    model: str
    gate: Gate
    calibration_images: int
    float_layers: tuple[str, ...]
    latency: Mapping[str, Any] | None    # model-only cost of the float layers vs all-int8
    accuracy_control: Mapping[str, Any]  # export.accuracy_control.Outcome.report
    canaries: Mapping[str, Any]
    size_bytes: int | None = None
    onnxruntime_ops: Mapping[str, int] | None = None
    backends: Mapping[str, Gate | str] | None = None  # the gate on other backends, or why they did not open it

    def quantization(self) -> dict[str, Any]:
        """How the file was quantised: its provenance's ``quantization``."""
        return {**SETTINGS, "calibration_images": self.calibration_images, "float_layers": list(self.float_layers),
                "latency_vs_all_int8": self.latency}

    def to_dict(self) -> dict[str, Any]:
        written = {} if self.size_bytes is None else {
            "size_bytes": self.size_bytes, "onnxruntime_ops": dict(self.onnxruntime_ops or {}),
            "backends": {name: {"error": g} if isinstance(g, str) else g.to_dict()
                         for name, g in (self.backends or {}).items()}}
        return {"model": self.model, **self.gate.to_dict(), **self.quantization(), "always_float": ALWAYS_FLOAT,
                "accuracy_control": self.accuracy_control, "canaries": self.canaries, **written}

    def verdict(self) -> str:
        """One line of the gate's numbers."""
        g, a, cost = self.gate, self.gate.agreement, self.latency
        return (f"top-1 agreement {a.top1_agreement:.1%} on {a.images} validation files (95% lower bound "
                f"{a.lower95:.1%}; {a.near_tie_flips} near-tie and {a.confident_flips} "
                f"confident flips), accuracy fp32 {g.fp32_accuracy:.1%} int8 {g.int8_accuracy:.1%}"
                + (f", {len(self.float_layers)} layer(s) kept in float" if self.float_layers else "")
                + (f" (model-only latency x{cost['ratio']:.2f} of all-int8)" if cost else "")
                + f" (gate: accuracy drop <= {MAX_ACCURACY_DROP * 100:g} points, no flip of a "
                f"prediction with fp32 top-2 margin >= {NEAR_TIE:g})")


@dataclass(frozen=True, kw_only=True)
class ExportReport:
    """parity.json; a section is None (and left out) where export did not get to it."""

    model: str
    run: str
    opset: int
    export_seconds: float
    checked: bool
    tensor: TensorParity | None = None
    files: FileParity | None = None
    canaries: Mapping[str, Any] | None = None
    size_bytes: int | None = None
    int8: Int8Report | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v.to_dict() if hasattr(v, "to_dict") else v for k, v in vars(self).items() if v is not None}

    def summary(self, *, forced: bool = False) -> dict[str, Any]:
        """The metadata's ``parity``: each section's ``SUMMARY`` keys, and ``forced`` for a file
        written despite a failed check."""
        out: dict[str, Any] = {}
        for name, section in (("tensor", self.tensor), ("files", self.files), ("int8", self.int8)):
            if section is not None:
                full = section.to_dict()
                out[name] = {k: full[k] for k in section.SUMMARY}
        return {**out, "forced": True} if forced else out

    def failures(self) -> list[str]:
        """What failed in the fp32 parity tiers (empty when all passed or unchecked)."""
        t, f, out = self.tensor, self.files, []
        if t is not None and not t.passed:
            out.append(f"tensor tier max |diff| {t.max_abs_diff:.2e} over rtol {t.rtol:g}/atol {t.atol:g}")
        if f is not None and not f.passed:
            out.append(f"file tier top-1 equal on {f.top1_equal}/{f.files}, max |p diff| {f.max_prob_diff:.2e} "
                       f"(worst {f.worst_file})")
        return out

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
