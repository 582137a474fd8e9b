"""Valid but awkward media through the reader and writer: non-square pixels, colour ranges, bit depths."""
from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
import pytest

from fsvideo.utils import atomic_output
from fsvideo.video import VideoReader, VideoWriter, probe
from fsvideo.video.synth import BT709, make_test_clip, reencode


def roundtrip(src, dst, **kw):
    """decode -> encode the way the pipeline does (the source's info, audio and timing)."""
    info = probe(src)
    with atomic_output(dst) as tmp, VideoWriter(tmp, info, audio_from=src, preset="ultrafast", **kw) as w:
        for f in VideoReader(src, info=info):
            w.write_frame(f)
    return info, probe(dst)


@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".mov"])
def test_anamorphic_output_keeps_the_pixel_aspect(tmp_path, ext):
    """720x576 stored for a 16:9 picture (SAR 64:45): the output keeps the SAR, so it still shows 1024x576
    (it was written with square pixels: a 5:4 picture, every face squeezed to 70 % of its width)."""
    src = tmp_path / "pal169.mp4"
    make_test_clip(src, n_frames=3, width=720, height=576, sar=Fraction(64, 45), audio=False)
    info, out = roundtrip(src, tmp_path / f"out{ext}")
    assert info.sar == Fraction(64, 45) and (info.width, info.height) == (720, 576)
    assert out.sar == Fraction(64, 45) and (out.width, out.height) == (720, 576)


def test_anamorphic_rotated_and_written_upright_turns_the_pixel_aspect(tmp_path):
    """A phone clip stored sideways with non-square pixels, written upright: the aspect turns with the picture."""
    src = tmp_path / "rot.mp4"
    make_test_clip(src, n_frames=2, width=64, height=48, sar=Fraction(4, 3), rotation=90, audio=False)
    _, out = roundtrip(src, tmp_path / "up.mp4", keep_rotation=False)
    assert out.rotation == 0 and out.sar == Fraction(3, 4)


@pytest.mark.parametrize("rotation, shown", [(0, (128, 48)), (90, (64, 96))])
def test_a_gif_of_an_anamorphic_source_is_written_on_square_pixels(tmp_path, rotation, shown):
    """GIF has no pixel aspect: a GIF of a SAR 2:1 clip was written with its stored pixels and showed
    squeezed to half its width.  Its frames are now stretched to square pixels as a player shows the
    source (upright: a source stored sideways stretches the other side)."""
    yy, xx = np.mgrid[0:48, 0:64]
    image = np.stack([xx * 4, yy * 5, 255 - xx * 2], -1).astype(np.uint8)      # upright 64x48, smooth
    image[20:28, 30:34] = (255, 255, 0)                                         # a mark to find
    src = tmp_path / "ana.mp4"
    make_test_clip(src, images=[image] * 2, sar=Fraction(2, 1), rotation=rotation, audio=False, pix_fmt="yuv444p")
    info, out = roundtrip(src, tmp_path / "out.gif")
    assert (info.width, info.height) == (64, 48)
    assert (out.width, out.height) == shown and out.sar == 1
    want = cv2.resize(next(iter(VideoReader(src, info=info))).image, shown, interpolation=cv2.INTER_LINEAR)
    got = next(iter(VideoReader(tmp_path / "out.gif"))).image
    assert got.shape == want.shape and np.abs(got.astype(int) - want).mean() < 6


# ------------------------------------------------------------------- anamorphic faces on square pixels

def _face_canvas(media_dir, n=3):
    """n frames of a shared clip's face (256x256, undistorted) on a 384x256 square-pixel canvas."""
    frames = []
    for f in VideoReader(media_dir / "videos/other/liveportrait-d18.mp4"):
        if f.index >= n:
            break
        c = np.full((256, 384, 3), (90, 110, 140), np.uint8)
        c[:, 64:320] = cv2.resize(f.image, (256, 256), interpolation=cv2.INTER_AREA)
        frames.append(c)
    return frames


@pytest.fixture(scope="module")
def anamorphic(media_dir, tmp_path_factory):
    """The same 3 frames as a square-pixel 384x256 clip and squeezed to 256x256 with SAR 3:2 (both shown 384x256)."""
    d = tmp_path_factory.mktemp("anamorphic")
    square = _face_canvas(media_dir)
    make_test_clip(d / "square.mp4", images=square, audio=False)
    make_test_clip(d / "stored.mp4", images=[cv2.resize(f, (256, 256), interpolation=cv2.INTER_AREA) for f in square],
                   audio=False, sar=Fraction(3, 2))
    return d / "square.mp4", d / "stored.mp4"


def _crops_close(a, b):
    """Aligned crops of the same face from the square and the anamorphic clip: the same picture (the
    squeezed face's crop differed by 32 grey levels and 3.9 px of landmarks at 128 px)."""
    assert len(a) == len(b) == 3
    for (ia, la), (ib, lb) in zip(a, b):
        assert np.abs(ia.astype(float) - ib).mean() < 4.0
        assert np.linalg.norm(la - lb, axis=1).mean() < 1.0


def test_anamorphic_faces_are_aligned_on_square_pixels(anamorphic):
    """`fsvideo align`'s front end: detected on a square-pixel copy, the quad built on square pixels."""
    from fsvideo.faces import make_detector
    from fsvideo.faces.frontend import VideoFaces
    det = make_detector("dlib", max_side=640)
    crops = [[(ff.faces[0].aligned.image, ff.faces[0].aligned.landmarks)
              for ff in VideoFaces(p, det, output_size=128) if ff.faces] for p in anamorphic]
    _crops_close(*crops)
    assert probe(anamorphic[1]).sar == Fraction(3, 2)


def test_anamorphic_faces_in_the_chain(anamorphic):
    """The edit / invert chain's detect and track_align stages take the pixel aspect from the components."""
    from fsvideo.faces import make_detector
    from fsvideo.faces.aspect import upright_pixel_aspect
    from fsvideo.pipeline import Components, build_chain, run_chain
    crops = []
    for p in anamorphic:
        info, got = probe(p), []
        comps = Components(reader=VideoReader(p, info=info), detector=make_detector("dlib", max_side=640), fps=25.0,
                           resolution=128, pixel_aspect=upright_pixel_aspect(info),
                           frame_sink=lambda pk, got=got: got.append((pk["aligned"][0].image, pk["aligned"][0].landmarks)))
        run_chain(build_chain("align", comps), queue_size=2)
        crops.append(got)
    _crops_close(*crops)


# ------------------------------------------------------------------------------ colours round-trip

def _planes_mean_rgb(frame) -> np.ndarray:
    """The exact BT.601 mean colour of a decoded 4:2:0 frame (linear, so the mean of its planes converted)."""
    y, u, v = (np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width].astype(float).mean()
               for p in frame.planes)
    u, v = u - 128, v - 128
    if int(frame.color_range) != 2:
        y, u, v = (y - 16) * 255 / 219, u * 255 / 224, v * 255 / 224
    r, b = y + 1.402 * v, y + 1.772 * u
    return np.array([r, (y - 0.299 * r - 0.114 * b) / 0.587, b])


def test_reader_colours_are_not_biased(media_dir):
    """YUV -> RGB rounds: swscale's default truncated, every frame about a level dark (R, G, B -1.05,
    -1.52, -1.24 on this clip), so every edit darkened the whole video."""
    import av
    path = media_dir / "videos/other/pyfeat-single_face.mp4"
    with av.open(str(path)) as c:
        want = np.mean([_planes_mean_rgb(f) for f, _ in zip(c.decode(video=0), range(3))], axis=0)
    got = np.mean([f.image.reshape(-1, 3).mean(0) for f, _ in zip(VideoReader(path), range(3))], axis=0)
    assert np.abs(got - want).max() < 0.15


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuvj420p"])
def test_limited_and_full_range_colours_round_trip(media_dir, tmp_path, pix_fmt):
    """decode -> encode (crf 0) keeps the mean colour: it was 1 level darker (limited range) and 2 levels
    less red and blue (full range: swscale's RGB -> full-range YUV centres the chroma half a level low)."""
    frames = [f.image for f, _ in zip(VideoReader(media_dir / "videos/other/pyfeat-single_face.mp4"), range(3))]
    src = tmp_path / f"{pix_fmt}.mp4"
    make_test_clip(src, images=frames, pix_fmt=pix_fmt, audio=False)
    info, out = roundtrip(src, tmp_path / "out.mp4", crf=0)
    assert info.color["color_range"] == out.color["color_range"] == (2 if pix_fmt == "yuvj420p" else 0)
    a = np.mean([f.image.reshape(-1, 3).mean(0) for f in VideoReader(src)], axis=0)
    b = np.mean([f.image.reshape(-1, 3).mean(0) for f in VideoReader(tmp_path / "out.mp4")], axis=0)
    assert np.abs(b - a).max() < 0.1


def test_the_writers_bt601_conversion_is_the_exact_one_rounded():
    """RGB -> limited-range BT.601 4:2:0 (the writer's common case) through OpenCV: luma within 0.6 of a
    level of the exact formula, chroma within one of the 2x2 blocks' means (OpenCV alone takes the
    top-left pixel's: 95 levels off on this noise; swscale's rounded path: up to 2 levels)."""
    from fsvideo.video.colour import rgb_to_yuv420
    img = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    img[:24] = img[:24] // 4 + 96                                     # some smooth, some saturated
    r, g, b = (img[..., k].astype(float) for k in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    want = [16 + y * 219 / 255, 128 + (b - y) / 1.772 * 224 / 255, 128 + (r - y) / 1.402 * 224 / 255]
    want[1:] = [a.reshape(24, 2, 32, 2).mean(axis=(1, 3)) for a in want[1:]]
    frame = rgb_to_yuv420(img)
    got = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width].astype(float) for p in frame.planes]
    assert frame.format.name == "yuv420p" and [g.shape for g in got] == [(48, 64), (24, 32), (24, 32)]
    assert np.abs(got[0] - want[0]).max() < 0.6                     # (OpenCV's fixed-point coefficients)
    assert max(np.abs(g - w).max() for g, w in zip(got[1:], want[1:])) < 1


@pytest.mark.parametrize("colour", [BT709, dict(BT709, color_range=2), {"colorspace": 9, "color_primaries": 9,
                                                                          "color_trc": 14, "color_range": 1}])
def test_a_tagged_source_comes_back_with_its_planes(media_dir, tmp_path, colour):
    """A BT.709 source (most HD video) or a BT.2020 one keeps its tags and, through decode -> encode (crf 0), its
    very planes: the writer undoes the reader's conversion (swscale's chroma filter is not the 2x2 mean that undoes
    the reader's siting: 0.2 % of the pixels came back 2-4 levels off)."""
    import av
    src = tmp_path / "src.mp4"
    reencode(media_dir / "videos/other/liveportrait-d18.mp4", src, 3, colour=colour)
    info, out = roundtrip(src, tmp_path / "out.mp4", crf=0)
    assert info.color == out.color == colour

    def planes(path):
        with av.open(str(path)) as c:
            return [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width].copy()
                    for f in c.decode(video=0) for p in f.planes]
    a, b = planes(src), planes(tmp_path / "out.mp4")
    assert len(a) == len(b) == 9 and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("colorspace, kr_kb", [(1, (0.2126, 0.0722)), (9, (0.2627, 0.0593)), (None, (0.299, 0.114))])
@pytest.mark.parametrize("full", [False, True])
def test_the_writers_matrix_conversion_is_the_exact_one_rounded(colorspace, kr_kb, full):
    """RGB -> BT.709 / BT.2020 / full-range 4:2:0 through OpenCV: luma the exact formula rounded, chroma the 2x2
    blocks' exact means rounded (the full-range path took 100 ms a 1080p frame, its means in numpy)."""
    from fsvideo.video.colour import rgb_to_yuv420_matrix
    kr, kb = kr_kb
    img = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    img[:24] = img[:24] // 4 + 96
    r, g, b = (img[..., k].astype(float) for k in range(3))
    y = kr * r + (1 - kr - kb) * g + kb * b
    ys, cs, y0 = (1, 1, 0) if full else (219 / 255, 224 / 255, 16)
    want = [y0 + ys * y, 128 + cs * (b - y) / (2 * (1 - kb)), 128 + cs * (r - y) / (2 * (1 - kr))]
    want[1:] = [a.reshape(24, 2, 32, 2).mean(axis=(1, 3)) for a in want[1:]]
    frame = rgb_to_yuv420_matrix(img, colorspace, full, "yuvj420p" if full else "yuv420p")
    got = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width].astype(float) for p in frame.planes]
    assert [g.shape for g in got] == [(48, 64), (24, 32), (24, 32)] and int(frame.color_range) == (2 if full else 1)
    assert max(np.abs(g - w).max() for g, w in zip(got, want)) <= 0.5 + 1e-3


# ------------------------------------------------------------- bit depth, chroma, HDR: said in one warning

def _hdr10_clip(path, n=3):
    """A 10-bit HEVC clip tagged BT.2020 / PQ (HDR10), 64x48."""
    import av
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx265", rate=25, options={"preset": "ultrafast", "x265-params": "log-level=error"})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p10le"
        cc = s.codec_context
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 9, 9, 16, 1
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24")
            f = f.reformat(format="yuv420p10le", dst_colorspace=9, dst_color_range=1)
            f.pts = i
            out.mux(s.encode(f))
        out.mux(s.encode(None))


def _conversion_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "written as" in r.getMessage()]


def test_hdr10_source_keeps_its_tags_and_says_what_was_converted(tmp_path, caplog):
    """HDR10 -> the default H.264 output: 8 bits, but the BT.2020 / PQ tags are kept and one warning says
    so (it was converted silently); with --codec libx265 the output stays 10-bit HDR10."""
    src = tmp_path / "hdr10.mkv"
    _hdr10_clip(src)
    tags = ("colorspace", "color_primaries", "color_trc")
    with caplog.at_level("WARNING"):
        info, out = roundtrip(src, tmp_path / "out.mp4")
    assert out.pix_fmt == "yuv420p" and [out.color[k] for k in tags] == [info.color[k] for k in tags] == [9, 9, 16]
    (msg,) = _conversion_warnings(caplog)
    assert "10-bit edited in 8 bits" in msg and "HDR (PQ)" in msg and "libx265" in msg
    caplog.clear()
    with caplog.at_level("WARNING"):
        _, out = roundtrip(src, tmp_path / "out265.mp4", codec="libx265")
    assert out.pix_fmt == "yuv420p10le" and [out.color[k] for k in tags] == [9, 9, 16]
    (msg,) = _conversion_warnings(caplog)
    assert "written 10-bit" in msg and "HDR" not in msg


@pytest.mark.parametrize("pix_fmt, said", [("yuv444p", "4:4:4 chroma to 4:2:0"), ("yuv420p10le", "10-bit"),
                                           ("rgba", "RGB to YUV 4:2:0; alpha channel dropped"), ("yuv420p", None)])
def test_a_lossy_pixel_format_conversion_is_said_once(tmp_path, caplog, pix_fmt, said):
    src = tmp_path / "src.mov"
    make_test_clip(src, n_frames=2, pix_fmt=pix_fmt, audio=False, codec="png" if pix_fmt == "rgba" else "libx264")
    with caplog.at_level("WARNING"):
        roundtrip(src, tmp_path / "out.mp4")
    msgs = _conversion_warnings(caplog)
    assert (len(msgs), said in msgs[0] if msgs else None) == ((1, True) if said else (0, None))


# ----------------------------------------------------------------------------- EXIF orientation

@pytest.mark.parametrize("orientation, shape, corner", [(3, (30, 40), (-1, -1)), (8, (40, 30), (-1, 0)),
                                                        (2, (30, 40), (0, -1)), (5, (40, 30), (0, 0))])
def test_every_exif_orientation_is_read_upright_and_written_without_the_tag(tmp_path, orientation, shape, corner):
    """The green marker stored top-left shows where EXIF orientation ``orientation`` puts it (180 degrees,
    270 degrees, mirrored, transposed); the output is the upright picture with no orientation tag (a
    viewer would turn it a second time)."""
    from PIL import Image

    from fsvideo.video import ImageWriter
    img = np.zeros((30, 40, 3), np.uint8)
    img[:6, :6, 1] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(img).save(tmp_path / "photo.jpg", exif=exif, quality=95)
    (frame,) = list(VideoReader(tmp_path / "photo.jpg"))
    assert frame.image.shape[:2] == shape
    y, x = corner
    assert frame.image[y * 3:(y * 3 + 3) or None, x * 3:(x * 3 + 3) or None, 1].mean() > 200
    with atomic_output(tmp_path / "out.jpg") as tmp, ImageWriter(tmp, source=tmp_path / "photo.jpg") as w:
        w.write_frame(frame)
    with Image.open(tmp_path / "out.jpg") as out:
        assert out.size == shape[::-1] and 0x0112 not in out.getexif()


# --------------------------------------------------------------------------------- MPEG-TS clocks

def _ts_at(path, first_pts: int, n: int = 4):
    """An MPEG-TS of n frames (25 fps, 64x48) whose clock starts at ``first_pts`` (90 kHz ticks)."""
    import av
    with av.open(str(path), "w", format="mpegts") as out:
        s = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.time_base = Fraction(1, 90000)
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 30 * i, np.uint8), format="rgb24")
            f.pts, f.time_base = first_pts + 3600 * i, Fraction(1, 90000)
            out.mux(s.encode(f))
        out.mux(s.encode(None))


@pytest.mark.parametrize("first_pts", [10 * 3600 * 90000, 2 ** 33 - 7200], ids=["10h", "wrapping"])
def test_mpegts_far_from_zero_trims(tmp_path, first_pts):
    """A broadcast recording whose clock reads 10 hours (or wraps past 2^33 ticks) trimmed with --start: the
    container's seek found no frame and the run failed with 'no frame decoded between 0.04 s and ...'."""
    src = tmp_path / "rec.ts"
    _ts_at(src, first_pts)
    assert [round(f.time, 3) for f in VideoReader(src)] == [0.0, 0.04, 0.08, 0.12]
    assert [round(f.time, 3) for f in VideoReader(src, start=0.04, end=0.1)] == [0.04, 0.08]


@pytest.mark.parametrize("kind, said", [("rgb16", "16 bits per channel to 8"), ("cmyk", "CMYK to RGB"), ("rgb8", None)])
def test_an_image_read_as_8_bit_rgb_says_what_was_converted(tmp_path, caplog, kind, said):
    """A 16-bit PNG or a CMYK JPEG is edited as 8-bit RGB: one warning says so (it was silent)."""
    from PIL import Image

    from fsvideo.video import ImageWriter
    img = (np.arange(30 * 40 * 3).reshape(30, 40, 3) % 251).astype(np.uint8)
    src = tmp_path / ("photo.jpg" if kind == "cmyk" else "photo.png")
    if kind == "rgb16":
        cv2.imwrite(str(src), img[..., ::-1].astype(np.uint16) * 257)
    else:
        Image.fromarray(img).convert("CMYK" if kind == "cmyk" else "RGB").save(src)
    (frame,) = list(VideoReader(src))
    with caplog.at_level("WARNING"):
        with atomic_output(tmp_path / "out.png") as tmp, ImageWriter(tmp, source=src) as w:
            w.write_frame(frame)
    msgs = [r.getMessage() for r in caplog.records if "written as 8-bit RGB" in r.getMessage()]
    assert len(msgs) == (1 if said else 0) and (not said or said in msgs[0])


def test_an_interlaced_source_says_it_is_written_progressive(tmp_path, caplog):
    """1080i camcorder footage: the fields are edited and written as whole progressive frames (not
    deinterlaced); the warning says so (it was silent, and the output lost its interlaced coding)."""
    import av
    src = tmp_path / "tff.mp4"
    with av.open(str(src), "w") as out:
        s = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "x264-params": "interlaced=1:tff=1"})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(2):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 60 * i, np.uint8), format="rgb24")
            f.pts = i
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    assert probe(src).interlaced
    with caplog.at_level("WARNING"):
        roundtrip(src, tmp_path / "out.mp4")
    (msg,) = _conversion_warnings(caplog)
    assert "interlaced fields written as progressive frames" in msg


@pytest.mark.parametrize("codec, pix_fmt", [("png", "rgb24"), ("ffv1", "bgr0")])
def test_an_rgb_source_gets_the_matrix_it_was_converted_with(tmp_path, codec, pix_fmt):
    """A PNG / FFV1 RGB video becomes YUV: the output names the BT.601 matrix it was converted with (it was
    untagged, and players read untagged HD video as BT.709: saturated colours shifted)."""
    src = tmp_path / ("rgb.mov" if codec == "png" else "rgb.mkv")
    make_test_clip(src, n_frames=2, width=64, height=48, codec=codec, pix_fmt=pix_fmt, audio=False)
    _, out = roundtrip(src, tmp_path / "out.mp4")
    assert out.color["colorspace"] == 6
