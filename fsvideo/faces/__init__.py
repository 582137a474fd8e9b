"""Faces: detection with 68 landmarks, tracking, FFHQ alignment, temporal stabilisation and paste-back.

Modules: ``registry`` (the detectors by name: add one there), ``detect`` (the detector interface with
68 landmarks, and dlib), ``fan`` (face-alignment's FAN), ``align`` (FFHQ alignment, exact and fast, with
the exact transform), ``track`` (track ids, face selection), ``stabilize`` (streaming temporal
stabiliser of one track), ``landmark_flow`` (its optical flow: refinement and the face's motion),
``stabilize_tracks`` (one stabiliser per track, shot cuts), ``keyframes`` (full detection on keyframes
and shot cuts, optical-flow tracking in between: :class:`KeyframeDetector`, ``--detect-every``),
``roi`` (the detector's own search in a region around each face between keyframes:
:class:`RoiDetector`, ``--track roi``), ``smoothing`` (the temporal filters, named stabilisers),
``jitter`` (crop jitter measure),
``blend`` (masks, paste-back), ``stream`` (:class:`FaceAligner`: all of it on a stream),
``frontend`` (the one front end of ``edit`` / ``invert``, ``align`` and ``metrics``: frame sampling,
:class:`VideoFaces`, :func:`photo_faces`).

One photo::

    from fsvideo.faces import make_detector, align_face, face_mask, paste_back

    faces = make_detector("auto").detect(photo)                 # uint8 [H, W, 3] RGB, largest first
    aligned = align_face(photo, faces[0].landmarks)             # exact FFHQ, 1024 x 1024
    out = paste_back(photo, edited, aligned.matrix, face_mask(edited, aligned.landmarks))

A video (bounded look-ahead, see :mod:`fsvideo.faces.stream`)::

    fa = FaceAligner(make_detector("auto"), fps=30, policy="largest")
    for frame in frames:
        for done in fa.push(frame.index, frame.image):
            ...   # done.faces: [TrackedFace(track_id, status, aligned, landmarks, detection)]
"""
from fsvideo.faces.align import (AlignedFace, align_face, align_face_fast, align_quad, align_quad_fast,
                                 ffhq_geometry, ffhq_quad, quad_matrix, quad_size, transform_points)
from fsvideo.faces.blend import FACE_LABELS, MaskSmoother, face_mask, landmark_mask, parsing_mask
from fsvideo.faces.detect import DlibDetector, Face, FaceDetector
from fsvideo.faces.fan import FanDetector, fan_available, fan_weight_paths
from fsvideo.faces.frontend import VideoFaces, photo_faces, sample_frames, sampled_count
from fsvideo.faces.jitter import crop_jitter
from fsvideo.faces.keyframes import (DEFAULT_DETECT_EVERY, DEFAULT_TRACK, TRACK_MODES, KeyframeDetector, KeyframeStats,
                                     ShotCuts, keyframe_interval, with_keyframes)
from fsvideo.faces.paste import paste_back, warp_to_frame
from fsvideo.faces.roi import RoiDetector
from fsvideo.faces.registry import (DEFAULT_DETECT_SIDE, DetectorEntry, detector_entries, detector_names,
                                    make_detector, register_detector)
from fsvideo.faces.stabilize import (DEFAULT_SMOOTHING_S, MISSING_POLICIES, STABILIZERS, FaceStabilizer,
                                     StabilizedFrame, parse_stabilize, stabilize_sequence, stabilizer_options)
from fsvideo.faces.stabilize_tracks import MultiFaceStabilizer
from fsvideo.faces.stream import AlignStats, FaceAligner, FrameFaces, TrackedFace
from fsvideo.faces.track import DlibFaceEmbedder, FaceSelector, FaceTracker, box_iou, parse_policy, select_faces

__all__ = [
    "AlignedFace", "align_face", "align_face_fast", "align_quad", "align_quad_fast", "ffhq_geometry",
    "ffhq_quad", "quad_matrix", "quad_size", "transform_points",
    "FACE_LABELS", "MaskSmoother", "face_mask", "landmark_mask", "parsing_mask", "paste_back", "warp_to_frame",
    "DlibDetector", "Face", "FaceDetector", "FanDetector", "fan_available", "fan_weight_paths",
    "VideoFaces", "photo_faces", "sample_frames", "sampled_count",
    "DEFAULT_DETECT_SIDE", "DetectorEntry", "detector_entries", "detector_names", "make_detector",
    "register_detector",
    "DEFAULT_DETECT_EVERY", "DEFAULT_TRACK", "TRACK_MODES", "KeyframeDetector", "KeyframeStats", "RoiDetector",
    "ShotCuts", "keyframe_interval", "with_keyframes",
    "DEFAULT_SMOOTHING_S", "MISSING_POLICIES", "STABILIZERS", "FaceStabilizer", "MultiFaceStabilizer",
    "StabilizedFrame", "crop_jitter", "parse_stabilize", "stabilize_sequence", "stabilizer_options",
    "AlignStats", "FaceAligner", "FrameFaces", "TrackedFace",
    "DlibFaceEmbedder", "FaceSelector", "FaceTracker", "box_iou", "parse_policy", "select_faces",
]
