from fsvideo.doctor import MEAN_FACE_68, run_doctor, synthetic_face_landmarks


def test_doctor_runs_the_real_pipeline():
    report = run_doctor()
    assert report.ok, [(c.name, c.detail) for c in report.checks if not c.ok]
    pipe = report.checks[-1]
    assert pipe.name.startswith("edit pipeline") and "24 frames edited" in pipe.detail and "audio kept" in pipe.detail


def test_synthetic_face_moves_inside_the_frame():
    a, b = synthetic_face_landmarks(0, 320, 240), synthetic_face_landmarks(10, 320, 240)
    assert MEAN_FACE_68.shape == (68, 2) and not (a == b).all()
    assert a.min() > 0 and a[:, 0].max() < 320 and a[:, 1].max() < 240
