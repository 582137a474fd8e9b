"""Video in and out with PyAV: timestamps, rotation, colour and audio kept.

* :mod:`.probe`    a file's facts (:class:`VideoInfo`); every unusable file is one clear error
* :mod:`.reader`   :class:`VideoReader` streams upright uint8 RGB :class:`Frame` objects
* :mod:`.writer`   :class:`VideoWriter` encodes with the source's timing, rotation and colour
* :mod:`.encoders` which encoder writes an output (extension, ``auto``, NVENC, presets)
* :mod:`.audio`    the source's audio copied packet by packet into the output
* :mod:`.images`   still images (a one-frame video) read and written with Pillow
* :mod:`.synth`    synthetic test clips
"""
from fsvideo.video.encoders import DEFAULT_PRESET, PRESETS, VIDEO_CODECS, VIDEO_EXTENSIONS, codec_report, nvenc_usable
from fsvideo.video.images import IMAGE_EXTENSIONS, ImageWriter, read_image, write_image
from fsvideo.video.probe import VIDEO_INPUT_EXTENSIONS, VideoInfo, probe
from fsvideo.video.reader import Frame, VideoReader, upright
from fsvideo.video.writer import VideoWriter

__all__ = ["DEFAULT_PRESET", "IMAGE_EXTENSIONS", "PRESETS", "VIDEO_CODECS", "VIDEO_EXTENSIONS", "VIDEO_INPUT_EXTENSIONS", "Frame",
           "ImageWriter", "VideoInfo", "VideoReader", "VideoWriter", "codec_report", "nvenc_usable", "probe",
           "read_image", "upright", "write_image"]
