"""Lazy package exports: ``from fsvideo import edit_video`` imports the module only when asked.

Used by every package ``__init__`` that re-exports names, so ``import fsvideo`` (and ``fsvideo
--help``) stays light::

    __getattr__, __dir__ = lazy_exports(__name__, {"LPIPS": "fsvideo.metrics.perceptual"}, globals())
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str], namespace: dict) -> tuple[Callable, Callable]:
    """Module ``__getattr__`` and ``__dir__`` for ``exports`` (name -> module that defines it)."""
    exports = dict(exports)

    def __getattr__(name: str):
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
            namespace[name] = value          # cached: the next access is a plain attribute
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
