"""Helpers shared by the trainer tests: a tiny config, small face images, a 2-process DDP worker."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
from PIL import Image

from fsvideo.train.config import TrainConfig, train_config_from_dict

TINY = {
    "recipe": "paper", "seed": 0, "device": "cpu",
    "model": {"generator": None,
              "random_generator": {"size": 32, "channel_max": 16, "style_dim": 32, "n_mlp": 2, "seed": 0},
              "encoder_widths": [4, 8, 8, 16], "encoder_layers": [1, 1, 1, 1], "encoder_stem": 4,
              "encoder_init": None},
    "data": {"real_per_gpu": 1, "synthetic_per_gpu": 1, "holdout": 1, "cache_images": True},
    "loss": {"faces": False, "lpips_net": None},
    "optim": {"name": "adam", "lr": 1e-3},
    "schedule": {"epochs": 2, "iters_per_epoch": 3, "lr_decay_epochs": [1]},
    "log": {"every": 1, "checkpoint_every": 2, "sample_every": 3, "samples": 2, "tensorboard": False},
}


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def tiny_config(real_dir: str | Path | None, **over) -> TrainConfig:
    """The tiny training config (32 px random generator, 4-8-8-16 encoder), with nested overrides."""
    d = merge(TINY, {"data": {"real_dir": str(real_dir) if real_dir else None}})
    return train_config_from_dict(merge(d, over), "tiny-test")


def small_faces(media_dir: Path, out: Path, n: int = 4, size: int = 64) -> Path:
    """``n`` aligned faces of ../shared/media resized to ``size`` px in ``out`` (faster to load in tests)."""
    out.mkdir(parents=True, exist_ok=True)
    files = sorted((media_dir / "images" / "aligned").glob("*.jpg"))[:n]
    for f in files:
        with Image.open(f) as im:
            im.convert("RGB").resize((size, size), Image.BILINEAR).save(out / f"{f.stem}.png")
    return out


def ddp_worker(rank: int, world: int, port: int, real_dir: str, out_dir: str) -> None:
    """Run 3 steps of the tiny config as one of ``world`` gloo processes; save this rank's encoder."""
    import torch
    import torch.distributed as dist

    from fsvideo.train.trainer import Trainer
    torch.set_num_threads(1)
    os.environ["LOCAL_RANK"] = str(rank)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        cfg = tiny_config(real_dir, schedule={"epochs": 1, "iters_per_epoch": 3},
                          log={"checkpoint_every": 3, "sample_every": 3})
        seen = []
        trainer = Trainer(cfg, Path(out_dir) / "run")
        real_ds = trainer.real_ds
        orig = real_ds.__class__.__getitem__

        def spy(self, i):
            if self is real_ds:                  # the training set (not the evaluation images)
                seen.append(int(i))
            return orig(self, i)

        real_ds.__class__.__getitem__ = spy
        init = {k: v.clone() for k, v in trainer.E.state_dict().items()}
        trainer.fit()
        real_ds.__class__.__getitem__ = orig
        torch.save({"final": trainer.E.state_dict(), "init": init, "seen": seen, "world": trainer.dist.world},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def load_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


_GENERATORS: dict = {}


def nets_for(cfg: TrainConfig):
    """The networks of ``cfg`` with the (frozen) random generator built once per process: a fresh encoder each time."""
    from fsvideo.train.nets import TrainNets, build_encoder, build_generator, build_loss_nets
    key = repr(cfg.model.random_generator) + repr(cfg.model.generator)
    if key not in _GENERATORS:
        _GENERATORS[key] = build_generator(cfg)
    G, latent_avg = _GENERATORS[key]
    return TrainNets(G, latent_avg, build_encoder(cfg, G), **build_loss_nets(cfg))
