"""Conformance with the official implementation (../shared/reference/fse-official-*).

Each fixture folder holds a recipe that rebuilds official-format checkpoints from seeded weights,
plus the outputs the official code produced with them.  The checkpoints are written to disk and
loaded through the same functions a user's downloaded files go through; every stored output must
be reproduced within the fixture's own tolerances.  Extra folders (other sizes, seeds) are named
in ``FSVIDEO_EXTRA_FIXTURES`` (os.pathsep-separated).
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED
from PIL import Image

from fsvideo.edits import EditSpec, as_wplus_direction, edit_codes
from fsvideo.edits.directions import EDIT_STEP
from fsvideo.models.encoder import downscale_to
from fsvideo.models.fse import FeatureStyleModel, to_model_input
from fsvideo.models.loading import load_generator_checkpoint


def _fixture_dirs() -> list[Path]:
    dirs = sorted(p for p in (SHARED / "reference").glob("fse-official-*") if (p / "recipe.json").is_file())
    for extra in filter(None, os.environ.get("FSVIDEO_EXTRA_FIXTURES", "").split(os.pathsep)):
        dirs.append(Path(extra))
    return dirs


FIXTURES = _fixture_dirs()


def _tolerance(tol: dict, file: str, key: str) -> float:
    t = tol[file]
    return float(t.get(key, t.get("*")))


@pytest.fixture(scope="module", params=FIXTURES, ids=lambda p: p.name)
def fixture(request, tmp_path_factory):
    fx: Path = request.param
    spec = importlib.util.spec_from_file_location(f"bsd_{fx.name}", fx / "build_state_dicts.py")
    bsd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bsd)
    out = tmp_path_factory.mktemp(fx.name)
    enc_path, gen_path = bsd.write(str(fx), str(out))          # official-format files, digests verified
    manifest = json.loads((fx / "manifest.json").read_text())
    cfg = manifest["config"]
    n = cfg.get("batch", 2)
    images = np.stack([np.asarray(Image.open(fx / f"input_{i}.png").convert("RGB")) for i in range(n)])
    noise = np.load(fx / "noise.npz")
    return dict(dir=fx, enc=Path(enc_path), gen=Path(gen_path), cfg=cfg, images=images,
                noise=[torch.from_numpy(noise[f"noise_{i}"]) for i in range(len(noise.files))],
                direction=np.load(fx / "direction.npy"), tol=json.loads((fx / "tolerances.json").read_text()))


def _load_as_user(fx: dict) -> FeatureStyleModel:
    """The path of a user's files: `fsvideo weights import` into the store, then the pipeline loader."""
    from fsvideo import weights
    from fsvideo.config import ModelConfig
    from fsvideo.pipeline.jobs import load_model
    weights.import_file("stylegan2-ffhq", fx["gen"])
    weights.import_file("fse-ffhq", fx["enc"])
    cfg = ModelConfig(resolution=fx["cfg"]["g_size"], feature_index=fx["cfg"].get("idx_k", 5))
    return load_model(cfg)


def _run(fx: dict, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    model = _load_as_user(fx).to(dtype)
    G, E = model.generator, model.encoder
    assert G.size == fx["cfg"]["g_size"] and G.n_latent == fx["cfg"]["n_latent"]
    u8 = torch.from_numpy(fx["images"])
    x = to_model_input(u8) if dtype == torch.float32 else (u8.permute(0, 3, 1, 2).to(dtype) / 255 - 0.5) / 0.5
    noise = [t.to(dtype) for t in fx["noise"]]
    d = as_wplus_direction(fx["direction"], G.n_latent, G.style_dim).to(dtype)
    alpha = float(fx["cfg"]["alpha"])
    out = {}
    with torch.no_grad():
        out["x_enc"] = downscale_to(x)
        out["w_offset"], out["F"] = E(x)
        out["w"], _ = model.encode(x)
        out["G_w"], feats = G(out["w"], noise=noise, return_features=True)
        out["GK_w"] = feats[model.k]
        out["G_wF"] = model.decode(out["w"], out["F"], noise)
        out["G_wF_s05"] = model.decode(out["w"], out["F"], noise, feature_scale=0.5)
        out["G_wF_s025"] = model.decode(out["w"], out["F"], noise, feature_scale=0.25)
        out["w_edit"], out["F_edit"] = edit_codes(model, out["w"], out["F"], [EditSpec("d", d, alpha / EDIT_STEP)], noise)
        out["GK_w_edit"] = model.features(out["w_edit"], noise)
        out["G_edit"] = model.decode(out["w_edit"], out["F_edit"], noise)
        out["G_w_edit"] = model.decode(out["w_edit"], None, noise)
        # G^K(w) read from a call with F injected is the generator's own activation
        _, feats_inj = G(out["w"], noise=noise, features_in=out["F"], return_features=True)
        assert torch.equal(feats_inj[model.k], out["GK_w"])
    return out


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_reproduces_official_outputs(fixture, precision):
    file = "expected.npz" if precision == "float32" else "expected_f64.npz"
    path = fixture["dir"] / file
    if not path.exists():
        pytest.skip(f"{fixture['dir'].name} has no {file}")
    got = _run(fixture, torch.float32 if precision == "float32" else torch.float64)
    expected = np.load(path)
    assert expected.files, f"{path} is empty"
    report = []
    for key in expected.files:
        want = torch.from_numpy(expected[key].astype(np.float64 if precision == "float64" else np.float32))
        diff = float((got[key].to(want.dtype) - want).abs().max())
        tol = _tolerance(fixture["tol"], file, key)
        report.append((key, diff, tol))
    bad = [f"{k}: max|diff| {d:.3g} > {t:.3g}" for k, d, t in report if not d <= t]
    assert not bad, f"{fixture['dir'].name}/{file}: " + "; ".join(bad)


def test_checkpoint_noise_buffers_are_not_used(fixture):
    """A call without explicit noise must not silently use the checkpoint's noise buffers."""
    G, _ = load_generator_checkpoint(fixture["gen"])
    w = torch.zeros(1, G.n_latent, G.style_dim)
    torch.manual_seed(0)
    a = G(w)
    torch.manual_seed(1)
    b = G(w)
    assert not torch.equal(a, b)
