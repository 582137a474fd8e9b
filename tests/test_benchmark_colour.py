"""benchmarks/colour.py keeps timing the reader's and the writer's conversions, and the reader's stays exact."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path


def test_colour_benchmark_runs(capsys, shared_dir):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "colour.py"
    spec = importlib.util.spec_from_file_location("bench_colour", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--frames", "2"])
    out = capsys.readouterr().out
    assert "1920x1080, 2 frames" in out and "load average" in out
    row = re.search(r"Yuv420ToRgb \(BT\.709, now\)\s+[\d.]+\s+(\d+)\s+\[([^\]]+)\]", out)
    assert row and int(row.group(1)) <= 1 and max(abs(float(x)) for x in row.group(2).split()) < 0.05
    assert "rgb_to_yuv420_matrix (BT.709, now)" in out
