"""Many videos on 1 vs N processes (``torchrun``), and one video split in time, end to end.

Usage::

    python benchmarks/scale.py                          # 4 shared clips x 1 s, 64 px random model, 1 vs 2
    python benchmarks/scale.py --nproc 1 2 4 --seconds 2 --size 256 --device cuda

Runs the real command lines in fresh processes (start-up, model loading and the merged table
included), each into a fresh output folder:

* ``fsvideo edit CLIPS/ --out-dir ...`` (1 process) and ``torchrun --nproc-per-node N -m fsvideo
  edit CLIPS/ --out-dir ...`` (inputs sharded round robin);
* ``... --split-time`` on the last clip (``--split-seconds`` of it; spans + lossless join);

and prints wall seconds, frames and frames/s of each, with the machine's load average (the CPU
figures depend on what else runs).  Weights are random (``fsvideo.models.random_init``) in the
official checkpoint format, so nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media" / "videos" / "other"
CLIPS = ["pyfeat-single_face.mp4", "cremad-1001_DFA_ANG_XX.flv", "liveportrait-d18.mp4",
         "facerec-short_hamilton_clip.mp4"]


def _weights(d: Path, size: int) -> list[str]:
    import numpy as np

    from fsvideo.models.random_init import random_model, save_official_checkpoints
    model = random_model(size, seed=0)
    enc, gen = save_official_checkpoints(model, d)
    g = model.generator
    v = np.random.default_rng(1).standard_normal((1, g.n_latent * g.style_dim)).astype(np.float32)
    np.save(d / "dir.npy", v / np.linalg.norm(v))
    return ["--generator", str(gen), "--encoder", str(enc), "--direction", str(d / "dir.npy"), "--strength", "2"]


def _run(cmd: list[str], env: dict) -> tuple[float, dict]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return wall, json.loads(p.stdout[p.stdout.index("{"):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seconds", type=float, default=1.0, help="seconds of each clip edited")
    ap.add_argument("--split-seconds", type=float, default=4.0, help="seconds of the clip split in time")
    ap.add_argument("--size", type=int, default=64, help="generator resolution of the random model")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clips", nargs="+", default=CLIPS)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "w").mkdir()
        (t / "in").mkdir()
        for c in args.clips:
            shutil.copy(MEDIA / c, t / "in" / c)
        common = [*_weights(t / "w", args.size), "--detector", "dlib", "--device", args.device, "--json",
                  "--split-context", "1.0"]
        base = [sys.executable, "-m", "fsvideo", "edit"]
        rows = []
        for n in args.nproc:
            # the same CPU threads in all: one process gets them all, N processes share them
            env = dict(os.environ, FSVIDEO_HOME=str(t / "home"), PYTHONPATH=str(ROOT),
                       OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2) // n)))
            launch = base if n == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                          "--nproc-per-node", str(n), "-m", "fsvideo", "edit"]
            wall, res = _run([*launch, str(t / "in"), "--out-dir", str(t / f"many{n}"), "--end", str(args.seconds),
                              *common], env)
            rows.append({"job": f"{len(args.clips)} clips", "processes": n, "wall_s": round(wall, 1),
                         "frames": res["frames"], "fps": round(res["frames"] / wall, 2)})
            longest = t / "in" / args.clips[-1]
            wall, res = _run([*launch, str(longest), "--out-dir", str(t / f"split{n}"), "--split-time",
                              "--end", str(args.split_seconds), *common], env)
            rows.append({"job": "1 clip split in time", "processes": n, "wall_s": round(wall, 1),
                         "frames": res["frames"], "fps": round(res["frames"] / wall, 2)})
    load = os.getloadavg()
    print(json.dumps({"cpus": os.cpu_count(), "load_avg": [round(x, 1) for x in load], "size": args.size,
                      "seconds_per_clip": args.seconds, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
