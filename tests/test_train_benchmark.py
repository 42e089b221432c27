"""``python -m benchmarks.train --quick``: the training-throughput benchmark end to end on the CPU.

Real data made by the benchmark, real fastai training, the real report files. Speeds are not
asserted (the 2-core CI machine is shared); that every comparison is there and well formed is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastai")

pytestmark = [pytest.mark.torch, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]


def test_quick_benchmark_writes_every_comparison(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.train", "--quick", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "\r" not in proc.stdout  # a log, not a terminal: no progress-bar redraws
    result = json.loads((out / "train_bench.json").read_text())
    rows = {(r["data"], r["size"], r["pipeline"]): r for r in result["rows"]}
    assert set(rows) == {("pngs", 32, "train fit"), ("pngs", 32, "fastai defaults"),
                         ("photos", 32, "train fit"), ("photos", 32, "fastai defaults"),
                         ("synthetic", 32, "ceiling")}
    assert all(r["images_per_s"] > 0 and r["gpu"] is None for r in rows.values())
    assert result["complete"]
    for key, r in rows.items():  # each timed epoch split into its phases, which fit inside it
        if key[2] != "ceiling":
            phases = r["extra"]
            assert 0 <= phases["first_batch_s"] <= phases["train_s"]
            assert phases["train_s"] + phases["valid_s"] == pytest.approx(r["epoch_s"], abs=0.02)
    assert rows["pngs", 32, "train fit"]["workers"] == 0  # the CPU default
    assert result["machine"]["cpu_model"]
    markdown = (out / "train_bench.md").read_text()
    assert "| photos | 32 | train fit |" in markdown and "| synthetic | 32 | ceiling |" in markdown
    with Image.open(out / "train_bench.png") as img:
        assert img.format == "PNG" and img.width > 300
