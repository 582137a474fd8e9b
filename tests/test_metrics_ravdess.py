"""RAVDESS file names (MM-VC-EE-II-SS-RR-AA)."""
from __future__ import annotations

import pytest

from fsvideo.metrics.ravdess import parse_ravdess_name


def test_parse_fields_and_words():
    r = parse_ravdess_name("/data/Actor_12/02-01-06-01-02-01-12.mp4")
    assert (r.modality, r.vocal_channel, r.emotion, r.intensity, r.statement, r.repetition, r.actor) == \
        (2, 1, 6, 1, 2, 1, 12)
    d = r.describe()
    assert d["modality_name"] == "video-only"
    assert d["vocal_channel_name"] == "speech"
    assert d["emotion_name"] == "fearful"
    assert d["intensity_name"] == "normal"
    assert d["statement_text"] == "Dogs are sitting by the door"
    assert d["repetition_name"] == "1st"
    assert d["actor_sex"] == "female"
    assert r.stem == "02-01-06-01-02-01-12"
    r = parse_ravdess_name("01-02-08-02-01-02-01.MOV")
    assert (r.emotion_name, r.vocal_channel, r.actor_sex, r.intensity) == ("surprised", 2, "male", 2)


@pytest.mark.parametrize("name", [
    "ravdess-actor06-compilation.mp4",      # not the pattern
    "01-01-03-01-01-01.mp4",                # six fields
    "01-01-09-01-01-01-12.mp4",             # emotion 09 does not exist
    "04-01-03-01-01-01-12.mp4",             # modality 04
    "01-01-03-01-01-01-25.mp4",             # actor 25
    "01-01-03-01-01-01-00.mp4",             # actor 00
    "01-01-01-02-01-01-12.mp4",             # neutral has no strong intensity
    "01-01-03-01-01-01-12-extra.mp4",
])
def test_other_names_are_plain_clip_names(name):
    assert parse_ravdess_name(name) is None


# ------------------------------------------------------------------------------------------------
# one file per recording (issue 10.3: 01 full-AV and 02 video-only are the same footage)


def _ravdess_folder(root, n_pairs: int, n_video_only: int):
    """``n_pairs`` recordings shipped as 01 and 02 (in Actor_XX folders), plus ``n_video_only`` with only 02."""
    files = []
    i = 0
    for emotion in range(2, 9):
        for statement in (1, 2):
            for actor in range(1, 25):
                if i >= n_pairs + n_video_only:
                    return files
                rest = f"01-{emotion:02d}-01-{statement:02d}-01-{actor:02d}"
                d = root / f"Actor_{actor:02d}"
                d.mkdir(parents=True, exist_ok=True)
                for mm in (("02",) if i >= n_pairs else ("02", "01")):       # 02 listed first on purpose
                    files.append(d / f"{mm}-{rest}.mp4")
                    files[-1].write_bytes(b"")
                i += 1
    return files


def test_one_file_per_recording_prefers_the_file_with_audio(tmp_path):
    from fsvideo.metrics.ravdess import one_file_per_recording, recording_key
    files = _ravdess_folder(tmp_path, 5, 2) + [tmp_path / "talk.mp4", tmp_path / "talk2.mp4"]
    kept, left_out = one_file_per_recording(files)
    assert len(kept) == 5 + 2 + 2 and len(left_out) == 5
    names = [parse_ravdess_name(p) for p in kept]
    rav = [r for r in names if r is not None]
    assert len({recording_key(r) for r in rav}) == len(rav) == 7                   # distinct recordings
    assert sum(r.modality == 1 for r in rav) == 5 and sum(r.modality == 2 for r in rav) == 2
    assert kept[-2:] == files[-2:]                                                # other names untouched
    for dropped, instead in left_out:
        assert dropped.name.startswith("02-") and instead.name == "01-" + dropped.name[3:]
    assert [p for p in files if p in kept] == kept                                # listed order kept


def test_cli_sample_draws_distinct_recordings_and_says_so(tmp_path, capsys):
    from fsvideo.cli import main
    from fsvideo.metrics.ravdess import recording_key
    data = tmp_path / "ravdess"
    _ravdess_folder(data, 60, 10)                        # 130 files, 70 recordings
    out = tmp_path / "eval"
    with pytest.raises(SystemExit):                      # empty files: nothing measurable, but sampled first
        main(["metrics", str(data), "--sample", "40", "--seed", "3", "--source-only", "--identity", "dlib",
              "--detector", "dlib", "--out", str(out)])
    text = " ".join(capsys.readouterr().out.split())                # rich wraps long lines
    assert "measuring 40 clips, 40 distinct recordings (sampled from 70 with seed 3)" in text
    assert "60 video-only copies of full-AV recordings left out" in text
    import json
    doc = json.loads((out / "metrics.json").read_text())
    clips = [parse_ravdess_name(c["clip"]) for c in doc["clips"]]
    assert len(clips) == 40 and len({recording_key(r) for r in clips}) == 40
    # every sampled recording that has a full-AV file is measured from that file
    pairs = {recording_key(parse_ravdess_name(p)) for p in data.rglob("01-*.mp4")}
    assert all(r.modality == (1 if recording_key(r) in pairs else 2) for r in clips)
    assert doc["inputs"]["files_found"] == 130 and doc["inputs"]["distinct_recordings"] == 70
    assert len(doc["inputs"]["copies_left_out"]) == 60 and doc["inputs"]["sampled"] == 40
