"""Face tracking (stable ids, missed detections, re-entry) and face selection policies."""
from __future__ import annotations

import numpy as np
import pytest

from fsvideo.errors import InputError
from fsvideo.faces import Face, FaceSelector, FaceTracker, box_iou, select_faces


def _face(x, y, s=100.0, score=1.0) -> Face:
    return Face(box=np.array([x, y, x + s, y + s], dtype=np.float64), score=score)


def test_box_iou():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0]])


def test_two_moving_faces_keep_their_ids_in_any_order():
    tr = FaceTracker()
    ids = None
    for t in range(30):
        a, b = _face(100 + 5 * t, 100), _face(600 - 5 * t, 120, 90)
        tr.update([a, b] if t % 2 else [b, a])  # detection order changes
        got = (a.track_id, b.track_id)
        assert None not in got and got[0] != got[1]
        ids = ids or got
        assert got == ids
    assert tr.n_tracks == 2


def test_missed_detections_keep_the_id():
    tr = FaceTracker(max_missed=5)
    for t in range(10):
        tr.update([_face(100 + 3 * t, 100)])
    first = tr.active[0].track_id
    for _ in range(10, 14):  # 4 frames missed while moving on
        tr.update([])
    f = _face(100 + 3 * 14, 100)
    tr.update([f])
    assert f.track_id == first and tr.n_tracks == 1


def test_leaving_and_reentering_at_the_same_place_keeps_the_id():
    tr = FaceTracker(max_missed=3)
    for _ in range(5):
        tr.update([_face(200, 200)])
    for _ in range(40):  # gone for longer than max_missed: lost
        tr.update([])
    assert not tr.active and len(tr.lost) == 1
    back = _face(215, 195, 105)
    tr.update([back])
    assert back.track_id == 0
    # A different person elsewhere is new.
    other = _face(900, 500, 60)
    tr.update([back, other])
    assert other.track_id == 1


def test_reentry_by_appearance_anywhere_in_the_frame():
    """With an embedder, a returning person gets the old id even at another place; a stranger does not."""
    people = {"ann": np.array([1.0, 0.0, 0.0]), "bob": np.array([0.0, 1.0, 0.0])}

    def embedder(image, face):  # the test encodes identity in the score
        return people["ann" if face.score > 0.5 else "bob"]

    tr = FaceTracker(max_missed=2, embedder=embedder)
    img = np.zeros((8, 8, 3), np.uint8)
    for _ in range(5):
        tr.update([_face(100, 100, score=0.9)], img)
    for _ in range(10):
        tr.update([], img)
    ann_again = _face(700, 300, score=0.9)
    bob = _face(100, 100, score=0.1)  # where ann was, but someone else
    tr.update([bob, ann_again], img)
    assert ann_again.track_id == 0
    assert bob.track_id == 1


def test_lost_tracks_are_bounded():
    tr = FaceTracker(max_missed=0, max_tracks=4)
    for t in range(20):
        tr.update([_face(1000 * t, 0)])  # a new person far away every frame
        tr.update([])
    assert len(tr.lost) <= 4 and tr.n_tracks == 20


def test_select_faces_policies():
    small, big = _face(0, 0, 50), _face(300, 0, 120)
    small.track_id, big.track_id = 3, 7
    assert select_faces([small, big], "largest") == [big]
    assert select_faces([small, big], "all") == [small, big]
    assert select_faces([small, big], 3) == [small]
    assert select_faces([small, big], "7") == [big]
    assert select_faces([small, big], 9) == []
    assert select_faces([], "largest") == []
    with pytest.raises(InputError, match="face selection"):
        select_faces([small], "biggest")
    with pytest.raises(InputError, match="negative"):
        select_faces([small], -1)


def test_selector_keeps_largest_on_one_person():
    tr = FaceTracker(max_missed=3)
    sel = FaceSelector("largest", tr)
    a, b = _face(0, 0, 120), _face(400, 0, 100)
    tr.update([a, b])
    assert sel([a, b]) == [a]
    # b grows a little larger than a: the selection stays on a.
    a2, b2 = _face(0, 0, 120), _face(400, 0, 125)
    tr.update([a2, b2])
    assert sel([a2, b2]) == [a2]
    # a is missed for a frame: no face rather than a jump to b.
    b3 = _face(400, 0, 125)
    tr.update([b3])
    assert sel([b3]) == []
    # a is gone for good: b takes over.
    for _ in range(4):
        b4 = _face(400, 0, 125)
        tr.update([b4])
        chosen = sel([b4])
    assert chosen == [b4]


def test_dlib_embedder_tells_people_apart(media_dir):
    from PIL import Image

    from fsvideo.faces import DlibDetector, DlibFaceEmbedder
    det, emb = DlibDetector(max_side=400), DlibFaceEmbedder()
    two = np.asarray(Image.open(media_dir / "images" / "wild" / "facerec-two_people.jpg").convert("RGB"))
    solo = np.asarray(Image.open(media_dir / "images" / "wild" / "facerec-obama.jpg").convert("RGB"))
    pair = det.detect(two)
    obama = det.detect(solo)[0]
    d_pair = [np.linalg.norm(emb(two, f) - emb(solo, obama)) for f in pair]
    # Obama is in both photos; the other person is not him.
    assert min(d_pair) < 0.6 < max(d_pair)


def test_a_track_id_no_face_has_is_said_with_the_ids_there_are(caplog):
    """`--face 7` on a video whose only person is track 0 edited nothing, silently: the aligner now warns
    once at the end, naming the ids; an id that appears, or `largest`, says nothing."""
    import logging

    from fsvideo.faces.stream import FaceAligner
    tr = FaceTracker()
    seven, zero = FaceSelector(7, tr), FaceSelector(0, tr)
    for t in range(3):
        faces = tr.update([_face(100 + t, 100), _face(400, 100, 90)])
        seven(faces), zero(faces)
    assert seven.missing_id_message().startswith("no face has track id 7 (the track ids are 0, 1)")
    assert zero.missing_id_message() is None and FaceSelector("largest").missing_id_message() is None
    assert "no face was found" in FaceSelector(2).missing_id_message()
    aligner = FaceAligner(None, fps=25, output_size=64, policy=5)
    image = np.zeros((200, 200, 3), np.uint8)
    for i in range(3):
        aligner.push(i, image, [])
    with caplog.at_level(logging.WARNING):
        aligner.flush()
    assert [r.getMessage() for r in caplog.records if "track id 5" in r.getMessage()] != []


def test_several_track_ids_select_those_people():
    """`--face 0,2`: two people of three (a group video); an id of them missing is said."""
    from fsvideo.faces.track import parse_policy, policy_text
    faces = [_face(0, 0), _face(200, 0), _face(400, 0)]
    for k, f in enumerate(faces):
        f.track_id = k
    assert select_faces(faces, "0,2") == [faces[0], faces[2]] == select_faces(faces, " 2, 0 ")
    assert parse_policy("1,1") == 1 and policy_text(parse_policy("2,0")) == "0,2"
    for bad in ("0,x", "0,-1", ",", "0;2", "²", "0,²", "١"):      # "²" was a ValueError (internal error)
        with pytest.raises(InputError, match="several such as 0,2"):
            parse_policy(bad)
    tr = FaceTracker()
    sel = FaceSelector("0,5", tr)
    for _ in range(2):
        assert [f.track_id for f in sel(tr.update([_face(100, 100)]))] == [0]
    assert sel.missing_id_message().startswith("no face has track id 5 (the track ids are 0);")
