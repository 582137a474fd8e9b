"""Faces: detection with 68 landmarks, tracking, FFHQ alignment, temporal stabilisation and paste-back.

Typical per-frame use (see each module for details)::

    from fsvideo.faces import make_detector, FaceTracker, FaceStabilizer, align_quad_fast, face_mask, paste_back

    det, tracker = make_detector("auto"), FaceTracker()
    faces = tracker.update(det.detect(frame), frame)
    aligned = align_face(frame, faces[0].landmarks)            # exact FFHQ, 1024 x 1024
    out = paste_back(frame, aligned.image, aligned.matrix, face_mask(aligned.image, aligned.landmarks))
"""
from fsvideo.faces.align import (AlignedFace, align_face, align_face_fast, align_quad, align_quad_fast, ffhq_geometry,
                                 ffhq_quad, quad_matrix, quad_size, transform_points)
from fsvideo.faces.blend import (FACE_LABELS, MaskSmoother, face_mask, landmark_mask, parsing_mask, paste_back,
                                 warp_to_frame)
from fsvideo.faces.detect import (DETECTOR_NAMES, DlibDetector, Face, FaceDetector, FanDetector, fan_available,
                                  fan_weight_paths, make_detector)
from fsvideo.faces.stabilize import (MISSING_POLICIES, FaceStabilizer, MultiFaceStabilizer, StabilizedFrame,
                                     stabilize_sequence)
from fsvideo.faces.track import DlibFaceEmbedder, FaceSelector, FaceTracker, box_iou, parse_policy, select_faces

__all__ = [
    "AlignedFace", "align_face", "align_face_fast", "align_quad", "align_quad_fast", "ffhq_geometry", "ffhq_quad",
    "quad_matrix", "quad_size", "transform_points",
    "FACE_LABELS", "MaskSmoother", "face_mask", "landmark_mask", "parsing_mask", "paste_back", "warp_to_frame",
    "DETECTOR_NAMES", "DlibDetector", "Face", "FaceDetector", "FanDetector", "fan_available", "fan_weight_paths",
    "make_detector",
    "MISSING_POLICIES", "FaceStabilizer", "MultiFaceStabilizer", "StabilizedFrame", "stabilize_sequence",
    "DlibFaceEmbedder", "FaceSelector", "FaceTracker", "box_iou", "parse_policy", "select_faces",
]
