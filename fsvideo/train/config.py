"""Typed training configuration (the ``train:`` section of a YAML config).

Two recipes share every field; a recipe only changes the defaults, and any value written in the
YAML file wins:

* ``paper`` (default) follows the paper (§4, §5.1): batch of 2 real + 2 synthetic images, two
  inversions ``G(w)`` and ``G(w, F)`` with the same noise, pixel MSE on ``G(w)`` of the synthetic
  images (Eq. 2), multi-scale LPIPS on both (Eq. 3), feature reconstruction (Eq. 4), and for faces
  the multi-layer identity (Eq. 6) and face-parsing (Eq. 7) losses; Eq. 5 / Eq. 8 weights.
  The paper names no optimiser: Adam.
* ``official`` reproduces the official trainer (spec §3): 1 real + 1 synthetic image, both
  reconstructions are ``G(w, F)`` (one with random noise, whose synthetic half gets the MSE, one
  with the data noise), ``feature_scale = min(1, iter / 10000)``, Ranger (RAdam + Lookahead +
  gradient centralisation, betas 0.95/0.999, eps 1e-5), and BN frozen after the first epoch.

Example::

    cfg = load_train_config("configs/tiny.yaml")            # TrainConfig
    cfg = load_train_config("configs/ffhq.yaml", recipe="official")
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from fsvideo.config import from_dict, read_yaml, resolve_config_path, to_dict
from fsvideo.errors import ConfigError

RECIPES = ("paper", "official")

# Defaults a recipe changes (user values in the YAML file override them).
RECIPE_DEFAULTS: dict[str, dict] = {
    "paper": {},
    "official": {
        "data": {"real_per_gpu": 1, "synthetic_per_gpu": 1},
        "loss": {"scheme": "official", "feature_scale_ramp": 10000},
        "optim": {"name": "ranger", "betas": [0.95, 0.999], "eps": 1e-5},
        "schedule": {"bn_eval_after_epochs": 1},
    },
}


@dataclass
class RandomGeneratorConfig:
    """A seeded random generator (:func:`fsvideo.models.random_init.random_model`), for tests and tiny runs."""

    size: int = 64
    channel_max: int = 32
    style_dim: int = 64
    n_mlp: int = 2
    seed: int = 0


@dataclass
class ModelSection:
    """The frozen generator and the encoder to train.

    ``generator``: weights-registry name or checkpoint path (pSp, rosinality or plain layout), or
    ``random_generator`` for a seeded random one.  ``encoder_init``: ArcFace IResNet weights (name or
    path) that initialise the backbone, as in the paper; when absent the backbone starts at random
    (logged).  ``encoder_weights``: start from an encoder checkpoint instead (fine-tuning).
    """

    generator: str | None = "stylegan2-ffhq"
    random_generator: RandomGeneratorConfig | None = None
    feature_index: int = 5
    encoder_widths: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    encoder_layers: list[int] = field(default_factory=lambda: [3, 4, 14, 3])
    encoder_stem: int = 64
    encoder_init: str | None = "arcface-r50"
    encoder_weights: str | None = None


@dataclass
class DataSection:
    """Real images from a folder of aligned crops, synthetic ones generated on the fly (paper §4.1).

    ``holdout``: the last N images (sorted by name) are not trained on; they are the real half of
    the sample grids and of the evaluation.  ``cache_images`` keeps the resized real images in
    memory (small folders).
    """

    real_dir: str | None = None
    real_per_gpu: int = 2
    synthetic_per_gpu: int = 2
    synthetic_truncation: float = 1.0
    holdout: int = 0
    cache_images: bool = False
    workers: int = 0


@dataclass
class LossSection:
    """Loss weights (paper Eq. 5 and Eq. 8) and the networks they use.

    ``faces``: add the identity (Eq. 6) and parsing (Eq. 7) losses.  ``scheme``: ``paper`` or
    ``official`` (see the module docstring).  ``use_feature: false`` drops the feature branch
    (ablation B of Table 4): only ``G(w)`` is trained.  ``feature_scale_ramp``: iterations over which
    the blend of ``F`` grows from 0 to 1 (0: always 1).  Networks given by name are optional: a
    missing file turns its loss off with a warning; a missing *path* is an error.
    """

    scheme: Literal["paper", "official"] = "paper"
    faces: bool = True
    use_feature: bool = True
    mse: float = 1.0
    lpips: float = 0.2
    lpips_scales: int = 3
    lpips_net: str | None = "lpips-alex"
    feature: float = 0.01
    identity: float = 0.1
    identity_net: str | None = "arcface-r50"
    identity_resize: Literal["nearest", "area", "bilinear"] = "nearest"
    parsing: float = 0.1
    parsing_net: str | None = "bisenet-19"
    parsing_size: int = 512
    feature_scale_ramp: int = 0


@dataclass
class OptimSection:
    """Optimiser of the encoder.  ``ranger`` = RAdam + Lookahead (k, alpha) + gradient centralisation."""

    name: Literal["adam", "adamw", "radam", "ranger"] = "adam"
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    lookahead_k: int = 6
    lookahead_alpha: float = 0.5
    gradient_centralization: bool = True
    grad_clip: float | None = None


@dataclass
class ScheduleSection:
    """Length and learning-rate schedule (paper: 12 epochs of 10k iterations, lr / 10 for the last 2)."""

    epochs: int = 12
    iters_per_epoch: int = 10000
    lr_decay_epochs: list[int] = field(default_factory=lambda: [10])
    lr_decay: float = 0.1
    bn_eval_after_epochs: int | None = None


@dataclass
class LogSection:
    """Logging: losses every ``every`` steps (JSONL, TensorBoard when installed), checkpoints, samples."""

    every: int = 10
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    sample_every: int = 500
    samples: int = 4
    tensorboard: bool = True


@dataclass
class TrainConfig:
    """Everything a training run needs; saved, resolved, as ``RUN_DIR/config.yaml``."""

    recipe: Literal["paper", "official"] = "paper"
    seed: int = 0
    device: str = "auto"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    log: LogSection = field(default_factory=LogSection)

    @property
    def total_steps(self) -> int:
        return self.schedule.epochs * self.schedule.iters_per_epoch

    def validate(self, where: str = "config") -> "TrainConfig":
        """Check values that types cannot (raises :class:`ConfigError` naming the key)."""
        d, s, o, m, lg = self.data, self.schedule, self.optim, self.model, self.log
        if d.real_per_gpu < 0 or d.synthetic_per_gpu < 0 or d.real_per_gpu + d.synthetic_per_gpu == 0:
            raise ConfigError(f"{where}: data.real_per_gpu + data.synthetic_per_gpu must be > 0",
                              hint="the paper uses 2 + 2")
        if s.epochs < 1 or s.iters_per_epoch < 1:
            raise ConfigError(f"{where}: schedule.epochs and schedule.iters_per_epoch must be >= 1")
        if len(o.betas) != 2:
            raise ConfigError(f"{where}: optim.betas must have two values, got {o.betas}")
        if o.lr <= 0:
            raise ConfigError(f"{where}: optim.lr must be > 0, got {o.lr}")
        if m.generator is None and m.random_generator is None:
            raise ConfigError(f"{where}: set model.generator (name or path) or model.random_generator")
        if len(m.encoder_widths) != 4 or len(m.encoder_layers) != 4:
            raise ConfigError(f"{where}: model.encoder_widths and model.encoder_layers need 4 values each")
        if d.workers < 0 or d.holdout < 0:
            raise ConfigError(f"{where}: data.workers and data.holdout must be >= 0, got {d.workers} and {d.holdout}")
        rg = m.random_generator
        if rg is not None:
            if rg.size < 32 or rg.size & (rg.size - 1):
                raise ConfigError(f"{where}: model.random_generator.size must be a power of two >= 32, got {rg.size}",
                                  hint="e.g. 64")
            for key in ("channel_max", "style_dim", "n_mlp"):
                if getattr(rg, key) < 1:
                    raise ConfigError(f"{where}: model.random_generator.{key} must be >= 1")
        if self.loss.lpips_scales < 1:
            raise ConfigError(f"{where}: loss.lpips_scales must be >= 1")
        for key in ("every", "checkpoint_every", "sample_every"):
            if getattr(lg, key) < 1:
                raise ConfigError(f"{where}: log.{key} must be >= 1")
        return self


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def train_config_from_dict(data: dict | None, where: str = "config", *, recipe: str | None = None,
                           overrides: dict | None = None) -> TrainConfig:
    """Build a :class:`TrainConfig` from the ``train:`` mapping: recipe defaults, then ``data``, then ``overrides``."""
    data = dict(data or {})
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the train section must be a mapping")
    if overrides:
        data = _deep_merge(data, overrides)
    if recipe is not None:
        data["recipe"] = recipe
    name = data.get("recipe", "paper")
    if name not in RECIPES:
        raise ConfigError(f"{where}.recipe: {name!r} is not one of {', '.join(RECIPES)}")
    merged = _deep_merge(RECIPE_DEFAULTS[name], data)
    return from_dict(TrainConfig, merged, where).validate(where)


def load_train_config(path: str | Path, *, recipe: str | None = None, overrides: dict | None = None) -> TrainConfig:
    """Read the ``train:`` section of a YAML config (a path or a bundled name such as ``tiny``).

    An unknown key raises :class:`ConfigError` naming the file and the key.  When the file also has
    a ``model:`` section (as ``configs/ffhq.yaml``), its ``generator`` and ``feature_index`` are the
    defaults of ``train.model``.  Relative paths (``data.real_dir``, weight files) are relative to
    the config file's folder; the resolved config saved in a run holds absolute ones.
    """
    p = resolve_config_path(path)
    raw = read_yaml(p)
    unknown = sorted(set(raw) - {"train", "model"})
    if unknown:
        raise ConfigError(f"{p.name}: unknown top-level key(s) {', '.join(unknown)}",
                          hint="a training config has a `train:` section (and optionally `model:`)")
    if "train" not in raw:
        raise ConfigError(f"{p} has no `train:` section", hint="see configs/tiny.yaml for a training config")
    train = raw["train"] or {}
    if not isinstance(train, dict):
        raise ConfigError(f"{p.name}:train must be a mapping")
    model = raw.get("model") or {}
    if isinstance(model, dict):
        tm = dict(train.get("model") or {})
        if "generator" in model and "generator" not in tm and "random_generator" not in tm:
            tm["generator"] = model["generator"]
        if "feature_index" in model and "feature_index" not in tm:
            tm["feature_index"] = model["feature_index"]
        if tm:
            train = dict(train, model=tm)
    train = _paths_relative_to(train, p.resolve().parent)
    return train_config_from_dict(train, f"{p.name}:train", recipe=recipe, overrides=overrides)


_PATH_KEYS = (("data", "real_dir"), ("model", "generator"), ("model", "encoder_init"), ("model", "encoder_weights"),
              ("loss", "lpips_net"), ("loss", "identity_net"), ("loss", "parsing_net"))


def _looks_like_path(v: str) -> bool:
    return "/" in v or "\\" in v or Path(v).suffix.lower() in (".pt", ".pth", ".safetensors", ".ckpt", ".tar", ".bin")


def _paths_relative_to(train: dict, base: Path) -> dict:
    """Relative paths in a config file are relative to the file's folder (registry names are kept)."""
    out = copy.deepcopy(train)
    for section, key in _PATH_KEYS:
        sec = out.get(section)
        if isinstance(sec, dict) and isinstance(sec.get(key), str):
            v = sec[key]
            if (key == "real_dir" or _looks_like_path(v)) and not Path(v).expanduser().is_absolute():
                sec[key] = str((base / Path(v).expanduser()).resolve())
    return out


def dump_train_config(cfg: TrainConfig) -> str:
    """The resolved config as YAML text (``{"train": ...}``), loadable by :func:`load_train_config`."""
    return yaml.safe_dump({"train": to_dict(cfg)}, sort_keys=False, default_flow_style=False, width=1000)
