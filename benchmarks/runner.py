"""Peak memory and throughput of the streaming runner on a dummy chain, for N and 4N frames.

Usage::

    python benchmarks/runner.py                  # N = 150 frames of 320x240
    python benchmarks/runner.py --frames 100 --size 640x360 --queue-size 8

Each measurement runs in a fresh subprocess (peak RSS, ``VmHWM``, only grows within a process):
a synthetic clip is decoded with VideoReader, goes through a dummy chain (a per-frame filter, a
batched "model" stage of batch 4, a look-ahead smoothing stage of window 5, a per-frame paste-back)
and is re-encoded with VideoWriter (audio copied).  The stages spend their time in NumPy / OpenCV
calls and sleeps that release the GIL, like the real model stages do in PyTorch.

Prints, for threaded and sequential runs: frames, seconds, frames/s, peak RSS, and the growth of
peak RSS from N to 4N frames (bounded queues: it should stay near 0).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from peak_memory import peak_rss_mib   # benchmarks/ is this script's folder


def _child(clip: str, threads: bool, queue_size: int, work_ms: float) -> dict:
    import cv2

    from fsvideo.pipeline import FunctionStage, Stage, run_pipeline
    from fsvideo.utils import atomic_output
    from fsvideo.video import VideoReader, VideoWriter, probe

    cv2.setNumThreads(1)
    info = probe(clip)
    rss0 = peak_rss_mib()

    def filt(ps):
        for p in ps:
            p["gray"] = cv2.GaussianBlur(cv2.cvtColor(p["image"], cv2.COLOR_RGB2GRAY), (9, 9), 0)
        return ps

    def model(ps):
        x = np.stack([cv2.resize(p["image"], (128, 128)) for p in ps]).astype(np.float32)
        time.sleep(work_ms / 1000 * len(ps))  # a model call that releases the GIL
        y = np.tanh(x / 255.0)
        for p, yi in zip(ps, y):
            p["face"] = (yi * 255).astype(np.uint8)
        return ps

    class Smooth(Stage):
        name, needs, adds, window = "smooth", ("gray",), ("level",), 5

        def __init__(self):
            self.held = []

        def process(self, ps):
            self.held += ps
            out = []
            while len(self.held) > self.window:
                p = self.held.pop(0)
                p["level"] = float(np.mean([q["gray"].mean() for q in [p] + self.held]))
                out.append(p)
            return out

        def flush(self):
            out, self.held = self.held, []
            for p in out:
                p["level"] = float(p["gray"].mean())
            return out

    def paste(ps):
        for p in ps:
            img = p["image"].copy()
            face = cv2.resize(p["face"], (img.shape[1] // 2, img.shape[0] // 2))
            img[: face.shape[0], : face.shape[1]] = face
            p["output"] = img
        return ps

    stages = [FunctionStage("filter", filt, needs=("image",), adds=("gray",)),
              FunctionStage("model", model, needs=("image",), adds=("face",), batch_size=4),
              Smooth(),
              FunctionStage("paste", paste, needs=("image", "face"), adds=("output",))]
    out = Path(tempfile.mkdtemp()) / "out.mp4"
    with atomic_output(out) as tmp, VideoWriter(tmp, info, audio_from=clip, preset="ultrafast") as w:
        def source():
            for f in VideoReader(clip, info=info):
                yield {"index": f.index, "pts": f.pts, "duration": f.duration, "image": f.image}

        stats = run_pipeline(source(), stages, lambda p: w.write(p["output"], pts=p["pts"], duration=p["duration"]),
                             queue_size=queue_size, threads=threads, source_keys=("index", "pts", "duration", "image"))
    out.unlink()
    return {"frames": stats.packets, "seconds": stats.seconds, "fps": stats.fps, "rss_start_mib": rss0,
            "peak_rss_mib": peak_rss_mib(), "stages": {s.name: round(s.fps, 1) for s in stats.stages}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=150, help="N (the long run has 4N)")
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--queue-size", type=int, default=8)
    ap.add_argument("--work-ms", type=float, default=4.0, help="simulated model time per frame")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        clip, threads, q, work = args.child
        print(json.dumps(_child(clip, threads == "1", int(q), float(work))))
        return

    from fsvideo.video.synth import make_test_clip

    w, h = map(int, args.size.split("x"))
    d = Path(tempfile.mkdtemp())
    clips = {}
    for n in (args.frames, 4 * args.frames):
        clips[n] = d / f"clip{n}.mp4"
        make_test_clip(clips[n], n_frames=n, width=w, height=h, fps=25)
    print(f"dummy chain: filter -> model (batch 4, {args.work_ms} ms/frame) -> smooth (window 5) -> paste; "
          f"{w}x{h}, queue_size {args.queue_size}, {os.cpu_count()} CPUs")
    print(f"{'mode':<11}{'frames':>7}{'seconds':>9}{'frames/s':>10}{'RSS before MiB':>16}{'peak RSS MiB':>14}"
          f"{'run added MiB':>15}")
    results = {}
    for threads in (True, False):
        mode = "threaded" if threads else "sequential"
        for n, clip in clips.items():
            cmd = [sys.executable, __file__, "--child", str(clip), "1" if threads else "0", str(args.queue_size),
                   str(args.work_ms)]
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            results[(mode, n)] = r
            print(f"{mode:<11}{r['frames']:>7}{r['seconds']:>9.2f}{r['fps']:>10.1f}{r['rss_start_mib']:>16.1f}"
                  f"{r['peak_rss_mib']:>14.1f}{r['peak_rss_mib'] - r['rss_start_mib']:>15.1f}")
    for mode in ("threaded", "sequential"):
        a, b = results[(mode, args.frames)], results[(mode, 4 * args.frames)]
        growth = (b["peak_rss_mib"] - a["peak_rss_mib"]) / a["peak_rss_mib"] * 100
        print(f"{mode}: peak RSS {a['peak_rss_mib']:.1f} MiB for {args.frames} frames, {b['peak_rss_mib']:.1f} MiB "
              f"for {4 * args.frames} ({growth:+.1f}%)")
    sp = results[("threaded", 4 * args.frames)]["fps"] / results[("sequential", 4 * args.frames)]["fps"]
    print(f"threaded / sequential speed ({4 * args.frames} frames): {sp:.2f}x")
    print("per-stage frames/s (threaded, long run):", results[("threaded", 4 * args.frames)]["stages"])


if __name__ == "__main__":
    main()
