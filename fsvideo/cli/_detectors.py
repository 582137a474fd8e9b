"""The ``--detector`` option of every command, read from the detector registry when it is used.

The choices are looked up when a value is parsed (and the metavar when ``--help`` prints), not
when the command is imported, so a detector added with
:func:`fsvideo.faces.registry.register_detector` is accepted by ``edit``, ``invert``, ``align`` and
``metrics`` without touching the CLI.  The help text lists the detectors registered at import.
"""
from __future__ import annotations

import click


class DetectorName(click.ParamType):
    """A registered detector name or ``auto`` (the list comes from the registry)."""

    name = "detector"

    def get_metavar(self, param, ctx=None) -> str:
        from fsvideo.faces.registry import detector_names
        return "[" + "|".join(detector_names()) + "]"

    def convert(self, value, param, ctx):
        from fsvideo.faces.registry import detector_names
        names = detector_names()
        if value in names:
            return value
        self.fail(f"{value!r} is not one of {', '.join(names)}", param, ctx)


def detector_option(help_prefix: str = "Face detector / landmark backend.", **kwargs):
    """``--detector`` (default ``auto``) with registry-driven choices and help."""
    kwargs.setdefault("default", "auto")
    kwargs.setdefault("show_default", True)
    return click.option("--detector", type=DetectorName(), help=detector_help_text(help_prefix), **kwargs)


def detector_help_text(prefix: str) -> str:
    """The option's help: ``prefix`` and one clause per registered detector (read now)."""
    from fsvideo.faces.registry import detector_help
    return f"{prefix} {detector_help()}."
