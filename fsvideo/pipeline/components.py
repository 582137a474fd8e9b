"""The ready-built objects a chain's stages are handed: one typed, frozen :class:`Components`.

Stages never load weights or open files themselves: the job (:mod:`fsvideo.pipeline.jobs`) or the
command builds these once and hands them to :func:`fsvideo.pipeline.chain.build_chain`.  A stage
asks for what it uses with :meth:`Components.need`, so a chain that lacks one fails at build time
with a :class:`~fsvideo.errors.ConfigError` naming the stage and the component.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from fsvideo.edits.directions import EDIT_STEP
from fsvideo.errors import ConfigError

if TYPE_CHECKING:  # annotations only: building Components imports nothing heavy
    import numpy as np

    from fsvideo.edits.eq1 import EditSpec
    from fsvideo.faces.detect import FaceDetector
    from fsvideo.latents import LatentsReader, LatentsWriter
    from fsvideo.models.execution import ModelExecutor


@dataclass(frozen=True)
class Components:
    """What the stages of a chain use (each field names the stages that need it).

    Attributes:
        reader: iterable of :class:`~fsvideo.video.Frame` (``decode``).
        writer: a VideoWriter or ImageWriter (``encode_video``).
        detector: a face detector (``detect``).
        executor: the Feature-Style model on its device (``encode``, ``edit``, ``generate``).
        edits: the Eq. 1 edits (``edit``).
        edit_step: scale of a unit direction in Eq. 1 (``edit``; ``ModelConfig.edit_step``).
        parser: ``parser(face uint8 [S, S, 3]) -> labels [S, S]`` for blend masks, or None (``blend``).
        fps: frame rate of the frames pushed (``track_align``, ``blend``: seconds -> frames).
        resolution: side of the aligned crops (``track_align``, ``read_latents``).
        source: the input's name, for error messages.
        pixel_aspect: width / height of one pixel of the frames (``detect``, ``track_align``: an
            anamorphic video's faces are found and aligned on square pixels, :mod:`fsvideo.faces.aspect`).
        latents: a :class:`~fsvideo.latents.LatentsReader` (``read_latents``).
        latents_writer: a :class:`~fsvideo.latents.LatentsWriter` (``write_latents``).
        frame_sink: ``frame_sink(packet)`` (``write_aligned``: the caller writes the crops).
    """

    reader: Iterable[Any] | None = None
    writer: Any = None
    detector: FaceDetector | None = None
    executor: ModelExecutor | None = None
    edits: tuple[EditSpec, ...] = ()
    edit_step: float = EDIT_STEP
    parser: Callable[[np.ndarray], np.ndarray] | None = None
    fps: float = 25.0
    resolution: int | None = None
    source: str = "the video"
    pixel_aspect: float = 1.0
    latents: LatentsReader | None = None
    latents_writer: LatentsWriter | None = None
    frame_sink: Callable[[dict], None] | None = None

    def need(self, name: str, stage: str) -> Any:
        """The component ``name``; a ConfigError naming ``stage`` when it was not given."""
        value = getattr(self, name)
        if value is None:
            given = ", ".join(f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None)
            raise ConfigError(f"stage {stage!r} needs component {name!r}, which was not given",
                              hint=f"components given: {given or 'none'}")
        return value

    def with_(self, **changes: Any) -> Components:
        """A copy with ``changes`` (e.g. the writer, once the output is open)."""
        return dataclasses.replace(self, **changes)
