"""Where the chain's warps run: cv2 on the CPU by default, the PyTorch twins when the networks are on CUDA."""
from __future__ import annotations

import numpy as np
import torch

from fsvideo.faces.stream import FaceAligner
from fsvideo.pipeline import Components
from fsvideo.pipeline.face_stages import (BlendStage, DeviceFaceAligner, MaskStage, TrackAlignStage, make_blend, make_track_align,
                                          warp_device)


class _Executor:
    """Only what the switch reads: the networks' device (nothing runs on it here)."""

    def __init__(self, device):
        self.device = torch.device(device)


def test_the_switch_follows_the_networks_device():
    cuda, cpu = Components(executor=_Executor("cuda"), resolution=64), Components(executor=_Executor("cpu"), resolution=64)
    assert warp_device(cuda) == torch.device("cuda")
    assert warp_device(cpu) is None and warp_device(Components(resolution=64)) is None
    assert make_blend(cuda).device == torch.device("cuda") and make_blend(cpu).device is None
    assert make_blend(cuda, poisson=True).device is None                # seamlessClone has no GPU twin
    assert type(make_track_align(cuda).aligner) is DeviceFaceAligner
    assert type(make_track_align(cpu).aligner) is FaceAligner


def _run(aligner_cls, device, frames, dets, size):
    kw = {} if device is None else {"device": device}
    align = TrackAlignStage(aligner_cls(None, 30.0, output_size=size, **kw))
    mask, blend = MaskStage(30.0), BlendStage(device=device)
    packets = [{"index": i, "image": im, "detections": d} for i, (im, d) in enumerate(zip(frames, dets))]
    out = align.process(packets) + align.flush()
    for p in out:
        p["generated"] = np.stack([255 - a.image for a in p["aligned"]]) if p["aligned"] else np.zeros((0, size, size, 3), np.uint8)
    return blend.process(mask.process(out))


def test_torch_stages_match_the_cv2_stages(media_dir):
    """track_align + blend with the torch warps (forced onto the CPU) against the cv2 stages: same
    quads and matrices, crops and outputs within a grey level on average, frames without a face untouched."""
    from fsvideo.faces import make_detector
    from fsvideo.video import VideoReader
    frames = [f.image for f, _ in zip(VideoReader(media_dir / "videos" / "other" / "liveportrait-d18.mp4"), range(3))]
    frames.append(frames[-1].copy())
    det = make_detector("dlib", max_side=640)   # the registry: a device run replays recorded faces
    dets = [det.detect(im) for im in frames[:3]] + [[]]
    ref = _run(FaceAligner, None, frames, [list(d) for d in dets], 256)
    got = _run(DeviceFaceAligner, "cpu", frames, [list(d) for d in dets], 256)
    assert [len(p["faces"]) for p in got] == [len(p["faces"]) for p in ref] == [1, 1, 1, 0]
    for r, g in zip(ref, got):
        for fr, fg in zip(r["faces"], g["faces"]):
            np.testing.assert_allclose(fg.aligned.matrix, fr.aligned.matrix)
            np.testing.assert_allclose(fg.aligned.landmarks, fr.aligned.landmarks)
            assert np.abs(fg.aligned.image.astype(int) - fr.aligned.image).mean() < 0.5
        d = np.abs(g["output"].astype(int) - r["output"])
        changed = (r["output"] != r["image"]).any(axis=2)
        assert d.max() <= 8 and (d[changed].mean() < 1.0 if changed.any() else d.max() == 0)
    assert got[-1]["output"] is got[-1]["image"]                       # no face: the frame itself, no copy
