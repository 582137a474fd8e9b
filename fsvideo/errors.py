"""One error family.  Only the CLI turns these into exit codes and one-line messages.

Every message names the input, the problem and the fix, e.g.::

    raise InputError("talk.mp4 has no video stream", hint="pass a video file (mp4, mov, mkv, ...)")
"""
from __future__ import annotations


class FsvideoError(Exception):
    """Base class of every error fsvideo reports to a user.

    ``message`` says what is wrong (naming the file or value); ``hint`` says how to fix it.
    """

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class InputError(FsvideoError):
    """An input file or argument is unusable (missing, not a video, no face, bad shape...)."""


class OutputError(FsvideoError):
    """The output cannot be written (exists without --overwrite, same as input, unwritable folder)."""


class WeightsError(FsvideoError):
    """Weights are missing, corrupt, or do not match the network they are loaded into."""


class ConfigError(FsvideoError):
    """A config file or option is invalid (unknown key, wrong type)."""


class PipelineError(FsvideoError):
    """A streaming pipeline stage failed; the message names the stage and the frame."""
