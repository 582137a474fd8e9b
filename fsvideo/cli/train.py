"""``fsvideo train``: train a Feature-Style encoder for a StyleGAN2 generator (paper §4)."""
from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path

import click

from fsvideo.cli import import_torch
from fsvideo.cli._console import console, err_console
from fsvideo.errors import ConfigError, InputError


def _parse_sets(values: tuple[str, ...]) -> dict:
    """``--set loss.lpips=0.5`` -> ``{"loss": {"lpips": 0.5}}`` (values parsed as YAML)."""
    import yaml
    out: dict = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r} is not KEY=VALUE", hint="e.g. --set schedule.epochs=2")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from e
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r} conflicts with another --set")
        node[parts[-1]] = value
    return out


@click.command("train")
@click.option("-c", "--config", "config", metavar="FILE|NAME",
              help="Training config (a YAML file with a `train:` section, or a bundled name: ffhq, tiny).")
@click.option("-o", "--out", "out", type=click.Path(file_okay=False), metavar="RUN_DIR",
              help="Run folder (default: runs/<config>-<date-time>).")
@click.option("--resume", "resume", type=click.Path(file_okay=False, exists=True), metavar="RUN_DIR",
              help="Continue a run from its newest complete checkpoint, with its saved config.")
@click.option("--recipe", type=click.Choice(["paper", "official"]), default=None,
              help="paper (default): 2 real + 2 synthetic, G(w) and G(w, F), Adam. official: the released "
                   "trainer's 1 + 1, feature-scale ramp, two G(w, F), Ranger.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set data.real_dir=faces/ --set schedule.epochs=1 (repeatable).")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the config's).")
@click.option("--stop-after", type=click.IntRange(min=1), default=None, metavar="STEPS",
              help="Stop (with a checkpoint) at this global step; --resume continues later.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and exit.")
@click.option("--overwrite", is_flag=True, help="Start afresh in an existing, non-empty run folder.")
def train(config, out, resume, recipe, sets, device, stop_after, dry_run, overwrite) -> None:
    """Train an encoder (losses of Eqs. 2-8) on real images and synthetic ones made on the fly.

    \b
    Examples:
      fsvideo train --config tiny --out runs/tiny                 # a few minutes on a CPU
      fsvideo train --config ffhq --set data.real_dir=ffhq/images1024x1024
      fsvideo train --config ffhq --recipe official --dry-run
      fsvideo train --resume runs/tiny
      torchrun --nproc_per_node 4 -m fsvideo train --config ffhq   # multi-GPU (DDP)

    Writes RUN_DIR/config.yaml, log.jsonl (+ TensorBoard when installed), samples/*.png
    (input | G(w) | G(w, F)), checkpoints/step_*/ and RUN_DIR/encoder.pt, the latest encoder in
    the released layout (use it with `fsvideo edit --encoder RUN_DIR/encoder.pt`).
    """
    import_torch()
    from fsvideo.train.checkpoint import latest_checkpoint
    from fsvideo.train.config import dump_train_config, load_train_config

    if resume and config:
        raise InputError("pass either --config (a new run) or --resume RUN_DIR (its saved config is used)")
    if not resume and not config:
        raise InputError("no training config given", hint="pass --config FILE (e.g. --config tiny) or --resume RUN_DIR")
    overrides = _parse_sets(sets)
    if resume:
        if recipe or overrides:
            raise InputError("--recipe and --set cannot change a run being resumed",
                             hint="start a new run with --config to change its settings")
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").is_file():
            raise InputError(f"{run_dir} is not a training run (no config.yaml)", hint="pass the folder of a run")
        cfg = load_train_config(run_dir / "config.yaml")
    else:
        cfg = load_train_config(config, recipe=recipe, overrides=overrides)
        stem = Path(str(config)).stem
        run_dir = Path(out) if out else Path("runs") / f"{stem}-{_dt.datetime.now():%Y%m%d-%H%M%S}"

    if dry_run:
        click.echo(dump_train_config(cfg), nl=False)   # plain text: rich would re-wrap the YAML
        where = f"resume {run_dir}" if resume else f"run folder {run_dir}"
        ck = latest_checkpoint(run_dir) if resume else None
        extra = f" from step {ck.step}" if ck else ""
        err_console.print(f"[dim]dry run: {cfg.total_steps} steps; {where}{extra}[/]")
        return

    from fsvideo.train.trainer import Trainer
    bar = _ProgressBar()
    with bar:
        if resume:
            trainer = Trainer.resume(run_dir, progress=bar.update, device=device)
        else:
            trainer = Trainer(cfg, run_dir, progress=bar.update, overwrite=overwrite, device=device)
        bar.start(trainer.step, cfg.total_steps if stop_after is None else min(stop_after, cfg.total_steps),
                  show=trainer.dist.is_main)
        try:
            summary = trainer.fit(stop_after=stop_after)
        except KeyboardInterrupt:
            bar.__exit__(None, None, None)
            if trainer.dist.is_main:
                ck = latest_checkpoint(run_dir)
                saved = f"the newest checkpoint is step {ck.step}" if ck else "no checkpoint was written yet"
                err_console.print(f"[bold red]interrupted[/] at step {trainer.step}; {saved}"
                                  + (f"; continue with: fsvideo train --resume {run_dir}" if ck else ""),
                                  soft_wrap=True, highlight=False)
            sys.exit(130)
    if not trainer.dist.is_main:
        return
    console.print(f"trained to step {summary['step']} of {summary['total']}; encoder: {summary['encoder']}",
                  soft_wrap=True, highlight=False)
    first, last = summary.get("first_eval") or {}, summary.get("eval") or {}
    for key in ("eval/mse_w_real", "eval/mse_wf_real", "eval/mse_w_syn", "eval/mse_wf_syn"):
        if key in last:
            start = f"{first[key]:.4f} -> " if key in first else ""
            console.print(f"  {key[5:]:<12} {start}{last[key]:.4f}")
    if summary["step"] < summary["total"]:
        console.print(f"continue with: fsvideo train --resume {summary['run_dir']}", soft_wrap=True, highlight=False)


class _ProgressBar:
    """A rich progress bar with the latest losses and the ETA (main process only)."""

    def __init__(self):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        self.progress = Progress(TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[losses]}"), TimeElapsedColumn(), TextColumn("eta"),
                                 TimeRemainingColumn(), console=console, transient=False)
        self.task = None
        self.show = True

    def __enter__(self):
        return self

    def start(self, done: int, total: int, show: bool = True) -> None:
        self.show = show
        if show:
            self.progress.start()
            self.task = self.progress.add_task("train", total=total, completed=done, losses="")

    def update(self, p) -> None:
        if self.task is None:
            return
        parts = [f"{k} {v:.4g}" for k, v in p.losses.items()]
        self.progress.update(self.task, completed=p.step, losses=" ".join(parts) + f" lr {p.lr:.1e}")

    def __exit__(self, *exc):
        if self.task is not None:
            self.progress.stop()
            self.task = None
        return False
