"""``export_run``: run folder -> checked, self-describing ONNX file (and optionally its int8 twin).

Reads top to bottom: load the run, wrap the network, export, write the metadata, check parity,
store the canaries (``export.canaries``), keep the file only if the checks pass (or ``force``),
then quantise, gate and store the int8 file's own canaries. Files are written
under a temporary name and renamed at the end, so a failed export never leaves a model behind
that looks finished.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from edge_infer import Classifier
from edge_infer.preprocess import prepare

from . import canaries
from .accuracy_control import BUDGET, probabilities, search
from .errors import CheckFailed, ExportError
from .info import build_info, parity_summary
from .int8_gate import compare
from .onnx_export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, save, set_canaries, set_info, to_onnx
from .parity import file_tier, tensor_tier
from .quantize import ALWAYS_FLOAT, SETTINGS, decode_all, optimized_ops, pick_calibration
from .run import Run, load_run
from .wrap import Deployable, check_pipeline, wrap

__all__ = ["DEFAULT_CALIB", "export_run", "int8_path", "report_path"]

DEFAULT_CALIB = 100
Echo = Callable[[str], None]


def int8_path(out: Path) -> Path:
    """``model.onnx`` -> ``model.int8.onnx``, beside it."""
    return out.with_name(f"{out.stem}.int8.onnx")


def report_path(out: Path) -> Path:
    return out.with_name("parity.json")


def export_run(run_dir: str | Path, out: str | Path, *, int8: bool = False, calib: int = DEFAULT_CALIB,
               opset: int = DEFAULT_OPSET, check: bool = True, force: bool = False,
               max_float_layers: int = BUDGET, echo: Echo = print) -> dict:
    """Export the run in ``run_dir`` to ``out``; returns the report also written to parity.json.

    Raises ``RunFolderError`` for a damaged run folder, ``ExportError`` for an unloadable learner,
    a missing image or a bad option, ``CheckFailed`` when a parity tier or
    the int8 gate fails (the failing model is then not written, unless ``force``).
    """
    out = _check_options(Path(out), opset, calib)
    run = load_run(run_dir)
    check_pipeline(run.learn, run.pre, str(run.folder / "learner.pkl"))
    valid = decode_all(run.check_files("valid"), run.pre) if check or int8 else None
    h, w = run.pre.size
    echo(f"run {run.folder}: {len(run.labels)} labels, {h}x{w} {run.pre.resize}, "
         f"{len(run.relative('valid'))} validation images")
    model = wrap(run.learn)
    start = time.perf_counter()
    proto = to_onnx(model, run.pre.size, opset)
    report = {"model": out.name, "run": str(run.folder.resolve()), "opset": opset,
              "export_seconds": round(time.perf_counter() - start, 2), "checked": check}
    info = build_info(run, model, opset)
    partial = out.with_name(f".{out.name}.partial")
    try:
        save(set_info(proto, info), partial)
        failures = _parity(run, model, partial, report, echo) if check else []
        if check:
            info = info.replace(parity={**parity_summary(report), **({"forced": True} if failures else {})})
        if valid is not None:
            chosen = canaries.select(valid, probabilities(partial, valid), model_bytes=proto.ByteSize())
            info = info.replace(canaries=chosen.summary())
            report["canaries"] = info.canaries
            set_canaries(proto, chosen)
        save(set_info(proto, info), partial)
        if failures and not force:
            _write_report(out, report)
            raise CheckFailed(f"{out}: parity breach, {'; '.join(failures)}; not written "
                              f"(numbers in {report_path(out)}; --force writes it anyway)")
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    report["size_bytes"] = out.stat().st_size
    echo(f"wrote {out}: {_mb(out)}, opset {opset}, exported in {report['export_seconds']:.1f} s"
         + ("" if check else " (not checked: --no-check)"))
    if failures:
        echo(f"WARNING: written despite a parity breach (--force): {'; '.join(failures)}")
    problem = _int8(run, out, info, valid, calib, force, max_float_layers, report, echo) \
        if valid is not None and int8 else None
    _write_report(out, report)
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


def _parity(run: Run, model: Deployable, path: Path, report: dict, echo: Echo) -> list[str]:
    """Both tiers on the file at ``path``; returns what failed (empty when all passed)."""
    clf = Classifier.load(path, fast_decode=False)
    valid = run.relative("valid")
    real = [prepare(run.data / p, run.pre, fast_decode=False) for p in valid[:8]]
    t = report["tensor"] = tensor_tier(model, clf, np.stack(real))
    echo(f"parity, tensor tier: torch vs onnxruntime, batch {'/'.join(map(str, t['batches']))}, "
         f"max |diff| {t['max_abs_diff']:.1e} (rtol {t['rtol']:g}, atol {t['atol']:g}): "
         f"{'passed' if t['passed'] else 'FAILED'}")
    f = report["files"] = file_tier(run.learn, clf, run.data, valid, run.truth("valid"))
    echo(f"parity, file tier: fastai vs edge_infer on {f['files']} validation files, top-1 equal on "
         f"{f['top1_equal']}/{f['files']}, max |p diff| {f['max_prob_diff']:.1e} "
         f"(<= {f['tolerance']['max_prob_diff']:g}; worst {f['worst_file']}): "
         f"{'passed' if f['passed'] else 'FAILED'}")
    failures = []
    if not t["passed"]:
        failures.append(f"tensor tier max |diff| {t['max_abs_diff']:.2e} over rtol {t['rtol']:g}/atol {t['atol']:g}")
    if not f["passed"]:
        failures.append(f"file tier top-1 equal on {f['top1_equal']}/{f['files']}, max |p diff| "
                        f"{f['max_prob_diff']:.2e} (worst {f['worst_file']})")
    return failures


def _int8(run: Run, out: Path, info, pixels: np.ndarray, calib: int, force: bool, budget: int,
          report: dict, echo: Echo) -> str | None:
    """Quantise under accuracy control, gate, and write ``<stem>.int8.onnx``; returns the
    failure message, if any."""
    target = int8_path(out)
    train = run.check_files("train")
    calibration = pick_calibration(train, run.split_labels("train"), calib)
    valid = run.files("valid")
    echo(f"int8: calibrating on {len(calibration)} training images"
         + (f" (only {len(train)} in the run)" if len(train) < calib else "")
         + f", checking on {len(valid)} validation files")
    partial = target.with_name(f".{target.name}.partial")
    try:
        with tempfile.TemporaryDirectory(prefix="edge-infer-int8-") as tmp:
            outcome = search(out, Path(tmp), calibration=decode_all(calibration, run.pre),
                             valid=pixels, truth=np.asarray(run.truth("valid")),
                             names=run.relative("valid"), budget=budget, echo=echo)
            best = outcome.chosen or max(outcome.tried, key=lambda c: c.result["agreement"])
        save(best.model, partial)
        details = {**SETTINGS, "calibration_images": len(calibration), "float_layers": list(best.float_layers),
                   "latency_vs_all_int8": outcome.latency}
        report["int8"] = q = {"model": target.name, **best.result, **details,
                              "always_float": ALWAYS_FLOAT,
                              "accuracy_control": outcome.report()}
        passed = outcome.chosen is not None
        parity = {**parity_summary(report), **({} if passed else {"forced": True})}
        provenance = {**info.provenance, "quantization": details}
        proto = _load(partial)
        chosen = canaries.select(pixels, outcome.reference, best.probs, model_bytes=proto.ByteSize())
        q["canaries"] = chosen.summary()
        save(set_info(set_canaries(proto, chosen), info.replace(precision="int8", parity=parity,
                                                                provenance=provenance, canaries=q["canaries"])),
             partial)
        verdict = _verdict(q)
        if not passed and not force:
            stale = target.exists()
            target.unlink(missing_ok=True)  # an int8 file from an earlier export no longer matches
            return (f"{target}: int8 gate failed, {verdict}; tried all-int8"
                    + (f" then the 1-{len(outcome.tried) - 1} most sensitive layers in float (budget {budget}, --max-float-layers)"
                       if len(outcome.tried) > 1 else "") + "; not written"
                    + (" (the earlier one was removed)" if stale else "")
                    + "; check the calibration images, train until the doctor says converged, "
                    "or --force (export/README.md, int8)")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    q["size_bytes"] = target.stat().st_size
    q["onnxruntime_ops"] = optimized_ops(target)
    echo(f"int8: wrote {target}: {_mb(target)} (fp32 {_mb(out)}), {verdict}: "
         + ("passed" if passed else "FAILED, written anyway (--force)"))
    q["backends"] = _other_backends(target, pixels, outcome.reference, run, echo)
    return None


def _other_backends(target: Path, pixels: np.ndarray, reference: np.ndarray, run: Run, echo: Echo) -> dict:
    """The int8 gate's numbers for every other installed backend running the written int8 file,
    so a user sees at export whether it agrees on this CPU. Reported, not gated: which backend
    computes faithfully depends on the CPU that runs the file, and ``auto`` checks the canaries
    there (``edge_infer.verify``)."""
    from edge_infer.backends import OpenVinoBackend, openvino_installed
    from edge_infer.errors import ModelFormatError

    if not openvino_installed():
        return {}
    try:
        ov = OpenVinoBackend(str(target))
    except ModelFormatError as e:
        return {"openvino": {"error": str(e)}}
    probs = np.concatenate([ov.run(pixels[i:i + 32]) for i in range(0, len(pixels), 32)])
    r = {"backend": ov.describe(), **compare(reference, probs, np.asarray(run.truth("valid")), run.relative("valid"))}
    echo(f"int8 on {r['backend']}: top-1 agreement with fp32 {r['agreement']:.1%}, {r['near_tie_flips']} "
         f"near-tie and {r['confident_flips']} confident flips, accuracy {r['int8_accuracy']:.1%}, max |dp| "
         f"{r['max_prob_diff']:.2g}: {'would pass' if r['passed'] else 'would FAIL'} the gate (not gated: "
         "auto verifies the canaries on the machine that runs the file)")
    return {"openvino": r}


def _verdict(q: dict) -> str:
    """One line of the gate's numbers."""
    floats = q["float_layers"]
    cost = q["latency_vs_all_int8"]
    return (f"top-1 agreement {q['agreement']:.1%} on {q['files']} validation files (95% lower bound "
            f"{q['agreement_lower95']:.1%}; {q['near_tie_flips']} near-tie and {q['confident_flips']} "
            f"confident flips), accuracy fp32 {q['fp32_accuracy']:.1%} int8 {q['int8_accuracy']:.1%}"
            + (f", {len(floats)} layer(s) kept in float" if floats else "")
            + (f" (model-only latency x{cost['ratio']:.2f} of all-int8)" if cost else "")
            + f" (gate: accuracy drop <= {q['gate']['max_accuracy_drop'] * 100:g} points, no flip of a "
            f"prediction with fp32 top-2 margin >= {q['gate']['near_tie_margin']:g})")


def _load(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path))


def _write_report(out: Path, report: dict) -> None:
    report_path(out).write_text(json.dumps(report, indent=2) + "\n")


def _mb(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"
