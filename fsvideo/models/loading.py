"""Load released checkpoints safely and strictly.

Every file is read with ``torch.load(..., weights_only=True)`` (or safetensors): loading never
executes code.  Architectures are read off the state dict, so the same code loads the released
1024 px models and tiny test models.  Missing or unexpected keys raise a
:class:`~fsvideo.errors.WeightsError` that lists them.

Generator formats understood:

* pSp checkpoint ``{'state_dict': {'decoder.*': ..., 'encoder.*': ...}, 'latent_avg', 'opts'}``
  (``psp_ffhq_encode.pt``; the pSp encoder entries are ignored);
* rosinality checkpoint ``{'g_ema': ..., 'g': ..., 'd': ..., 'latent_avg': (512,)}``
  (``stylegan2-ffhq-config-f.pt``);
* a plain generator state dict, or fsvideo's own ``{'generator': sd, 'latent_avg': ...}``.

Encoder format: the plain ``fs_encoder_v2`` state dict (``143_enc.pth``).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from fsvideo.errors import WeightsError
from fsvideo.models.encoder import FeatureStyleEncoder
from fsvideo.models.fse import FeatureStyleModel
from fsvideo.models.stylegan2 import Generator

log = logging.getLogger(__name__)


def read_checkpoint(src, *, mmap: bool = True) -> Any:
    """Read a checkpoint (``.pt``/``.pth``/``.tar``/``.safetensors``) without executing code: THE safe reader.

    Every weights file fsvideo reads goes through here (or the numpy-only unpickler of
    :mod:`fsvideo.models.lpips_net`, or ``np.load(allow_pickle=False)``).  ``torch.load`` runs with
    ``weights_only=True``; the only class allowed beyond tensors and containers is
    ``argparse.Namespace``, which some pSp forks store as ``opts`` and which only holds attributes.
    Zip-format files are memory-mapped (``mmap=True``): tensors are paged in from the file when
    used instead of being copied into memory first, so entries a loader skips (the pSp encoder in
    ``psp_ffhq_encode.pt``) cost nothing.  A network loaded so keeps using the file's pages: the file
    may be replaced (fsvideo always writes to a temporary name and renames) but must not be
    truncated in place while that network is alive.  Anything unreadable, including a pickle that names
    another global, is a :class:`WeightsError` naming the file.

    Args:
        src: a path, or an already-read mapping (returned as it is).
        mmap: map zip-format files instead of reading them into memory.
    """
    if isinstance(src, Mapping):
        return src
    path = Path(src)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file", hint="check the path or run `fsvideo weights list`")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - report any parse error as a weights error
            raise WeightsError(f"{path} is not a valid safetensors file ({e})",
                               hint="download it again with `fsvideo weights download --force`") from e
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals([argparse.Namespace]):
            warnings.simplefilter("ignore", UserWarning)     # old pickle protocols of legacy (pre-1.6) files
            return torch.load(str(path), map_location="cpu", weights_only=True,
                              mmap=mmap and zipfile.is_zipfile(path))
    except Exception as e:  # noqa: BLE001 - a forbidden global, a truncated file, not a checkpoint at all
        raise WeightsError(f"{path} cannot be read as weights ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                           hint="the file may be truncated, tampered with or not a PyTorch checkpoint; "
                                "download it again") from e


def empty(factory: Callable[[], nn.Module]) -> nn.Module:
    """Build a network on the ``meta`` device: its shapes without memory or random initialisation.

    :func:`load_strict` then gives it the checkpoint's tensors, so loading never holds a randomly
    initialised copy of the weights beside the real ones.
    """
    with torch.device("meta"):
        return factory()


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> nn.Module:
    """``module.load_state_dict(state_dict, strict=True)`` with an error that lists the differences.

    When every tensor already has the module's dtype, the module takes the checkpoint's tensors
    (``assign=True``) instead of copying them, so a (memory-mapped) checkpoint is not held twice.
    A module built by :func:`empty` always takes them (cast to its dtypes where they differ).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {list(state_dict[k].shape)} vs {list(own[k].shape)}" for k in own
              if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        def few(xs):
            return ", ".join(xs[:6]) + (f" (+{len(xs) - 6} more)" if len(xs) > 6 else "")
        parts = []
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {few(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {few(shapes)}")
        raise WeightsError(f"{what}: checkpoint does not match the network ({'; '.join(parts)})",
                           hint="check that the file is the right model for this registry entry")
    on_meta = any(t.is_meta for t in own.values())
    if on_meta:
        state_dict = {k: v if v.dtype == own[k].dtype else v.to(own[k].dtype) for k, v in state_dict.items()}
    assign = on_meta or all(v.dtype == own[k].dtype and v.device == own[k].device for k, v in state_dict.items())
    del own
    module.load_state_dict(state_dict, strict=True, assign=assign)
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:   # a tensor outside the state dict (a non-persistent buffer): a network that cannot be built empty
        raise RuntimeError(f"{what}: {', '.join(left[:4])} not in the state dict; build it without `empty`")
    return module


def load_network(src, build: Callable[[Mapping[str, torch.Tensor]], nn.Module], *, what: str, marker: str,
                 layout: str, device: torch.device | str = "cpu") -> nn.Module:
    """Read a state dict safely, build the network it describes, load it strictly -> eval, no gradients.

    The one shape of every "plain state dict" loader (ArcFace, BiSeNet, FAN, S3FD).

    Args:
        src: a path or an already-read state dict.
        build: ``build(state_dict) -> nn.Module`` (reads the architecture off the state dict).
        what: the network's name in messages (``"ArcFace"``).
        marker: a key every state dict of this network has; without it the file is the wrong one.
        layout: the expected layout, for the hint (``"the arcface_torch backbone.pth layout"``).
    """
    sd = read_checkpoint(src)
    if not isinstance(sd, Mapping) or marker not in sd:
        keys = ", ".join(map(str, list(sd)[:5])) if isinstance(sd, Mapping) else type(sd).__name__
        where = f"{src}: " if not isinstance(src, Mapping) else ""
        article = "an" if what[:1] in "AEIOU" else "a"
        raise WeightsError(f"{where}not {article} {what} state dict (found: {keys})", hint=f"expected {layout}")
    net = load_strict(empty(lambda: build(sd)), sd, what)
    return net.eval().requires_grad_(False).to(device)


def _count(sd: Mapping[str, Any], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def generator_state_dict(obj: Any) -> tuple["OrderedDict[str, torch.Tensor]", torch.Tensor | None]:
    """Plain generator state dict and ``latent_avg`` (or None) from any supported format."""
    if not isinstance(obj, Mapping):
        raise WeightsError(f"generator checkpoint is a {type(obj).__name__}, expected a dict")
    latent_avg = obj.get("latent_avg")
    if "state_dict" in obj and any(k.startswith("decoder.") for k in obj["state_dict"]):      # pSp
        sd = OrderedDict((k[len("decoder."):], v) for k, v in obj["state_dict"].items() if k.startswith("decoder."))
    elif "g_ema" in obj:                                                                       # rosinality
        sd = OrderedDict(obj["g_ema"])
    elif "generator" in obj and isinstance(obj["generator"], Mapping):                         # fsvideo
        sd = OrderedDict(obj["generator"])
    elif "style.1.weight" in obj:                                                              # plain
        sd = OrderedDict((k, v) for k, v in obj.items() if k != "latent_avg")
    else:
        keys = ", ".join(list(obj)[:5])
        raise WeightsError(f"not a StyleGAN2 generator checkpoint (top-level keys: {keys})",
                           hint="expected a pSp (state_dict/decoder.*), rosinality (g_ema) or plain state dict")
    if isinstance(latent_avg, torch.Tensor):
        latent_avg = latent_avg.detach().float()
    else:
        latent_avg = None
    return sd, latent_avg


def generator_config(sd: Mapping[str, torch.Tensor]) -> dict:
    """Generator constructor arguments read off a state dict."""
    try:
        n_rgbs = _count(sd, r"to_rgbs\.(\d+)\.")
        size = 2 ** (n_rgbs + 2)
        channels = {4: int(sd["input.input"].shape[1])}
        for j in range(n_rgbs):
            channels[2 ** (j + 3)] = int(sd[f"convs.{2 * j}.conv.weight"].shape[1])
        return dict(size=size, style_dim=int(sd["style.1.weight"].shape[0]),
                    n_mlp=_count(sd, r"style\.(\d+)\.weight"), channels=channels)
    except KeyError as e:
        raise WeightsError(f"generator state dict lacks {e}",
                           hint="is this a StyleGAN2 (rosinality layout) file?") from e


@contextlib.contextmanager
def _naming(src):
    """A WeightsError about the contents of checkpoint file ``src`` names the file (the user may have
    passed several: --generator and --encoder)."""
    try:
        yield
    except WeightsError as e:
        if isinstance(src, (str, os.PathLike)) and str(src) not in e.message:
            e.message = f"{src}: {e.message}"
            e.args = (e.message,)
        raise


def load_generator_checkpoint(src, *, device: torch.device | str = "cpu") -> tuple[Generator, torch.Tensor]:
    """Build a :class:`Generator` from a checkpoint and load it strictly.

    Returns ``(generator in eval mode, latent_avg [n_latent, style_dim])``.  A rosinality
    ``latent_avg`` of shape (512,) is repeated to every W+ row; when the file has none it is
    estimated from 4096 mapped samples (and logged).
    """
    with _naming(src):
        return _load_generator_checkpoint(src, device=device)


def _load_generator_checkpoint(src, *, device) -> tuple[Generator, torch.Tensor]:
    sd, latent_avg = generator_state_dict(read_checkpoint(src))
    G = empty(lambda: Generator(**generator_config(sd)))
    load_strict(G, sd, "generator")
    G.eval().requires_grad_(False)
    if latent_avg is None:
        log.warning("generator checkpoint has no latent_avg; estimating it from 4096 samples")
        latent_avg = G.mean_latent(4096)
    if latent_avg.ndim == 1:
        latent_avg = latent_avg[None].repeat(G.n_latent, 1)
    if tuple(latent_avg.shape) != (G.n_latent, G.style_dim):
        raise WeightsError(f"latent_avg has shape {list(latent_avg.shape)}, expected "
                           f"[{G.n_latent}, {G.style_dim}] or [{G.style_dim}]")
    return G.to(device), latent_avg.to(device)


def encoder_config(sd: Mapping[str, torch.Tensor]) -> dict:
    """Encoder constructor arguments read off an ``fs_encoder_v2`` state dict."""
    try:
        widths = [int(sd[f"block_{i}.0.conv1.weight"].shape[0]) for i in range(1, 5)]
        layers = [_count(sd, rf"block_{i}\.(\d+)\.conv1\.weight") for i in range(1, 5)]
        return dict(n_styles=_count(sd, r"styles\.(\d+)\.weight"), style_dim=int(sd["styles.0.weight"].shape[0]),
                    widths=widths, layers=layers, feature_channels=int(sd["content_layer.1.weight"].shape[0]),
                    stem_channels=int(sd["conv.0.weight"].shape[0]))
    except KeyError as e:
        raise WeightsError(f"encoder state dict lacks {e}",
                           hint="is this a Feature-Style encoder (143_enc.pth layout) file?") from e


def load_encoder_checkpoint(src, n_styles: int | None = None, *,
                            device: torch.device | str = "cpu") -> FeatureStyleEncoder:
    """Build a :class:`FeatureStyleEncoder` from a checkpoint and load it strictly (eval mode)."""
    with _naming(src):
        return _load_encoder_checkpoint(src, n_styles, device=device)


def _load_encoder_checkpoint(src, n_styles: int | None, *, device) -> FeatureStyleEncoder:
    obj = read_checkpoint(src)
    if isinstance(obj, Mapping) and "encoder" in obj and isinstance(obj["encoder"], Mapping):
        obj = obj["encoder"]
    if not isinstance(obj, Mapping) or "conv.0.weight" not in obj:
        raise WeightsError("not a Feature-Style encoder state dict (no `conv.0.weight`)",
                           hint="expected the 143_enc.pth layout")
    cfg = encoder_config(obj)
    if n_styles is not None and n_styles != cfg["n_styles"]:
        raise WeightsError(f"encoder predicts {cfg['n_styles']} W+ rows but the generator needs {n_styles}",
                           hint="use an encoder trained for this generator")
    E = empty(lambda: FeatureStyleEncoder(**cfg))
    load_strict(E, obj, "encoder")
    return E.eval().requires_grad_(False).to(device)


def load_feature_style_model(generator, encoder, *, feature_index: int = 5, resolution: int | None = None,
                             device: torch.device | str = "cpu") -> FeatureStyleModel:
    """Load a generator and an encoder checkpoint (paths or state dicts) into a FeatureStyleModel (eval).

    Args:
        generator, encoder: checkpoint files (see the formats above) or their loaded objects.  Names
            of the weights store are resolved by the caller (models never read the store).
        feature_index: K, the generator layer whose features F replace (Eq. 1, Sec. 3 of the paper).
        resolution: when given, the generator's size must equal it (a config names a 1024 px
            model and the file is another one: a clear error instead of misaligned crops).
        device: where the model goes.
    """
    G, latent_avg = load_generator_checkpoint(generator)
    if resolution is not None and G.size != resolution:
        from fsvideo.errors import InputError
        raise InputError(f"generator {generator} is {G.size} px but the config says {resolution}",
                         hint="fix `resolution` in the config")
    E = load_encoder_checkpoint(encoder, n_styles=G.n_latent)
    model = FeatureStyleModel(E, G, latent_avg, k=feature_index)
    return model.eval().requires_grad_(False).to(device)
