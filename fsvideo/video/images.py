"""Still images: read (EXIF orientation applied) and write uint8 HxWx3 RGB with Pillow.

An image input is a one-frame video (see :func:`fsvideo.video.probe.probe`); :class:`ImageWriter`
is the one-frame twin of :class:`~fsvideo.video.writer.VideoWriter`, so a chain ends in the same
``encode_video`` stage for both.  What the RGB frame leaves out of the source comes back when the
output is written (:func:`image_extras`): its transparency (a PNG, WebP or TIFF output keeps it; a
JPEG or BMP cannot, and a warning says it was dropped) and its colour profile (an iPhone's Display P3
photo stays P3 instead of being shown as sRGB, duller).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from fsvideo.errors import InputError, OutputError

log = logging.getLogger(__name__)

#: File extensions read as still images (with Pillow, EXIF orientation applied).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

# Pillow formats whose extra frames are an animation (refused rather than silently cut to the first
# frame); a JPEG's extra frames (MPO: a phone's gain or depth map) are not, and are ignored.
_ANIMATED_FORMATS = ("PNG", "WEBP")
_IMAGE_DESCRIPTION = 0x010E     # the EXIF / TIFF tag that says what an image is
# Output formats that hold an alpha channel.
_ALPHA_EXTENSIONS = (".png", ".webp", ".tif", ".tiff")


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
    except Image.DecompressionBombError as e:          # e.g. a 233 kB PNG of 20000 x 12000 pixels
        raise InputError(f"{p} is too large an image to read safely ({e.args[0].split(',')[0]})",
                         hint=f"scale it down first (at most {Image.MAX_IMAGE_PIXELS * 2:,} pixels)") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{p} is a truncated or damaged image ({e})", hint="re-export or re-download it") from e



def image_extras(p: Path) -> tuple[np.ndarray | None, bytes | None, list[str]]:
    """(alpha, ICC profile, conversions) of image ``p``, as :func:`read_image` orients the picture:
    alpha is uint8 [H, W] when the image has transparency that is not fully opaque, else None; the ICC
    profile is the embedded one of an RGB or greyscale image (a CMYK profile does not describe the
    RGB frame); conversions says in words what reading it as 8-bit RGB changed (16 bits, CMYK)."""
    from PIL import Image, ImageOps

    with Image.open(p) as im:
        raw = str(im.tile[0][3][0] if im.tile and isinstance(im.tile[0][3], tuple) else
                  im.tile[0][3] if im.tile else "")
        notes = ["16 bits per channel to 8"] if ";16" in raw or im.mode.startswith("I;16") else []
        if im.mode == "CMYK":
            notes.append("CMYK to RGB" + (" (its CMYK colour profile not applied)" if im.info.get("icc_profile")
                                          else ""))
        im = ImageOps.exif_transpose(im)
        icc = im.info.get("icc_profile") if im.mode not in ("CMYK", "YCbCr", "LAB") else None
        alpha = None
        if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
            a = np.asarray(im.convert("RGBA").getchannel("A"), dtype=np.uint8)
            alpha = a if a.min() < 255 else None
    return alpha, icc or None, notes


def check_image(image, name: str, shape: tuple[int, int] | None = None) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{name} must be a uint8 [H, W, 3] RGB array, got {desc}")
    if shape is not None and image.shape[:2] != shape:
        raise ValueError(f"{name} must be {shape[0]}x{shape[1]} (HxW) like the first frame, got "
                         f"{image.shape[0]}x{image.shape[1]}")



def write_image(path: str | os.PathLike, image: np.ndarray, *, quality: int = 95, alpha: np.ndarray | None = None,
                icc_profile: bytes | None = None, shown: str | os.PathLike | None = None,
                comment: str | None = None) -> None:
    """Write uint8 [H, W, 3] RGB ``image`` to ``path`` (format from the extension; JPEG ``quality``).

    ``alpha`` (uint8 [H, W]) is written as the image's transparency where the format holds one (PNG,
    WebP, TIFF; otherwise a warning naming ``shown`` says it was dropped); ``icc_profile`` is embedded
    (not in a BMP), and ``comment`` as the EXIF ImageDescription (not in a BMP).  Call it inside
    :func:`fsvideo.utils.atomic_output`, which hands a temporary name with the same extension.
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
    if icc_profile and ext != ".bmp":
        kwargs["icc_profile"] = icc_profile
    pic = Image.fromarray(image, "RGB")
    if alpha is not None and ext in _ALPHA_EXTENSIONS:
        pic.putalpha(Image.fromarray(alpha, "L"))
    elif alpha is not None:
        log.warning("%s: the source's transparency is dropped (a %s file has none); write a .png to keep it",
                    shown or p, ext)
    try:
        pic.save(p, **kwargs)
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
        source: the input image, whose transparency and colour profile the output keeps
            (:func:`image_extras`), or None.
        shown: the name to use in messages (the user's output when ``path`` is a temporary name).
        comment: how the image was made (EXIF ImageDescription).
    """

    def __init__(self, path: str | os.PathLike, *, quality: int = 95, source: str | os.PathLike | None = None,
                 shown: str | os.PathLike | None = None, comment: str | None = None):
        self.path = Path(path)
        if self.path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise OutputError(f"{self.path}: unknown image extension {self.path.suffix!r}",
                              hint="use .jpg, .png, .webp, .bmp or .tiff")
        self.quality, self.comment = quality, comment
        self.source, self.shown = source, shown
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
        alpha, icc, notes = image_extras(Path(self.source)) if self.source is not None else (None, None, [])
        if notes:
            log.warning("%s: the source %s is written as 8-bit RGB (%s)", self.shown or self.path, self.source,
                        "; ".join(notes))
        if alpha is not None and alpha.shape != self._image.shape[:2]:
            alpha = None                               # not the source's picture (e.g. side by side)
        write_image(self.path, self._image, quality=self.quality, alpha=alpha, icc_profile=icc, shown=self.shown,
                    comment=self.comment)

    def __enter__(self) -> "ImageWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True
