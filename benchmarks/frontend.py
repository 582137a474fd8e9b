"""The work around the networks: the edit chain with a pass-through stand-in for the networks (issue 11).

Usage::

    python benchmarks/frontend.py                          # 480p, 720p, 1080p, 1080p-709; 48 frames each; dlib
    python benchmarks/frontend.py --frames 96 --detector replay --json
    python benchmarks/frontend.py --clips 1080p --size 1024 --workers 1

The real chain ``pipelines/edit.yaml`` is built with :func:`fsvideo.pipeline.chain.build_chain`
from :class:`~fsvideo.pipeline.components.Components`, as :mod:`fsvideo.pipeline.jobs` does, except
that the networks are replaced by :class:`PassThroughExecutor`: ``encode`` keeps the aligned crop,
``edit`` leaves it alone and ``generate`` returns it as the "generated" face.  So every stage
outside the networks runs exactly as in ``fsvideo edit`` (decode, detection, tracking +
stabilisation + alignment to ``--size``, landmark-hull masks, paste-back, H.264 encoding with the
default preset, audio copied where the clip has audio) and costs nearly nothing inside them.

For each clip it prints:

* frames/s of each stage alone: its busy time in a sequential run (one frame through every stage
  before the next; nothing overlaps).  ``encode_video``'s busy time is the ``write`` call only:
  x264's frame threads keep encoding after it returns, which the CPU column below does count;
* frames/s of the chain (threads + bounded queues, the core budget of a GPU run: torch 1 thread,
  OpenCV 1, per-frame stages ``--workers``, default cores - 1);
* CPU milliseconds per frame of the whole process (user + system, every thread) in both runs:
  with the stand-in, all of it is outside the networks;
* the H.264 writer alone on frames decoded beforehand (wall frames/s and CPU ms per frame).

``--device-ms T`` makes the stand-in wait T ms per face in ``generate`` without using the CPU (a
sleep releases the GIL), as networks on a GPU would: the sequential run then pays detection,
alignment, blending, encoding *and* the device time one after the other, while the chain overlaps
them, which is what streaming is for (issue 11 point 9).

``--detector replay`` runs dlib once beforehand and replays its detections (keyed by the frame's
pixels), so the rest of the chain is measured without the detector's cost; ``--detector recorded``
replays faces recorded earlier (``benchmarks/device_run.py``, for the GPU machine, which has no dlib).
The clips are read from ``$FSVIDEO_SHARED`` (default ``../shared``); ``720p`` and ``1080p-709`` (the
1080p clip's planes tagged BT.709, like most HD video: its colour conversion is not the untagged
clip's) are made from the 1080p clip into a temporary folder.

Targets (issue 11 point 6, 2-core CPU): every stage outside the networks >= 60 frames/s alone at
1080p, H.264 >= 40; the chain >= 25 frames/s at 1080p and >= 60 at 480p.  The machine's load
average is printed: on a shared machine the numbers move with it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from fsvideo.pipeline.memory import use_huge_pages  # noqa: E402

use_huge_pages()  # before torch, as the CLI does (THP_MEM_ALLOC_ENABLE=0 to measure without)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from recorded_faces import RecordedDetector, record  # noqa: E402

MEDIA = Path(os.environ.get("FSVIDEO_SHARED", REPO.parent / "shared")) / "media" / "videos" / "other"
CLIPS = {"480p": MEDIA / "liveportrait-d18.mp4", "720p": None, "1080p": MEDIA / "lt-FP006542HD02.mp4",
         "1080p-709": None}
STAND_IN = ("encode", "edit", "generate")
WARM_UP_FRAMES = 8


class PassThroughExecutor:
    """A :class:`~fsvideo.models.execution.ModelExecutor` stand-in whose "generated" face is the aligned crop.

    ``encode`` files the crops away and returns their ticket numbers as ``w`` (int64 [N, 1]; ``F``
    is [N, 1] zeros), ``map_codes`` (the Eq. 1 edit) returns the codes unchanged and ``generate``
    hands the filed crops back (uint8 [N, S, S, 3]).  Tickets instead of the crops themselves keep
    the stand-in's own cost (torch copies of 3 MB crops) out of the measurement.  ``device`` is
    what the pipeline reads to choose where the warps run.
    """

    def __init__(self, crop_size: int, device: str = "cpu", batch_size: int = 4, device_s: float = 0.0):
        self.crop_size = int(crop_size)
        self.device_s = float(device_s)
        self.device = torch.device(device)
        self.dtype = torch.float32
        self.batch_size = batch_size
        self.model = None
        self.noise = None
        self._filed: dict[int, np.ndarray] = {}
        self._next = 0

    def empty_codes(self):
        return torch.zeros(0, 1, dtype=torch.int64), torch.zeros(0, 1)

    def encode(self, crops: np.ndarray):
        ids = range(self._next, self._next + len(crops))
        self._next += len(crops)
        for i, c in zip(ids, crops):
            self._filed[i] = c
        return torch.tensor(list(ids), dtype=torch.int64)[:, None], torch.zeros(len(crops), 1)

    def map_codes(self, fn, w, f):
        return w, f

    def generate(self, w, f) -> np.ndarray:
        S = self.crop_size
        crops = [self._filed.pop(int(i)) for i in w[:, 0]]
        if self.device_s:
            time.sleep(self.device_s * len(crops))       # the device's time, the CPU left free
        return np.stack(crops) if crops else np.zeros((0, S, S, 3), np.uint8)


def named_clip(label: str, tmp: Path, frames: int) -> Path:
    """The clip of ``label`` (a key of :data:`CLIPS`); ``720p`` and ``1080p-709`` are made from the 1080p
    clip into ``tmp``: its first ``frames`` frames resized to 1280x720, or tagged BT.709 (as most HD
    video is: the reader converts it with another matrix than the untagged clip's BT.601)."""
    from fsvideo.video.synth import BT709, reencode
    if CLIPS[label] is not None:
        return CLIPS[label]
    dst = tmp / f"lt-{label}.mp4"
    if label == "720p":
        reencode(CLIPS["1080p"], dst, frames, width=1280, height=720)
    else:
        reencode(CLIPS["1080p"], dst, frames, colour=BT709)
    return dst


def record_detections(clip: Path, frames: int, info) -> RecordedDetector:
    """dlib's faces on the first ``frames`` frames of ``clip``, to replay."""
    from fsvideo.faces.registry import DEFAULT_DETECT_SIDE, make_detector
    from fsvideo.video import VideoReader
    det = make_detector("dlib", max_side=DEFAULT_DETECT_SIDE)
    return record(det, (f.image for f in VideoReader(clip, end=frames / float(info.fps), info=info)))


def run_once(clip: Path, info, frames: int, detector, size: int, device: str, threads: bool, workers: int,
             out_dir: Path, run_options: dict | None = None, device_s: float = 0.0) -> dict:
    """One run of pipelines/edit.yaml with the stand-in: per-stage busy time, wall time, CPU time."""
    from fsvideo.pipeline.budget import core_budget
    from fsvideo.pipeline.chain import build_chain
    from fsvideo.pipeline.components import Components
    from fsvideo.pipeline.runner import run_chain
    from fsvideo.video import VideoReader, VideoWriter
    end = frames / float(info.fps)
    reader = VideoReader(clip, end=end, info=info)
    ex = PassThroughExecutor(size, device, device_s=device_s)
    dst = out_dir / f"{clip.stem}.{'threads' if threads else 'seq'}.mp4"
    budget = core_budget(device_type="cuda", threads=threads, workers=workers)
    comps = Components(reader=reader, executor=ex, detector=detector, fps=float(info.fps or 25), resolution=size,
                       source=clip.name)
    with VideoWriter(dst, info, codec="libx264", audio_from=info.path if info.has_audio else None, end=end) as w, \
            budget.applied():
        stages = build_chain("edit", comps.with_(writer=w), run_options)
        c0, t0 = time.process_time(), time.perf_counter()
        st = run_chain(stages, threads=threads, workers=budget.workers, total=len(reader))
        w.close()                                    # the encoder's tail counts
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return dict(frames=st.packets, wall_s=round(wall, 3), fps=round(st.packets / wall, 2),
                cpu_ms_per_frame=round(1000 * cpu / max(1, st.packets), 1),
                faces=st.counts["faces_edited"], budget=budget.describe(),
                stages={s.name: dict(packets=s.packets, busy_s=round(s.busy_s, 4),
                                     fps=round(s.packets / s.busy_s, 1) if s.busy_s > 0 else None)
                        for s in st.stages})


def encoder_alone(clip: Path, info, frames: int, out_dir: Path) -> dict:
    """The H.264 writer alone on decoded frames held in memory: wall frames/s (x264's frame threads
    included, unlike ``encode_video``'s busy time in the chain) and CPU ms per frame."""
    from fsvideo.video import VideoReader, VideoWriter
    end = frames / float(info.fps)
    decoded = list(VideoReader(clip, end=end, info=info))
    c0, t0 = time.process_time(), time.perf_counter()
    with VideoWriter(out_dir / f"{clip.stem}.enc.mp4", info, codec="libx264", end=end) as w:
        for f in decoded:
            w.write(f.image, pts=f.pts, duration=f.duration)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return dict(frames=len(decoded), fps=round(len(decoded) / wall, 1),
                cpu_ms_per_frame=round(1000 * cpu / max(1, len(decoded)), 1), encoder=w.encoder)


def bench_clip(label: str, clip: Path, a, tmp: Path) -> dict:
    from fsvideo.faces.registry import DEFAULT_DETECT_SIDE, make_detector
    from fsvideo.video import probe
    info = probe(clip)
    frames = min(a.frames, info.n_frames or a.frames)
    if a.detector == "replay":
        det = record_detections(clip, frames, info)
    else:
        det = make_detector(a.detector, max_side=DEFAULT_DETECT_SIDE)
    opts = {"detect": {k: v for k, v in (("detect_every", a.detect_every), ("track", a.track)) if v is not None}}
    seq = run_once(clip, info, frames, det, a.size, a.device, False, 1, tmp, opts, a.device_ms / 1000)
    par = run_once(clip, info, frames, det, a.size, a.device, True, a.workers, tmp, opts, a.device_ms / 1000)
    return dict(clip=label, file=clip.name, width=info.width, height=info.height, frames=frames,
                detector=a.detector, size=a.size, device_ms=a.device_ms, sequential=seq, chain=par,
                encoder_alone=encoder_alone(clip, info, frames, tmp))


def print_table(results: list[dict], load: tuple[float, float, float]) -> None:
    names = list(results[0]["sequential"]["stages"])
    head = "".join(f"{r['clip']:>10}" for r in results)
    print(f"\nframes/s of each stage alone (sequential run; {results[0]['detector']} detector, "
          f"crops {results[0]['size']} px)")
    print(f"{'stage':<28}{head}")
    for n in names:
        tag = " (stand-in)" if n in STAND_IN else ""
        row = "".join(f"{(r['sequential']['stages'][n]['fps'] or float('inf')):>10.1f}" for r in results)
        print(f"{n + tag:<28}{row}")
    print(f"{'-' * 28}{'-' * 10 * len(results)}")
    rows = [("H.264 writer alone, wall", lambda r: r["encoder_alone"]["fps"]),
            ("sequential frames/s", lambda r: r["sequential"]["fps"]),
            ("chain frames/s (threads)", lambda r: r["chain"]["fps"]),
            ("chain / sequential", lambda r: r["chain"]["fps"] / r["sequential"]["fps"]),
            ("CPU ms/frame, sequential", lambda r: r["sequential"]["cpu_ms_per_frame"]),
            ("CPU ms/frame, chain", lambda r: r["chain"]["cpu_ms_per_frame"]),
            ("CPU ms/frame, H.264 alone", lambda r: r["encoder_alone"]["cpu_ms_per_frame"])]
    for label, fn in rows:
        print(f"{label:<28}" + "".join(f"{fn(r):>10.1f}" for r in results))
    print(f"\nframes: {', '.join(str(r['frames']) for r in results)}; chain budget: {results[0]['chain']['budget']}; "
          f"device time per face (stand-in): {results[0]['device_ms']:g} ms")
    print(f"load average (1, 5, 15 min) at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"on {os.cpu_count()} cores (a shared machine: numbers move with the load)")
    print("targets: stages >= 60 frames/s at 1080p (H.264 >= 40); chain >= 25 frames/s at 1080p, >= 60 at 480p")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", nargs="+", default=list(CLIPS),
                    help="480p, 720p, 1080p, 1080p-709 (the 1080p clip tagged BT.709) or video paths")
    ap.add_argument("--frames", type=int, default=48, help="frames per clip (from the start)")
    ap.add_argument("--detector", default="dlib", help="a registered detector, or `replay` (dlib, recorded first)")
    ap.add_argument("--detect-every", default=None,
                    help="the detect stage's keyframe interval (seconds, or e.g. 12f), where the chain has it")
    ap.add_argument("--track", default=None, choices=["roi", "flow"],
                    help="how the detect stage follows faces between full detections (default: the product's)")
    ap.add_argument("--size", type=int, default=1024, help="aligned crop side (1024: the released generator)")
    ap.add_argument("--device", default="cpu", help="what the stand-in reports as the networks' device")
    ap.add_argument("--device-ms", type=float, default=0.0,
                    help="ms per face the stand-in waits without using the CPU, like networks on a GPU")
    ap.add_argument("--workers", type=int, default=None, help="per-frame stage workers (default: cores - 1)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    a = ap.parse_args(argv)
    if a.frames < 1:
        ap.error("--frames must be at least 1")
    if a.device_ms < 0:
        ap.error("--device-ms must be >= 0")
    with tempfile.TemporaryDirectory(prefix="fsvideo-frontend-") as td:
        tmp = Path(td)
        clips = [(named_clip(c, tmp, a.frames), c) if c in CLIPS else (Path(c), Path(c).stem) for c in a.clips]
        # Warm-up, not counted: the first run in a process also pays for imports (torch among them), the
        # detector's first calls and the allocator's first pages (about 15 ms of CPU a frame over 120 frames).
        bench_clip("warm-up", clips[0][0], argparse.Namespace(**{**vars(a), "frames": WARM_UP_FRAMES}), tmp)
        results = [bench_clip(label, clip, a, tmp) for clip, label in clips]
    load = os.getloadavg()
    if a.json:
        print(json.dumps(dict(results=results, load_average=load, cores=os.cpu_count()), indent=1))
    else:
        print_table(results, load)


if __name__ == "__main__":
    main()
