"""``fsvideo align``: FFHQ-aligned face crops (PNG) and a JSON of transforms, from images or a video."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click
import numpy as np

from fsvideo.cli._console import console, err_console
from fsvideo.cli._face_options import STABILIZE_HELP, StabilizeValue, detector_option
from fsvideo.errors import InputError, OutputError
from fsvideo.faces.registry import DEFAULT_DETECT_SIDE
from fsvideo.faces.stabilize import DEFAULT_SMOOTHING_S
from fsvideo.utils import atomic_dir

JSON_NAME = "alignment.json"


def _r(a, nd: int = 4):
    return None if a is None else np.round(np.asarray(a, dtype=np.float64), nd).tolist()


def _ranges(indices: list[int], step: int = 1) -> list[list[int]]:
    """[0, 1, 2, 5, 6] -> [[0, 2], [5, 6]] (inclusive runs of indices ``step`` apart)."""
    out: list[list[int]] = []
    for i in indices:
        if out and i == out[-1][1] + step:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def _check_out_dir(out: Path, overwrite: bool) -> None:
    """``--out`` may be new, or (with ``--overwrite``) a folder that holds only an earlier align output."""
    try:
        found = out.exists()
    except OSError as e:        # a name past the file system's 255 bytes (ENAMETOOLONG)
        raise OutputError(f"cannot write {out} ({e.strerror or e})", hint="choose a shorter --out") from e
    if found:
        if not out.is_dir():
            raise OutputError(f"{out} exists and is not a folder", hint="choose another --out")
        if any(out.iterdir()):
            if not overwrite:
                raise OutputError(f"{out} already exists and is not empty",
                                  hint="pass --overwrite to replace it, or choose another --out")
            others = sorted(p.name for p in out.iterdir()
                            if not (p.is_file() and (p.suffix == ".png" or p.name == JSON_NAME)))
            if others:
                raise OutputError(f"{out} holds files fsvideo align did not write ({', '.join(others[:3])}...)",
                                  hint="choose another --out; --overwrite only replaces an align output")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output folder {parent} does not exist", hint="create it first or choose another --out")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output folder {parent} is not writable", hint="choose another --out")


def _write_png(path: Path, image: np.ndarray) -> None:
    import cv2
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OutputError(f"could not write {path}", hint="check the disk space and permissions of --out")


def _read_image(path: Path) -> np.ndarray:
    from fsvideo.video import VideoReader
    return next(iter(VideoReader(path))).image


def _face_record(file: str, tf, extra: dict) -> dict:
    a = tf.aligned
    det = tf.detection
    rec = dict(extra)
    rec.update(file=file, track_id=tf.track_id, status=tf.status, quad=_r(a.quad), matrix=_r(a.matrix, 8),
               landmarks=_r(tf.landmarks), landmarks_aligned=_r(a.landmarks),
               box=_r(det.box, 2) if det is not None else None,
               score=round(float(det.score), 4) if det is not None else None)
    return rec


@click.command("align")
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", "out", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="Output folder for the PNG crops and alignment.json.")
@click.option("--size", default=1024, show_default=True, type=click.IntRange(min=8),
              help="Side of the aligned crops.")
@detector_option()
@click.option("--face", "face_policy", default=None, metavar="largest|all|ID[,ID...]",
              help="Which faces: the largest, one track id, or all.  [default: all for photos and "
                   "folders of photos (dataset preparation), largest for videos]")
@click.option("--no-stabilize", is_flag=True,
              help="Videos: align each frame on its own (no flow, smoothing or gap bridging); = --stabilize 0.")
@click.option("--stabilize", "--sigma", "stabilize", default=DEFAULT_SMOOTHING_S, show_default=True,
              type=StabilizeValue(), help="Videos: " + STABILIZE_HELP)
@click.option("--method", default="auto", show_default=True, type=click.Choice(["auto", "exact", "fast"]),
              help="exact: the FFHQ procedure (about 0.5 s a face); fast: one cv2 warp. "
                   "auto: exact for images, fast for videos.")
@click.option("--on-missing-face", "on_missing", default="passthrough", show_default=True,
              type=click.Choice(["passthrough", "hold", "error"]),
              help="Videos: frames without a face are skipped (passthrough), get the last crop of that "
                   "person until they are seen again (hold), or stop the run (error).")
@click.option("--detect-size", default=DEFAULT_DETECT_SIDE, show_default=True, type=click.IntRange(min=0),
              help="Detect boxes on a copy shrunk to this longer side (0: full size); landmarks use full size.")
@click.option("--every", default=1, show_default=True, type=click.IntRange(min=1),
              help="Videos: use every N-th frame.")
@click.option("--max-frames", default=None, type=click.IntRange(min=1),
              help="Videos: stop after this many frames used.")
@click.option("--device", default=None, help="Device for the FAN detector (auto, cpu, cuda...).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder of a previous align run.")
def align(input_path: Path, out: Path, size, detector, face_policy, no_stabilize, stabilize, method, on_missing,
          detect_size, every, max_frames, device, overwrite) -> None:
    """Write FFHQ-aligned face crops and their transforms for an image, a folder of images or a video.

    \b
    Examples:
      fsvideo align photos/ --out faces/ --size 256     (every face of every photo)
      fsvideo align photo.jpg --out faces/ --face largest
      fsvideo align talk.mp4 --out frames/ --max-frames 100

    Videos are aligned as `fsvideo invert` aligns them (tracked, stabilised).  DIR/alignment.json
    lists every crop: its file, frame index, track id, status (detected, interpolated, held), quad,
    matrix (crop pixel -> source pixel, 3x3), landmarks in source and crop pixels, and the
    detection box and score; plus a summary with the frames without a face.
    """
    from fsvideo.faces import make_detector
    from fsvideo.faces.track import parse_policy, policy_text
    from fsvideo.video import IMAGE_EXTENSIONS

    if input_path.is_dir():
        files = sorted(p for p in input_path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise InputError(f"{input_path} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})",
                             hint="pass a folder of photos, an image or a video")
        kind = "folder"
    else:
        from fsvideo.utils import check_input_file
        check_input_file(input_path)
        files = [input_path]
        kind = "image" if input_path.suffix.lower() in IMAGE_EXTENSIONS else "video"
    policy = parse_policy(face_policy if face_policy is not None else "largest" if kind == "video" else "all")
    if out.resolve() == input_path.resolve():
        raise OutputError(f"--out {out} is the input", hint="choose another output folder")
    method = method if method != "auto" else ("fast" if kind == "video" else "exact")
    _check_out_dir(out, overwrite)
    if kind != "folder":
        from fsvideo.video import probe
        probe(input_path)           # a bad input or output fails here, before the detector loads
    det = make_detector(detector, device, max_side=detect_size or None)
    err_console.print(f"face detector: [bold]{det.name}[/]", highlight=False)
    t0 = time.perf_counter()
    with atomic_dir(out, overwrite=True) as tmp:     # an existing `out` was checked above
        if kind == "video":
            doc = _align_video(input_path, tmp, det, size, policy, 0.0 if no_stabilize else stabilize, method,
                               on_missing, every, max_frames)
        else:
            doc = _align_images(files, tmp, det, size, policy, method)
        doc.update(input=str(input_path), kind=kind, output_size=size, method=method, detector=det.name,
                   face=policy_text(policy))
        doc["summary"]["seconds"] = round(time.perf_counter() - t0, 2)
        (tmp / JSON_NAME).write_text(json.dumps(doc, indent=1))
    s = doc["summary"]
    console.print(f"[green]aligned[/] {s['faces_written']} face(s) from {s['frames']} "
                  f"{'frame' if kind == 'video' else 'image'}(s) -> {out}  "
                  f"({s['frames_without_face']} without a face, {s['seconds']} s)", highlight=False)


def _align_images(files: list[Path], tmp: Path, det, size: int, policy, method: str) -> dict:
    from rich.progress import Progress

    from fsvideo.faces.frontend import photo_faces
    records, without = [], []
    used: set[str] = set()
    with Progress(console=err_console, transient=True) as prog:
        task = prog.add_task("aligning", total=len(files))
        for n, path in enumerate(files):
            chosen, _ = photo_faces(_read_image(path), det, output_size=size, policy=policy, method=method)
            if not chosen:
                without.append(n)
            stem = path.stem if path.stem not in used else f"{path.stem}{path.suffix.replace('.', '_')}"
            used.add(stem)
            for tf in chosen:
                name = f"{stem}_{tf.track_id:02d}.png"
                _write_png(tmp / name, tf.aligned.image)
                records.append(_face_record(name, tf, {"frame": n, "source": path.name}))
            prog.advance(task)
    return {"summary": {"frames": len(files), "frames_with_face": len(files) - len(without),
                        "frames_without_face": len(without), "faces_written": len(records)},
            "frames_without_face": _ranges(without), "faces": records}


def _align_video(path: Path, tmp: Path, det, size: int, policy, stabilize, method: str,
                 on_missing: str, every: int, max_frames: int | None) -> dict:
    """The shared face front end (:class:`~fsvideo.faces.frontend.VideoFaces`), crops written as they come."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from fsvideo.faces.frontend import VideoFaces
    from fsvideo.faces.stabilize import parse_stabilize
    mode, sigma = parse_stabilize(stabilize)
    vf = VideoFaces(path, det, output_size=size, every=every, max_frames=max_frames, policy=policy,
                    stabilize=mode, sigma_s=sigma, on_missing=on_missing, method=method)
    records, without = [], []
    with Progress(TextColumn("aligning"), BarColumn(), TextColumn("{task.completed}/{task.total} frames"),
                  TimeRemainingColumn(), console=err_console, transient=True) as prog:
        task = prog.add_task("aligning", total=len(vf) or None)
        for ff in vf:
            if not ff.faces:
                without.append(ff.index)
            for tf in ff.faces:
                name = f"f{ff.index:06d}_t{tf.track_id:02d}.png"
                _write_png(tmp / name, tf.aligned.image)
                records.append(_face_record(name, tf, {"frame": ff.index, "time": round(ff.time, 4)}))
            prog.advance(task)
    st = vf.stats
    info = vf.info
    return {"fps": round(float(info.fps), 4) if info.fps else None, "every": every,
            "stabilize": vf.aligner.stabilizer.describe() if mode else None,
            "on_missing_face": on_missing,
            "summary": {"frames": st.frames, "frames_with_face": st.frames_with_face,
                        "frames_without_face": st.frames_without_face, "faces_written": len(records),
                        "interpolated": st.interpolated, "held": st.held, "tracks": sorted(st.track_ids)},
            "frames_without_face": _ranges(without, every), "faces": records}
