"""RAVDESS file names: ``MM-VC-EE-II-SS-RR-AA.ext`` (Livingstone & Russo 2018, the dataset's README).

Seven two-digit fields:

=====  ===============  ==========================================================================
field  name             values
=====  ===============  ==========================================================================
MM     modality         01 full-AV, 02 video-only, 03 audio-only
VC     vocal channel    01 speech, 02 song
EE     emotion          01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust,
                        08 surprised
II     intensity        01 normal, 02 strong (there is no strong intensity for neutral)
SS     statement        01 "Kids are talking by the door", 02 "Dogs are sitting by the door"
RR     repetition       01 first, 02 second
AA     actor            01..24 (odd: male, even: female)
=====  ===============  ==========================================================================

Example: ``02-01-06-01-02-01-12.mp4`` is video-only, speech, fearful, normal intensity, "Dogs",
first repetition, actor 12 (female).  A name that does not follow the pattern (or has a code out of
range) is not a RAVDESS name: :func:`parse_ravdess_name` returns None and the clip is reported by
its plain name.

RAVDESS ships every visual recording twice, as ``01`` (full AV) and ``02`` (video-only): the same
footage, with and without sound.  :func:`one_file_per_recording` keeps one file per recording
(the one with audio), so that a sample of N clips measures N different recordings.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence, TypeVar

log = logging.getLogger(__name__)

MODALITIES = {1: "full-AV", 2: "video-only", 3: "audio-only"}
VOCAL_CHANNELS = {1: "speech", 2: "song"}
EMOTIONS = {1: "neutral", 2: "calm", 3: "happy", 4: "sad", 5: "angry", 6: "fearful", 7: "disgust", 8: "surprised"}
INTENSITIES = {1: "normal", 2: "strong"}
STATEMENTS = {1: "Kids are talking by the door", 2: "Dogs are sitting by the door"}
REPETITIONS = {1: "1st", 2: "2nd"}
N_ACTORS = 24

_PATTERN = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")


@dataclass(frozen=True)
class RavdessName:
    """The seven fields of a RAVDESS file name, as codes and as words.

    Attributes:
        modality, vocal_channel, emotion, intensity, statement, repetition, actor: the integer codes.
    """

    modality: int
    vocal_channel: int
    emotion: int
    intensity: int
    statement: int
    repetition: int
    actor: int

    @property
    def emotion_name(self) -> str:
        return EMOTIONS[self.emotion]

    @property
    def actor_sex(self) -> str:
        return "male" if self.actor % 2 else "female"

    @property
    def stem(self) -> str:
        """The canonical ``MM-VC-EE-II-SS-RR-AA``."""
        return "-".join(f"{v:02d}" for v in (self.modality, self.vocal_channel, self.emotion, self.intensity,
                                              self.statement, self.repetition, self.actor))

    def describe(self) -> dict:
        """Codes and words, as written into results."""
        d = asdict(self)
        d.update(modality_name=MODALITIES[self.modality], vocal_channel_name=VOCAL_CHANNELS[self.vocal_channel],
                 emotion_name=self.emotion_name, intensity_name=INTENSITIES[self.intensity],
                 statement_text=STATEMENTS[self.statement], repetition_name=REPETITIONS[self.repetition],
                 actor_sex=self.actor_sex)
        return d


def parse_ravdess_name(path: str | os.PathLike) -> RavdessName | None:
    """Parse a RAVDESS file name (any folder, any extension); None when it is not one.

    Raises nothing: a malformed name is simply not a RAVDESS name.  Codes must be in range (e.g.
    emotion 01..08, actor 01..24) and neutral (01) must have normal intensity (01).
    """
    m = _PATTERN.match(Path(path).stem)
    if not m:
        return None
    mm, vc, ee, ii, ss, rr, aa = (int(g) for g in m.groups())
    if (mm not in MODALITIES or vc not in VOCAL_CHANNELS or ee not in EMOTIONS or ii not in INTENSITIES
            or ss not in STATEMENTS or rr not in REPETITIONS or not 1 <= aa <= N_ACTORS):
        return None
    if ee == 1 and ii != 1:
        return None
    return RavdessName(mm, vc, ee, ii, ss, rr, aa)


P = TypeVar("P", str, Path)

# preference among the files of one recording: the one with audio first
_MODALITY_RANK = {1: 0, 2: 1, 3: 2}


def recording_key(name: RavdessName) -> tuple[int, ...]:
    """The fields that identify a recording: all but the modality (``01``/``02`` are the same footage)."""
    return (name.vocal_channel, name.emotion, name.intensity, name.statement, name.repetition, name.actor)


def one_file_per_recording(clips: Sequence[P]) -> tuple[list[P], list[tuple[P, P]]]:
    """Keep one file per RAVDESS recording, preferring full AV (``01``) over video-only (``02``).

    Files whose names are not RAVDESS names are all kept.  Among files of equal modality (e.g. the
    same name in two folders) the first listed is kept.

    Returns:
        ``(kept, left_out)``: ``kept`` in the order of ``clips``; ``left_out`` pairs each file set
        aside with the file kept for its recording.
    """
    best: dict[tuple[int, ...], int] = {}
    for i, c in enumerate(clips):
        r = parse_ravdess_name(c)
        if r is None:
            continue
        key = recording_key(r)
        j = best.get(key)
        if j is None or _MODALITY_RANK[r.modality] < _MODALITY_RANK[parse_ravdess_name(clips[j]).modality]:
            best[key] = i
    kept, left_out = [], []
    for i, c in enumerate(clips):
        r = parse_ravdess_name(c)
        j = i if r is None else best[recording_key(r)]
        if j == i:
            kept.append(c)
        else:
            left_out.append((c, clips[j]))
    if left_out:
        log.info("%d file(s) are another copy of a recording already listed (RAVDESS 01 full-AV / 02 video-only): "
                 "measuring %d distinct recordings", len(left_out), len(kept))
    return kept, left_out


__all__ = ["EMOTIONS", "INTENSITIES", "MODALITIES", "RavdessName", "REPETITIONS", "STATEMENTS", "VOCAL_CHANNELS",
           "one_file_per_recording", "parse_ravdess_name", "recording_key"]
