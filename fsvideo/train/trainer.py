"""The Feature-Style encoder trainer (paper §4, Fig. 3; Eqs. 2-8).

One step (``paper`` scheme; see :mod:`fsvideo.train.config` for the ``official`` one)::

    x  = [synthetic images (ground-truth noise n) ; real images (random noise n)]
    w, F = E(x) (+ latent_avg)
    x1 = G(w; n)            G^K(w) read from the same call
    x2 = G(w, F; n)
    L  = MSE(x1[syn], x[syn])                                   Eq. 2
       + 0.2  * (mLPIPS(x1, x) + mLPIPS(x2, x))                 Eq. 3
       + 0.01 * MSE(F, G^K(w).detach())                         Eq. 4        (Eq. 5)
       + 0.1  * (ID(x1, x) + ID(x2, x)) + 0.1 * (PARSE(x1, x) + PARSE(x2, x))   Eqs. 6-8 (faces)

Only the encoder is optimised; the generator and the loss networks are frozen (gradients flow
through them to the images).  Everything random is drawn from generators seeded by
``(seed, rank, step)`` (see :mod:`fsvideo.train.data`), so a resumed run repeats the uninterrupted
one exactly.  The library reports progress through a callback and logs; it never prints.

Example::

    cfg = load_train_config("configs/tiny.yaml")
    trainer = Trainer(cfg, "runs/tiny")
    summary = trainer.fit()                    # or Trainer.resume("runs/tiny").fit()
"""
from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from fsvideo.distributed import DistInfo, ProcessGroup, device_for
from fsvideo.errors import ConfigError, OutputError
from fsvideo.models.fse import FeatureStyleModel
from fsvideo.train import checkpoint as ckpt
from fsvideo.train.config import TrainConfig, dump_train_config, load_train_config
from fsvideo.train.data import (
    Batch,
    RealImages,
    encoder_input,
    list_images,
    make_batch,
    random_noise,
    real_batches,
    step_generator,
    synthetic_images,
)
from fsvideo.train.logs import JsonlLog, TensorBoard, save_grid
from fsvideo.train.losses import IdentityLoss, MultiScaleLPIPS, ParsingLoss, feature_reconstruction, mse_per_sample
from fsvideo.train.nets import TrainNets, build_nets
from fsvideo.train.optim import StepDecay, build_optimizer
from fsvideo.utils import pick_device

log = logging.getLogger(__name__)

RUN_FILES = ("config.yaml", "log.jsonl", "encoder.pt", "generator.pt")
RUN_DIRS = ("checkpoints", "samples", "tensorboard")


@dataclass
class Progress:
    """What the progress callback receives after every step."""

    step: int
    total: int
    epoch: int
    losses: dict[str, float]
    lr: float
    seconds: float
    eval: dict[str, float] = field(default_factory=dict)


ProgressFn = Callable[[Progress], None]


def feature_scale_at(step: int, ramp: int) -> float:
    """The blend of ``F``: ``min(1, step / ramp)`` (official: ramp 10000), 1 without a ramp."""
    return 1.0 if ramp <= 0 else min(1.0, step / ramp)


class Trainer:
    """Train a Feature-Style encoder for a frozen StyleGAN2.

    Args:
        cfg: the resolved training config.
        run_dir: the run folder (created; an existing non-empty folder needs ``overwrite`` unless
            ``resume`` is set).
        nets: ready-built networks (tests pass tiny ones); default: built from ``cfg``.
        progress: called with a :class:`Progress` after every step (the CLI draws its bar with it).
        resume: continue from the newest complete checkpoint in ``run_dir``.
        overwrite: start afresh in an existing run folder (its run files are removed).
        device: overrides ``cfg.device``.
    """

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, *, nets: TrainNets | None = None,
                 progress: ProgressFn | None = None, resume: bool = False, overwrite: bool = False,
                 device: str | torch.device | None = None):
        self.cfg = cfg.validate()
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.device = device_for(pick_device(str(device) if device is not None else cfg.device))
        self.group = ProcessGroup(device=self.device).join()     # NCCL on CUDA, gloo on CPU; lives with the process
        self.dist: DistInfo = self.group.info
        lc = cfg.loss
        self.k = cfg.model.feature_index

        if self.dist.is_main:
            self._prepare_run_dir(resume, overwrite)
        self.group.barrier()

        nets = nets if nets is not None else build_nets(cfg, self.device)
        self.G = nets.generator.to(self.device).eval().requires_grad_(False)
        self.latent_avg = nets.latent_avg.to(self.device)
        self.E = nets.encoder.to(self.device).train().requires_grad_(True)
        self.model = FeatureStyleModel(self.E, self.G, self.latent_avg, k=self.k)
        self.E_ddp = self.E
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.E_ddp = DDP(self.E, device_ids=ids, find_unused_parameters=not lc.use_feature)

        self.mlpips = MultiScaleLPIPS(nets.lpips, lc.lpips_scales).to(self.device) \
            if nets.lpips is not None and lc.lpips > 0 else None
        self.identity = IdentityLoss(nets.arcface, lc.identity_resize).to(self.device) \
            if nets.arcface is not None and lc.faces and lc.identity > 0 else None
        self.parsing = ParsingLoss(nets.parser, lc.parsing_size).to(self.device) \
            if nets.parser is not None and lc.faces and lc.parsing > 0 else None
        self.eval_lpips = MultiScaleLPIPS(nets.lpips, 1).to(self.device) if nets.lpips is not None else None
        log.info("losses on: %s", ", ".join(self.active_losses()))

        self.optimizer = build_optimizer(cfg.optim, self.E.parameters())
        self.schedule = StepDecay(self.optimizer, cfg.optim.lr, cfg.schedule)
        self.step = 0

        # data: real images (minus the held-out ones) and the fixed evaluation batch
        self.real_train, self.real_eval = [], []
        if cfg.data.real_per_gpu > 0:
            if not cfg.data.real_dir:
                raise ConfigError(f"data.real_dir is not set but data.real_per_gpu = {cfg.data.real_per_gpu}",
                                  hint="pass --set data.real_dir=FOLDER (aligned faces), or set data.real_per_gpu: 0")
            files = list_images(cfg.data.real_dir)
            h = min(cfg.data.holdout, len(files) - 1)
            self.real_train, self.real_eval = files[:len(files) - h], files[len(files) - h:]
        self.real_ds = RealImages(self.real_train, self.G.size, cache=cfg.data.cache_images) \
            if self.real_train else None
        self._eval_batch: tuple[Tensor, list[Tensor], int] | None = None

        self.jsonl = JsonlLog(self.run_dir / "log.jsonl")
        self.tb: TensorBoard | None = None
        if resume:
            self._load_checkpoint()
        if self.dist.is_main:
            self.jsonl.truncate_after(self.step)
            self.tb = TensorBoard(self.run_dir / "tensorboard", cfg.log.tensorboard)

    # --------------------------------------------------------------------------------------------
    @classmethod
    def resume(cls, run_dir: str | Path, **kwargs) -> "Trainer":
        """A trainer that continues the run in ``run_dir`` with its saved config."""
        cfg = load_train_config(Path(run_dir) / "config.yaml")
        return cls(cfg, run_dir, resume=True, **kwargs)

    def active_losses(self) -> list[str]:
        lc, out = self.cfg.loss, []
        if lc.mse > 0 and self.cfg.data.synthetic_per_gpu > 0:
            out.append("mse")
        if self.mlpips is not None:
            out.append("lpips")
        if lc.use_feature and lc.feature > 0:
            out.append("feature")
        if self.identity is not None:
            out.append("identity")
        if self.parsing is not None:
            out.append("parsing")
        return out

    def _prepare_run_dir(self, resume: bool, overwrite: bool) -> None:
        run = self.run_dir
        if resume:
            if not (run / "config.yaml").is_file():
                raise OutputError(f"{run} is not a training run (no config.yaml)",
                                  hint="pass the folder of a run to --resume")
            n = ckpt.clean_partials(run)
            if n:
                log.warning("removed %d leftover partial file(s) of an interrupted checkpoint write in %s", n, run)
            return
        if run.exists() and any(run.iterdir()):
            if not overwrite:
                raise OutputError(f"run folder {run} already exists and is not empty",
                                  hint="continue it with --resume, pass --overwrite to start it afresh, "
                                       "or choose another --out")
            for name in RUN_FILES:
                (run / name).unlink(missing_ok=True)
            for name in RUN_DIRS:
                shutil.rmtree(run / name, ignore_errors=True)
            ckpt.clean_partials(run)
        run.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write_text(dump_train_config(self.cfg), run / "config.yaml")

    def _save_generator(self) -> None:
        """Random generators are saved beside the encoder (pSp layout), so the run is usable by ``fsvideo edit``."""
        if self.cfg.model.random_generator is None or (self.run_dir / "generator.pt").exists():
            return
        sd = {"decoder." + k: v.detach().cpu() for k, v in self.G.state_dict().items()}
        ckpt.atomic_save({"state_dict": sd, "latent_avg": self.latent_avg.detach().cpu(),
                          "opts": {"output_size": self.G.size}}, self.run_dir / "generator.pt")

    # --------------------------------------------------------------------------------------------
    def training_state(self) -> dict:
        return {"step": self.step, "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "rng": ckpt.rng_state(), "world": self.dist.world, "recipe": self.cfg.recipe}

    def save_checkpoint(self) -> ckpt.Checkpoint | None:
        """Write the checkpoint of the current step (main process only)."""
        if not self.dist.is_main:
            return None
        c = ckpt.save_checkpoint(self.run_dir, self.step, self.E.state_dict(), self.training_state(),
                                 keep=self.cfg.log.keep_checkpoints)
        log.info("checkpoint %s", c.folder)
        return c

    def _load_checkpoint(self) -> None:
        c = ckpt.require_checkpoint(self.run_dir)
        state = ckpt.restore(c, self.E, self.optimizer)
        self.step = int(state["step"])
        if int(state.get("world", 1)) != self.dist.world:
            log.warning("resuming a run of %s process(es) with %d: the data order changes from here",
                        state.get("world"), self.dist.world)
        ckpt.set_rng_state(state["rng"])
        log.info("resumed %s at step %d", self.run_dir, self.step)

    # --------------------------------------------------------------------------------------------
    def _encode(self, x: Tensor, module=None) -> tuple[Tensor, Tensor]:
        w_off, f = (module or self.E_ddp)(encoder_input(x))
        return w_off + self.latent_avg.to(w_off.dtype), f

    def compute_losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """All loss terms of one batch (weighted sum in ``total``), with gradients to the encoder."""
        lc = self.cfg.loss
        x, n_syn = batch.x, batch.n_syn
        s = feature_scale_at(step, lc.feature_scale_ramp)
        w, f = self._encode(x)
        if lc.scheme == "official" and lc.use_feature:
            x1, outs = self.G(w, noise=batch.rand_noise, features_in=f, feature_scale=s, k=self.k,
                              return_features=True)
            x2 = self.G(w, noise=batch.noise, features_in=f, feature_scale=s, k=self.k)
            recs = [x1, x2]
        else:
            x1, outs = self.G(w, noise=batch.noise, return_features=True)
            recs = [x1]
            if lc.use_feature:
                recs.append(self.G(w, noise=batch.noise, features_in=f, feature_scale=s, k=self.k))
        gk = outs[self.k]
        terms: dict[str, Tensor] = {}
        total = x.new_zeros(())
        if lc.mse > 0 and n_syn > 0:                                   # Eq. 2 (synthetic images only)
            terms["mse"] = mse_per_sample(x1[:n_syn], x[:n_syn]).mean()
            total = total + lc.mse * terms["mse"]
        if self.mlpips is not None:                                    # Eq. 3, both inversions
            terms["lpips"] = sum(self.mlpips(r, x).mean() for r in recs)
            total = total + lc.lpips * terms["lpips"]
        if lc.use_feature and lc.feature > 0:                          # Eq. 4
            terms["feature"] = feature_reconstruction(f, gk).mean()
            total = total + lc.feature * terms["feature"]
        if self.identity is not None:                                  # Eq. 6
            terms["identity"] = sum(self.identity(r, x).mean() for r in recs)
            total = total + lc.identity * terms["identity"]
        if self.parsing is not None:                                   # Eq. 7
            terms["parsing"] = sum(self.parsing(r, x).mean() for r in recs)
            total = total + lc.parsing * terms["parsing"]
        terms["total"] = total
        return terms

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimiser step on ``batch`` at ``self.step``; returns the loss values."""
        sc = self.cfg.schedule
        epoch = self.step // sc.iters_per_epoch
        bn_frozen = sc.bn_eval_after_epochs is not None and epoch >= sc.bn_eval_after_epochs
        self.E.train(not bn_frozen)
        self.schedule.apply(self.step)
        terms = self.compute_losses(batch, self.step)
        if not torch.isfinite(terms["total"]):
            raise FloatingPointError(f"training loss is {float(terms['total'])} at step {self.step}")
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        if self.cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.E.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.step += 1
        return {k: float(v.detach()) for k, v in terms.items()}

    # --------------------------------------------------------------------------------------------
    def eval_batch(self) -> tuple[Tensor, list[Tensor], int]:
        """A fixed batch: ``log.samples`` synthetic images (fixed seed, their noise) then held-out real ones."""
        if self._eval_batch is None:
            n = n_syn = max(1, self.cfg.log.samples)
            syn, noise, _ = synthetic_images(self.G, n_syn, step_generator(self.cfg.seed, 0xE7A1),
                                          truncation=self.cfg.data.synthetic_truncation, w_avg=self.latent_avg)
            files = (self.real_eval or self.real_train)[:n] if self.cfg.data.real_per_gpu > 0 else []
            if files:
                real = torch.stack([RealImages(files, self.G.size)[i] for i in range(len(files))]).to(self.device)
                rn = random_noise(self.G, len(files), step_generator(self.cfg.seed, 0xE7A2))
                syn = torch.cat([syn, real])
                noise = [torch.cat([a, b.to(self.device)]) for a, b in zip(noise, rn)]
            self._eval_batch = (syn, noise, n_syn)
        return self._eval_batch

    @torch.no_grad()
    def evaluate(self, write_samples: bool = True) -> dict[str, float]:
        """Reconstruction errors of ``G(w)`` and ``G(w, F)`` on the fixed batch (encoder in eval mode).

        Keys: ``eval/mse_w_syn``, ``eval/mse_wf_syn``, ``eval/mse_w_real``, ``eval/mse_wf_real`` (and
        ``eval/lpips_*`` with LPIPS).  Writes ``samples/step_XXXXXXX.png`` (input | G(w) | G(w, F)).
        """
        x, noise, n_syn = self.eval_batch()
        was_training = self.E.training
        self.E.eval()
        try:
            w, f = self._encode(x, module=self.E)
            xw = self.G(w, noise=noise)
            xwf = self.G(w, noise=noise, features_in=f, k=self.k)
        finally:
            self.E.train(was_training)
        out: dict[str, float] = {}
        for part, sl in (("syn", slice(0, n_syn)), ("real", slice(n_syn, None))):
            if x[sl].shape[0] == 0:
                continue
            for name, rec in (("w", xw), ("wf", xwf)):
                out[f"eval/mse_{name}_{part}"] = float(mse_per_sample(rec[sl], x[sl]).mean())
                if self.eval_lpips is not None:
                    out[f"eval/lpips_{name}_{part}"] = float(self.eval_lpips(rec[sl], x[sl]).mean())
        if write_samples and self.dist.is_main:
            (self.run_dir / "samples").mkdir(exist_ok=True)
            save_grid(self.run_dir / "samples" / f"step_{self.step:07d}.png", [x, xw, xwf])
        return out

    # --------------------------------------------------------------------------------------------
    def fit(self, stop_after: int | None = None) -> dict:
        """Train until the schedule ends (or until global step ``stop_after``); returns a summary.

        A checkpoint is written every ``log.checkpoint_every`` steps and at the last step.
        """
        cfg = self.cfg
        total = cfg.total_steps
        end = total if stop_after is None else min(total, int(stop_after))
        info = self.dist
        if info.is_main:
            self._save_generator()
        first_eval: dict[str, float] = {}
        if self.step == 0 and info.is_main:
            first_eval = self.evaluate()
            self._write({"step": 0, **first_eval})
        real_iter = None
        if self.real_ds is not None:
            real_iter = real_batches(self.real_ds, cfg.data.real_per_gpu, seed=cfg.seed, rank=info.rank,
                                     world=info.world, start_step=self.step, workers=cfg.data.workers)
        last: dict[str, float] = {}
        last_eval: dict[str, float] = dict(first_eval)
        t0 = time.perf_counter()
        while self.step < end:
            t = time.perf_counter()
            real = next(real_iter) if real_iter is not None else None
            batch = make_batch(self.G, real, cfg.data.synthetic_per_gpu, seed=cfg.seed, rank=info.rank,
                               step=self.step, truncation=cfg.data.synthetic_truncation, w_avg=self.latent_avg)
            lr = self.schedule.lr_at(self.step)
            scale = feature_scale_at(self.step, cfg.loss.feature_scale_ramp)
            losses = self.train_step(batch)
            step = self.step
            is_last = step == end
            record = None
            if step % cfg.log.every == 0 or is_last:
                losses = self.group.mean(losses)
                record = {"step": step, "epoch": (step - 1) // cfg.schedule.iters_per_epoch, "lr": lr,
                          "feature_scale": scale, **{f"loss/{k}": v for k, v in losses.items()},
                          "sec_per_step": time.perf_counter() - t}
            last = losses
            ev: dict[str, float] = {}
            if (step % cfg.log.sample_every == 0 or is_last) and info.is_main:
                ev = self.evaluate()
                last_eval = ev
                record = {**(record or {"step": step}), **ev}
            if record is not None and info.is_main:
                self._write(record)                 # before the checkpoint: a resumed log has every step
            if step % cfg.log.checkpoint_every == 0 or is_last:
                self.save_checkpoint()
            if self.progress is not None:
                self.progress(Progress(step, total, (step - 1) // cfg.schedule.iters_per_epoch, losses, lr,
                                       time.perf_counter() - t0, ev))
        self.group.barrier()
        if self.tb is not None:
            self.tb.close()
        return {"step": self.step, "total": total, "losses": last, "eval": last_eval, "first_eval": first_eval,
                "run_dir": str(self.run_dir), "encoder": str(self.run_dir / "encoder.pt")}

    def _write(self, record: dict) -> None:
        self.jsonl.write({k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in record.items()})
        if self.tb is not None:
            self.tb.scalars(int(record["step"]), {k: v for k, v in record.items() if k != "step"})


def train(config: str | Path | TrainConfig, run_dir: str | Path, **kwargs) -> dict:
    """Load a config (path, bundled name or :class:`TrainConfig`) and train; returns :meth:`Trainer.fit`'s summary."""
    cfg = config if isinstance(config, TrainConfig) else load_train_config(config)
    stop_after = kwargs.pop("stop_after", None)
    return Trainer(cfg, run_dir, **kwargs).fit(stop_after=stop_after)
