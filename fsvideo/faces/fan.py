"""The ``fan`` detector: face-alignment's 2D-FAN-4 landmarks on its S3FD boxes (dlib boxes without them).

Both networks are read by fsvideo's own safe loader (:mod:`fsvideo.models.checkpoints`), never by
face-alignment's ``torch.load``; the weights must already be on disk (``fsvideo weights download
fan-2d``, or face-alignment's own torch-hub cache): nothing is downloaded here.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from fsvideo.errors import WeightsError
from fsvideo.faces.detect import Face, FaceDetector, _downscale, _sorted, check_image

log = logging.getLogger(__name__)

# face_alignment's file names (the last path part of its download URLs); the torch hub cache keeps them.
_FAN_FILE = "2DFAN4-11f355bf06.pth.tar"
_S3FD_FILE = "s3fd-619a316812.pth"
# Registry names in fsvideo's weights store (fsvideo/weights.py).
_FAN_REGISTRY = "fan-2d"
_S3FD_REGISTRY = "fan-s3fd"


def _torch_hub_checkpoint(file_name: str) -> Path | None:
    import torch.hub
    p = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    return p if p.is_file() else None


def fan_weight_paths() -> tuple[Path | None, Path | None]:
    """(2D-FAN-4 file, S3FD detector file) found on disk, each None when absent.

    Looks in fsvideo's weights store (registry names ``fan-2d`` and ``fan-s3fd``), then in the torch
    hub cache where ``face_alignment`` keeps its downloads.  Never downloads.
    """
    from fsvideo.weights import resolve
    fan = resolve(_FAN_REGISTRY, required=False) or _torch_hub_checkpoint(_FAN_FILE)
    det = resolve(_S3FD_REGISTRY, required=False) or _torch_hub_checkpoint(_S3FD_FILE)
    return fan, det


def fan_available() -> bool:
    """True when the 2D-FAN-4 weights are on disk (the detector can fall back to dlib boxes)."""
    return fan_weight_paths()[0] is not None


def _decode_heatmaps(hm: np.ndarray, center: np.ndarray, scale: float) -> np.ndarray:
    """FAN heatmaps [68, R, R] -> float64 [68, 2] image points.

    face_alignment's ``get_preds_fromhm`` in numpy (its numba version compiles for ~30 s on first
    use): arg-max, a quarter-pixel step towards the higher neighbour, then the crop's inverse
    transform.  Unlike upstream, the result is not truncated to integer pixels.
    """
    c, h, w = hm.shape
    idx = hm.reshape(c, -1).argmax(1)
    px, py = idx % w, idx // w
    pts = np.stack([px + 1, py + 1], 1).astype(np.float64)
    inner = (px > 0) & (px < w - 1) & (py > 0) & (py < h - 1)
    j = np.nonzero(inner)[0]
    dx = hm[j, py[j], px[j] + 1] - hm[j, py[j], px[j] - 1]
    dy = hm[j, py[j] + 1, px[j]] - hm[j, py[j] - 1, px[j]]
    pts[j] += np.sign(np.stack([dx, dy], 1)) * 0.25
    pts -= 0.5
    side = 200.0 * scale  # face_alignment's crop: `side` image pixels map onto the h heatmap pixels
    return (pts - h * (0.5 - np.asarray(center, dtype=np.float64) / side)) * side / h


class FanDetector(FaceDetector):
    """2D-FAN-4 landmarks (``face_alignment`` package) on S3FD boxes, or dlib HOG boxes without S3FD.

    Args:
        device: torch device (``"cpu"``, ``"cuda"``...; None picks one).
        fan_path, detector_path: weights files; by default found by :func:`fan_weight_paths`.
        flip_input: also run the mirrored crop and average (as face_alignment does by default).
        max_side: shrink images to this longer side for the box detector only.
        batch_size: faces per FAN forward pass in :meth:`detect_batch`.

    Raises :class:`~fsvideo.errors.WeightsError` when the FAN weights are not on disk; it never
    downloads (run ``fsvideo weights download fan-2d``).
    """

    name = "fan"

    def __init__(self, device=None, *, fan_path: str | os.PathLike | None = None,
                 detector_path: str | os.PathLike | None = None, flip_input: bool = True,
                 max_side: int | None = None, batch_size: int = 16):
        import torch

        from fsvideo.models.checkpoints import load_fan, s3fd_detector
        from fsvideo.utils import pick_device
        found_fan, found_det = fan_weight_paths()
        fan_path = Path(fan_path) if fan_path else found_fan
        detector_path = Path(detector_path) if detector_path else found_det
        if fan_path is None or not Path(fan_path).is_file():
            raise WeightsError("FAN landmark weights (2DFAN4) are not on disk",
                               hint="run `fsvideo weights download fan-2d`, or use --detector dlib")
        self.device = device if isinstance(device, torch.device) else pick_device(device or "auto")
        self.flip_input = flip_input
        self.batch_size = int(batch_size)
        self.net = load_fan(fan_path, device=self.device)
        self.max_side = max_side
        if detector_path is not None:
            self._sfd = s3fd_detector(detector_path, self.device)
            self._dlib = None
            self.box_detector = "s3fd"
        else:
            import dlib
            self._sfd = None
            self._dlib = dlib.get_frontal_face_detector()
            self.box_detector = "dlib"
            log.info("S3FD weights not found; FAN uses dlib HOG boxes")

    def _boxes(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        small, scale = _downscale(image, self.max_side)
        if self._sfd is not None:
            out = []
            for b in self._sfd.detect_from_image(small.copy()):
                b = np.asarray(b, dtype=np.float64)
                out.append((b[:4] * scale, float(b[4]) if len(b) > 4 else 1.0))
            return out
        rects, scores, _ = self._dlib.run(small, 1, 0.0)
        return [(np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=np.float64) * scale, float(s))
                for r, s in zip(rects, scores)]

    def _ref_scale(self) -> float:
        # face_alignment's reference scale: 195 for S3FD boxes, 195 for dlib in its DlibDetector too.
        return 195.0

    def _landmarks(self, items: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """68 landmarks for each (image, box) pair, in batches of ``batch_size`` crops."""
        import torch
        from face_alignment.utils import crop, flip
        if not items:
            return []
        centers, scales, crops = [], [], []
        for image, d in items:
            center = np.array([d[2] - (d[2] - d[0]) / 2.0, d[3] - (d[3] - d[1]) / 2.0])
            center[1] -= (d[3] - d[1]) * 0.12
            scale = (d[2] - d[0] + d[3] - d[1]) / self._ref_scale()
            centers.append(center)
            scales.append(scale)
            crops.append(crop(image, center, scale).transpose(2, 0, 1).astype(np.float32) / 255.0)
        batch = torch.from_numpy(np.stack(crops))
        outs = []
        with torch.no_grad():
            for s in range(0, len(crops), self.batch_size):
                x = batch[s:s + self.batch_size].to(self.device)
                out = self.net(x)
                out = out[-1] if isinstance(out, (list, tuple)) else out
                if self.flip_input:
                    fo = self.net(flip(x))
                    fo = fo[-1] if isinstance(fo, (list, tuple)) else fo
                    out = out + flip(fo, is_label=True)
                outs.append(out.float().cpu())
        heat = torch.cat(outs).numpy()
        return [_decode_heatmaps(heat[i], centers[i], scales[i]) for i in range(len(items))]

    def detect(self, image: np.ndarray) -> list[Face]:
        return self.detect_batch([image])[0]

    def landmarks_in_boxes(self, image: np.ndarray, boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        image = np.ascontiguousarray(check_image(image))
        return self._landmarks([(image, np.asarray(b, dtype=np.float64)) for b in boxes])

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Boxes per image, then one batched FAN pass over every face of every image."""
        images = [np.ascontiguousarray(check_image(im, f"images[{i}]")) for i, im in enumerate(images)]
        boxes = [self._boxes(im) for im in images]
        items = [(im, b) for im, bs in zip(images, boxes) for b, _ in bs]
        lms = iter(self._landmarks(items))
        return [_sorted([Face(box=b, score=s, landmarks=next(lms)) for b, s in bs]) for bs in boxes]




def fan_status() -> tuple[bool, str]:
    """face_alignment importable and the 2D-FAN-4 weights on disk (S3FD optional)."""
    try:
        import face_alignment  # noqa: F401
    except ImportError:
        return False, "the face_alignment package is not installed (pip install face-alignment)"
    fan, s3fd = fan_weight_paths()
    if fan is None:
        return False, "2D-FAN-4 weights not on disk (`fsvideo weights download fan-2d`)"
    return True, "ready" + ("" if s3fd is not None else " (S3FD weights absent: dlib boxes)")
