"""Crash-safe checkpoints of a training run.

Layout of a run folder::

    RUN/config.yaml                     resolved config (``fsvideo train --resume RUN`` reads it)
    RUN/encoder.pt                      latest encoder, released ``143_enc.pth`` layout (plain state dict)
    RUN/generator.pt                    the generator, when it is a random one (pSp layout)
    RUN/checkpoints/step_0001000/encoder.pt   encoder at that step (same layout)
    RUN/checkpoints/step_0001000/state.pt     optimiser, schedule, step, RNG states
    RUN/checkpoints/latest              name of the newest complete checkpoint folder

A checkpoint is written into a hidden temporary folder, each file flushed to disk, and the folder
renamed into place in one step; ``latest`` and ``RUN/encoder.pt`` are then replaced atomically.  A
crash or kill at any moment leaves the previous checkpoint complete and ``latest`` pointing at a
complete folder.  Everything is read back with ``weights_only=True``.
"""
from __future__ import annotations

import collections
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from fsvideo.errors import InputError, WeightsError
from fsvideo.models.loading import read_checkpoint
from fsvideo.utils import atomic_dir, atomic_output

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"
LATEST = "latest"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def save_file(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path``, flushed to disk (not atomic by itself; used inside a temp folder)."""
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary name beside ``path``, then rename: ``path`` is old or new, never partial."""
    with atomic_output(path, overwrite=True, fsync=True) as tmp:
        save_file(obj, tmp)
    return Path(path)


def atomic_write_text(text: str, path: Path) -> None:
    """Replace the text file ``path`` in one step (e.g. the ``latest`` pointer)."""
    with atomic_output(path, overwrite=True, fsync=True) as tmp:
        tmp.write_text(text)


# ------------------------------------------------------------------------------------------------
def rng_state() -> dict:
    """Global RNG states (torch CPU and CUDA, numpy, random) as tensors and ints (weights_only-safe)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
             "python": {"version": int(py_state[0]), "state": torch.tensor(py_state[1], dtype=torch.int64),
                        "gauss": py_state[2]}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """A complete checkpoint folder: its step, encoder file and training-state file."""

    step: int
    folder: Path

    @property
    def encoder(self) -> Path:
        return self.folder / "encoder.pt"

    @property
    def state(self) -> Path:
        return self.folder / "state.pt"

    def load_state(self) -> dict:
        return read_checkpoint(self.state)

    def load_encoder(self) -> "collections.OrderedDict[str, torch.Tensor]":
        return read_checkpoint(self.encoder)


def step_folder(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"step_{step:07d}"


def save_checkpoint(run_dir: str | os.PathLike, step: int, encoder_state: Mapping[str, torch.Tensor],
                    train_state: dict, *, keep: int = 3) -> Checkpoint:
    """Write the checkpoint of ``step`` (see the module docstring) and prune all but the ``keep`` newest."""
    run = Path(run_dir)
    root = run / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = step_folder(run, step)
    enc = collections.OrderedDict((k, v.detach().cpu().clone()) for k, v in encoder_state.items())
    if not final.exists():
        with atomic_dir(final, fsync=True) as tmp:
            save_file(enc, tmp / "encoder.pt")
            save_file(train_state, tmp / "state.pt")
    atomic_write_text(final.name + "\n", root / LATEST)
    atomic_save(enc, run / "encoder.pt")
    _prune(root, keep)
    return Checkpoint(step, final)


def _complete(folder: Path) -> bool:
    return (folder / "encoder.pt").is_file() and (folder / "state.pt").is_file()


def list_checkpoints(run_dir: str | os.PathLike) -> list[Checkpoint]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CKPT_DIR
    out = []
    if root.is_dir():
        for p in root.iterdir():
            m = _STEP_DIR.match(p.name)
            if m and p.is_dir() and _complete(p):
                out.append(Checkpoint(int(m.group(1)), p))
    return sorted(out, key=lambda c: c.step)


def latest_checkpoint(run_dir: str | os.PathLike) -> Checkpoint | None:
    """The checkpoint ``latest`` names, or the newest complete one when the pointer is missing or stale."""
    root = Path(run_dir) / CKPT_DIR
    pointer = root / LATEST
    if pointer.is_file():
        name = pointer.read_text().strip()
        m = _STEP_DIR.match(name)
        if m and _complete(root / name):
            return Checkpoint(int(m.group(1)), root / name)
        log.warning("%s names %r, which is not a complete checkpoint; using the newest complete one", pointer, name)
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def clean_partials(run_dir: str | os.PathLike) -> int:
    """Remove leftovers of interrupted writes (``.*.partial*`` files and folders); returns how many."""
    n = 0
    for root in (Path(run_dir), Path(run_dir) / CKPT_DIR):
        if not root.is_dir():
            continue
        for p in root.glob(".*.partial*"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            n += 1
    return n


def _prune(root: Path, keep: int) -> None:
    if keep <= 0:
        return
    found = list_checkpoints(root.parent)
    for c in found[:-keep]:
        shutil.rmtree(c.folder, ignore_errors=True)


def require_checkpoint(run_dir: str | os.PathLike) -> Checkpoint:
    ck = latest_checkpoint(run_dir)
    if ck is None:
        raise InputError(f"{run_dir} has no complete checkpoint to resume from",
                         hint="start a new run with `fsvideo train --config ...`")
    return ck


def restore(c: Checkpoint, encoder: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Mapping:
    """Load checkpoint ``c`` into ``encoder`` and ``optimizer`` (in place: the optimiser holds the encoder's
    parameters) and return its training state (``step``, ``rng``, ``world``...).

    A checkpoint that is damaged, or reads but is not this run's (another network's encoder, a state
    without its keys), is an :class:`InputError` naming the file and the fix, not a bare RuntimeError.
    """
    fix = f"remove {c.folder} to resume from the checkpoint before it, or start the run afresh with --config ... --overwrite"
    try:
        enc, state = c.load_encoder(), c.load_state()
    except WeightsError as e:   # truncated or damaged: the reader's hint ("download it again") does not apply
        raise InputError(e.message, hint=fix) from e
    if not isinstance(enc, Mapping):
        raise InputError(f"{c.encoder} is not an encoder state dict ({type(enc).__name__})", hint=fix)
    try:
        encoder.load_state_dict(enc, strict=True)
    except RuntimeError as e:   # another run's encoder (other widths) or another network's file
        why = " ".join(str(e).split())
        raise InputError(f"{c.encoder} does not fit this run's encoder ({why[:300]})", hint=fix) from e
    try:
        if not isinstance(state, Mapping):
            raise TypeError(f"a {type(state).__name__}, not a mapping")
        optimizer.load_state_dict(state["optimizer"])
        if not isinstance(state["step"], int) or not isinstance(state["rng"], Mapping):
            raise TypeError("its step or rng has the wrong type")
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{c.state} is not the training state of this run ({type(e).__name__}: {e})",
                         hint=fix) from e
    return state
