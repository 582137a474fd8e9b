"""Run options: what a run of ``edit`` / ``invert`` can be told, and the one place they reach the stages.

:class:`RunOptions` holds every option with its default (the command line takes its defaults from
here).  :func:`stage_options` maps them onto the typed keyword arguments of the stages
(``{stage name: {argument: value}}``), which :func:`fsvideo.pipeline.chain.build_chain` checks
against each stage factory's signature: an option no stage takes is a ConfigError, not ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fsvideo.faces.keyframes import DEFAULT_DETECT_EVERY, DEFAULT_TRACK
from fsvideo.faces.smoothing import DEFAULT_SMOOTHING_S
from fsvideo.video.encoders import DEFAULT_PRESET


@dataclass
class RunOptions:
    """Everything a run can be told; the CLI fills it from its flags (and takes its defaults from here).

    Args:
        config: bundled config name (``ffhq``) or a YAML path (see ``configs/``).
        generator, encoder: weights files or registry names overriding the config.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1`` ...
        precision: ``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32``, ``fp16``, ``bf16``.
        batch_size: faces per network call; 0 (default): 4 on a GPU, 1 on a CPU (measured on a 2-core
            CPU, `benchmarks/pipeline.py`: a streaming run did 1.42 frames/s with 1, 1.01 with 4).
        compile: run the encoder and generator through ``torch.compile`` (a one-time compile, then
            faster frames; :class:`~fsvideo.models.execution.ModelExecutor`).
        detector: ``auto`` or a registered detector name (:mod:`fsvideo.faces.registry`).
        detect_batch: frames per detector call (FAN batches the faces of all of them in one pass).
        detect_every: full face detection every N seconds (``1``, ``"1s"``: default, ``"0.5s"``) or
            frames (``"12f"``) and on shot cuts, faces followed by ``track`` in between; ``0``: a full
            detection on every frame.
        track: how faces are followed between full detections: ``roi`` (default: the detector's own
            search in a region around each face, :mod:`fsvideo.faces.roi`; as close to per-frame
            detection as that is to itself, 9x faster at 1080p) or ``flow`` (optical flow,
            :mod:`fsvideo.faces.keyframes`; further from per-frame detection on some clips).
        face: ``largest``, a track id, or ``all``.
        on_missing: frames without a face: ``passthrough`` (kept unedited), ``hold`` (last face
            kept), ``error``.
        stabilize: temporal stabilisation: seconds of landmark smoothing (0 turns it off) or a stabiliser
            name (``official``: the official filter); see :func:`fsvideo.faces.smoothing.parse_stabilize`.
        align_method: ``fast`` (cv2 warp, the video path) or ``exact`` (the FFHQ procedure, slow).
        blend: ``alpha`` (feathered mask) or ``poisson`` (``cv2.seamlessClone``).
        mask: ``auto`` (face parsing when its weights are present, else landmark hull), ``hull``, ``parsing``.
        start, end: seconds of the input to process (the output covers only that span).
        seed: generator noise seed, fixed for the whole video (None: 0, or with ``--latents`` the
            seed the latents file records).
        codec, crf: output video codec (``auto``: NVENC H.264 when a GPU encoder opens, else libx264;
            a .gif/.webm output picks its own) and quality.
        preset: x264 speed preset (``veryfast``, chosen by ``benchmarks/encode.py``).
        compare: write original | reconstruction | edit side by side.
        overwrite: replace an existing output.
        queue_size: packets each queue between stage threads holds.
        queue_mib: and the most MiB of packets it holds (None: no byte bound), but always a batch of
            the stages on either side: with 1024 px crops (about 7 MiB a frame) the queues behind the
            slow generator would otherwise hold about 20 more frames than a short clip ever has
            (`benchmarks/memory.py --edit`).
        threads: stream through threads (False: frame by frame in one thread, the baseline).
        workers: threads each per-frame stage may use (None: from the run's core budget,
            :func:`fsvideo.pipeline.budget.core_budget`).
        network_calls: with the networks on a CPU, network calls in flight at once, the cores
            shared among them (None: from the core budget).
    """

    config: str = "ffhq"
    generator: str | None = None
    encoder: str | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 0
    compile: bool = False
    detector: str = "auto"
    detect_batch: int = 1
    detect_every: float | str = DEFAULT_DETECT_EVERY
    track: str = DEFAULT_TRACK
    face: str = "largest"
    on_missing: str = "passthrough"
    stabilize: float | str = DEFAULT_SMOOTHING_S
    align_method: str = "fast"
    blend: str = "alpha"
    mask: str = "auto"
    start: float | None = None
    end: float | None = None
    seed: int | None = None
    codec: str = "auto"
    preset: str = DEFAULT_PRESET
    crf: int = 18
    compare: bool = False
    overwrite: bool = False
    queue_size: int = 8
    queue_mib: float | None = 16
    threads: bool = True
    workers: int | None = None
    network_calls: int | None = None


DEFAULTS = RunOptions()


def stage_options(opts: RunOptions) -> dict[str, dict[str, Any]]:
    """The typed keyword arguments each stage gets from the run options (the only mapping there is).

    A stage that is not in the chain being built ignores its entry; a key its factory does not
    take is a ConfigError at build time.  A batch size of 0 (auto) leaves the model stages the
    executor's (``jobs.prepare`` picks it for the device).
    """
    nets = {"batch_size": opts.batch_size}
    return {
        "detect": {"batch_size": opts.detect_batch, "detect_every": opts.detect_every, "track": opts.track},
        "track_align": {"face": opts.face, "stabilize": opts.stabilize, "on_missing": opts.on_missing,
                        "method": opts.align_method},
        "encode": nets,
        "edit": nets,
        "generate": {**nets, "compare": opts.compare},
        "blend": {"poisson": opts.blend == "poisson", "compare": opts.compare},
    }
