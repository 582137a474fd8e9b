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
