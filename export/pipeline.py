"""``export_run``: run folder -> checked, self-describing ONNX file (and optionally its int8 twin).

Reads top to bottom: load the run, wrap the network, export, write the metadata, check parity,
store the canaries (``export.canaries``), keep the file only if the checks pass (or ``force``),
then quantise, gate and store the int8 file's own canaries. Files are written under a temporary
name and renamed at the end, so a failed export never leaves a model that looks finished.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from edge_infer import Classifier
from edge_infer.metadata import ModelInfo

from . import canaries
from .accuracy_control import Echo, Outcome, probabilities, search
from .defaults import DEFAULT_CALIB, DEFAULT_OPSET, MAX_FLOAT_LAYERS, MAX_OPSET, MIN_OPSET
from .errors import CheckFailed, ExportError
from .info import build_info
from .int8_gate import Gate, compare
from .onnx_export import save, set_canaries, set_info, to_onnx
from .parity import FILE_MAX_DIFF, file_tier, tensor_tier
from .quantize import decode_all, optimized_ops, pick_calibration
from .report import ExportReport, Int8Report
from .run import Run, load_run
from .wrap import Deployable, check_pipeline, wrap

__all__ = ["export_run", "int8_path", "report_path"]


def int8_path(out: Path) -> Path:
    """``model.onnx`` -> ``model.int8.onnx``, beside it."""
    return out.with_name(f"{out.stem}.int8.onnx")


def report_path(out: Path) -> Path:
    return out.with_name("parity.json")


def export_run(run_dir: str | Path, out: str | Path, *, int8: bool = False, calib: int = DEFAULT_CALIB,
               opset: int = DEFAULT_OPSET, check: bool = True, force: bool = False,
               max_float_layers: int = MAX_FLOAT_LAYERS, echo: Echo = print) -> ExportReport:
    """Export the run in ``run_dir`` to ``out``; returns the report also written to parity.json.

    Raises ``RunFolderError`` for a damaged run folder, ``ExportError`` for an unloadable learner,
    a missing image or a bad option, ``CheckFailed`` when a parity tier or
    the int8 gate fails (the failing model is then not written, unless ``force``).
    """
    out = _check_options(Path(out), opset, calib)
    run = load_run(run_dir)
    check_pipeline(run.learn, run.preprocess, str(run.learner))
    valid = decode_all(run.check_files("valid"), run.preprocess) if check or int8 else None
    h, w = run.preprocess.size
    echo(f"run {run.folder}: {len(run.labels)} labels, {h}x{w} {run.preprocess.resize}, "
         f"{len(run.split.paths('valid'))} validation images")
    model = wrap(run.learn)
    start = time.perf_counter()
    proto = to_onnx(model, run.preprocess.size, opset)
    report = ExportReport(model=out.name, run=str(run.folder.resolve()), opset=opset,
                          export_seconds=round(time.perf_counter() - start, 2), checked=check)
    info = build_info(run, model, opset)
    partial = out.with_name(f".{out.name}.partial")
    try:  # the checks read the file
        save(set_info(proto, info), partial)
        if valid is not None:
            if check:
                report = _parity(run, model, partial, valid, report, echo)
                info = info.replace(parity=report.summary(forced=bool(report.failures())))
            reference = probabilities(partial, valid)  # fp32 on the validation pixels: canaries, int8 gate
            chosen = canaries.select(valid, reference, model_bytes=proto.ByteSize())
            info = info.replace(canaries=chosen.summary())
            report = replace(report, canaries=info.canaries)
            set_canaries(proto, chosen)
    finally:
        partial.unlink(missing_ok=True)
    failures = report.failures()
    if failures and not force:
        report.write(report_path(out))
        raise CheckFailed(f"{out}: parity breach, {'; '.join(failures)}; not written "
                          f"(numbers in {report_path(out)}; --force writes it anyway)")
    _write(set_info(proto, info), out)
    report = replace(report, size_bytes=out.stat().st_size)
    echo(f"wrote {out}: {_mb(out)}, opset {opset}, exported in {report.export_seconds:.1f} s"
         + ("" if check else " (not checked: --no-check)"))
    if failures:
        echo(f"WARNING: written despite a parity breach (--force): {'; '.join(failures)}")
    problem = None
    if valid is not None and int8:
        section, problem = _int8(run, out, report, info, (valid, reference), calib, force, max_float_layers, echo)
        report = replace(report, int8=section)
    report.write(report_path(out))
    if problem:
        raise CheckFailed(problem)
    return report


def _check_options(out: Path, opset: int, calib: int) -> Path:
    if out.suffix != ".onnx":
        raise ExportError(f"--out {out}: the model file name must end in .onnx")
    if out.is_dir():
        raise ExportError(f"--out {out}: is a folder; give a file name ending in .onnx")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"--opset {opset}: must be between {MIN_OPSET} and {MAX_OPSET}")
    if calib < 1:
        raise ExportError(f"--calib {calib}: must be at least 1")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _parity(run: Run, model: Deployable, path: Path, pixels: np.ndarray, report: ExportReport,
            echo: Echo) -> ExportReport:
    """Both tiers on the file at ``path`` and the decoded validation ``pixels``: ``tensor``, ``files``."""
    clf = Classifier.load(path, fast_decode=False)
    t = tensor_tier(model, clf, pixels[:8])
    echo(f"parity, tensor tier: torch vs onnxruntime, batch {'/'.join(map(str, t.batches))}, "
         f"max |diff| {t.max_abs_diff:.1e} (rtol {t.rtol:g}, atol {t.atol:g}): "
         f"{'passed' if t.passed else 'FAILED'}")
    f = file_tier(run.learn, clf, run.data, run.split.paths("valid"), run.truth("valid"))
    echo(f"parity, file tier: fastai vs edge_infer on {f.files} validation files, top-1 equal on "
         f"{f.top1_equal}/{f.files}, max |p diff| {f.max_prob_diff:.1e} "
         f"(<= {FILE_MAX_DIFF:g}; worst {f.worst_file}): "
         f"{'passed' if f.passed else 'FAILED'}")
    return replace(report, tensor=t, files=f)


def _int8(run: Run, out: Path, report: ExportReport, info: ModelInfo, valid: tuple[np.ndarray, np.ndarray],
          calib: int, force: bool, budget: int, echo: Echo) -> tuple[Int8Report, str | None]:
    """Quantise ``out`` under accuracy control, gate and write ``<stem>.int8.onnx``: its parity.json
    section, and the failure message when the gate refused it. Calibrated on up to ``calib``
    training images (round-robin over the labels), checked on the validation pixels against
    fp32's probabilities there (``valid``, computed once for the canaries)."""
    target, (pixels, reference) = int8_path(out), valid
    train = run.check_files("train")
    calibration = pick_calibration(train, run.split.labels("train"), calib)
    echo(f"int8: calibrating on {len(calibration)} training images"
         + (f" (only {len(train)} in the run)" if len(train) < calib else "")
         + f", checking on {len(pixels)} validation files")
    with tempfile.TemporaryDirectory(prefix="edge-infer-int8-") as tmp:
        outcome = search(out, Path(tmp), calibration=decode_all(calibration, run.preprocess), valid=pixels,
                         reference=reference, truth=np.asarray(run.truth("valid")), names=run.split.paths("valid"),
                         budget=budget, echo=echo)
    q, proto = _gate(outcome, target.name, len(calibration), pixels, report, info)
    if not q.gate.passed and not force:
        return q, _refuse(target, q, len(outcome.tried), budget)
    _write(proto, target)
    echo(f"int8: wrote {target}: {_mb(target)} (fp32 {_mb(out)}), {q.verdict()}: "
         + ("passed" if q.gate.passed else "FAILED, written anyway (--force)"))
    return replace(q, size_bytes=target.stat().st_size, onnxruntime_ops=optimized_ops(target),
                   backends=_other_backends(target, pixels, reference, run, echo)), None


def _gate(outcome: Outcome, name: str, calibration_images: int, pixels: np.ndarray, report: ExportReport,
          info: ModelInfo) -> tuple[Int8Report, onnx.ModelProto]:
    """The candidate to keep (the first that passed, else the closest to fp32) as the ``int8``
    section, and its graph with the int8 metadata and canaries set (in place: the search is over)."""
    best = outcome.chosen or max(outcome.tried, key=lambda c: c.result.agreement.top1_agreement)
    chosen = canaries.select(pixels, outcome.reference, best.probs, model_bytes=best.model.ByteSize())
    q = Int8Report(model=name, gate=best.result, calibration_images=calibration_images,
                   float_layers=best.float_layers, latency=outcome.latency, accuracy_control=outcome.report(),
                   canaries=chosen.summary())
    int8_info = info.replace(precision="int8", parity=replace(report, int8=q).summary(forced=not q.gate.passed),
                             provenance={**info.provenance, "quantization": q.quantization()}, canaries=q.canaries)
    return q, set_info(set_canaries(best.model, chosen), int8_info)


def _refuse(target: Path, q: Int8Report, tried: int, budget: int) -> str:
    """Remove an int8 file from an earlier export (it no longer matches); the refusal message."""
    stale = target.exists()
    target.unlink(missing_ok=True)
    return (f"{target}: int8 gate failed, {q.verdict()}; tried all-int8"
            + (f" then the 1-{tried - 1} most sensitive layers in float (budget {budget}, --max-float-layers)"
               if tried > 1 else "") + "; not written"
            + (" (the earlier one was removed)" if stale else "")
            + "; check the calibration images, train until the doctor says converged, "
            "or --force (export/README.md, int8)")


def _write(proto: onnx.ModelProto, target: Path) -> None:
    """Save under a temporary name, renamed when complete: a failed write leaves no model behind."""
    partial = target.with_name(f".{target.name}.partial")
    try:
        os.replace(save(proto, partial), target)
    finally:
        partial.unlink(missing_ok=True)


def _other_backends(target: Path, pixels: np.ndarray, reference: np.ndarray, run: Run,
                    echo: Echo) -> dict[str, Gate | str]:
    """The int8 gate's numbers for every other installed backend running the written int8 file (or
    why it could not open it), so a user sees at export whether it agrees on this CPU. Reported,
    not gated: which backend computes faithfully depends on the CPU that runs the file, and
    ``auto`` checks the canaries there (``edge_infer.verify``)."""
    from edge_infer.backends import OpenVinoBackend, openvino_installed
    from edge_infer.errors import ModelFormatError

    if not openvino_installed():
        return {}
    try:
        ov = OpenVinoBackend(str(target))
    except ModelFormatError as e:
        return {"openvino": str(e)}
    probs = np.concatenate([ov.run(pixels[i:i + 32]) for i in range(0, len(pixels), 32)])
    g = replace(compare(reference, probs, np.asarray(run.truth("valid")), run.split.paths("valid")),
                backend=ov.describe())
    a = g.agreement
    echo(f"int8 on {g.backend}: top-1 agreement with fp32 {a.top1_agreement:.1%}, {a.near_tie_flips} "
         f"near-tie and {a.confident_flips} confident flips, accuracy {g.int8_accuracy:.1%}, max |dp| "
         f"{a.max_abs_prob_diff:.2g}: {'would pass' if g.passed else 'would FAIL'} the gate (not gated: "
         "auto verifies the canaries on the machine that runs the file)")
    return {"openvino": g}


def _mb(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"
