"""Peak RAM of the released 1024 px architecture (random weights in the official format): loading
it, and ``fsvideo edit`` end to end on the CPU.

Each measurement runs in a fresh process (peak RSS: ``VmHWM`` of ``/proc/self/status``, Linux), on
the same files.  Loading:

* ``copy``: what fsvideo did before: ``torch.load`` reads every tensor into memory, then
  ``load_state_dict`` copies it into the freshly built network (two copies at the peak);
* ``mmap``: fsvideo's loaders now: the file is memory-mapped (``mmap=True``) and the network takes
  the mapped tensors (``load_state_dict(assign=True)``), so nothing is held twice;
* ``import``: only ``import torch`` and fsvideo (the floor every process pays).

``--edit`` runs the real CLI, ``fsvideo edit CLIP --end S --device cpu --detector dlib --mask hull``
with these weights and a random direction, for a short and a 4x longer span of the clip (default
0.4 s and 1.6 s of ``liveportrait-d18.mp4``, 480x480, 30 frames/s), one at a time, and prints the
peak RSS of each and their ratio.  Targets (issue 11, point 8): at most 2500 MiB, and the long run
within 5 % of the short one (flat in video length).  A 1024 px run takes minutes on a CPU.
``--repo`` runs another checkout's fsvideo (e.g. the main branch, for a before/after).

Usage::

    python benchmarks/memory.py                 # writes the checkpoints to a temp folder (~0.6 GB)
    python benchmarks/memory.py --dir ckpts     # keep/reuse them
    python benchmarks/memory.py --json
    python benchmarks/memory.py --dir ckpts --edit              # fsvideo edit, 0.4 s and 1.6 s
    python benchmarks/memory.py --dir ckpts --edit --seconds 0.2 --repo ../main
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO.parent / "shared" / "media" / "videos" / "other" / "liveportrait-d18.mp4"

_CHILD = r"""
import sys, gc
import torch
from collections import OrderedDict
mode, enc, gen = sys.argv[1:4]
from fsvideo.models.loading import (load_encoder_checkpoint, load_generator_checkpoint, generator_state_dict,
                                    generator_config, encoder_config)
from fsvideo.models.stylegan2 import Generator
from fsvideo.models.encoder import FeatureStyleEncoder
if mode == "mmap":
    G, avg = load_generator_checkpoint(gen)
    E = load_encoder_checkpoint(enc, n_styles=G.n_latent)
elif mode == "copy":
    sd, avg = generator_state_dict(torch.load(gen, map_location="cpu", weights_only=True))
    G = Generator(**generator_config(sd)); G.load_state_dict(sd)
    esd = torch.load(enc, map_location="cpu", weights_only=True)
    E = FeatureStyleEncoder(**encoder_config(esd)); E.load_state_dict(esd)
    del sd, esd
if mode != "import":
    with torch.no_grad():          # touch every weight, as a first forward pass would
        total = sum(float(p.float().sum()) for p in list(G.parameters()) + list(E.parameters()))
gc.collect()
# VmHWM: this process's own peak (ru_maxrss would include the parent's peak before exec)
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024)
"""


# `fsvideo edit` through the real CLI entry point, in this process; then its own peak RSS.
_EDIT_CHILD = r"""
import json, sys, time
from fsvideo.cli import main
t = time.perf_counter()
try:
    main(sys.argv[1:])
    rc = 0
except SystemExit as e:
    rc = e.code or 0
status = {l.split(":")[0]: int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(("VmHWM", "VmRSS"))}
print(json.dumps(dict(rc=rc, seconds=round(time.perf_counter() - t, 1), peak_mib=round(status["VmHWM"] / 1024, 1))))
"""


def _peak_mib(mode: str, enc: Path, gen: Path) -> float:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(enc), str(gen)], check=True,
                         capture_output=True, text=True, cwd=REPO)
    return float(out.stdout.strip().splitlines()[-1])


def _checkpoints(folder: Path) -> tuple[Path, Path]:
    enc, gen = folder / "encoder.pt", folder / "generator.pt"
    if not (enc.is_file() and gen.is_file() and (folder / "dir.npy").is_file()):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from pipeline import build_model             # benchmarks/pipeline.py: also writes dir.npy
        build_model(1024, folder)
    return enc, gen


def edit_peak(clip: Path, seconds: float, folder: Path, out: Path, repo: Path = REPO) -> dict:
    """``fsvideo edit`` of the first ``seconds`` of ``clip`` in a fresh process: peak RSS MiB, seconds."""
    argv = ["edit", str(clip), "-o", str(out), "--overwrite", "--generator", str(folder / "generator.pt"),
            "--encoder", str(folder / "encoder.pt"), "--direction", str(folder / "dir.npy"), "--strength", "1",
            "--end", str(seconds), "--detector", "dlib", "--mask", "hull", "--device", "cpu", "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(repo))
    res = subprocess.run([sys.executable, "-c", _EDIT_CHILD, *argv], capture_output=True, text=True, cwd=repo,
                         env=env)
    lines = res.stdout.strip().splitlines()
    if res.returncode != 0 or not lines:
        raise SystemExit(f"fsvideo edit failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
    r = json.loads(lines[-1])
    if r["rc"] != 0:
        raise SystemExit(f"fsvideo edit exited with {r['rc']}: {res.stderr.strip()[-2000:]}")
    return r


def run_edit(args, folder: Path) -> None:
    res = {}
    for label, secs in (("short", args.seconds), ("long", 4 * args.seconds)):
        res[label] = dict(edit_peak(args.clip, secs, folder, folder / f"edit_{label}.mp4", args.repo), seconds_of_video=secs)
    res["long_over_short"] = round(res["long"]["peak_mib"] / res["short"]["peak_mib"], 3)
    if args.json:
        print(json.dumps(res))
        return
    print(f"fsvideo edit {args.clip.name}, released 1024 px architecture (random weights), CPU, dlib, hull masks"
          f"{'' if args.repo == REPO else f', fsvideo from {args.repo}'}")
    print(f"{'run':<8}{'video s':>9}{'wall s':>9}{'peak RSS MiB':>14}")
    for label in ("short", "long"):
        r = res[label]
        print(f"{label:<8}{r['seconds_of_video']:>9.1f}{r['seconds']:>9.1f}{r['peak_mib']:>14.0f}")
    peak = max(res["short"]["peak_mib"], res["long"]["peak_mib"])
    print(f"long / short: {res['long_over_short']:.3f}   (target <= 1.05);  peak {peak:.0f} MiB (target <= 2500 MiB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, help="folder for the checkpoints (default: a temp folder)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--edit", action="store_true", help="measure fsvideo edit end to end instead of loading")
    ap.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="--edit: the video")
    ap.add_argument("--seconds", type=float, default=0.4, help="--edit: the short span (the long one is 4x)")
    ap.add_argument("--repo", type=Path, default=REPO, help="--edit: the checkout whose fsvideo runs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        enc, gen = _checkpoints(folder)
        if args.edit:
            run_edit(args, folder)
            return
        size = (enc.stat().st_size + gen.stat().st_size) / 2**20
        res = {m: _peak_mib(m, enc, gen) for m in ("import", "copy", "mmap")}
    res["checkpoint_mib"] = size
    if args.json:
        print(json.dumps(res))
        return
    print(f"checkpoints: {size:.0f} MiB (generator + encoder, 1024 px released architecture, random weights)")
    print(f"{'load':<8}{'peak RSS MiB':>14}{'above import':>14}")
    for m in ("import", "copy", "mmap"):
        print(f"{m:<8}{res[m]:>14.0f}{res[m] - res['import']:>14.0f}")


if __name__ == "__main__":
    main()
