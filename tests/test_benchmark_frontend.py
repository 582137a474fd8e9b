"""benchmarks/frontend.py keeps running the real edit chain with its pass-through stand-in."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np


def _load():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "frontend.py"
    spec = importlib.util.spec_from_file_location("bench_frontend", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_stand_in_returns_the_aligned_crop():
    F = _load()
    ex = F.PassThroughExecutor(8)
    crops = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    w, f = ex.encode(crops)
    w2, f2 = ex.map_codes(None, w, f)
    np.testing.assert_array_equal(ex.generate(w2, f2), crops)
    assert ex.generate(*ex.empty_codes()).shape == (0, 8, 8, 3)


def test_benchmark_runs_the_chain(capsys, shared_dir):
    F = _load()
    F.main(["--clips", "480p", "--frames", "3", "--size", "64", "--detector", "replay", "--json"])
    out = json.loads(capsys.readouterr().out)
    (r,) = out["results"]
    assert r["frames"] == 3 and r["width"] == 480
    for run in ("sequential", "chain"):
        assert r[run]["frames"] == 3 and r[run]["faces"] == 3 and r[run]["cpu_ms_per_frame"] > 0
        assert list(r[run]["stages"]) == ["decode", "detect", "track_align", "encode", "edit", "generate",
                                          "mask", "blend", "encode_video"]
    assert r["encoder_alone"]["frames"] == 3


def test_benchmark_leaves_autograd_alone(shared_dir):
    """Running the benchmark in-process must not switch autograd off for what runs after it."""
    import torch
    F = _load()
    F.main(["--clips", "480p", "--frames", "1", "--size", "32", "--detector", "replay", "--json"])
    assert torch.is_grad_enabled()


def test_device_time_waits_without_using_the_cpu():
    """--device-ms: the stand-in's generate takes the device time per face, and the CPU stays free."""
    import time
    F = _load()
    ex = F.PassThroughExecutor(8, device_s=0.05)
    w, f = ex.encode(np.zeros((2, 8, 8, 3), np.uint8))
    c0, t0 = time.process_time(), time.perf_counter()
    ex.generate(w, f)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert wall >= 0.1 and cpu < 0.05


def test_benchmark_reports_the_device_time(capsys, shared_dir):
    F = _load()
    F.main(["--clips", "480p", "--frames", "2", "--size", "32", "--detector", "replay", "--device-ms", "40", "--json"])
    (r,) = json.loads(capsys.readouterr().out)["results"]
    assert r["device_ms"] == 40
    assert r["sequential"]["stages"]["generate"]["busy_s"] >= 2 * 0.04


def test_derived_clips_are_made_from_the_1080p_clip(shared_dir, tmp_path):
    """720p is the 1080p clip scaled down, 1080p-709 the 1080p clip tagged BT.709 (most HD video: the reader's
    conversion differs), both written into the run's temporary folder."""
    from fsvideo.video import probe
    from fsvideo.video.synth import BT709
    F = _load()
    small, tagged = F.named_clip("720p", tmp_path, 2), F.named_clip("1080p-709", tmp_path, 2)
    assert small.parent == tagged.parent == tmp_path
    a, b = probe(small), probe(tagged)
    assert (a.width, a.height, a.n_frames, a.color["colorspace"]) == (1280, 720, 2, 2)
    assert (b.width, b.height, b.n_frames, b.color) == (1920, 1080, 2, BT709)
    assert F.named_clip("1080p", tmp_path, 2) == F.CLIPS["1080p"]
