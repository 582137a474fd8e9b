"""Peak RAM of loading the released 1024 px architecture (random weights in the official format).

Each way of loading runs in a fresh process (peak RSS: ``VmHWM`` of ``/proc/self/status``, Linux),
on the same files:

* ``copy``: what fsvideo did before: ``torch.load`` reads every tensor into memory, then
  ``load_state_dict`` copies it into the freshly built network (two copies at the peak);
* ``mmap``: fsvideo's loaders now: the file is memory-mapped (``mmap=True``) and the network takes
  the mapped tensors (``load_state_dict(assign=True)``), so nothing is held twice;
* ``import``: only ``import torch`` and fsvideo (the floor every process pays).

Usage::

    python benchmarks/memory.py                 # writes the checkpoints to a temp folder (~0.6 GB)
    python benchmarks/memory.py --dir ckpts     # keep/reuse them
    python benchmarks/memory.py --json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

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


def _peak_mib(mode: str, enc: Path, gen: Path) -> float:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(enc), str(gen)], check=True,
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    return float(out.stdout.strip().splitlines()[-1])


def _checkpoints(folder: Path) -> tuple[Path, Path]:
    enc, gen = folder / "encoder.pt", folder / "generator.pt"
    if not (enc.is_file() and gen.is_file()):
        from fsvideo.models.random_init import random_model, save_official_checkpoints
        model = random_model(size=1024, channel_max=512, style_dim=512, n_mlp=8, enc_widths=(64, 128, 256, 512),
                             enc_layers=(3, 4, 14, 3), seed=0)
        enc, gen = save_official_checkpoints(model, folder)
        del model
    return enc, gen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, help="folder for the checkpoints (default: a temp folder)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        enc, gen = _checkpoints(folder)
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
