"""Streaming pipeline vs a sequential frame-by-frame run, per-stage speed, and peak memory.

Usage::

    python benchmarks/pipeline.py                        # 256 px generator (released architecture,
                                                         # random weights), liveportrait-d18.mp4
    python benchmarks/pipeline.py --clip talk.mp4 --seconds 1 --size 256 --batch-size 4   # 0: auto
    python benchmarks/pipeline.py --faces .device/faces.npz --detector recorded --bound  # replayed faces

Prints:

* frames/s of each stage alone (its busy time in the sequential run, where nothing overlaps);
* frames/s of the streaming pipeline (threads + bounded queues, batched encoder/generator) and of
  a sequential run (batch 1, one frame through every stage before the next: how the official
  scripts work), measured in the same process, and their ratio;
* ``--network-calls N ...``: the streaming run again with N network calls in flight on a CPU (the
  core budget's default: one per core), its frames/s and peak memory (``fsvideo edit --network-calls``);
* the upper bound of any overlap on this machine (``--bound``): the sequential run again in a fresh
  process pinned to one core gives the core-seconds a frame needs, C; no schedule of the same work on
  N cores can beat N / C frames/s, so ``N x (one-core frames/s) / (sequential frames/s)`` is the
  largest speed-up streaming could show here.  When the networks already keep every core busy in a
  sequential run, that bound is small;
* peak RSS of a short clip and of a 4x longer one, each in a fresh process.

The fresh processes (``--bound``, memory) run this checkout's fsvideo and replay the same recorded
faces as the parent (``--faces``, or ``benchmarks/device_run.py``'s registration:
:func:`recorded_faces.register_inherited`), so ``--detector recorded`` works in every mode.

Targets (2-core CPU, 256 px generator): streaming >= 1.3x sequential (where ``--bound`` allows it);
long-clip peak memory within 10 % of the short clip's.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))   # its neighbours, however it was started
from peak_memory import peak_rss_mib  # noqa: E402
from fsvideo.pipeline.memory import use_huge_pages  # noqa: E402

use_huge_pages()  # before torch, as the CLI does (THP_MEM_ALLOC_ENABLE=0 to measure without)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO.parent / "shared" / "media" / "videos" / "other" / "liveportrait-d18.mp4"


def build_model(size: int, out: Path) -> tuple[str, str]:
    """Random weights of the released architecture at ``size`` px, saved in the official formats."""
    from fsvideo.models.random_init import random_model, save_official_checkpoints
    m = random_model(size, channel_max=512, style_dim=512, n_mlp=8, enc_widths=(64, 128, 256, 512),
                     enc_layers=(3, 4, 14, 3), seed=0)
    enc, gen = save_official_checkpoints(m, out)
    import numpy as np
    d = np.random.default_rng(0).standard_normal((1, m.generator.n_latent * 512)).astype(np.float32)
    np.save(out / "dir.npy", d / np.linalg.norm(d))
    return str(enc), str(gen)


def one_run(clip: str, seconds: float, enc: str, gen: str, direction: str, threads: bool, batch: int,
            out_dir: str, compile: bool = False, detector: str = "dlib", precision: str = "auto",
            network_calls: int | None = None) -> dict:
    """Edit ``seconds`` of ``clip``; returns fps, per-stage stats and peak RSS of this process."""
    import fsvideo.pipeline.edit as E
    from fsvideo import EditRequest, RunOptions
    stats_box = {}
    orig = E.run_job

    def spy(*a, **k):                 # the run's statistics (per stage), which the summary does not carry
        stats_box["stats"] = orig(*a, **k)
        return stats_box["stats"]
    E.run_job = spy
    opts = RunOptions(generator=gen, encoder=enc, detector=detector, end=seconds, threads=threads,
                      batch_size=batch if threads else 1, mask="hull", overwrite=True, compile=compile,
                      precision=precision, network_calls=network_calls)
    t = time.perf_counter()
    s = E.edit_video(clip, Path(out_dir) / f"out_{threads}_{seconds}.mp4", edits=[EditRequest(direction, 1.0)],
                     options=opts)
    dt = time.perf_counter() - t
    st = stats_box["stats"]
    stages = {x.name: dict(packets=x.packets, busy=round(x.busy_s, 3)) for x in st.stages}
    return dict(frames=s.frames, seconds=round(dt, 3), device=s.device, video_encoder=s.encoder, pipeline_seconds=round(st.seconds, 3),
                fps=round(s.frames / st.seconds, 3), stages=stages,
                peak_rss_mib=round(peak_rss_mib(), 1))


def child_run(args: dict) -> dict:
    """:func:`one_run` in a fresh process (``one_core``: pinned to one core), with this checkout's fsvideo
    and the parent's recorded faces (inherited through the environment)."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(args)], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=path))
    if p.returncode:
        sys.exit(f"benchmark child process failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


class GpuSampler:
    """``nvidia-smi`` sampling utilisation and memory every ``ms`` ms into ``path`` (CSV) while in the ``with``."""

    def __init__(self, path: str | None, ms: int = 200):
        self.path, self.ms, self.proc = path, ms, None

    def __enter__(self):
        import shutil
        if self.path and shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,utilization.gpu,memory.used",
                                          "--format=csv,noheader,nounits", "-lms", str(self.ms), "-f", self.path])
        return self

    def __exit__(self, *exc):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()

    def summary(self) -> str:
        """Mean and peak utilisation (%) and peak memory (MiB) of the samples, or why there are none."""
        if not self.proc:
            return "not sampled (no --gpu-log, or no nvidia-smi)"
        rows = [r.split(",") for r in Path(self.path).read_text().splitlines() if r.count(",") == 2]
        util = [float(r[1]) for r in rows if r[1].strip().replace(".", "").isdigit()]
        mem = [float(r[2]) for r in rows if r[2].strip().replace(".", "").isdigit()]
        if not util:
            return f"no samples in {self.path}"
        return (f"mean {sum(util) / len(util):.0f}%, max {max(util):.0f}% over {len(util)} samples "
                f"({self.ms} ms); memory up to {max(mem):.0f} MiB")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", default=str(DEFAULT_CLIP))
    ap.add_argument("--seconds", type=float, default=1.0, help="length of the short run (the long one is 4x)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=0, help="streaming run's batch (0: the product default)")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile the networks (fsvideo edit --compile)")
    ap.add_argument("--bound", action="store_true", help="also measure the bound of any overlap (a one-core run)")
    ap.add_argument("--detector", default="dlib",
                    help="a registered detector (device runs: `recorded`, see benchmarks/device_run.py)")
    ap.add_argument("--faces", type=Path, help="register faces recorded by benchmarks/device_run.py prepare "
                    "(.npz) as the `recorded` detector")
    ap.add_argument("--precision", default="auto", help="auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16")
    ap.add_argument("--network-calls", type=int, nargs="+", default=[],
                    help="also stream with these numbers of network calls in flight (fsvideo edit --network-calls; "
                         "the default is the core budget's), each with its frames/s and a fresh process's peak RSS")
    ap.add_argument("--gpu-log", help="sample nvidia-smi (utilisation, memory) into this CSV during the streaming run")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    import recorded_faces
    if a.faces:
        recorded_faces.register(a.faces)
    if a.child:                                   # a fresh process for one memory or one-core measurement
        recorded_faces.register_inherited()       # the faces the parent replays, if any
        args = json.loads(a.child)
        if args.pop("one_core", False):
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})   # the core budget reads the affinity
            one_run(**dict(args, seconds=0.2))                          # warm-up, as in the parent
        print(json.dumps(one_run(**args)))
        return
    with tempfile.TemporaryDirectory() as d:
        dp = Path(d)
        enc, gen = build_model(a.size, dp)
        direction = str(dp / "dir.npy")
        common = dict(clip=a.clip, enc=enc, gen=gen, direction=direction, batch=a.batch_size, out_dir=d,
                      compile=a.compile, detector=a.detector, precision=a.precision)
        one_run(**common, seconds=0.2, threads=True)                       # warm-up (imports, caches)
        seq = one_run(**common, seconds=a.seconds, threads=False)
        with GpuSampler(a.gpu_log) as gpu:
            par = one_run(**common, seconds=a.seconds, threads=True)
        from fsvideo.pipeline.budget import core_budget
        kind = seq["device"].split(":")[0] or "cpu"
        print(f"clip {Path(a.clip).name}, {seq['frames']} frames, generator {a.size} px, "
              f"{'torch.compile, ' if a.compile else ''}device {seq['device']}, precision {a.precision}, "
              f"detector {a.detector}, video encoder {par['video_encoder']}, "
              f"OMP_NUM_THREADS {os.environ.get('OMP_NUM_THREADS', 'unset')}")
        print(f"core budget, sequential: {core_budget(device_type=kind, threads=False).describe()}")
        one_call = a.compile or a.size > 256           # as pipeline.jobs.run_job decides on a CPU
        print(f"core budget, streaming:  "
              f"{core_budget(device_type=kind, threads=True, network_calls=1 if one_call else None).describe()}")
        print(f"\n{'stage (alone, sequential run)':<32}{'frames/s':>10}")
        for name, v in seq["stages"].items():
            fps = v["packets"] / v["busy"] if v["busy"] > 0 else float("inf")
            print(f"{name:<32}{fps:>10.2f}")
        print(f"\n{'run':<32}{'frames/s':>10}{'seconds':>10}")
        print(f"{'sequential (batch 1, no overlap)':<32}{seq['fps']:>10.3f}{seq['pipeline_seconds']:>10.1f}")
        print(f"{'streaming (batch %s, threads)' % (a.batch_size or 'auto'):<32}{par['fps']:>10.3f}{par['pipeline_seconds']:>10.1f}")
        print(f"{'speed-up':<32}{par['fps'] / seq['fps']:>9.2f}x   (target >= 1.3x)")
        busiest = max(par["stages"], key=lambda n: par["stages"][n]["busy"])
        print(f"busiest stage (streaming): {busiest}, busy {par['stages'][busiest]['busy']:.2f} s "
              f"of {par['pipeline_seconds']:.2f} s; GPU utilisation (streaming): {gpu.summary()}")
        for n in a.network_calls:
            other = one_run(**common, seconds=a.seconds, threads=True, network_calls=n)
            mem = child_run(dict(common, seconds=a.seconds, threads=True, network_calls=n))
            print(f"{'streaming, %d network call%s' % (n, 's' * (n > 1)):<32}{other['fps']:>10.3f}"
                  f"{other['pipeline_seconds']:>10.1f}  ({other['fps'] / par['fps']:.2f}x of the default; "
                  f"peak RSS {mem['peak_rss_mib']:.0f} MiB in a fresh process)")
        if a.bound:
            one = child_run(dict(common, seconds=a.seconds, threads=False, one_core=True))
            cores = len(os.sched_getaffinity(0))
            best = cores * one["fps"]
            print(f"{'sequential on one core':<32}{one['fps']:>10.3f}{one['pipeline_seconds']:>10.1f}")
            print(f"{'bound of any overlap':<32}{best:>10.3f}{'':>10}  ({cores} x one core: "
                  f"{best / seq['fps']:.2f}x of sequential; streaming reaches {par['fps'] / best:.0%} of it)")
        if a.skip_memory:
            return
        rss = {}
        for label, secs in (("short", a.seconds), ("long (4x)", 4 * a.seconds)):
            r = rss[label] = child_run(dict(common, seconds=secs, threads=True))
            print(f"peak RSS, {label:<10} {r['frames']:>5} frames: {r['peak_rss_mib']:>8.1f} MiB")
        ratio = rss["long (4x)"]["peak_rss_mib"] / rss["short"]["peak_rss_mib"]
        print(f"long / short peak memory: {ratio:.3f}   (target <= 1.10)")


if __name__ == "__main__":
    main()
