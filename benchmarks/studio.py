"""`fsvideo studio` feedback latency with the released 1024 px architecture (random weights).

Usage::

    python benchmarks/studio.py                       # CPU (or CUDA when present)
    python benchmarks/studio.py --drafts 64 128 256 --repeats 3 --device cuda

Times what a slider change costs in the page, per frame with one face: a draft (Eq. 1, the
generator stopped at ``--drafts`` px and read from its RGB skip, pasted into the frame, JPEG) and
the full frame (Eq. 1, one full generator pass, paste, JPEG), against one bare generator pass
G(w, F).  The face is a real photo's (detected and aligned; its latents are random: speed does
not depend on the values).  Targets (issue 12): on a 2-core CPU the draft within 1 s and the full
frame within the time of one generator pass; on a GPU the full frame within 100 ms.

The photo stands for a video whose face has been there from its first frame: a full frame at frame
``i`` smooths its blend mask over the hull masks of the frames before it, as the render does (up to
:func:`~fsvideo.faces.blend.mask_history_frames` of them); the last row times that for a frame not
shown before (a slider change on the same frame reuses its masks).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from fsvideo.pipeline.memory import use_huge_pages  # noqa: E402

use_huge_pages()  # before torch, as the CLI does (THP_MEM_ALLOC_ENABLE=0 to measure without)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from fsvideo import RunOptions  # noqa: E402
from fsvideo.latents import FrameLatents  # noqa: E402
from fsvideo.models.encoder import FeatureStyleEncoder  # noqa: E402
from fsvideo.models.fse import FeatureStyleModel  # noqa: E402
from fsvideo.models.stylegan2 import Generator  # noqa: E402
from fsvideo.studio.render import Renderer, jpeg_bytes  # noqa: E402

PHOTO = Path(__file__).resolve().parents[2] / "shared/media/images/wild/facerec-obama.jpg"


class PhotoProject:
    """A video of one photo repeated (frame rate ``fps``), one detected, aligned face on every frame
    and random latents: what render() reads."""

    key = "photo"
    fps = 25.0

    def __init__(self, photo: Path, G: Generator, crop: int, detector: str = "dlib"):
        from fsvideo.faces.align import align_face_fast
        from fsvideo.faces.detect import make_detector
        from fsvideo.video import VideoReader
        self.image = next(iter(VideoReader(photo))).image
        (face,) = make_detector(detector).detect(self.image)[:1]
        al = align_face_fast(self.image, face.landmarks, crop)
        g = torch.Generator().manual_seed(0)
        self.fl = FrameLatents(0, np.zeros(1, np.int64), torch.randn(1, G.n_latent, 512, generator=g).numpy() * 0.5,
                               torch.randn(1, *G.feature_shape(5), generator=g).numpy(),
                               al.matrix[None], al.landmarks[None].astype(np.float32))

    def frame(self, i: int) -> np.ndarray:
        return self.image

    def latents(self, i: int) -> FrameLatents:
        return self.fl

    def history_start(self, i: int, tracks, limit: int) -> int:
        return max(0, i - limit)                 # the face is on every frame


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of ``repeats`` calls after one warm-up."""
    fn()
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--drafts", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--photo", type=Path, default=PHOTO)
    ap.add_argument("--size", type=int, default=1024, help="generator size (1024: the released architecture)")
    ap.add_argument("--detector", default="dlib",
                    help="a registered detector (device runs: `recorded`, see benchmarks/device_run.py)")
    a = ap.parse_args()
    torch.manual_seed(0)
    G = Generator(a.size).eval()
    model = FeatureStyleModel(FeatureStyleEncoder(G.n_latent).eval(), G, torch.zeros(G.n_latent, 512))
    model = model.eval().requires_grad_(False)
    opts = RunOptions(device=a.device, precision=a.precision, batch_size=1, mask="hull")
    r = Renderer(opts, draft_res=a.drafts[0], model=model)
    default = Renderer(opts, model=model)                  # the draft size the studio picks on this device
    dev = r.runner.device
    name = torch.cuda.get_device_name() if dev.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"device: {name}, dtype: {r.runner.dtype}, torch {torch.__version__}, frame {a.photo.name}")
    project = PhotoProject(a.photo, G, r.crop, a.detector)
    w = torch.from_numpy(project.fl.w).to(dev)
    f = torch.from_numpy(project.fl.F).to(dev)

    def g_pass():
        with torch.no_grad(), r.runner.autocast():
            model.decode(w, f, r.runner.noise)
    t_pass = timed(g_pass, a.repeats, dev)
    print(f"{'step':<44}{'seconds':>9}{'of a G pass':>13}")
    print(f"{f'one generator pass G(w, F) {a.size} px':<44}{t_pass:>9.3f}{1:>13.0%}")
    strengths = iter(range(1, 10_000))

    def edits():                    # a new strength every call: the renderer caches the last state
        return [("sefa:1", "sefa:1", float(next(strengths)))]
    for res in a.drafts:
        r.draft_res = res
        t = timed(lambda: jpeg_bytes(r.render(project, 0, edits(), tracks=None, draft=True).image), a.repeats, dev)
        print(f"{f'draft {res} px (Eq. 1 + G to {res} + paste + JPEG)':<44}{t:>9.3f}{t / t_pass:>13.0%}")
    t = timed(lambda: jpeg_bytes(r.render(project, 0, edits(), tracks=None).image), a.repeats, dev)
    print(f"{'full frame (Eq. 1 + G + paste + JPEG)':<44}{t:>9.3f}{t / t_pass:>13.0%}")
    r.draft_res = default.draft_res

    def change():                   # what the page does after a slider change: draft, then the full frame
        e = edits()
        jpeg_bytes(r.render(project, 0, e, tracks=None, draft=True).image)
        jpeg_bytes(r.render(project, 0, e, tracks=None).image)
    t = timed(change, a.repeats, dev)
    label = f"change: draft {r.draft_res} px, then full (resumed)"
    print(f"{label:<44}{t:>9.3f}{t / t_pass:>13.0%}")

    from fsvideo.faces.blend import mask_history_frames
    n = mask_history_frames(project.fps)
    frames = iter(range(n + 1, 10_000_000))
    t = timed(lambda: r.smoothed_masks(project, next(frames), None), a.repeats, dev)
    print(f"{f'mask history, a new frame ({n} hull masks)':<44}{t:>9.3f}{t / t_pass:>13.0%}")


if __name__ == "__main__":
    main()
