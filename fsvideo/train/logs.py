"""Run logs: JSONL of losses (always), TensorBoard (when installed), PNG sample grids."""
from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from fsvideo.utils import atomic_output

log = logging.getLogger(__name__)


class JsonlLog:
    """Append-only ``RUN/log.jsonl``: one JSON object per line (``{"step": ..., "loss/...": ...}``)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (written after the checkpoint a run resumes from)."""
        if not self.path.is_file():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:        # a line cut by a kill
                continue
            if int(rec.get("step", 0)) <= step:
                keep.append(line)
        with atomic_output(self.path, overwrite=True) as tmp:
            tmp.write_text("".join(k + "\n" for k in keep))

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=False) + "\n")

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out


def read_log(run_dir: str | os.PathLike) -> list[dict]:
    """All records of ``RUN/log.jsonl``."""
    return JsonlLog(Path(run_dir) / "log.jsonl").read()


class TensorBoard:
    """Scalars to TensorBoard when ``torch.utils.tensorboard`` (the ``tensorboard`` package) imports."""

    def __init__(self, log_dir: Path, enabled: bool = True):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.info("tensorboard is not installed: losses go to log.jsonl only (pip install tensorboard)")
            return
        self.writer = SummaryWriter(str(log_dir))

    def scalars(self, step: int, values: dict) -> None:
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def to_uint8_image(x: Tensor) -> np.ndarray:
    """[3, H, W] in [-1, 1] -> uint8 [H, W, 3]."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def save_grid(path: str | os.PathLike, columns: Sequence[Tensor], pad: int = 2) -> Path:
    """PNG grid: one row per sample, one column per tensor (e.g. input | G(w) | G(w, F)), written atomically.

    ``columns``: tensors [N, 3, S, S] in [-1, 1] with the same shape.
    """
    path = Path(path)
    n, _, h, w = columns[0].shape
    for c in columns:
        if c.shape != columns[0].shape:
            raise ValueError(f"grid columns must share a shape, got {list(c.shape)} and {list(columns[0].shape)}")
    grid = np.full((n * (h + pad) + pad, len(columns) * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        for j, c in enumerate(columns):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y:y + h, x:x + w] = to_uint8_image(c[i])
    with atomic_output(path, overwrite=True) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return path
