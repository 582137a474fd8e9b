from fsvideo.doctor import MEAN_FACE_68, check_weights, run_doctor, synthetic_face_landmarks


def test_doctor_runs_the_real_pipeline():
    report = run_doctor()
    assert report.ok, [(c.name, c.detail) for c in report.checks if not c.ok]
    pipe = report.checks[-1]
    assert pipe.name.startswith("edit pipeline") and "24 frames edited" in pipe.detail and "audio kept" in pipe.detail


def test_synthetic_face_moves_inside_the_frame():
    a, b = synthetic_face_landmarks(0, 320, 240), synthetic_face_landmarks(10, 320, 240)
    assert MEAN_FACE_68.shape == (68, 2) and not (a == b).all()
    assert a.min() > 0 and a[:, 0].max() < 320 and a[:, 1].max() < 240


def test_a_weights_folder_that_cannot_be_written_is_reported(tmp_path, monkeypatch):
    """With FSVIDEO_HOME under a file (or read-only) and weights missing, every first run fails; the doctor
    said `ok` and pointed at `fsvideo weights download`, which fails the same way."""
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("FSVIDEO_HOME", str(tmp_path / "afile" / "fsvideo"))
    ok, detail = check_weights()
    assert not ok and f"the weights folder {tmp_path / 'afile' / 'fsvideo'} cannot be written" in detail
    assert "afile is a file" in detail and "FSVIDEO_HOME" in detail
    monkeypatch.setenv("FSVIDEO_HOME", str(tmp_path / "new" / "home"))       # not there yet: the store makes it
    ok, detail = check_weights()
    assert ok and "cannot be written" not in detail and not (tmp_path / "new").exists()
