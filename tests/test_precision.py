"""The precision a run asks for is the precision its convolutions run in (``--precision``).

bf16 is checked on the CPU; fp16 on CUDA whenever a GPU is present (skipped otherwise).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fsvideo.edits import EditSpec, as_wplus_direction
from fsvideo.edits.eq1 import edit_codes
from fsvideo.models.execution import ModelExecutor, crop_size
from fsvideo.models.random_init import random_model
from fsvideo.models.stylegan2 import ModulatedConv2d
from fsvideo.utils import pick_dtype

CASES = [("cpu", "fp32", torch.float32), ("cpu", "bf16", torch.bfloat16),
         pytest.param("cuda", "auto", torch.float16,
                      marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
         pytest.param("cuda", "fp16", torch.float16,
                      marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]


@pytest.mark.parametrize("device,precision,want", CASES)
def test_runner_convolutions_run_in_the_requested_dtype(device, precision, want):
    model = random_model(64, seed=1)
    dtype = pick_dtype(torch.device(device), precision)
    assert dtype == want
    runner = ModelExecutor(model, device=device, dtype=dtype, batch_size=2, noise_seed=0)
    seen: list[tuple[str, torch.dtype]] = []
    hooked = [(n, m) for n, m in runner.model.named_modules() if isinstance(m, (ModulatedConv2d, torch.nn.Conv2d))]
    handles = [m.register_forward_hook(lambda m, a, out, n=n: seen.append((n, out.dtype))) for n, m in hooked]
    try:
        S = crop_size(model)
        crops = np.random.default_rng(0).integers(0, 256, (3, S, S, 3), dtype=np.uint8)
        w, f = runner.encode(crops)
        G = model.generator
        d = as_wplus_direction(torch.randn(G.style_dim, generator=torch.Generator().manual_seed(0)), G.n_latent,
                               G.style_dim)
        we, fe = runner.map_codes(lambda a, b: edit_codes(model, a, b, [EditSpec("x", d, 1.0)], runner.noise), w, f)
        out = runner.generate(we, fe)
    finally:
        for h in handles:
            h.remove()
    assert {n for n, _ in seen} == {n for n, _ in hooked}                    # every conv ran ...
    assert {dt for _, dt in seen} == {want}                                  # ... in the requested dtype
    assert w.dtype == f.dtype == we.dtype == torch.float32 and out.dtype == np.uint8   # latents travel in fp32
    if want != torch.float32:                                                # and close to a float32 run
        ref = ModelExecutor(random_model(64, seed=1), device="cpu", batch_size=2, noise_seed=0)
        w32, f32 = ref.encode(crops)
        out32 = ref.generate(*ref.map_codes(
            lambda a, b: edit_codes(ref.model, a, b, [EditSpec("x", d, 1.0)], ref.noise), w32, f32))
        assert float(np.abs(out.astype(np.float64) - out32).mean()) < 8.0
