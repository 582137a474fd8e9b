"""Run a Feature-Style model on a device, in a precision, in batches of faces.

:class:`ModelExecutor` is the one place that moves faces and codes between the CPU (where the
streaming stages keep them, float32) and the device the networks run on (``dtype`` through
autocast for half precision), in chunks of ``batch_size`` faces.  The video jobs
(:mod:`fsvideo.pipeline.model_stages`) and the metrics (:mod:`fsvideo.metrics.inversion`) both use
it, so they run exactly the same computation.  The generator noise is drawn once from a seed and
fixed for every call (one noise per video, as the official scripts do).

Shapes at the boundary (S = :func:`crop_size`):

* :meth:`ModelExecutor.encode`: uint8 [N, S, S, 3] -> (w [N, n_latent, 512], F [N, C, h, w]) float32, CPU
* :meth:`ModelExecutor.map_codes`: (w, F) -> fn(w, F) per chunk on the device -> float32, CPU
* :meth:`ModelExecutor.generate`: (w, F or None) -> uint8 [N, S, S, 3]

``compile=True`` runs the encoder and the generator through ``torch.compile`` (Inductor fuses the
generator's many element-wise ops: modulation, demodulation, noise, bias + leaky ReLU).  Each is
compiled on its first call, for one batch shape: chunks shorter than the batch are padded with
copies of their last face and the extra outputs dropped, so a video's tail does not compile again.
The eager pure-PyTorch path stays the reference (``tests/test_compile.py`` compares them).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from fsvideo.errors import PipelineError
from fsvideo.models.encoder import ENCODER_INPUT
from fsvideo.models.fse import FeatureStyleModel, to_model_input, to_uint8

log = logging.getLogger(__name__)

CodesFn = Callable[[Tensor, Tensor], "tuple[Tensor, Tensor]"]


def crop_size(model: FeatureStyleModel) -> int:
    """Side of the aligned crops: the generator's resolution, at least the encoder's 256 px input
    (a small generator's faces are resized up to the crop before they are pasted back)."""
    return max(model.resolution, ENCODER_INPUT)


class ModelExecutor:
    """Runs a FeatureStyleModel on ``device`` with ``dtype``, in chunks of ``batch_size`` faces.

    Args:
        model: the encoder + generator (moved to ``device``, eval mode).
        device: where the networks run.
        dtype: float32, or float16 / bfloat16 through autocast.
        batch_size: faces per network call.  On a CPU a generator above 256 px takes one face per call:
            batching there gains little (about 1.1x at 1024 px, README) while its activations grow with
            the batch (`fsvideo edit` at 1024 px peaked at 5.0 GB of RAM with 4 faces per call, 2.7 GB with 1).
            Such a run is :attr:`large_on_cpu`: the model stages also give malloc's free memory back
            after each call there (:mod:`fsvideo.pipeline.memory`).
        noise_seed: seed of the generator noise, fixed for every call.
        compile: run the encoder and generator through ``torch.compile`` (see the module docstring).
    """

    def __init__(self, model: FeatureStyleModel, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, batch_size: int = 4, noise_seed: int = 0,
                 compile: bool = False):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.dtype = dtype
        self.batch_size = max(1, int(batch_size))
        self.large_on_cpu = self.device.type != "cuda" and model.generator.size > 256
        self.generate_batch = 1 if self.large_on_cpu else self.batch_size
        self.noise_seed = int(noise_seed)
        self.noise = model.generator.make_noise(noise_seed, device=self.device)
        self.compiled = bool(compile)
        self._encode_fn, self._decode_fn = model.encode, self._decode
        if self.compiled:
            self._encode_fn = torch.compile(model.encode, dynamic=False)
            self._decode_fn = torch.compile(self._decode, dynamic=False)

    def _decode(self, w: Tensor, f: Tensor | None) -> Tensor:
        return self.model.decode(w, f, self.noise)

    def _batched(self, n: int, attr: str, call) -> list:
        """``call(chunk, size)`` over ``n`` faces in chunks of ``getattr(self, attr)`` (``batch_size`` or
        ``generate_batch``).  A chunk that runs out of device memory runs again in chunks of half the
        size, which the rest of the run keeps (one warning); out of memory on one face is an error."""
        out, i = [], 0
        while i < n:
            size = getattr(self, attr)
            chunk = slice(i, min(n, i + size))
            try:
                out.append(call(chunk, size))
            except torch.OutOfMemoryError as e:
                self._out_of_memory(attr, size, e)
                continue
            i = chunk.stop
        return out

    def _out_of_memory(self, attr: str, size: int, e: Exception) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        G = self.model.generator
        if size == 1:
            raise PipelineError(f"out of {self.device} memory with one face per call ({G.size} px generator, "
                                f"{str(self.dtype).replace('torch.', '')})",
                                hint="close other programs using the GPU, use --precision fp16, or --device cpu") from e
        setattr(self, attr, size // 2)
        if attr == "batch_size":
            self.generate_batch = min(self.generate_batch, self.batch_size)
        log.warning("out of %s memory with %d faces per call: running %d per call from now on "
                    "(--batch-size %d avoids the retry)", self.device, size, size // 2, size // 2)

    def _padded(self, fn, size: int, *xs: Tensor | None):
        """``fn(*xs)`` with the batch padded to ``size`` when compiled (one shape: no recompiles)."""
        n = len(xs[0])
        if not self.compiled or n == size:
            return fn(*xs)
        pad = [None if x is None else torch.cat([x, x[-1:].expand(size - n, *x.shape[1:])]) for x in xs]
        out = fn(*pad)
        return tuple(o[:n] for o in out) if isinstance(out, tuple) else out[:n]

    @property
    def crop_size(self) -> int:
        return crop_size(self.model)

    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def empty_codes(self) -> tuple[Tensor, Tensor]:
        """(w [0, n_latent, 512], F [0, C, h, w]): the codes of a frame without a face."""
        G = self.model.generator
        return torch.zeros(0, G.n_latent, G.style_dim), torch.zeros(0, *G.feature_shape(self.model.k))

    @torch.no_grad()
    def encode(self, crops: np.ndarray) -> tuple[Tensor, Tensor]:
        """uint8 [N, S, S, 3] aligned faces -> (w [N, n_latent, 512], F [N, C, h, w]) float32 on CPU."""
        S = self.crop_size
        if crops.ndim != 4 or crops.shape[1:] != (S, S, 3):
            raise ValueError(f"crops must be [N, {S}, {S}, 3] uint8, got {crops.shape}")

        def call(sl, size):
            x = to_model_input(torch.from_numpy(np.ascontiguousarray(crops[sl])).to(self.device))
            with self.autocast():
                w, f = self._padded(self._encode_fn, size, x)
            return w.float().cpu(), f.float().cpu()
        parts = self._batched(len(crops), "batch_size", call)
        if not parts:
            return self.empty_codes()
        return torch.cat([w for w, _ in parts]), torch.cat([f for _, f in parts])

    @torch.no_grad()
    def map_codes(self, fn: CodesFn, w: Tensor, f: Tensor) -> tuple[Tensor, Tensor]:
        """``fn(w, F) -> (w', F')`` on the device, chunk by chunk: float32 on CPU (empty in, empty out).

        The Eq. 1 edit runs through here (``fn`` closes over the directions and :attr:`noise`).
        """
        if len(w) == 0:
            return w, f

        def call(sl, size):
            with self.autocast():
                we, fe = fn(w[sl].to(self.device), f[sl].to(self.device))
            return we.float().cpu(), fe.float().cpu()
        parts = self._batched(len(w), "batch_size", call)
        return torch.cat([a for a, _ in parts]), torch.cat([b for _, b in parts])

    @torch.no_grad()
    def generate(self, w: Tensor, f: Tensor | None) -> np.ndarray:
        """G(w, F) -> uint8 [N, S, S, 3] with S = :func:`crop_size` (F None: G(w))."""
        S = self.crop_size

        def call(sl, size):
            with self.autocast():
                img = self._padded(self._decode_fn, size, w[sl].to(self.device),
                                   None if f is None else f[sl].to(self.device))
            if img.shape[-1] != S:
                img = torch.nn.functional.interpolate(img.float(), size=(S, S), mode="bicubic", align_corners=False)
            return to_uint8(img).cpu().numpy()
        out = self._batched(len(w), "generate_batch", call)
        return np.concatenate(out) if out else np.zeros((0, S, S, 3), np.uint8)
