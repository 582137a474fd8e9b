"""Model stages: batched encoding, Eq. 1 edits and generation of aligned faces.

A frame packet carries ``aligned``: the list of aligned faces of that frame (0, 1 or more).  These
stages flatten the faces of a batch of frames, run the networks on them in chunks of
``batch_size`` faces and put the results back on each frame:

=============  ==========================================  ======================================
stage          reads                                       adds (per frame, one row per face)
=============  ==========================================  ======================================
``encode``     ``aligned`` (uint8 S x S x 3 crops)         ``w`` [n, n_latent, 512], ``F`` [n, C, 16, 16]
``edit``       ``w``, ``F``                                ``w_edit``, ``F_edit`` (Eq. 1)
``generate``   ``w_edit``/``F_edit`` (or ``w``/``F``)      ``generated`` uint8 [n, S, S, 3] (+ ``reconstructed``)
=============  ==========================================  ======================================

Latents travel on the CPU in float32; the networks run on ``device`` with ``dtype`` (autocast for
half precision).  The generator noise is fixed for the whole video (``noise_seed``).
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch

from fsvideo.edits.eq1 import EditSpec, edit_codes
from fsvideo.models.encoder import ENCODER_INPUT
from fsvideo.models.fse import FeatureStyleModel, to_model_input, to_uint8

Packet = dict


def crop_size(model: FeatureStyleModel) -> int:
    """Side of the aligned crops: the generator's resolution, at least the encoder's 256 px input
    (a small generator's faces are resized up to the crop before they are pasted back)."""
    return max(model.resolution, ENCODER_INPUT)


class ModelRunner:
    """Runs a FeatureStyleModel on a device with a precision, in chunks of ``batch_size`` faces."""

    def __init__(self, model: FeatureStyleModel, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, batch_size: int = 4, noise_seed: int = 0):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.dtype = dtype
        self.batch_size = max(1, int(batch_size))
        self.noise = model.generator.make_noise(noise_seed, device=self.device)

    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _chunks(self, n: int):
        for i in range(0, n, self.batch_size):
            yield slice(i, min(n, i + self.batch_size))

    @torch.no_grad()
    def encode(self, crops: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 [N, S, S, 3] aligned faces -> (w [N, n_latent, 512], F [N, C, 16, 16]) float32 on CPU."""
        S = crop_size(self.model)
        if crops.ndim != 4 or crops.shape[1:] != (S, S, 3):
            raise ValueError(f"crops must be [N, {S}, {S}, 3] uint8, got {crops.shape}")
        ws, fs = [], []
        for sl in self._chunks(len(crops)):
            x = to_model_input(torch.from_numpy(np.ascontiguousarray(crops[sl])).to(self.device))
            with self.autocast():
                w, f = self.model.encode(x)
            ws.append(w.float().cpu())
            fs.append(f.float().cpu())
        return torch.cat(ws), torch.cat(fs)

    @torch.no_grad()
    def edit(self, w: torch.Tensor, f: torch.Tensor, edits: Sequence[EditSpec]) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 1 on every face: (w~, F~) float32 on CPU (empty in, empty out)."""
        if len(w) == 0:
            return w, f
        ws, fs = [], []
        for sl in self._chunks(len(w)):
            with self.autocast():
                we, fe = edit_codes(self.model, w[sl].to(self.device), f[sl].to(self.device), edits, self.noise)
            ws.append(we.float().cpu())
            fs.append(fe.float().cpu())
        return torch.cat(ws), torch.cat(fs)

    @torch.no_grad()
    def generate(self, w: torch.Tensor, f: torch.Tensor | None) -> np.ndarray:
        """G(w, F) -> uint8 [N, S, S, 3] with S = :func:`crop_size`."""
        S = crop_size(self.model)
        out = []
        for sl in self._chunks(len(w)):
            with self.autocast():
                img = self.model.decode(w[sl].to(self.device), None if f is None else f[sl].to(self.device),
                                        self.noise)
            if img.shape[-1] != S:
                img = torch.nn.functional.interpolate(img.float(), size=(S, S), mode="bicubic", align_corners=False)
            out.append(to_uint8(img).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, S, S, 3), np.uint8)


def _split(values, counts: list[int]) -> list:
    out, i = [], 0
    for c in counts:
        out.append(values[i:i + c])
        i += c
    return out


def encode_packets(runner: ModelRunner, packets: list[Packet]) -> list[Packet]:
    """Adds ``w`` and ``F`` to every packet (empty tensors for frames without a face)."""
    counts = [len(p.get("aligned") or []) for p in packets]
    crops = [a.image for p in packets for a in (p.get("aligned") or [])]
    if crops:
        w, f = runner.encode(np.stack(crops))
    else:
        G = runner.model.generator
        w = torch.zeros(0, G.n_latent, G.style_dim)
        f = torch.zeros(0, *G.feature_shape(runner.model.k))
    for p, wi, fi in zip(packets, _split(w, counts), _split(f, counts)):
        p["w"], p["F"] = wi, fi
    return packets


def edit_packets(runner: ModelRunner, packets: list[Packet], edits: Sequence[EditSpec]) -> list[Packet]:
    """Adds ``w_edit`` and ``F_edit`` (Eq. 1)."""
    counts = [len(p["w"]) for p in packets]
    we, fe = runner.edit(torch.cat([p["w"] for p in packets]), torch.cat([p["F"] for p in packets]), edits)
    for p, wi, fi in zip(packets, _split(we, counts), _split(fe, counts)):
        p["w_edit"], p["F_edit"] = wi, fi
    return packets


def generate_packets(runner: ModelRunner, packets: list[Packet], *, key_w: str = "w_edit", key_f: str = "F_edit",
                     out_key: str = "generated") -> list[Packet]:
    """Adds ``out_key``: uint8 [n, S, S, 3] generated faces per packet (G(w, F) of ``key_w``, ``key_f``)."""
    counts = [len(p[key_w]) for p in packets]
    imgs = runner.generate(torch.cat([p[key_w] for p in packets]), torch.cat([p[key_f] for p in packets]))
    for p, im in zip(packets, _split(imgs, counts)):
        p[out_key] = im
    return packets


# ------------------------------------------------------------------------------------ chain stages
# Registered for pipelines/*.yaml.  Components: ``runner`` (ModelRunner), ``edits`` (list[EditSpec]),
# ``latents_writer`` (fsvideo.latents.LatentsWriter).  ``options``: fsvideo.pipeline.edit.RunOptions.

from fsvideo.pipeline.chain import register_stage  # noqa: E402
from fsvideo.pipeline.runner import FunctionStage, Stage  # noqa: E402


def _batch(options, default: int = 4) -> int:
    return int(getattr(options, "batch_size", default) or default)


@register_stage("encode")
def make_encode(components, options) -> Stage:
    """Feature-Style encoding of every aligned face: adds ``w``, ``F``."""
    runner = components["runner"]
    return FunctionStage("encode", lambda ps: encode_packets(runner, ps), needs=("aligned",), adds=("w", "F"),
                         batch_size=_batch(options))


@register_stage("edit")
def make_edit(components, options) -> Stage:
    """Eq. 1 with the requested edits: adds ``w_edit``, ``F_edit``."""
    runner, edits = components["runner"], components["edits"]
    return FunctionStage("edit", lambda ps: edit_packets(runner, ps, edits), needs=("w", "F"),
                         adds=("w_edit", "F_edit"), batch_size=_batch(options))


@register_stage("generate")
def make_generate(components, options, *, latent: str = "edit") -> Stage:
    """G(w~, F~) (``latent: edit``) or G(w, F) (``latent: inversion``): adds ``generated``.

    With ``options.compare`` the reconstruction G(w, F) is added too, as ``reconstructed``.
    """
    runner = components["runner"]
    if latent not in ("edit", "inversion"):
        from fsvideo.errors import ConfigError
        raise ConfigError(f"generate: latent must be 'edit' or 'inversion', got {latent!r}")
    kw, kf = ("w_edit", "F_edit") if latent == "edit" else ("w", "F")
    compare = bool(getattr(options, "compare", False)) and latent == "edit"

    def run(ps):
        generate_packets(runner, ps, key_w=kw, key_f=kf, out_key="generated")
        if compare:
            generate_packets(runner, ps, key_w="w", key_f="F", out_key="reconstructed")
        return ps
    adds = ("generated", "reconstructed") if compare else ("generated",)
    return FunctionStage("generate", run, needs=(kw, kf), adds=adds, batch_size=_batch(options))


@register_stage("write_latents")
def make_write_latents(components, options) -> Stage:
    """Appends each frame's ``w``, ``F`` and alignment to ``components['latents_writer']``."""
    from fsvideo.latents import FrameLatents
    writer = components["latents_writer"]

    def run(ps):
        for p in ps:
            al = p.get("aligned") or []
            writer.add(FrameLatents(
                frame=int(p["index"]),
                track=np.array([f.track_id for f in p["faces"]], np.int64),
                w=p["w"].numpy(), F=p["F"].numpy(),
                matrix=np.array([a.matrix for a in al], np.float64).reshape(len(al), 3, 3),
                landmarks=np.array([a.landmarks for a in al], np.float32).reshape(len(al), 68, 2)))
        return ps
    return FunctionStage("write_latents", run, needs=("w", "F", "aligned", "faces"))


@register_stage("read_latents")
def make_read_latents(components, options) -> Stage:
    """Faces, transforms and ``w``, ``F`` of each frame from ``components['latents']`` (a LatentsReader).

    The latents must come from the same frames (same file, same --start/--end): a frame the file
    does not have is an error that says so.
    """
    from fsvideo.errors import InputError
    from fsvideo.faces.align import AlignedFace
    from fsvideo.faces.stream import TrackedFace
    reader = components["latents"]
    size = int(reader.meta.get("resolution", components.get("resolution", 0)))
    it = iter(reader)

    def run(ps):
        for p in ps:
            fl = next(it, None)
            if fl is None or fl.frame != p["index"]:
                raise InputError(f"{reader.path} has no latents for frame {p['index']}",
                                 hint="use the latents of this video made with the same --start/--end")
            faces = [TrackedFace(int(t), "stored", AlignedFace(None, None, m, lm.astype(np.float64), size),
                                 landmarks=None) for t, m, lm in zip(fl.track, fl.matrix, fl.landmarks)]
            p["faces"], p["aligned"] = faces, [f.aligned for f in faces]
            p["w"], p["F"] = torch.from_numpy(fl.w), torch.from_numpy(fl.F)
        return ps
    return FunctionStage("read_latents", run, needs=("index",), adds=("faces", "aligned", "w", "F"))
