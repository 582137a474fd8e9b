"""Properties of the networks and of Eq. 1, on tiny seeded random models of the real classes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fsvideo.edits import EditSpec, as_wplus_direction, edit_codes, load_direction, style_mix
from fsvideo.errors import InputError, WeightsError
from fsvideo.models.encoder import downscale_to
from fsvideo.models.loading import load_encoder_checkpoint, load_generator_checkpoint
from fsvideo.models.random_init import random_model, save_official_checkpoints
from fsvideo.models.stylegan2 import Generator


@pytest.fixture(scope="module")
def model():
    return random_model(64, seed=3)


@pytest.fixture(scope="module")
def batch(model):
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(3, 3, 16, 16, generator=g) * 2 - 1, size=(256, 256), mode="bilinear")
    w, f = model.encode(x)
    return x, w, f


def test_injecting_own_features_is_identity(model, batch):
    _, w, _ = batch
    noise = model.make_noise(1)
    gk = model.features(w, noise)
    assert torch.allclose(model.decode(w, gk, noise), model.decode(w, None, noise), atol=1e-6)


def test_features_match_full_pass(model, batch):
    _, w, _ = batch
    noise = model.make_noise(1)
    _, outs = model.generator(w, noise=noise, return_features=True)
    assert torch.equal(model.features(w, noise), outs[5])
    assert outs[5].shape[1:] == model.generator.feature_shape(5)


def test_zero_strength_edit_is_identity(model, batch):
    _, w, f = batch
    d = as_wplus_direction(torch.randn(model.generator.n_latent * model.generator.style_dim),
                           model.generator.n_latent, model.generator.style_dim)
    w2, f2 = edit_codes(model, w, f, [EditSpec("x", d, 0.0)], model.make_noise(0))
    assert torch.equal(w2, w) and torch.equal(f2, f)


def test_eq1_feature_correction(model, batch):
    _, w, f = batch
    G = model.generator
    noise = model.make_noise(0)
    d1 = as_wplus_direction(torch.randn(G.style_dim), G.n_latent, G.style_dim)
    d2 = as_wplus_direction(torch.randn(G.n_latent, G.style_dim), G.n_latent, G.style_dim)
    edits = [EditSpec("a", d1, 0.7), EditSpec("b", d2, -1.5)]
    w2, f2 = edit_codes(model, w, f, edits, noise)
    expect_w = w + 15 * (0.7 * d1 - 1.5 * d2)
    assert torch.allclose(w2, expect_w, atol=1e-5)
    expect_f = f + model.features(expect_w, noise) - model.features(w, noise)
    assert torch.allclose(f2, expect_f, atol=1e-4)
    assert not torch.allclose(f2, f)


def test_batching_equals_single_calls(model, batch):
    x, w, f = batch
    noise = model.make_noise(2)
    wb, fb = model.encode(x)
    img_b = model.decode(wb, fb, noise)
    for i in range(x.shape[0]):
        wi, fi = model.encode(x[i:i + 1])
        assert torch.allclose(wi, wb[i:i + 1], atol=1e-5) and torch.allclose(fi, fb[i:i + 1], atol=1e-4)
        assert torch.allclose(model.decode(wi, fi, noise), img_b[i:i + 1], atol=1e-4)


def test_same_seed_same_noise_and_image(model, batch):
    _, w, f = batch
    a = model.decode(w, f, model.make_noise(5))
    b = model.decode(w, f, model.make_noise(5))
    c = model.decode(w, f, model.make_noise(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_style_mixing_against_a_manual_injection(model, batch):
    """Fig. 7 ``G(w_A, F_B)``: a plain ``G(w_A)`` whose convolution after layer K (``convs[K - 1]``, the
    16 -> 32 px upsampling conv for K = 5) is handed ``F_B`` instead of its input, by a pre-hook; the
    16 px ToRGB still reads the generator's own activation (official ``insert_feature``)."""
    _, w, f = batch
    G, k = model.generator, model.k
    noise = model.make_noise(0)
    mixed = style_mix(model, w[:1], f[1:2], noise)

    def replace_input(module, args):
        return (f[1:2], *args[1:])

    handle = G.convs[k - 1].register_forward_pre_hook(replace_input)
    try:
        manual = G(w[:1], noise=noise)                      # no features_in: only the hook injects
    finally:
        handle.remove()
    torch.testing.assert_close(mixed, manual, atol=1e-6, rtol=0)
    # appearance from A's w, geometry from B's F: both codes matter
    assert float((mixed - model.decode(w[:1], f[:1], noise)).abs().max()) > 1e-3
    assert float((mixed - model.decode(w[1:2], f[1:2], noise)).abs().max()) > 1e-3


def test_direction_shapes_and_convention(tmp_path):
    n, c = 4, 8
    flat = np.random.default_rng(0).standard_normal((1, n * c)).astype(np.float32)
    flat /= np.linalg.norm(flat)
    d = as_wplus_direction(flat, n, c)
    assert d.shape == (n, c) and torch.equal(d.reshape(1, -1), torch.from_numpy(flat))  # unit: kept bit-exact
    wdir = as_wplus_direction(np.ones(c) * 3, n, c)
    assert torch.allclose(wdir.norm(), torch.tensor(1.0)) and torch.allclose(wdir[0], wdir[-1])
    with pytest.raises(InputError, match="shape"):
        as_wplus_direction(np.ones(5), n, c)
    with pytest.raises(InputError, match="zeros"):
        as_wplus_direction(np.zeros(c), n, c)
    np.save(tmp_path / "d.npy", flat)
    assert torch.equal(load_direction(tmp_path / "d.npy", n, c), d)
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError, match="bad.npy"):
        load_direction(tmp_path / "bad.npy", n, c)


def test_released_directions_load(shared_dir):
    for name in ("Smiling", "Heavy_Makeup", "Eyeglasses"):
        d = load_direction(shared_dir / "directions" / f"{name}_boundary.npy", 18, 512)
        assert d.shape == (18, 512) and abs(float(d.norm()) - 1) < 1e-5


def test_official_format_round_trip(model, tmp_path):
    enc, gen = save_official_checkpoints(model, tmp_path)
    G, la = load_generator_checkpoint(gen)
    E = load_encoder_checkpoint(enc, n_styles=G.n_latent)
    assert torch.equal(la, model.latent_avg)
    for a, b in zip(E.state_dict().values(), model.encoder.state_dict().values()):
        assert torch.equal(a, b)
    # rosinality format: g_ema + a (512,) latent_avg repeated to every row
    torch.save({"g_ema": model.generator.state_dict(), "latent_avg": model.latent_avg[0]}, tmp_path / "r.pt")
    G2, la2 = load_generator_checkpoint(tmp_path / "r.pt")
    assert la2.shape == model.latent_avg.shape and torch.equal(la2, model.latent_avg)


def test_strict_loading_names_the_keys(model, tmp_path):
    sd = dict(model.generator.state_dict())
    sd.pop("conv1.noise.weight")
    sd["bogus.key"] = torch.zeros(1)
    with pytest.raises(WeightsError, match=r"missing keys: conv1\.noise\.weight.*unexpected keys: bogus\.key"):
        load_generator_checkpoint(sd)
    (tmp_path / "trunc.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(WeightsError, match="trunc.pt"):
        load_generator_checkpoint(tmp_path / "trunc.pt")


def test_released_architecture_matches_key_lists(shared_dir):
    """The full-size classes have exactly the keys and shapes of the released checkpoints."""
    def keylist(name):
        rows = [line.split("\t") for line in (shared_dir / "spec" / "key-lists" / name).read_text().splitlines() if line]
        return {r[0]: tuple(int(v) for v in r[1].strip("()").split(",") if v.strip()) for r in rows}
    from fsvideo.models.encoder import FeatureStyleEncoder
    with torch.device("meta"):
        G = Generator(1024, channel_multiplier=2)
        E = FeatureStyleEncoder(18)
    assert {k: tuple(v.shape) for k, v in G.state_dict().items()} == keylist("generator_1024_cm2.txt")
    assert {k: tuple(v.shape) for k, v in E.state_dict().items()} == keylist("encoder_fs_encoder_v2_nstyles18.txt")


def test_input_checks(model):
    with pytest.raises(ValueError, match="256"):
        downscale_to(torch.zeros(1, 3, 300, 300))
    with pytest.raises(ValueError, match="w must be"):
        model.generator(torch.zeros(1, 3, 7))
    with pytest.raises(ValueError, match="features_in"):
        model.generator(torch.zeros(1, model.generator.n_latent, model.generator.style_dim), features_in=torch.zeros(1, 1, 2, 2))


def _conv_dtypes(module: torch.nn.Module) -> tuple[list, list[torch.dtype]]:
    """Forward hooks on every convolution (StyleGAN2's modulated ones and the encoder's) that record
    the dtype of the tensor each one produced; returns (handles, dtypes)."""
    from fsvideo.models.stylegan2 import ModulatedConv2d
    seen: list[torch.dtype] = []
    handles = [m.register_forward_hook(lambda m, a, out: seen.append(out.dtype)) for m in module.modules()
               if isinstance(m, (ModulatedConv2d, torch.nn.Conv2d))]
    return handles, seen


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_low_precision_runs_in_that_dtype_and_stays_close_to_fp32(model, batch, dtype):
    x, w, f = batch
    noise = model.make_noise(0)
    ref = model.decode(w, f, noise)
    handles, seen = _conv_dtypes(model)
    try:
        with torch.autocast("cpu", dtype=dtype):
            low = model.decode(w, f, noise)
            model.encode(x)
    finally:
        for h in handles:
            h.remove()
    assert len(seen) >= len(handles) and set(seen) == {dtype}    # every conv of G and E ran in bf16
    assert float((low.float() - ref).abs().mean()) < 0.05 * float(ref.abs().mean()) + 0.02


def test_resolve_edits_sefa_and_unknown(model):
    from fsvideo.config import ModelConfig
    from fsvideo.edits.requests import EditRequest, resolve_edits
    from fsvideo.edits.sefa import sefa_directions
    specs = resolve_edits([EditRequest("sefa:2", 1.5), EditRequest("sefa:0", -1.0)], ModelConfig(), model)
    ref = sefa_directions(model.generator, k=3)
    assert torch.equal(specs[0].direction, ref[2]) and torch.equal(specs[1].direction, ref[0])
    assert [s.strength for s in specs] == [1.5, -1.0]
    with pytest.raises(InputError, match="unknown attribute 'frown'"):
        resolve_edits([EditRequest("frown", 1.0)], ModelConfig(), model)


def test_a_batch_out_of_device_memory_runs_again_in_halves(model, caplog):
    """A GPU too small for --batch-size 4 at 1024 px raised torch.OutOfMemoryError out of the run (an
    internal error): the executor halves the batch for the rest of the run, with the same results;
    one face that does not fit is a one-line error naming the fixes."""
    import logging

    from fsvideo.errors import PipelineError
    from fsvideo.models.execution import ModelExecutor
    ex = ModelExecutor(model, batch_size=4)
    crops = np.random.default_rng(0).integers(0, 256, (5, 256, 256, 3), dtype=np.uint8)
    want_w, want_f = ex.encode(crops)
    want_img = ex.generate(want_w, want_f)
    calls = []
    real_encode, real_decode = ex._encode_fn, ex._decode_fn

    def fits(limit, fn):
        def call(*xs):
            calls.append(len(xs[0]))
            if len(xs[0]) > limit:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return fn(*xs)
        return call
    ex._encode_fn, ex._decode_fn = fits(2, real_encode), fits(1, real_decode)
    with caplog.at_level(logging.WARNING):
        w, f = ex.encode(crops)
        img = ex.generate(w, f)
    assert calls[:4] == [4, 2, 2, 1] and ex.batch_size == 2 and ex.generate_batch == 1
    assert torch.allclose(w, want_w, atol=1e-5) and torch.allclose(f, want_f, atol=1e-4)
    assert np.abs(img.astype(int) - want_img).max() <= 1
    assert sum("out of cpu memory with 4 faces per call: running 2" in r.getMessage() for r in caplog.records) == 1
    ex._decode_fn = fits(0, real_decode)
    with pytest.raises(PipelineError, match="out of cpu memory with one face per call") as e:
        ex.generate(w[:1], f[:1])
    assert "--precision fp16" in str(e.value)


def test_a_checkpoint_of_the_wrong_network_is_named_in_the_error(tmp_path):
    """`--generator encoder.pt` said only "not a StyleGAN2 generator checkpoint (...)": which of the
    files passed was wrong was left to guess.  Now every such error names the file."""
    enc, gen = save_official_checkpoints(random_model(32, seed=0), tmp_path)
    with pytest.raises(WeightsError, match=f"^{enc}: not a StyleGAN2 generator checkpoint"):
        load_generator_checkpoint(enc)
    with pytest.raises(WeightsError, match=f"^{gen}: not a Feature-Style encoder state dict"):
        load_encoder_checkpoint(gen)
    with pytest.raises(WeightsError, match=f"^{enc}: encoder predicts .* W\\+ rows but the generator needs 99"):
        load_encoder_checkpoint(enc, n_styles=99)
    G, _ = load_generator_checkpoint(gen)                        # the right files still load
    assert load_encoder_checkpoint(enc, n_styles=G.n_latent) is not None


def test_a_damaged_cached_direction_names_the_download_that_fixes_it(tmp_path, shared_dir):
    """The cached released direction, truncated after download, said "cannot be read ...; pass a .npy array
    of floats": advice for a file the user passed, not for one fsvideo downloaded."""
    from fsvideo import weights as W
    from fsvideo.config import ModelConfig
    from fsvideo.edits import EditRequest, resolve_edits
    W.import_file("direction-smile", shared_dir / "directions" / "Smiling_boundary.npy")
    cached = W.path_of("direction-smile")
    model = random_model(32, seed=0)
    with pytest.raises(InputError, match="shape"):      # intact, but not for this tiny generator: unchanged error
        resolve_edits([EditRequest("smile", 1.0)], ModelConfig(), model)
    cached.write_bytes(cached.read_bytes()[:500])
    with pytest.raises(WeightsError, match=r"cached `direction-smile` .* changed since it was downloaded.*"
                                           r"fsvideo weights download direction-smile --force"):
        resolve_edits([EditRequest("smile", 1.0)], ModelConfig(), model)
