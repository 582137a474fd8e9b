"""`fsvideo metrics` end to end: outputs, skipped clips, resume, network separation."""
from __future__ import annotations

import json

import pytest

from fsvideo.cli import main

SINGLE = "videos/other/pyfeat-single_face.mp4"
NO_FACE = "videos/other/pyfeat-no_face.mp4"


def _run(argv, capsys):
    main(argv)
    return capsys.readouterr().out


def test_source_only_run_outputs_and_resume(media_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["metrics", str(media_dir / SINGLE), str(media_dir / NO_FACE), str(empty), "--source-only",
            "--every", "10", "--max-frames", "4", "--detector", "dlib", "--identity", "dlib", "--out", str(out)]
    text = _run(argv, capsys)
    assert "identity network dlib-resnet-v1" in text and "IC ↑ (Eq. 9)" in text
    assert "Skipped (2)" in text
    for name in ("metrics.csv", "metrics.json", "ic_boxplot.png", "ic_boxplot.svg"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["identity_network"] == "dlib-resnet-v1" and doc["settings"]["source_only"] is True
    assert doc["summary"]["measured"] == 1 and len(doc["summary"]["skipped"]) == 2
    reasons = " ".join(x["reason"] for x in doc["summary"]["skipped"])
    assert "no face found" in reasons and "holds no video files" in reasons
    ok = [c for c in doc["clips"] if c["status"] == "ok"]
    assert ok[0]["frames_used"] == 4 and ok[0]["metrics"]["ic_source"] > 0.95
    csv_lines = (out / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("clip,status,reason,identity_network") and len(csv_lines) == 4
    assert len(list((out / "clips").glob("*.json"))) == 2          # the measured clip and the no-face one

    text = _run(argv, capsys)                                      # resume: nothing measured again
    assert text.count("(cached)") == 2
    assert json.loads((out / "metrics.json").read_text())["clips"] == doc["clips"]


def test_refuses_to_mix_identity_networks(media_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"tool": "fsvideo metrics", "identity_network": "arcface-r50"}))
    with pytest.raises(SystemExit) as e:
        main(["metrics", str(media_dir / SINGLE), "--source-only", "--identity", "dlib", "--detector", "dlib",
              "--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "arcface-r50" in err and "never mixed" in err


def test_nothing_measurable_is_an_error(media_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["metrics", str(tmp_path / "missing.mp4"), "--source-only", "--identity", "dlib", "--detector", "dlib",
              "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    captured = capsys.readouterr()
    assert "no such file or folder" in captured.out and "could be measured" in captured.err


def test_result_files_it_did_not_write_are_never_replaced(media_dir, tmp_path, capsys):
    """A folder holding the user's own metrics.csv (no earlier run there), or a metrics.json that is not a
    result of this command (damaged, another tool's), had those files silently replaced."""
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.csv").write_text("my own table\n")
    argv = ["metrics", str(media_dir / SINGLE), "--source-only", "--every", "10", "--max-frames", "2",
            "--identity", "dlib", "--detector", "dlib", "--out", str(out)]
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = " ".join(capsys.readouterr().err.split())
    assert e.value.code == 2 and f"{out} holds metrics.csv, not written by `fsvideo metrics`" in err
    assert (out / "metrics.csv").read_text() == "my own table\n"
    (out / "metrics.json").write_text("{damaged")
    with pytest.raises(SystemExit):
        main(argv)
    assert "metrics.json is not a result of `fsvideo metrics` (or it is damaged)" in " ".join(
        capsys.readouterr().err.split())
    assert (out / "metrics.json").read_text() == "{damaged"
