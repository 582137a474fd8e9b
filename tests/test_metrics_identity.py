"""Identity networks for ID similarity and IC: dlib's descriptor on real faces, ArcFace plumbing, selection."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fsvideo.errors import InputError, WeightsError
from fsvideo.metrics.consistency import id_similarity
from fsvideo.metrics.identity import ArcFaceIdentity, DlibIdentity, IdentityNetwork, check_crops, load_identity


def _aligned_face(image: np.ndarray, size: int = 256):
    from fsvideo.faces.align import align_face_fast
    from fsvideo.faces.detect import make_detector
    faces = make_detector("dlib").detect(image)
    assert faces, "the test image must show a face"
    return align_face_fast(image, faces[0].landmarks, size)


def _rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def crops(media_dir):
    """Aligned crops: two of RAVDESS actor 06 (a still and a video frame), one of another person."""
    from fsvideo.video import VideoReader
    frame = next(iter(VideoReader(media_dir / "videos/ravdess/ravdess-actor06-compilation.mp4"))).image
    a = _aligned_face(_rgb(media_dir / "images/wild/ravdess-Actor_06.png"))
    b = _aligned_face(frame)
    c = _aligned_face(_rgb(media_dir / "images/wild/facerec-obama.jpg"))
    return a, b, c


def test_dlib_descriptor_separates_people(crops):
    R = DlibIdentity()
    assert isinstance(R, IdentityNetwork)
    a, b, c = crops
    imgs = np.stack([a.image, b.image, c.image])
    lms = np.stack([a.landmarks, b.landmarks, c.landmarks])
    e = R.embed(imgs, lms)
    assert e.shape == (3, 128) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    same = id_similarity(e[:1], e[1:2])[0]
    other = id_similarity(e[:1], e[2:3])[0]
    assert same > 0.9 and other < same - 0.1, (same, other)
    # without landmarks the shape predictor finds the face where FFHQ alignment puts it: same answer, roughly
    e2 = R.embed(imgs)
    assert np.all(id_similarity(e, e2) > 0.97)
    # dlib's usual same-person rule (euclidean distance < 0.6 on raw descriptors) agrees
    raw = np.asarray(R._net.compute_face_descriptor(R.chips(imgs, lms)))
    assert np.linalg.norm(raw[0] - raw[1]) < 0.6 < np.linalg.norm(raw[0] - raw[2])


def test_arcface_identity_with_a_tiny_network(crops):
    from fsvideo.models.arcface import ArcFace
    torch.manual_seed(0)
    net = ArcFace(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16), embedding_size=32, stem_channels=8).eval()
    R = ArcFaceIdentity(net, "arcface-test", batch_size=2)
    imgs = np.stack([c.image for c in crops])
    e = R.embed(imgs)
    assert e.shape == (3, 32)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    # batching does not change the numbers; the network sees the crop resized to 112 px
    from fsvideo.models.arcface import identity_embedding
    want = identity_embedding(net, imgs).detach().numpy()
    assert np.allclose(e, want, atol=1e-5)


def test_load_identity_choices(tmp_path, monkeypatch):
    # no ArcFace weights in the (empty, per-test) weights store: auto falls back to dlib, arcface explains
    assert load_identity("auto").name == "dlib-resnet-v1"
    with pytest.raises(WeightsError, match="fsvideo weights download arcface-r50"):
        load_identity("arcface")
    with pytest.raises(InputError, match="unknown identity network"):
        load_identity("facenet")
    with pytest.raises(InputError, match="not found"):
        load_identity(str(tmp_path / "missing.pth"))
    # a (tiny) ArcFace in the store under the registry's file name: auto takes it, as the paper does
    from fsvideo.models.arcface import ArcFace
    net = ArcFace(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16), embedding_size=32, stem_channels=8)
    home = tmp_path / "home"
    home.mkdir()
    torch.save(net.state_dict(), home / "backbone.pth")
    monkeypatch.setenv("FSVIDEO_HOME", str(home))
    R = load_identity("auto")
    assert isinstance(R, ArcFaceIdentity) and R.name == "arcface-r50" and R.dim == 32
    R2 = load_identity(str(home / "backbone.pth"))
    assert R2.name == "arcface:backbone.pth"


def test_check_crops():
    assert check_crops(np.zeros((4, 4, 3), np.uint8)).shape == (1, 4, 4, 3)
    with pytest.raises(ValueError, match="square"):
        check_crops(np.zeros((2, 4, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        check_crops(np.zeros((2, 4, 4, 3), np.float32))
