"""Seeded random Feature-Style models of any size, in the official checkpoint formats.

Used by ``fsvideo doctor`` (a full pipeline run before any download), by the tests and by the
benchmarks.  The networks are the real classes with fewer channels; the images they make look
like coloured noise, but every path of the pipeline carries signal.
"""
from __future__ import annotations

import collections
import math
from pathlib import Path

import torch

from fsvideo.models.encoder import FeatureStyleEncoder
from fsvideo.models.fse import FeatureStyleModel
from fsvideo.models.stylegan2 import Generator


@torch.no_grad()
def random_model(size: int = 64, *, channel_max: int = 32, style_dim: int = 64, n_mlp: int = 2,
                 enc_widths=(8, 16, 16, 32), enc_layers=(1, 1, 1, 1), seed: int = 0) -> FeatureStyleModel:
    """A small seeded FeatureStyleModel (eval mode, CPU, float32).

    The defaults make a 64 px generator with 32 channels and a 4-stage encoder with one block per
    stage: a forward pass takes milliseconds on a CPU.  ``size=1024, channel_max=512, style_dim=512,
    n_mlp=8, enc_widths=(64, 128, 256, 512), enc_layers=(3, 4, 14, 3)`` is the released architecture.
    """
    torch.manual_seed(seed)
    G = Generator(size, style_dim=style_dim, n_mlp=n_mlp, channel_multiplier=2, channel_max=channel_max)
    fch = G.feature_shape(5)[0]
    E = FeatureStyleEncoder(n_styles=G.n_latent, style_dim=style_dim, widths=enc_widths, layers=enc_layers,
                            feature_channels=fch, stem_channels=enc_widths[0])
    # small style heads keep w near latent_avg, as a trained encoder does
    for head in E.styles:
        head.weight.mul_(0.1)
        head.bias.zero_()
    # non-zero noise strengths (zeros at init) so that the noise, and fixing it, matters
    for conv in [G.conv1, *G.convs]:
        conv.noise.weight.fill_(0.1)
    # keep images in about [-1, 1] so that they survive the uint8 round trip
    for rgb in [G.to_rgb1, *G.to_rgbs]:
        rgb.conv.weight.mul_(0.15)
    w_avg = G.mean_latent(512, seed=seed)
    model = FeatureStyleModel(E, G, w_avg[None].repeat(G.n_latent, 1))
    model.eval().requires_grad_(False)
    _calibrate_bn(model, seed)
    return model


@torch.no_grad()
def _calibrate_bn(model: FeatureStyleModel, seed: int) -> None:
    """Set the encoder's BN running statistics from one train-mode pass over generated images."""
    E, G = model.encoder, model.generator
    g = torch.Generator().manual_seed(seed + 1)
    z = torch.randn(4, G.style_dim, generator=g)
    imgs = G(G.mapping(z), noise=G.make_noise(seed)).clamp(-1, 1)
    s = 256 * 2 ** max(0, int(math.log2(max(G.size, 256) // 256)))
    imgs = torch.nn.functional.interpolate(imgs, size=(s, s), mode="bilinear", align_corners=False)
    for m in E.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    smooth = torch.nn.functional.interpolate(torch.rand(4, 3, 8, 8, generator=g) * 2 - 1, size=(s, s),
                                             mode="bilinear", align_corners=False)
    batch = torch.cat([imgs, smooth])
    E.train()
    E(batch)
    E.eval()
    for m in E.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    # match F's statistics to the generator's own G^K(w), as a trained encoder does (Eq. 4)
    w, f = model.encode(batch)
    gk = model.features(w, noise=G.make_noise(seed))
    bn = E.content_layer[5]
    ratio = gk.std() / f.std()
    bn.weight.mul_(ratio)
    bn.bias.mul_(ratio).add_(gk.mean() - f.mean() * ratio)


def save_official_checkpoints(model: FeatureStyleModel, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``encoder.pt`` (plain state dict, the ``143_enc.pth`` layout) and ``generator.pt``
    (a pSp checkpoint: ``{'state_dict': {'decoder.*'}, 'latent_avg', 'opts'}``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    enc, gen = out / "encoder.pt", out / "generator.pt"
    torch.save(collections.OrderedDict(model.encoder.state_dict()), enc)
    sd = collections.OrderedDict(("decoder." + k, v) for k, v in model.generator.state_dict().items())
    torch.save({"state_dict": sd, "latent_avg": model.latent_avg.clone(), "opts": {"output_size": model.resolution}}, gen)
    return enc, gen
