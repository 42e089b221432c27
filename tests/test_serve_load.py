"""``python -m benchmarks.serve_load --quick``: the load benchmark runs end to end on the tiny
model, against a real ``edge-infer serve`` process, and reports what the README's table shows."""

from __future__ import annotations

import json

import tiny_models
from PIL import Image

from benchmarks import serve_load


def test_quick_load_run_reports_every_row(colour_model, tmp_path):
    image = tmp_path / "red.jpg"
    Image.fromarray(tiny_models.solid("red", (320, 240))).save(image)
    out, table = tmp_path / "load.json", tmp_path / "load.md"
    code = serve_load.main([str(colour_model), "--quick", "--image", str(image), "--threads", "1",
                            "--json", str(out), "--markdown", str(table)])
    assert code == 0
    result = json.loads(out.read_text())
    rows = [(r["batching"], r["clients"], r["completed"], r["errors"]) for r in result["rows"]]
    assert rows == [("on", 1, 3, 0), ("on", 4, 12, 0), ("off", 1, 3, 0), ("off", 4, 12, 0)]
    assert result["health_64"]["answered"] == 64
    assert result["offline_per_s"] > 0 and all(r["latency_ms"]["p50"] > 0 for r in result["rows"])
    text = table.read_text()
    assert text.startswith("| batching | clients | requests/s |") and "64 simultaneous connects" in text


def test_latency_percentiles_come_from_the_one_helper():
    # edge_infer.bench.summarize: numpy's linear interpolation, in ms, rounded to 0.1 here.
    assert serve_load.percentiles([10.0, 20.0, 30.0, 40.0]) == {"p50": 25.0, "p99": 39.7, "max": 40.0}
    assert serve_load.percentiles([]) == {"p50": None, "p99": None, "max": None}
