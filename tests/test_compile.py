"""``--compile``: the torch.compile'd encoder and generator give the eager reference path's results.

One compile of a tiny model takes about 20 s per network on a CPU, so both checks share one executor.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fsvideo.models.execution import ModelExecutor, crop_size
from fsvideo.models.random_init import random_model


@pytest.fixture(scope="module")
def pair():
    model = random_model(64, seed=3)
    eager = ModelExecutor(model, batch_size=2, noise_seed=5)
    compiled = ModelExecutor(model, batch_size=2, noise_seed=5, compile=True)
    return eager, compiled


def test_compiled_executor_matches_eager_including_a_padded_tail(pair):
    eager, compiled = pair
    torch._dynamo.reset()
    S = crop_size(eager.model)
    crops = np.random.default_rng(0).integers(0, 256, (3, S, S, 3), dtype=np.uint8)   # chunks of 2 + 1 (padded)
    w0, f0 = eager.encode(crops)
    w1, f1 = compiled.encode(crops)
    assert w1.shape == w0.shape and f1.shape == f0.shape
    torch.testing.assert_close(w1, w0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(f1, f0, atol=1e-4, rtol=1e-4)
    img0, img1 = eager.generate(w0, f0), compiled.generate(w0, f0)
    assert img1.shape == img0.shape == (3, S, S, 3)
    assert np.abs(img1.astype(int) - img0.astype(int)).max() <= 1          # uint8 rounding at most
    assert compiled.encode(crops[:0])[0].shape == (0, *w0.shape[1:])        # no face: no network call


def test_padding_keeps_one_shape(pair):
    """A short chunk is padded to the batch: the compiled function sees one batch size only."""
    _, compiled = pair
    seen = []
    n = compiled._padded(lambda x: seen.append(x.shape[0]) or x * 2, 4, torch.ones(3, 2))
    assert seen == [4] and n.shape == (3, 2)


def test_the_compile_option_reaches_the_executor(media_dir, tmp_path, monkeypatch):
    """``fsvideo edit --compile`` -> RunOptions.compile -> ModelExecutor(compile=True)."""
    import fsvideo.models.execution as X
    from fsvideo.cli import main
    from tiny_weights import make_tiny
    seen = []

    class Spy(X.ModelExecutor):
        def __init__(self, *a, compile=False, **k):
            seen.append(compile)
            super().__init__(*a, compile=False, **k)          # the compile itself is checked above
    monkeypatch.setattr(X, "ModelExecutor", Spy)
    tiny = make_tiny(tmp_path / "tiny")
    src = media_dir / "videos/other/pyfeat-single_face.mp4"
    try:
        main(["edit", str(src), "--direction", tiny["dir"], "--generator", tiny["gen"], "--encoder", tiny["enc"],
              "--detector", "dlib", "--end", "0.1", "--compile", "-q", "-o", str(tmp_path / "out.mp4")])
    except SystemExit as e:
        assert e.code in (0, None)
    assert seen == [True] and (tmp_path / "out.mp4").is_file()
