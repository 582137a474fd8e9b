"""Frames for the page: original, inversion, edit and composite, as a draft or at full quality.

Every step is a library call: Eq. 1 through the model executor (:mod:`fsvideo.models.execution`, the
same noise seed as export), G(w, F) through :func:`fsvideo.models.preview.synthesize` (a draft stops it early; the full
frame then resumes the draft's pass, so draft + full cost one generator pass), masks and pasting
through :mod:`fsvideo.faces.blend`.  The render smooths each face's blend mask over the frames
before it (:class:`~fsvideo.faces.blend.TrackMasks`); a full frame does the same over those frames'
landmark-hull masks (:meth:`Renderer.smoothed_masks`), so it is the exported frame.  Two cases keep
the frame's own mask: a draft (labelled; the hull, for speed), and a full frame with a face parser
(``--mask parsing``, or ``auto`` with its weights), whose earlier masks would each need a generator
pass: its mask differs from the render's by at most ``1 - alpha`` (0.66 at 30 fps) times how much the
mask moved over the last :func:`~fsvideo.faces.blend.mask_history_frames` frames, i.e. only on the
blend edge of a moving face.  A preview clip is rendered by the export's own code, with those frames.

Edits arrive as ``(attribute, strength)`` pairs whose attribute was checked by the app (a released
name, ``sefa:N``, a fitted name or an uploaded file of this session); each direction is resolved
once (:func:`fsvideo.edits.requests.resolve_edits`) and cached.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np
import torch

from fsvideo.studio.project import Project

log = logging.getLogger(__name__)

VIEWS = ("original", "inversion", "edit", "composite")
MASK_TINT = np.array([255, 40, 40], np.float32)


@dataclass
class Rendered:
    image: np.ndarray            # uint8 [H, W, 3]
    quality: str                 # "draft" or "full"
    size: int                    # generator pixels rendered (draft size, or the generator's size)
    faces: int                   # faces shown
    note: str = ""
    mask: str = "frame"          # "smoothed" (the render's mask) or "frame" (this frame's own mask)


class Renderer:
    """The models of this studio run, loaded once, and the frame renderer.

    Args:
        options: :class:`fsvideo.RunOptions` (models, device, precision, seed, mask, blend).
        draft_res: generator size the draft stops at (None: 64 px on a CPU, 256 px on a GPU, or
            the largest below the generator's size for small generators).
        model: a ready FeatureStyleModel instead of the one ``options`` name (benchmarks).
    """

    def __init__(self, options, draft_res: int | None = None, model=None):
        from fsvideo.config import ModelConfig, load_config, resolve_config_path
        from fsvideo.models.execution import ModelExecutor, crop_size
        from fsvideo.models.preview import draft_sizes
        from fsvideo.pipeline.jobs import face_parser, load_model
        from fsvideo.utils import pick_device, pick_dtype
        self.options = options
        self.cfg = load_config(resolve_config_path(options.config), ModelConfig, section="model")
        device = pick_device(options.device)
        if model is None:
            model = load_model(self.cfg, generator=options.generator, encoder=options.encoder, device=device)
        self.runner = ModelExecutor(model, device, pick_dtype(device, options.precision), options.batch_size,
                                    noise_seed=options.seed or 0)
        self.parser = face_parser(self.cfg, options.mask, device)
        self.crop = crop_size(model)
        sizes = draft_sizes(model.generator, model.k)
        below = [s for s in sizes if s < model.generator.size] or sizes
        if draft_res is None:            # about 1 s on a 2-core CPU at 1024 px (benchmarks/studio.py)
            want = 256 if device.type == "cuda" else 64
            draft_res = max([s for s in below if s <= want] or below[:1])
        if draft_res not in sizes:
            from fsvideo.errors import InputError
            raise InputError(f"--draft-res {draft_res} is not a size of this generator",
                             hint=f"use one of {', '.join(map(str, sizes))}")
        self.draft_res = draft_res
        self._directions: dict[str, torch.Tensor] = {}
        self._codes_cache = None                  # (key, w~, F~) of the last frame rendered
        self._gk = None                           # ((project, frame, faces), G^K(w)) of the last frame
        self._partial = None                      # (key, Partial) of the last draft
        self._masks = None                        # ((project, frame, faces), smoothed hull masks) of the last frame
        self.lock = threading.Lock()              # one render at a time: the CPU is shared anyway

    @property
    def size(self) -> int:
        return self.runner.model.resolution

    # ------------------------------------------------------------------------------ edits
    def specs(self, edits: list[tuple[str, str, float]]):
        """``[(name, attr, strength)]`` -> EditSpecs (``attr`` resolved once and cached by ``attr``: the
        names of uploads are per tab, so two tabs' 'upload:1:d.npy' are different files)."""
        from fsvideo import EditRequest
        from fsvideo.edits.eq1 import EditSpec
        from fsvideo.edits.requests import resolve_edits
        out = []
        for name, attr, strength in edits:
            if attr not in self._directions:
                (spec,) = resolve_edits([EditRequest(attr, 1.0)], self.cfg, self.runner.model)
                self._directions[attr] = spec.direction
            out.append(EditSpec(name, self._directions[attr], float(strength)))
        return out

    def check_direction(self, path) -> None:
        """Raise InputError unless ``path`` is a usable direction for this generator."""
        from fsvideo.edits.directions import load_direction
        G = self.runner.model.generator
        load_direction(path, G.n_latent, G.style_dim)

    # ------------------------------------------------------------------------------ frames
    def _codes(self, key, w: torch.Tensor, f: torch.Tensor, edits) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 1 codes, kept for the last (frame, faces, edits): the full frame reuses the draft's.

        G^K(w) of the frame's faces is kept too, so a slider change runs only G^K(w~).
        """
        from fsvideo.edits.eq1 import edit_codes
        if self._codes_cache is not None and self._codes_cache[0] == key:
            return self._codes_cache[1], self._codes_cache[2]
        r, frame_key = self.runner, key[:3]
        w, f = w.to(r.device), f.to(r.device)
        with torch.no_grad(), r.autocast():
            if self._gk is None or self._gk[0] != frame_key:
                self._gk = (frame_key, r.model.features(w, noise=r.noise))
            we, fe = edit_codes(r.model, w, f, self.specs(edits), r.noise, features_w=self._gk[1])
        self._codes_cache = (key, we.float(), fe.float())
        return self._codes_cache[1], self._codes_cache[2]

    def _faces(self, key, w: torch.Tensor, f: torch.Tensor, draft: bool) -> np.ndarray:
        """uint8 [n, S, S, 3] faces; a full frame resumes the draft of the same key (one pass in all)."""
        from fsvideo.models.fse import to_uint8
        from fsvideo.models.preview import synthesize
        r, until = self.runner, (self.draft_res if draft else self.size)
        start = self._partial[1] if self._partial is not None and self._partial[0] == key else None
        if start is not None and start.res > until:
            start = None
        with torch.no_grad(), r.autocast():
            part = synthesize(r.model.generator, w.to(r.device), f.to(r.device), r.noise, r.model.k, until, start)
        self._partial = (key, part) if draft else None
        img = part.skip
        if img.shape[-1] != self.crop:          # as ModelRunner.generate for the full frame
            img = torch.nn.functional.interpolate(img.float(), size=(self.crop, self.crop),
                                                  mode="bilinear" if draft else "bicubic", align_corners=False)
        return to_uint8(img).cpu().numpy()

    def render(self, project: Project, i: int, edits: list[tuple[str, str, float]], *, tracks: set[int] | None,
               view: str = "composite", draft: bool = False, mask: bool = False) -> Rendered:
        """Frame ``i`` of ``project`` in ``view``; ``tracks`` None edits every face."""
        from fsvideo.faces.blend import face_mask, resample_mask
        from fsvideo.faces.paste import paste_back, warp_to_frame
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}")
        frame = project.frame(i)
        quality, size = ("draft", self.draft_res) if draft else ("full", self.size)
        if view == "original" and not mask:
            return Rendered(frame, "full", 0, 0)
        fl = project.latents(i)
        sel = [j for j, t in enumerate(fl.track) if tracks is None or int(t) in tracks]
        if not sel:
            return Rendered(frame, "full", 0, 0, note="no face in this frame" if not len(fl.track) else
                            "no selected face in this frame")      # not 'selected' when there is none to pick
        w, f = torch.from_numpy(fl.w[sel]), torch.from_numpy(fl.F[sel])
        key = (project.key, i, tuple(sel), view == "inversion" or tuple((a, float(s)) for _, a, s in edits))
        if view in ("edit", "composite"):
            w, f = self._codes(key, w, f, edits)
        crops = self._faces(key, w, f, draft) if view != "original" else [None] * len(sel)
        parser = None if draft else self.parser             # drafts: the landmark hull, no face parsing
        smooth = not draft and (parser is None or view == "original")     # hull masks: smoothed as the render's
        if smooth:
            masks = self.smoothed_masks(project, i, tracks)
        else:
            masks = [face_mask(c if c is not None else np.zeros((self.crop, self.crop, 3), np.uint8),
                               landmarks=fl.landmarks[j], parser=parser if c is not None else None)
                     for c, j in zip(crops, sel)]
        mask_kind = "smoothed" if smooth else "frame"
        if view in ("inversion", "edit"):
            tiles = [_tint(c, resample_mask(m, c.shape[:2])) if mask else c   # a smoothed mask: the face's grid
                     for c, m in zip(crops, masks)]
            return Rendered(np.concatenate(tiles, axis=1), quality, size, len(sel), mask=mask_kind)
        out = frame
        for c, m, j in zip(crops, masks, sel):
            if c is not None:
                out = paste_back(out, c, fl.matrix[j], m, poisson=self.options.blend == "poisson")
        if mask:
            out = out.copy()
            for m, j in zip(masks, sel):
                warped = warp_to_frame(np.zeros((self.crop, self.crop, 3), np.uint8), fl.matrix[j], m, out.shape)
                if warped is not None:
                    x0, y0, _, a = warped
                    roi = out[y0:y0 + a.shape[0], x0:x0 + a.shape[1]]
                    roi[:] = _tint(roi, a)
        return Rendered(out, quality if view == "composite" else "full", size if view == "composite" else 0,
                        len(sel), mask=mask_kind)

    def smoothed_masks(self, project: Project, i: int, tracks: set[int] | None) -> list[np.ndarray]:
        """Landmark-hull masks float32 [S, S] of frame ``i``'s faces (of ``tracks``; None: all), smoothed
        over the frames before it as the render's mask stage smooths them (one
        :class:`~fsvideo.faces.blend.TrackMasks` fed the same faces, frame after frame).

        The smoothing starts where the faces appeared (then the masks are the render's, bit for bit)
        or :func:`~fsvideo.faces.blend.mask_history_frames` frames back (then they differ by under
        2**-10).  Hull masks do not depend on the edit, so a slider change reuses them.
        """
        from fsvideo.faces.blend import TrackMasks, mask_history_frames
        from fsvideo.studio.project import NotReady

        def faces(fl):
            return [k for k, t in enumerate(fl.track) if tracks is None or int(t) in tracks]
        fl = project.latents(i)
        key = (project.key, i, tuple(faces(fl)))
        if self._masks is not None and self._masks[0] == key:
            return self._masks[1]
        smoother = TrackMasks(project.fps)
        for j in range(project.history_start(i, tracks, mask_history_frames(project.fps)), i):
            try:
                fj = project.latents(j)
            except NotReady:                       # dropped from memory while inverting: start after it
                smoother = TrackMasks(project.fps)
                continue
            smoother(*self._hull_masks(smoother, fj, faces(fj)))
        masks = smoother(*self._hull_masks(smoother, fl, key[2]))
        self._masks = (key, masks)
        return masks

    def _hull_masks(self, smoother, fl, ks) -> tuple[np.ndarray, list[np.ndarray]]:
        """The tracks and hull masks of faces ``ks`` of one frame's latents, each at the side the render's
        mask stage picks for it (:meth:`~fsvideo.faces.blend.TrackMasks.side`)."""
        from fsvideo.faces.blend import hull_mask
        return fl.track[list(ks)], [hull_mask(fl.landmarks[k], self.crop, smoother.side(fl.track[k], fl.matrix[k], self.crop))
                                    for k in ks]


def _tint(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Overlay the blend mask in red at 45% of its weight."""
    a = 0.45 * alpha[..., None]
    return np.clip(image * (1 - a) + MASK_TINT * a, 0, 255).astype(np.uint8)


def jpeg_bytes(image: np.ndarray) -> bytes:
    """uint8 [H, W, 3] RGB ``image`` as the JPEG (quality 90) the page shows (here, away from the web
    app, so that benchmarks/studio.py times it without FastAPI installed)."""
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=90)
    return buf.getvalue()
