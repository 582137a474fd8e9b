"""Still images: read (EXIF orientation applied) and write uint8 HxWx3 RGB with Pillow.

An image input is a one-frame video (see :func:`fsvideo.video.probe.probe`); :class:`ImageWriter`
is the one-frame twin of :class:`~fsvideo.video.writer.VideoWriter`, so a chain ends in the same
``encode_video`` stage for both.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fsvideo.errors import InputError, OutputError

#: File extensions read as still images (with Pillow, EXIF orientation applied).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

# Pillow formats whose extra frames are an animation (refused rather than silently cut to the first
# frame); a JPEG's extra frames (MPO: a phone's gain or depth map) are not, and are ignored.
_ANIMATED_FORMATS = ("PNG", "WEBP")
_IMAGE_DESCRIPTION = 0x010E     # the EXIF / TIFF tag that says what an image is


def read_image(p: Path) -> np.ndarray:
    """uint8 [H, W, 3] RGB with the EXIF orientation applied."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            if im.format in _ANIMATED_FORMATS and getattr(im, "is_animated", False):
                raise InputError(f"{p} is an animated {im.format} ({im.n_frames} frames); fsvideo reads a "
                                 f"{p.suffix} file as one still image and would edit its first frame only",
                                 hint=f"convert it to a video or GIF first (e.g. `magick {p.name} {p.stem}.gif`), "
                                      "then edit that")
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, dtype=np.float64)
                a = np.clip(a / (257.0 if a.max() > 255 else 1.0), 0, 255).astype(np.uint8)
                return np.ascontiguousarray(np.repeat(a[..., None], 3, axis=2))
            return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
    except UnidentifiedImageError as e:
        raise InputError(f"{p} is not an image Pillow can read", hint="pass a jpg, png, bmp, webp or tiff") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{p} is a truncated or damaged image ({e})", hint="re-export or re-download it") from e



def check_image(image, name: str, shape: tuple[int, int] | None = None) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{name} must be a uint8 [H, W, 3] RGB array, got {desc}")
    if shape is not None and image.shape[:2] != shape:
        raise ValueError(f"{name} must be {shape[0]}x{shape[1]} (HxW) like the first frame, got "
                         f"{image.shape[0]}x{image.shape[1]}")



def write_image(path: str | os.PathLike, image: np.ndarray, *, quality: int = 95, comment: str | None = None) -> None:
    """Write uint8 [H, W, 3] RGB ``image`` to ``path`` (format from the extension; JPEG ``quality``;
    ``comment`` in the EXIF ImageDescription where the format keeps EXIF, i.e. not BMP).

    Call it inside :func:`fsvideo.utils.atomic_output`, which hands a temporary name with the same
    extension.
    """
    from PIL import Image

    check_image(image, "image")
    p = Path(path)
    ext = p.suffix.lower()
    kwargs = {"quality": int(quality)} if ext in (".jpg", ".jpeg", ".webp") else {}
    if comment and ext != ".bmp":
        exif = Image.Exif()
        exif[_IMAGE_DESCRIPTION] = comment
        kwargs["exif"] = exif
    if ext not in IMAGE_EXTENSIONS:
        raise OutputError(f"{p}: unknown image extension {p.suffix!r}", hint="use .jpg, .png, .webp, .bmp or .tiff")
    try:
        Image.fromarray(image, "RGB").save(p, **kwargs)
    except OSError as e:
        raise OutputError(f"cannot write {p} ({e})", hint="check the output folder") from e


class ImageWriter:
    """The still-image twin of :class:`VideoWriter`: ``write`` keeps the frame, ``close`` saves it.

    Lets a chain end in the same ``encode_video`` stage for images and videos.  Writing a second
    frame is an error (an image input has one frame).

    Args:
        path: output image file (format from the extension); give it the temporary path of
            :func:`fsvideo.utils.atomic_output`.
        quality: JPEG/WebP quality.
        comment: how the image was made (EXIF ImageDescription).
    """

    def __init__(self, path: str | os.PathLike, *, quality: int = 95, comment: str | None = None):
        self.path = Path(path)
        if self.path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise OutputError(f"{self.path}: unknown image extension {self.path.suffix!r}",
                              hint="use .jpg, .png, .webp, .bmp or .tiff")
        self.quality, self.comment = quality, comment
        self.frames_written = 0
        self._image: np.ndarray | None = None
        self._closed = False

    def write(self, image: np.ndarray, pts: int | None = None, *, time: float | None = None,
              duration: int | None = None) -> None:
        """Keep uint8 [H, W, 3] RGB ``image`` (timing arguments are accepted and ignored)."""
        check_image(image, "image")
        if self._image is not None:
            raise ValueError(f"{self.path}: an image output takes one frame")
        self._image = image
        self.frames_written = 1

    def write_frame(self, frame, image: np.ndarray | None = None) -> None:
        self.write(frame.image if image is None else image)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._image is None:
            raise OutputError(f"no image was written to {self.path}")
        write_image(self.path, self._image, quality=self.quality, comment=self.comment)

    def __enter__(self) -> "ImageWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True
