"""The Feature-Style model: encoder + generator + ``latent_avg``, the unit every stage is handed.

Shapes for the released FFHQ model (1024 px, K = 5; ``F`` is ``generator.feature_shape(K)`` for other K)::

    x  [N, 3, 1024, 1024] in [-1, 1]  --encode-->  w [N, 18, 512], F [N, 512, 16, 16]
    w, F, noise                        --decode-->  image [N, 3, 1024, 1024] (raw generator range)
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from fsvideo.models.encoder import FeatureStyleEncoder
from fsvideo.models.stylegan2 import Generator


class FeatureStyleModel(nn.Module):
    """Encoder and generator of one Feature-Style inversion model.

    Args:
        encoder: predicts ``(w_offset, F)``.
        generator: the pretrained StyleGAN2 the encoder was trained for.
        latent_avg: [n_latent, style_dim] added to ``w_offset``.
        k: feature index K where ``F`` replaces the generator's activation (5; any of
            ``generator.feature_indices``).  The encoder's ``F`` is resized to that layer's side.
    """

    def __init__(self, encoder: FeatureStyleEncoder, generator: Generator, latent_avg: Tensor, k: int = 5):
        super().__init__()
        if encoder.n_styles != generator.n_latent:
            raise ValueError(f"encoder predicts {encoder.n_styles} W+ rows, generator needs {generator.n_latent}")
        c, h, _ = generator.feature_shape(k)
        if encoder.config["feature_channels"] != c:
            raise ValueError(f"encoder F has {encoder.config['feature_channels']} channels, generator layer {k} has {c}")
        if encoder.feature_size != h:       # a state dict does not record K: the side follows the generator's layer K
            encoder.set_feature_size(h)
        self.encoder, self.generator, self.k = encoder, generator, k
        self.register_buffer("latent_avg", latent_avg.detach().clone().float())

    @property
    def resolution(self) -> int:
        return self.generator.size

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [N, 3, S, S] in [-1, 1] (S = 256 * 2**n) -> (w [N, n_latent, 512], F [N, *feature_shape(K)])."""
        w_offset, f = self.encoder(x)
        return w_offset + self.latent_avg.to(w_offset.dtype), f

    def decode(self, w: Tensor, f: Tensor | None = None, noise: Sequence[Tensor] | None = None,
               feature_scale: float = 1.0) -> Tensor:
        """G(w, F) (or G(w) when ``f`` is None): [N, 3, size, size] in the raw generator range."""
        return self.generator(w, noise=noise, features_in=f, feature_scale=feature_scale, k=self.k)

    def features(self, w: Tensor, noise: Sequence[Tensor] | None = None) -> Tensor:
        """G^K(w), running the generator only up to layer K."""
        return self.generator.features(w, noise=noise, k=self.k)

    def make_noise(self, seed: int = 0) -> list[Tensor]:
        p = self.latent_avg
        return self.generator.make_noise(seed, device=p.device)

    def invert(self, x: Tensor, noise: Sequence[Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Encode and decode: ``(G(w, F), w, F)``."""
        w, f = self.encode(x)
        return self.decode(w, f, noise), w, f


def to_model_input(images: Tensor) -> Tensor:
    """uint8 [N, H, W, 3] RGB -> float32 [N, 3, H, W] in [-1, 1] (``ToTensor`` + ``Normalize(0.5, 0.5)``)."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}")
    x = images.permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.5) / 0.5


def to_uint8(x: Tensor) -> Tensor:
    """[N, 3, H, W] generator output -> uint8 [N, H, W, 3]: clamp to [-1, 1], map to 0..255, round."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
