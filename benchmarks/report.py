"""Judge a benchmark result against the issue's targets and write results.json and results.md.

The targets (``TARGETS``, issue 15) are checked on the variant and thread count that does best
for each, which is stated next to every verdict; a missing measurement is "not measured", never
a pass. Model-only latencies are also shown as multiples of the machine's measured compute
floor (``benchmarks.floor``), so results from different CPUs compare as ratios.
"""

from __future__ import annotations

import json
from pathlib import Path

from .machine import summary_line

__all__ = ["TARGETS", "TARGETS_MS", "REFERENCE", "is_reference_model", "targets", "floor_ms",
           "latency_verdicts", "to_markdown", "write_results"]

TARGETS_MS = (10.0, 20.0)
REFERENCE = ("resnet34", 224)
PHOTO, BIG_PHOTO = "1920x1080", "4032x3024"
FASTAI, FP32 = "fastai", "edge_infer_fp32"
INT8_VARIANTS = ("edge_infer_int8", "openvino_int8")  # the targets take the best of these

# The targets (issue 15), as data: name -> (limit, unit, at_least). Each is judged on the variant
# and thread count that does best, named in the verdict; a missing measurement is not a pass.
TARGETS: dict[str, tuple[float, str, bool]] = {
    "int8 model-only p50 vs the int8 floor": (1.25, "x", False),
    f"end-to-end int8 p50, {PHOTO} JPEG": (9.0, "ms", False),
    f"end-to-end speed-up over learn.predict ({PHOTO})": (5.0, "x", True),
    f"end-to-end int8 p50, {BIG_PHOTO} JPEG": (25.0, "ms", False),
    f"folder throughput, int8 classify_files ({PHOTO})": (150.0, "images/s", True),
    "backends agree with onnxruntime on confident predictions": (1.0, "fraction", True),
    "fp32 model-only vs best onnxruntime setting": (1.15, "x", False),
    "import edge_infer (fresh interpreter)": (0.3, "s", False),
    "load + first prediction, int8": (0.5, "s", False),
}


def _variant(result: dict, key: str) -> dict | None:
    return next((v for v in result["variants"] if v["key"] == key), None)


def _best(result: dict, keys: str | tuple[str, ...], metric) -> tuple[float, int, str] | None:
    """The lowest value of ``metric(row)`` over ``keys``' variants and thread counts, with
    the thread count and the variant's title."""
    rows = []
    for key in (keys,) if isinstance(keys, str) else keys:
        v = _variant(result, key)
        rows += [(metric(r), r["threads"], v["title"]) for r in (v["by_threads"] if v else [])]
    rows = [row for row in rows if row[0] is not None]
    return min(rows) if rows else None


def _model_p50(row: dict) -> float | None:
    return row.get("model_only", {}).get("p50_ms")


def _e2e_p50(row: dict, photo: str = PHOTO) -> float | None:
    return row.get("end_to_end", {}).get(photo, {}).get("p50_ms")


def _check(name: str, measured: float | None, detail: str) -> dict:
    limit, unit, at_least = TARGETS[name]
    ok = None if measured is None else (measured >= limit if at_least else measured <= limit)
    return {"name": name, "target": f"{'>=' if at_least else '<='} {limit:g} {unit}",
            "measured": None if measured is None else round(measured, 3), "unit": unit,
            "pass": ok, "detail": detail}


def _where(best: tuple[float, int, str] | None) -> str:
    return f"{best[2]}, threads={best[1]}" if best else "not measured"


def is_reference_model(result: dict) -> bool:
    """The targets are set for ResNet34 at 224 px; on anything else they are indicative only."""
    m = result["model"]
    return m["arch"] == REFERENCE[0] and list(m["size"]) == [REFERENCE[1], REFERENCE[1]]


def targets(result: dict) -> list[dict]:
    """The issue's targets (``TARGETS``), each with what was measured, on which setting, and
    whether the model is the one they are set for (``reference_model``)."""
    reference = is_reference_model(result)
    return [{**t, "reference_model": reference} for t in _targets(result)]


def floor_ms(result: dict, precision: str, threads: int) -> float | None:
    """The measured compute floor for ``precision`` (int8 | fp32) at ``threads``, in ms."""
    row = result.get("floor", {}).get("by_threads", {}).get(str(threads), {})
    return row.get(precision, {}).get("floor_ms")


def _targets(result: dict) -> list[dict]:
    names = list(TARGETS)
    ratio = _best(result, INT8_VARIANTS, lambda r: _per_floor(result, r))
    out = [_check(names[0], ratio and ratio[0], _where(ratio))]
    e2e = _best(result, INT8_VARIANTS, _e2e_p50)
    out.append(_check(names[1], e2e and e2e[0], _where(e2e)))
    out.append(_speedup(result, e2e, names[2]))
    big = _best(result, INT8_VARIANTS, lambda r: _e2e_p50(r, BIG_PHOTO))
    out.append(_check(names[3], big and big[0], _where(big)))
    folder = _best(result, INT8_VARIANTS, lambda r: -r["folder"]["images_per_s"] if "folder" in r else None)
    out.append(_check(names[4], folder and -folder[0], _where(folder)))
    out.append(_agreement_check(result, names[5]))
    out.append(_fp32_vs_best(result, names[6]))
    cold = result.get("cold_start", {})
    out.append(_check(names[7], cold.get("import", {}).get("import_s"), "median of fresh interpreters"))
    out.append(_check(names[8], cold.get("int8", {}).get("load_plus_first_s"),
                      f"onnxruntime, threads={cold.get('threads')}, {cold.get('photo')}"))
    return out


def _per_floor(result: dict, row: dict) -> float | None:
    """An int8 row's model-only p50 as a multiple of the int8 floor at its thread count."""
    p50, floor = _model_p50(row), floor_ms(result, "int8", row["threads"])
    return p50 / floor if p50 is not None and floor else None


def _agreement_check(result: dict, name: str) -> dict:
    rows = result.get("backend_agreement") or []
    confident = sum(r["confident"] for r in rows)
    if not confident:
        return _check(name, None, "no other backend measured" if not rows else "no confident predictions")
    same = sum(r["confident_same"] for r in rows)
    return _check(name, same / confident, f"{same}/{confident} confident predictions "
                  f"(top-2 margin >= {rows[0]['margin']}) over {', '.join(sorted({r['variant'] for r in rows}))}")


def _fp32_vs_best(result: dict, name: str) -> dict:
    fp32 = _best(result, FP32, _model_p50)
    best = result.get("onnxruntime_sweep", {}).get("best", {}).get("fp32")
    if fp32 is None or best is None:
        return _check(name, None, "not measured")
    ratio = fp32[0] / best["timing"]["p50_ms"]
    return _check(name, ratio, f"Classifier threads={fp32[1]} {fp32[0]:.2f} ms vs {best['setting']['label']} "
                  f"{best['timing']['p50_ms']:.2f} ms")


def _speedup(result: dict, e2e: tuple[float, int, str] | None, name: str) -> dict:
    fastai = _variant(result, FASTAI)
    if e2e is None or fastai is None:
        return _check(name, None, "not measured")
    row = next((r for r in fastai["by_threads"] if r["threads"] == e2e[1]), None)
    slow = row and _e2e_p50(row)
    return _check(name, slow and slow / e2e[0],
                  f"threads={e2e[1]}: learn.predict {slow:.1f} ms vs {e2e[2]} {e2e[0]:.2f} ms" if slow
                  else "not measured")


def latency_verdicts(result: dict) -> list[dict]:
    """Per variant and thread count: where the p50s fall against 10 ms and 20 ms."""
    rows = []
    for v in result["variants"]:
        for r in v["by_threads"]:
            for kind, value in (("model only", _model_p50(r)), (f"end to end {PHOTO}", _e2e_p50(r))):
                if value is not None:
                    rows.append({"variant": v["title"], "threads": r["threads"], "what": kind,
                                 "p50_ms": round(value, 2), "verdict": _band(value)})
    return rows


def _band(ms: float) -> str:
    low, high = TARGETS_MS
    return f"<= {low:g} ms" if ms <= low else f"<= {high:g} ms" if ms <= high else f"> {high:g} ms"


# ------------------------------------------------------------------------------------ markdown


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _latency_table(result: dict) -> list[str]:
    photos = list(result["photos"])
    head = ["variant", "threads", "load s", "first call ms", "model-only p50/p90/p99 ms", "x floor",
            *[f"e2e {p} p50/p90/p99 ms" for p in photos], "folder img/s", "top-1 vs torch"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in result["variants"]:
        agree = v.get("agreement", {}).get("top1_agreement")
        for r in v["by_threads"]:
            mo = r.get("model_only")
            floor = floor_ms(result, "int8" if v["key"].endswith("int8") else "fp32", r["threads"])
            cells = [v["title"], str(r["threads"]), _fmt(r["load_s"], 3), _fmt(r["first_call_ms"], 1),
                     _pcts(mo) if mo else "–", _fmt(mo["p50_ms"] / floor) if mo and floor else "–",
                     *[_pcts(r["end_to_end"].get(p)) for p in photos],
                     _fmt(r.get("folder", {}).get("images_per_s"), 1), _fmt(agree, 3)]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _pcts(t: dict | None) -> str:
    return "–" if not t else f"{t['p50_ms']:.2f} / {t['p90_ms']:.2f} / {t['p99_ms']:.2f}"


def _targets_table(rows: list[dict]) -> list[str]:
    lines = ["| target | goal | measured | verdict | setting |", "|---|---|---|---|---|"]
    for t in rows:
        verdict = {True: "PASS", False: "FAIL", None: "not measured"}[t["pass"]]
        measured = "–" if t["measured"] is None else f"{t['measured']:g} {t['unit']}"
        lines.append(f"| {t['name']} | {t['target']} | {measured} | {verdict} | {t['detail']} |")
    return lines


def _floor_lines(result: dict) -> list[str]:
    f = result.get("floor")
    if not f:
        return ["Not measured."]
    lines = [f"Method: {f['method']}; the model has {f['model_gmac']} G multiply-adds (batch 1). "
             "A variant's 'x floor' is its model-only p50 divided by the floor below.", "",
             "| threads | int8 GMAC/s | int8 floor ms | fp32 GMAC/s | fp32 floor ms |", "|---|---|---|---|---|"]
    lines += [f"| {t} | {r['int8']['gmac_per_s']:.0f} | {r['int8']['floor_ms']:.2f} | "
              f"{r['fp32']['gmac_per_s']:.0f} | {r['fp32']['floor_ms']:.2f} |" for t, r in f["by_threads"].items()]
    return lines


def _agreement_table(result: dict) -> list[str]:
    rows = result.get("backend_agreement") or []
    if not rows:
        return ["No backend other than onnxruntime was measured (pip install 'edge-infer[openvino]')."]
    lines = ["| variant | images | top-1 same | confident (margin >= 0.1) same | max abs prob diff |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['set']} | {r['top1_same']}/{r['images']} | "
              f"{r['confident_same']}/{r['confident']} | {r['max_abs_prob_diff']:.2g} |" for r in rows]
    return lines


def _sweep_table(result: dict) -> list[str]:
    sweep = result.get("onnxruntime_sweep", {})
    lines = ["| model | setting | p50 ms | p90 ms |", "|---|---|---|---|"]
    for precision, rows in sweep.get("results", {}).items():
        for row in rows:
            lines.append(f"| {precision} | {row['setting']['label']} | {row['timing']['p50_ms']:.2f} | "
                         f"{row['timing']['p90_ms']:.2f} |")
    for precision, row in sweep.get("best", {}).items():
        lines.append(f"\nBest {precision} setting found: **{row['setting']['label']}**, "
                     f"p50 {row['timing']['p50_ms']:.2f} ms.")
    return lines


def _decode_table(result: dict) -> list[str]:
    lines = ["| photo | decode path | p50 ms | max abs diff | mean abs diff |", "|---|---|---|---|---|"]
    lines += [f"| {r['photo']} | {r['path']} | {r['p50_ms']:.2f} | {r['max_abs_diff']} | {r['mean_abs_diff']} |"
              for r in result.get("decode", [])]
    return lines


def _stages_table(result: dict) -> list[str]:
    rows = result.get("decode_stages") or []
    if not rows:
        return []
    steps = [k for k in rows[0] if k != "photo"]
    lines = ["| photo | " + " | ".join(steps) + " | sum |", "|---|" + "---|" * (len(steps) + 1)]
    lines += [f"| {r['photo']} | " + " | ".join(f"{r[k]:.2f}" for k in steps) + f" | {sum(r[k] for k in steps):.2f} |"
              for r in rows]
    return ["", "Where the time of edge_infer's own decode path goes (median ms per step):", "", *lines]


def _folder_table(result: dict) -> list[str]:
    lines = ["| threads | spinning | decode workers | batch size | images/s |", "|---|---|---|---|---|"]
    lines += [f"| {r['threads']} | {r['spinning']} | {r['workers']} | {r['batch_size']} | {r['images_per_s']:.1f} |"
              for r in result.get("folder_sweep", [])]
    return lines


def _machine_lines(result: dict) -> list[str]:
    m = result["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    lines = [f"- CPU: {summary_line(m)}", f"- OS: {m['os']}{' (virtual machine)' if m['hypervisor'] else ''}",
             f"- versions: {versions}",
             f"- load average (1, 5, 15 min) before: {m['load_average']}, after: "
             f"{result.get('load_average_after')}"]
    load = (m.get("load_average") or [0])[0]
    if load > 0.5 * (m.get("usable_cpus") or 1):
        lines.append(f"- **warning**: the machine was busy (1-min load {load} on {m['usable_cpus']} CPUs) "
                     "when this ran: every latency here is inflated; rerun on a quiet machine.")
    return lines


def _model_lines(result: dict) -> list[str]:
    m, s = result["model"], result["settings"]
    accuracy = m.get("valid_accuracy")
    return [f"- model: {m['source']}; {m['arch']} at {m['size'][0]}x{m['size'][1]}, {len(m['labels'])} "
            f"classes; fp32 {m['fp32_mb']:.1f} MB, int8 {m['int8_mb']:.1f} MB"
            + (f"; validation accuracy (fastai) {accuracy:.3f}" if accuracy is not None else ""),
            f"- runs: {s['runs']} timed after {s['warmup']} warm-up (learn.predict: fewer, see JSON)"
            f"{'; **quick mode: rough numbers**' if s['quick'] else ''}",
            "- photos: " + ", ".join(f"{k} ({v['bytes'] / 1e6:.2f} MB)" for k, v in result["photos"].items()),
            "- model-only: batch 1, pixels already at the model's size; end-to-end: decode + resize + "
            "model for one JPEG file per call; PyTorch eager uses edge_infer's preprocessing, "
            "learn.predict its own"]


def to_markdown(result: dict, *, title: str = "edge-infer benchmark") -> str:
    """The whole report for people: machine, targets, latency table, search results."""
    rows = targets(result)
    cold = result.get("cold_start", {})
    sections = [
        f"# {title}", "", f"`{result['command']}` on {result['created']} ({result['seconds']:.0f} s)", "",
        "## Machine", "", *_machine_lines(result), "", "## Model and method", "", *_model_lines(result), "",
        "## Targets", "", *_targets_table(rows), "",
        f"Verdict: {sum(t['pass'] is True for t in rows)} of {len(rows)} targets met"
        + ("." if is_reference_model(result) else
           f" (indicative only: the targets are set for {REFERENCE[0]} at {REFERENCE[1]} px)."), "",
        "## Compute floor (measured on this machine)", "", *_floor_lines(result), "",
        "## Latency (ms) and throughput", "", *_latency_table(result), "",
        "## Backends against onnxruntime (same file, top-1)", "", *_agreement_table(result), "",
        "## Against 10 ms and 20 ms (p50)", "", "| variant | threads | what | p50 ms | verdict |",
        "|---|---|---|---|---|",
        *[f"| {r['variant']} | {r['threads']} | {r['what']} | {r['p50_ms']} | {r['verdict']} |"
          for r in latency_verdicts(result)], "",
        "## Cold start (fresh interpreter, median)", "",
        f"- `import edge_infer`: {_fmt(cold.get('import', {}).get('import_s'), 3)} s "
        f"(torch imported: {cold.get('import', {}).get('torch_imported')})",
        *[f"- {p}: load {_fmt(cold[p]['load_s'], 3)} s + first prediction "
          f"{_fmt(cold[p]['first_prediction_s'], 3)} s = {_fmt(cold[p]['load_plus_first_s'], 3)} s"
          for p in ("fp32", "int8") if p in cold], "",
        "## onnxruntime session settings (model only)", "", *_sweep_table(result), "",
        "## Decode paths (difference from a full decode, grey levels)", "", *_decode_table(result), *_stages_table(result), "",
        "## Folder pipeline (classify_files, int8)", "", *_folder_table(result), "",
    ]
    return "\n".join(sections)


def write_results(result: dict, out: Path, *, title: str = "edge-infer benchmark",
                  plot: bool = True) -> dict[str, Path]:
    """results.json (with the judged targets), results.md and latency.png under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    result = {**result, "targets": targets(result), "latency_verdicts": latency_verdicts(result)}
    paths = {"json": out / "results.json", "markdown": out / "results.md"}
    paths["json"].write_text(json.dumps(result, indent=2) + "\n")
    paths["markdown"].write_text(to_markdown(result, title=title))
    if plot:
        from .plot import plot_latency

        paths["plot"] = plot_latency(result, out / "latency.png")
    return paths
