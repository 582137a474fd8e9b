"""Declarative chains: ``pipelines/<name>.yaml`` lists stages by registered name, with options.

A pipeline file::

    description: edit the faces of a video
    stages:
      - decode
      - detect
      - track_align
      - encode_video: {key: output}

Each entry is a stage name, or a one-key mapping ``name: {option: value, ...}``.  A stage name
maps to a factory registered with :func:`register_stage`::

    @register_stage("detect")
    def make_detect(components: Components, *, batch_size: int = 1) -> Stage:
        return DetectStage(components.need("detector", "detect"), batch_size=batch_size)

A factory gets the ready-built :class:`~fsvideo.pipeline.components.Components` (stages never
load weights or open files themselves) and its options as typed keyword arguments: those of the
YAML entry, and those the run options map to it (:func:`fsvideo.pipeline.options.stage_options`;
the YAML file wins where both give one).  An unknown key anywhere (top level, a YAML option or a
run option the factory does not take) is a :class:`~fsvideo.errors.ConfigError`, as is a stage
name nobody registered, a stage module that cannot be imported, or a component a stage needs and
was not given.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from fsvideo.errors import ConfigError
from fsvideo.pipeline.components import Components
from fsvideo.pipeline.stage import SourceStage, Stage, check_chain

log = logging.getLogger(__name__)

PIPELINES_DIR = Path(__file__).resolve().parents[2] / "pipelines"

#: Modules that register stages; imported before a chain is built.  Append yours.
STAGE_MODULES: list[str] = [
    "fsvideo.pipeline.video_stages",
    "fsvideo.pipeline.model_stages",
    "fsvideo.pipeline.face_stages",
]

StageFactory = Callable[..., Stage]
_REGISTRY: dict[str, StageFactory] = {}

_TOP_KEYS = ("name", "description", "stages")


def register_stage(name: str) -> Callable[[StageFactory], StageFactory]:
    """Decorator registering ``factory(components, **options) -> Stage`` under ``name``."""
    if not isinstance(name, str) or not name.replace("_", "").isalnum():
        raise ValueError(f"stage name must be a word (letters, digits, _), got {name!r}")

    def deco(factory: StageFactory) -> StageFactory:
        old = _REGISTRY.get(name)
        if old is not None and old is not factory and getattr(old, "__qualname__", None) != factory.__qualname__:
            raise ValueError(f"stage {name!r} is already registered by {old.__module__}.{old.__qualname__}")
        _REGISTRY[name] = factory
        return factory

    return deco


def registered_stages() -> dict[str, StageFactory]:
    """Name -> factory of every registered stage (after importing :data:`STAGE_MODULES`)."""
    _import_stage_modules()
    return dict(_REGISTRY)


def _import_stage_modules() -> None:
    for mod in STAGE_MODULES:
        try:
            spec = importlib.util.find_spec(mod)
        except ModuleNotFoundError:  # its parent package does not exist
            spec = None
        if spec is None:
            raise ConfigError(f"stage module {mod} listed in STAGE_MODULES does not exist",
                              hint="fix the module name or remove it from fsvideo.pipeline.chain.STAGE_MODULES")
        importlib.import_module(mod)


@dataclass
class StageSpec:
    """One entry of a pipeline file."""

    name: str
    options: dict = field(default_factory=dict)


@dataclass
class ChainSpec:
    """A parsed pipeline file."""

    path: Path
    stages: list[StageSpec]
    description: str = ""


def resolve_pipeline(ref: str | os.PathLike) -> Path:
    """``edit`` -> ``pipelines/edit.yaml``; a path to a YAML file is taken as is."""
    p = Path(ref)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"pipeline file {p} not found", hint="check the path")
        return p
    cand = PIPELINES_DIR / f"{ref}.yaml"
    if not cand.is_file():
        known = ", ".join(sorted(q.stem for q in PIPELINES_DIR.glob("*.yaml"))) or "none"
        raise ConfigError(f"unknown pipeline {str(ref)!r}", hint=f"use one of {known} or a YAML path")
    return cand


def load_chain_spec(ref: str | os.PathLike) -> ChainSpec:
    """Parse and check the structure of a pipeline file (not yet the stage names or options)."""
    path = resolve_pipeline(ref)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with a `stages` list")
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(map(str, unknown))}",
                          hint=f"valid keys are {', '.join(_TOP_KEYS)}")
    items = data.get("stages")
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{path}: `stages` must be a non-empty list")
    specs = []
    for i, item in enumerate(items):
        where = f"{path}: stages[{i}]"
        if isinstance(item, str):
            specs.append(StageSpec(item))
        elif isinstance(item, dict) and len(item) == 1:
            (name, opts), = item.items()
            if opts is None:
                opts = {}
            if not isinstance(name, str) or not isinstance(opts, dict):
                raise ConfigError(f"{where}: expected `name` or `name: {{option: value}}`, got {item!r}")
            specs.append(StageSpec(name, dict(opts)))
        else:
            raise ConfigError(f"{where}: expected `name` or `name: {{option: value}}`, got {item!r}")
    return ChainSpec(path=path, stages=specs, description=str(data.get("description") or ""))


def _allowed_options(factory: StageFactory) -> list[str] | None:
    """The keyword options a factory takes (None: any, it has ``**kwargs``)."""
    params = list(inspect.signature(factory).parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                  inspect.Parameter.POSITIONAL_OR_KEYWORD)]


def _check_options(factory: StageFactory, name: str, options: Mapping[str, Any], where: str) -> None:
    allowed = _allowed_options(factory)
    unknown = [] if allowed is None else sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: stage {name!r} has unknown option(s) {', '.join(map(str, unknown))}",
                          hint=f"valid options are {', '.join(allowed) or 'none'}")


def build_chain(yaml_path: str | os.PathLike, components: Components,
                run_options: Mapping[str, Mapping[str, Any]] | None = None, *,
                source_keys: tuple[str, ...] | None = None) -> list[Stage]:
    """Build the stages a pipeline file lists, from ready ``components``, and check the chain once.

    Args:
        yaml_path: ``pipelines/<name>.yaml`` or just ``<name>``.
        components: the ready-built objects the stages use.
        run_options: ``{stage name: {option: value}}`` from the run (see
            :func:`fsvideo.pipeline.options.stage_options`); entries of stages the chain does not
            have are ignored, a name no stage is registered under is an error.
        source_keys: packet keys the source provides when the chain's first stage is not a
            :class:`~fsvideo.pipeline.stage.SourceStage`; None means the first stage is the source.

    Returns:
        the stages, in order; run them with :func:`fsvideo.pipeline.runner.run_chain`.
    """
    if not isinstance(components, Components):
        raise TypeError(f"components must be a fsvideo.pipeline.Components, got {type(components).__name__}")
    spec = load_chain_spec(yaml_path)
    registry = registered_stages()
    run_options = dict(run_options or {})
    unknown = sorted(set(run_options) - set(registry))
    if unknown:
        raise ConfigError(f"run options name unknown stage(s) {', '.join(unknown)}",
                          hint=f"registered stages: {', '.join(sorted(registry))}")
    stages: list[Stage] = []
    for st in spec.stages:
        factory = registry.get(st.name)
        if factory is None:
            known = ", ".join(sorted(registry)) or "none"
            raise ConfigError(f"{spec.path}: unknown stage {st.name!r}", hint=f"registered stages: {known}")
        _check_options(factory, st.name, st.options, str(spec.path))
        from_run = dict(run_options.get(st.name, {}))
        _check_options(factory, st.name, from_run, "run options")
        try:
            stage = factory(components, **{**from_run, **st.options})
        except ConfigError as e:
            raise ConfigError(f"{spec.path}: {e.message}", hint=e.hint) from e
        if not isinstance(stage, Stage):
            raise ConfigError(f"stage factory {st.name!r} returned {type(stage).__name__}, not a Stage")
        if not stage.name or stage.name == Stage.name:
            stage.name = st.name
        stages.append(stage)
    if source_keys is None:
        first = stages[0]
        if not isinstance(first, SourceStage):
            raise ConfigError(f"{spec.path}: the first stage {first.name!r} is not a source",
                              hint="start with a source stage such as decode, or pass source_keys")
        check_chain(stages[1:], first.adds)
    else:
        check_chain(stages, source_keys)
    return stages
