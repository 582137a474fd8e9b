"""Every feature index K works (issue 10.1): the generator's F shape, the identity G(w, G^K(w)) = G(w),
the encoder's F, the trainer's losses, and a loaded encoder used with another K."""
from __future__ import annotations

import pytest
import torch
from train_helpers import nets_for, tiny_config

from fsvideo.errors import ConfigError
from fsvideo.models.encoder import FeatureStyleEncoder
from fsvideo.models.fse import FeatureStyleModel
from fsvideo.models.stylegan2 import Generator
from fsvideo.train.data import make_batch
from fsvideo.train.trainer import Trainer


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(0)
    G = Generator(64, style_dim=16, n_mlp=1, channel_max=8).eval().requires_grad_(False)
    for conv in [G.conv1, *G.convs]:
        conv.noise.weight.fill_(0.1)
    return G


def test_feature_indices_cover_every_layer_that_feeds_a_convolution(gen):
    # 64 px: outs = const, conv1 (4 px), then a pair per resolution 8, 16, 32, 64 -> 9 layers
    assert gen.num_layers == 9 and list(gen.feature_indices) == list(range(1, 9))
    sides = [gen.feature_shape(k)[1] for k in gen.feature_indices]
    assert sides == [4, 8, 8, 16, 16, 32, 32, 64]               # K = 4 is 16 px (the old formula said 8)
    for bad in (0, gen.num_layers):
        with pytest.raises(ValueError, match="feature index K must be in 1..8"):
            gen.feature_shape(bad)


@pytest.mark.parametrize("k", range(1, 9))
def test_injecting_own_activation_is_identity_for_every_k(gen, k):
    g = torch.Generator().manual_seed(k)
    w = gen.mapping(torch.randn(2, gen.style_dim, generator=g))
    noise = gen.make_noise(seed=1)
    base, outs = gen(w, noise=noise, return_features=True)
    gk = gen.features(w, noise=noise, k=k)
    assert tuple(gk.shape[1:]) == gen.feature_shape(k) == tuple(outs[k].shape[1:])
    assert torch.equal(gk, outs[k])
    torch.testing.assert_close(gen(w, noise=noise, features_in=gk, k=k), base, atol=1e-6, rtol=0)
    # ... and F at layer K really is used: another code changes the image
    other = gen(w, noise=noise, features_in=gk + torch.randn(gk.shape, generator=g), k=k)
    assert float((other - base).abs().max()) > 1e-3


@pytest.mark.parametrize("k", range(1, 9))
def test_model_resizes_the_encoders_feature_code_to_layer_k(gen, k):
    c = gen.feature_shape(k)[0]
    E = FeatureStyleEncoder(n_styles=gen.n_latent, style_dim=gen.style_dim, widths=(4, 8, 8, 16), layers=(1, 1, 1, 1),
                            feature_channels=c, stem_channels=4).eval()
    assert E.feature_size == 16                                  # a loaded state dict does not record K
    model = FeatureStyleModel(E, gen, torch.zeros(gen.n_latent, gen.style_dim), k=k)
    w, f = model.encode(torch.rand(1, 3, 256, 256) * 2 - 1)
    assert tuple(f.shape[1:]) == gen.feature_shape(k)
    assert model.decode(w, f, gen.make_noise(0)).shape == (1, 3, 64, 64)


def test_official_strides_for_16_and_32_px():
    E = FeatureStyleEncoder(n_styles=2, style_dim=8, widths=(4, 8, 8, 16), layers=(1, 1, 1, 1), feature_channels=8,
                            stem_channels=4)
    assert E.content_layer[4].stride == (2, 2)                   # fs_stride 2: K = 4, 5
    E.set_feature_size(32)
    assert E.content_layer[4].stride == (1, 1)                   # fs_stride 1: K = 6, 7
    with pytest.raises(ValueError, match="power of two"):
        E.set_feature_size(12)


@pytest.mark.parametrize("k", range(1, 7))
def test_trainer_builds_an_encoder_whose_feature_code_fits(k, tmp_path):
    # tiny config: 32 px generator -> layers 1..6 (4, 8, 8, 16, 16, 32 px)
    cfg = tiny_config(None, model={"feature_index": k}, data={"real_per_gpu": 0, "synthetic_per_gpu": 2})
    t = Trainer(cfg, tmp_path / "run", nets=nets_for(cfg))
    assert t.E.feature_size == t.G.feature_shape(k)[1]
    batch = make_batch(t.G, torch.zeros(0, 3, t.G.size, t.G.size), 2, seed=0, rank=0, step=0)
    _, f = t._encode(batch.x)
    assert tuple(f.shape[1:]) == t.G.feature_shape(k)
    terms = t.compute_losses(batch, step=10 ** 6)
    assert torch.isfinite(terms["total"]) and float(terms["feature"].detach()) > 0
    terms["total"].backward()
    assert t.E.content_layer[1].weight.grad is not None


def test_trainer_rejects_a_layer_the_generator_lacks(tmp_path):
    cfg = tiny_config(None, model={"feature_index": 7}, data={"real_per_gpu": 0, "synthetic_per_gpu": 1})
    with pytest.raises(ConfigError, match="model.feature_index is 7; a 32 px generator has layers 1..6"):
        nets_for(cfg)
