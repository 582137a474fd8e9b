"""Typed configs: YAML files map onto dataclasses; an unknown key or a wrong type is an error.

``configs/ffhq.yaml`` (model choices) is read into :class:`ModelConfig`::

    cfg = load_config("configs/ffhq.yaml", ModelConfig, section="model")
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fsvideo.errors import ConfigError

T = TypeVar("T")

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
#: the top-level sections of a config file (``configs/ffhq.yaml`` has both)
CONFIG_SECTIONS = ("model", "train")


def from_dict(cls: type[T], data: dict | None, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclasses.

    Raises :class:`ConfigError` naming ``where`` and the key for unknown keys and wrong types.
    """
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}",
                          hint=f"valid keys are {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} does not fit {tp}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        out = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return out if origin is list else tuple(out)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(kt, k, where): _coerce(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typing.get_origin(tp) is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp) or (tp in (int, float) and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} not found", hint=f"see the files in {CONFIG_DIR}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML ({e.__class__.__name__})", hint="check its indentation") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p} is not a UTF-8 text file ({e.reason} at byte {e.start})",
                          hint="save the config as UTF-8 YAML") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return data


def load_config(path: str | Path, cls: type[T], section: str | None = None) -> T:
    """Read ``path`` (YAML) into ``cls``; with ``section`` only that top-level key is read."""
    data = read_yaml(path)
    if section is not None:
        unknown = sorted(map(str, set(data) - set(CONFIG_SECTIONS)))
        if unknown:     # a misspelt section would be ignored, and the defaults used instead of the file
            raise ConfigError(f"{Path(path).name}: unknown top-level key(s) {', '.join(unknown)}",
                              hint=f"a config has the sections {', '.join(CONFIG_SECTIONS)}")
        if data and section not in data:  # e.g. a training config given to `fsvideo edit`: the defaults would run
            raise ConfigError(f"{Path(path).name} has no `{section}:` section (it holds `{'`, `'.join(map(str, data))}`)",
                              hint=f"pass a config with a `{section}:` section, e.g. --config ffhq")
        data = data.get(section, {})
    return from_dict(cls, data, f"{Path(path).name}" + (f":{section}" if section else ""))


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


@dataclass
class ModelConfig:
    """Which networks and directions a pipeline uses (``model:`` of ``configs/ffhq.yaml``).

    ``generator`` and ``encoder`` are weights-registry names or file paths.  ``directions`` maps an
    attribute name (``--attr smile``) to a registry name or a ``.npy`` path.  ``edit_step`` is the
    scale of a unit direction in Eq. 1 (``w~ = w + edit_step * s * d``; 15 officially).
    """

    name: str = "ffhq"
    resolution: int = 1024
    feature_index: int = 5
    generator: str = "stylegan2-ffhq"
    encoder: str = "fse-ffhq"
    directions: dict[str, str] = field(default_factory=lambda: {
        "smile": "direction-smile", "makeup": "direction-makeup", "eyeglasses": "direction-eyeglasses"})
    edit_step: float = 15.0
    face_parser: str | None = "bisenet-19"


def resolve_config_path(name_or_path: str | Path) -> Path:
    """``ffhq`` -> ``configs/ffhq.yaml`` (bundled), else the path itself."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    bundled = CONFIG_DIR / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    raise ConfigError(f"no config named {name_or_path!r}",
                      hint=f"pass a YAML path or one of: {', '.join(sorted(x.stem for x in CONFIG_DIR.glob('*.yaml')))}")
