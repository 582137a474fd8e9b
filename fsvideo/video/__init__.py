"""Video decoding and encoding with PyAV: timestamps, rotation and audio kept (see :mod:`fsvideo.video.io`)."""
from fsvideo.video.io import (IMAGE_EXTENSIONS, VIDEO_CODECS, Frame, ImageWriter, VideoInfo, VideoReader,
                              VideoWriter, codec_report, probe, upright, write_image)

__all__ = ["IMAGE_EXTENSIONS", "VIDEO_CODECS", "Frame", "ImageWriter", "VideoInfo", "VideoReader", "VideoWriter",
           "codec_report", "probe", "upright", "write_image"]
