"""Face options shared by the commands: ``--detector`` (from the detector registry) and ``--stabilize``.

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


class StabilizeValue(click.ParamType):
    """``--stabilize``: seconds of landmark smoothing (0: off) or a stabiliser name (``official``)."""

    name = "stabilize"

    def get_metavar(self, param, ctx=None) -> str:
        from fsvideo.faces.stabilize import STABILIZERS
        return "SECONDS|" + "|".join(s for s in STABILIZERS if s != "fsvideo")

    def convert(self, value, param, ctx):
        from fsvideo.errors import InputError
        from fsvideo.faces.stabilize import parse_stabilize
        try:
            parse_stabilize(value)
        except InputError as e:
            self.fail(str(e), param, ctx)
        return value if isinstance(value, str) and not _is_number(value) else float(value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


#: ``--help`` of ``--stabilize`` (edit, invert, align): what the default is and how it differs
#: from the official filter (numbers: benchmarks/faces.py, see the README).
STABILIZE_HELP = (
    "Temporal stabilisation of the landmarks and crops. SECONDS: fsvideo's stabiliser, optical-flow "
    "refinement then a Gaussian-weighted local linear fit with sigma SECONDS on the landmarks and twice "
    "that on the crop quads, truncated at 2 sigmas (0.03 s is about 1 frame at 30 fps: lighter than "
    "the official filter, no lag at the ends of a shot); 0: off. 'official': the official pipeline's "
    "filter, flow weight exp(-d^2/100) in pixels and gaussian_filter1d with sigma 3 frames (landmarks) "
    "and 6 frames (quads), whatever the frame rate: it smooths away real head motion, so on the shared "
    "test clips the face moves more inside the crop than with the default (see the README).")
