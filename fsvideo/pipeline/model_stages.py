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
half precision) through :class:`~fsvideo.models.execution.ModelExecutor`.  The generator noise is
fixed for the whole video (``noise_seed``).  When a generator above 256 px runs on the CPU, each
stage gives malloc's free memory back after its call (:func:`~fsvideo.pipeline.memory.release_free_memory`: the temporaries
one thread freed would otherwise stay resident while another thread's network peaks).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from fsvideo.edits.eq1 import EditSpec, edit_codes
from fsvideo.errors import ConfigError
from fsvideo.models.execution import ModelExecutor
from fsvideo.pipeline.chain import register_stage
from fsvideo.pipeline.components import Components
from fsvideo.pipeline.memory import release_free_memory
from fsvideo.pipeline.options import DEFAULTS
from fsvideo.pipeline.stage import FunctionStage, Packet, Stage


def _split(values, counts: list[int]) -> list:
    out, i = [], 0
    for c in counts:
        out.append(values[i:i + c])
        i += c
    return out


def encode_packets(executor: ModelExecutor, packets: list[Packet]) -> list[Packet]:
    """Adds ``w`` and ``F`` to every packet (empty tensors for frames without a face)."""
    counts = [len(p.get("aligned") or []) for p in packets]
    crops = [a.image for p in packets for a in (p.get("aligned") or [])]
    w, f = executor.encode(np.stack(crops)) if crops else executor.empty_codes()
    for p, wi, fi in zip(packets, _split(w, counts), _split(f, counts)):
        p["w"], p["F"] = wi, fi
    return packets


def edit_packets(executor: ModelExecutor, packets: list[Packet], edits: Sequence[EditSpec],
                 step: float) -> list[Packet]:
    """Adds ``w_edit`` and ``F_edit``: Eq. 1 with ``w~ = w + step * sum_i s_i d_i``."""
    counts = [len(p["w"]) for p in packets]
    model, noise = executor.model, executor.noise
    we, fe = executor.map_codes(lambda w, f: edit_codes(model, w, f, edits, noise, step=step),
                                torch.cat([p["w"] for p in packets]), torch.cat([p["F"] for p in packets]))
    for p, wi, fi in zip(packets, _split(we, counts), _split(fe, counts)):
        p["w_edit"], p["F_edit"] = wi, fi
    return packets


def generate_packets(executor: ModelExecutor, packets: list[Packet], *, key_w: str = "w_edit", key_f: str = "F_edit",
                     out_key: str = "generated") -> list[Packet]:
    """Adds ``out_key``: uint8 [n, S, S, 3] generated faces per packet (G(w, F) of ``key_w``, ``key_f``)."""
    counts = [len(p[key_w]) for p in packets]
    imgs = executor.generate(torch.cat([p[key_w] for p in packets]), torch.cat([p[key_f] for p in packets]))
    for p, im in zip(packets, _split(imgs, counts)):
        p[out_key] = im
    return packets


# ------------------------------------------------------------------------------------ chain stages
# Registered for pipelines/*.yaml.  Components: ``executor``, ``edits``, ``edit_step``, ``latents``,
# ``latents_writer``, ``resolution`` (see fsvideo.pipeline.components.Components).  A batch_size of 0
# (auto) takes the executor's.  The network stages are pure functions of their batch (the noise is
# fixed per video), so a threaded run may have several of their calls in flight (the core budget's
# ``network_workers``, :mod:`fsvideo.pipeline.budget`); the runner keeps the frames in order.
_NETWORK = dict(per_frame=True, networks=True)

def _releasing(ex: ModelExecutor, fn):
    """``fn(packets)``, then, when a generator above 256 px runs on the CPU, malloc's free memory given
    back.  Not below: at 256 px the trim cost 23 % of a sequential run's speed (1.46 vs 1.80 frames/s,
    `benchmarks/pipeline.py`, idle) for memory nobody is short of.  A stand-in executor (e.g.
    ``benchmarks/frontend.py``'s) runs no network and frees nothing."""
    if not getattr(ex, "large_on_cpu", False):
        return fn

    def run(ps):
        out = fn(ps)
        release_free_memory()
        return out
    return run


@register_stage("encode")
def make_encode(components: Components, *, batch_size: int = DEFAULTS.batch_size) -> Stage:
    """Feature-Style encoding of every aligned face: adds ``w``, ``F``."""
    ex = components.need("executor", "encode")
    return FunctionStage("encode", _releasing(ex, lambda ps: encode_packets(ex, ps)), needs=("aligned",), adds=("w", "F"),
                         batch_size=int(batch_size) or ex.batch_size, **_NETWORK)


@register_stage("edit")
def make_edit(components: Components, *, batch_size: int = DEFAULTS.batch_size) -> Stage:
    """Eq. 1 with ``components.edits`` scaled by ``components.edit_step``: adds ``w_edit``, ``F_edit``."""
    ex, edits, step = components.need("executor", "edit"), components.edits, float(components.edit_step)
    return FunctionStage("edit", _releasing(ex, lambda ps: edit_packets(ex, ps, edits, step)), needs=("w", "F"),
                         adds=("w_edit", "F_edit"), batch_size=int(batch_size) or ex.batch_size, **_NETWORK)


@register_stage("generate")
def make_generate(components: Components, *, latent: str = "edit", batch_size: int = DEFAULTS.batch_size,
                  compare: bool = DEFAULTS.compare) -> Stage:
    """G(w~, F~) (``latent: edit``) or G(w, F) (``latent: inversion``): adds ``generated``.

    With ``compare`` the reconstruction G(w, F) of an edit is added too, as ``reconstructed``.
    """
    ex = components.need("executor", "generate")
    if latent not in ("edit", "inversion"):
        raise ConfigError(f"generate: latent must be 'edit' or 'inversion', got {latent!r}")
    kw, kf = ("w_edit", "F_edit") if latent == "edit" else ("w", "F")
    compare = bool(compare) and latent == "edit"

    def run(ps):
        generate_packets(ex, ps, key_w=kw, key_f=kf, out_key="generated")
        if compare:
            generate_packets(ex, ps, key_w="w", key_f="F", out_key="reconstructed")
        return ps
    adds = ("generated", "reconstructed") if compare else ("generated",)
    return FunctionStage("generate", _releasing(ex, run), needs=(kw, kf), adds=adds,
                         batch_size=int(batch_size) or ex.batch_size, **_NETWORK)


@register_stage("write_latents")
def make_write_latents(components: Components) -> Stage:
    """Appends each frame's ``w``, ``F`` and alignment to ``components.latents_writer``.

    Under a span writer (a video split in time: :mod:`fsvideo.pipeline.split`) only the span's
    frames are stored, numbered from 0 as a run over the span alone numbers them; the frames
    decoded before the span as the stabiliser's context give only their track ids and alignment
    (:meth:`~fsvideo.latents.LatentsWriter.add_context`), with which the join keeps each person's
    id across the seam; the frames after it are dropped.
    """
    from fsvideo.latents import FrameLatents
    writer = components.need("latents_writer", "write_latents")
    inside = getattr(components.writer, "inside", None)
    kept = [0]

    def run(ps):
        for p in ps:
            al = p.get("aligned") or []
            fl = FrameLatents(
                frame=int(p["index"]) if inside is None else kept[0],
                track=np.array([f.track_id for f in p["faces"]], np.int64),
                w=p["w"].numpy(), F=p["F"].numpy(),
                matrix=np.array([a.matrix for a in al], np.float64).reshape(len(al), 3, 3),
                landmarks=np.array([a.landmarks for a in al], np.float32).reshape(len(al), 68, 2))
            if inside is None or inside(p["pts"]):
                if kept[0] == 0 and p.get("time") is not None:
                    writer.meta["first_time"] = float(p["time"])    # read_latents checks it
                writer.add(fl)
                kept[0] += 1
            elif kept[0] == 0:
                writer.add_context(fl)
        return ps
    needs = ("w", "F", "aligned", "faces") + (("pts",) if inside is not None else ())
    return FunctionStage("write_latents", run, needs=needs)


@register_stage("read_latents")
def make_read_latents(components: Components) -> Stage:
    """Faces, transforms and ``w``, ``F`` of each frame from ``components.latents`` (a LatentsReader).

    The latents must come from the same frames (same file, same --start/--end): a first frame at
    another time than the file's (``first_time``, written by ``write_latents``; for a reader
    positioned on a span's first frame, :meth:`~fsvideo.latents.LatentsReader.seek`, that frame's
    time), or a frame the file does not have, is an error that says so.
    """
    from fsvideo.errors import InputError
    from fsvideo.faces.align import AlignedFace
    from fsvideo.faces.stream import TrackedFace
    reader = components.need("latents", "read_latents")
    size = int(reader.meta.get("resolution", components.resolution or 0))
    it = iter(reader)

    def run(ps):
        for p in ps:
            if p["index"] == 0:
                reader.check_start(p.get("time"))
            fl = next(it, None)
            if fl is None or fl.frame != p["index"]:
                raise InputError(f"{reader.path} has no latents for frame {p['index'] + reader.first}",
                                 hint="use the latents of this video made with the same --start/--end")
            faces = [TrackedFace(int(t), "stored", AlignedFace(None, None, m, lm.astype(np.float64), size),
                                 landmarks=None) for t, m, lm in zip(fl.track, fl.matrix, fl.landmarks)]
            p["faces"], p["aligned"] = faces, [f.aligned for f in faces]
            p["w"], p["F"] = torch.from_numpy(fl.w), torch.from_numpy(fl.F)
        return ps
    return FunctionStage("read_latents", run, needs=("index",), adds=("faces", "aligned", "w", "F"))
