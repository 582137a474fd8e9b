"""SSIM, PSNR and MSE against scikit-image on real video frames and aligned faces."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from fsvideo.metrics.psnr import mse, psnr
from fsvideo.metrics.ssim import ssim


def _frames(path, picks):
    from fsvideo.video import VideoReader
    out = {}
    for f in VideoReader(path):
        if f.index in picks:
            out[f.index] = f.image
        if len(out) == len(picks):
            break
    # a central 192 x 256 window keeps the (float64) comparisons quick; the pixels stay real
    return [out[i][out[i].shape[0] // 2 - 96:out[i].shape[0] // 2 + 96,
                   out[i].shape[1] // 2 - 128:out[i].shape[1] // 2 + 128] for i in picks]


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@pytest.fixture(scope="module")
def pairs(media_dir):
    """Real pairs: consecutive and distant frames of two clips, and JPEG-degraded aligned faces."""
    a0, a1, a30 = _frames(media_dir / "videos/other/pyfeat-single_face.mp4", [0, 1, 30])
    r0, r45 = _frames(media_dir / "videos/ravdess/ravdess-actor06-compilation.mp4", [0, 45])
    face = np.asarray(Image.open(media_dir / "images/aligned/ffhq-lt-00000.jpg").convert("RGB").resize((192, 192)))
    return [(a0, a1), (a0, a30), (r0, r45), (face, _jpeg(face, 10)), (face, face[:, ::-1].copy())]


def test_ssim_psnr_mse_match_scikit_image(pairs):
    for x, y in pairs:
        want_ssim = structural_similarity(x, y, data_range=255, channel_axis=-1)
        want_psnr = peak_signal_noise_ratio(x, y, data_range=255)
        want_mse = mean_squared_error(x / 127.5 - 1.0, y / 127.5 - 1.0)
        assert ssim(x, y).item() == pytest.approx(want_ssim, abs=1e-9)
        assert psnr(x, y).item() == pytest.approx(want_psnr, abs=1e-9)
        assert mse(x, y).item() == pytest.approx(want_mse, abs=1e-12)
        # the 0..255 MSE is the [-1, 1] MSE times 127.5^2
        assert mse(x, y).item() * 127.5 ** 2 == pytest.approx(mean_squared_error(x, y), rel=1e-9)
    # the pairs are genuinely different and ordered as expected: a JPEG q10 copy is closer than a mirror
    s = [ssim(x, y).item() for x, y in pairs]
    assert all(v < 0.999 for v in s)
    assert s[3] > s[4]


def test_batches_and_model_range_inputs(pairs):
    x, y = pairs[3]
    xb = np.stack([x, y, x])
    yb = np.stack([y, y, x[::-1].copy()])
    got = ssim(xb, yb)
    assert got.shape == (3,)
    assert got[1].item() == pytest.approx(1.0, abs=1e-12)
    for i in range(3):
        assert got[i].item() == pytest.approx(structural_similarity(xb[i], yb[i], data_range=255, channel_axis=-1),
                                              abs=1e-9)
    # float [N, 3, H, W] in [-1, 1] (generator outputs) gives the same numbers as uint8
    tx = torch.from_numpy(xb).permute(0, 3, 1, 2).float() / 127.5 - 1
    ty = torch.from_numpy(yb).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert torch.allclose(ssim(tx, ty), got, atol=1e-6)
    assert torch.allclose(mse(tx, ty), mse(xb, yb), atol=1e-7)
    assert torch.isinf(psnr(xb, yb)[1])             # identical images, as scikit-image
    assert torch.allclose(psnr(tx, ty)[[0, 2]], psnr(xb, yb)[[0, 2]], atol=1e-4)


def test_bad_inputs_name_the_argument():
    a = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="x and y"):
        ssim(a, np.zeros((9, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="y: numpy input must be uint8"):
        psnr(a, a.astype(np.float32))
    with pytest.raises(ValueError, match="at least 7"):
        ssim(np.zeros((5, 5, 3), np.uint8), np.zeros((5, 5, 3), np.uint8))
    with pytest.raises(ValueError, match=r"x: float input must be \[N, 3, H, W\]"):
        mse(torch.zeros(1, 8, 8, 3), torch.zeros(1, 8, 8, 3))
