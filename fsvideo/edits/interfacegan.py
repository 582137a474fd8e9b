"""Fit InterFaceGAN edit directions (Shen et al., CVPR 2020) on an encoder's W+ latents.

A direction is the unit normal of a linear SVM that separates the flattened W+ codes
(``n_latent * 512`` values) of images with and without an attribute, pointing towards "with".  It
is saved in the released directions' format, ``(1, n_latent * 512)`` float32 ``.npy`` of unit norm,
so ``w~ = w + 15 * s * d`` (:mod:`fsvideo.edits.directions`).  Directions do not carry over between
encoders: fit them on the latents of the encoder that will edit (paper §5.3).

Latent files (``--latents``), one or more:

* an fsvideo latents file from ``fsvideo invert`` (rows in frame order, one per face);
* ``.npy``: an array ``[T, n_latent, 512]``, ``[n_latent, 512]`` (one code) or ``[T, n_latent * 512]``;
* ``.npz``: the array ``w`` (or its only array), same layouts;
* ``.pt`` / ``.pth``: a tensor, or a dict with ``w`` (read with ``weights_only=True``).

512 is the style width of the released networks; codes of another generator (the tiny test ones are
64 wide) are read at their own width, which an fsvideo latents file or a 3-D array states.  A 2-D
array does not state it: it is read at the width of the other files, else 512.  Files of different
widths (codes of two generators) are an error.

Labels (``--labels labels.csv``): a CSV with a header.  The key column (``key``, ``file``, ``name``,
``image`` or ``filename``; else the first column) names a code: ``FILE`` (the file name or stem of a
one-code file) or ``FILE:i`` (row ``i`` of a file); a column named ``index`` instead numbers the
codes of all files in the order given.  The attribute column holds 0/1, -1/1, true/false, yes/no
(binary), or scores: then the top and bottom ``ratio`` of the codes are the two classes
(InterFaceGAN's ``chosen_num_or_ratio``).  Empty cells are skipped.

The SVM is scikit-learn's ``LinearSVC`` (LIBLINEAR: L2-regularised squared hinge, InterFaceGAN
itself uses scikit-learn) on codes centred on their mean.  LIBLINEAR regularises the bias too;
centring makes the bias of the centred problem small, so the normal equals that of the
unregularised-bias SVM ``min 1/2 |n|^2 + C sum_i max(0, 1 - y_i (n . x_i + b))^2`` (cosine > 0.999 in
``tests/test_directions_fit.py``).  Without centring, W+ codes sit far from the origin (around
``latent_avg``) and a regularised bias would tilt the normal towards the mean code.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from fsvideo.errors import InputError

log = logging.getLogger(__name__)

KEY_COLUMNS = ("key", "file", "name", "image", "filename")
STYLE_DIM = 512                        # the released networks' style width: 2-D arrays that state none
_TRUE = {"1", "true", "yes", "y", "t", "+1"}
_FALSE = {"0", "false", "no", "n", "f", "-1"}


# ------------------------------------------------------------------------------------------------
# latents


def _as_codes(arr, path: Path, n_latent: int | None, style_dim: int) -> np.ndarray:
    a = np.asarray(arr.detach().cpu().numpy() if isinstance(arr, Tensor) else arr)
    if a.dtype.kind not in "fiu":
        raise InputError(f"{path}: latents have dtype {a.dtype}, expected floats")
    a = a.astype(np.float32)
    if a.ndim == 2 and a.shape[1] == style_dim and (n_latent is None or a.shape[0] == n_latent):
        a = a[None]                                                    # one code [n_latent, 512]
    elif a.ndim == 2 and a.shape[1] % style_dim == 0:
        a = a.reshape(a.shape[0], a.shape[1] // style_dim, style_dim)   # [T, n_latent * 512]
    if a.ndim != 3 or a.shape[2] != style_dim:
        raise InputError(f"{path}: latents have shape {list(a.shape)}; expected [T, n_latent, {style_dim}], "
                         f"[n_latent, {style_dim}] or [T, n_latent * {style_dim}]",
                         hint="pass the W+ codes written by `fsvideo invert` (key `w`)")
    if n_latent is not None and a.shape[1] != n_latent:
        raise InputError(f"{path}: codes have {a.shape[1]} W+ rows, other files have {n_latent}",
                         hint="all latents must come from the same generator")
    if not np.isfinite(a).all():
        raise InputError(f"{path}: latents contain NaN or Inf")
    return a


def _is_fsvideo_latents(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        if "meta.json" not in z.namelist():
            return False
        try:
            return str(json.loads(z.read("meta.json")).get("format", "")).startswith("fsvideo-latents")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return False


def _width(a) -> int | None:
    """The style width an array's layout states (``[T, n_latent, width]``; a 2-D array states none)."""
    return int(a.shape[2]) if a.ndim == 3 else None


def read_latents_file(path: str | Path, n_latent: int | None = None, style_dim: int | None = None) -> np.ndarray:
    """The W+ codes of one file as float32 ``[T, n_latent, style_dim]`` (formats: module docstring);
    ``style_dim`` None: the width the file states, else :data:`STYLE_DIM`."""
    p = Path(path)
    a = _load(p)
    return _as_codes(a, p, n_latent, style_dim or _width(a) or STYLE_DIM)


def _load(p: Path):
    """The array of W+ codes in file ``p`` as stored (numpy or torch; checked by :func:`_as_codes`)."""
    if not p.is_file():
        raise InputError(f"latents file {p} not found", hint="check the --latents paths")
    try:
        if _is_fsvideo_latents(p):
            from fsvideo.latents import LatentsReader
            reader = LatentsReader(p)
            try:
                rows = [fl.w for fl in reader if len(fl.w)]
            finally:
                reader.close()
            if not rows:
                raise InputError(f"{p} holds no faces", hint="invert a video in which faces were found")
            return np.concatenate(rows)
        if p.suffix == ".npy":
            return np.load(p, allow_pickle=False)
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                names = list(z.files)
                if "w" in names:
                    arr = z["w"]
                elif len(names) == 1:
                    arr = z[names[0]]
                else:
                    raise InputError(f"{p} has arrays {', '.join(names)} but no `w`",
                                     hint="store the W+ codes under the name `w`")
            return arr
        if p.suffix in (".pt", ".pth"):
            obj = torch.load(p, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                if "w" not in obj:
                    raise InputError(f"{p} is a dict without `w` (keys: {', '.join(map(str, list(obj)[:6]))})",
                                     hint="store the W+ codes under the key `w`")
                obj = obj["w"]
            return obj if isinstance(obj, Tensor) else np.asarray(obj)
    except (ValueError, OSError, RuntimeError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        raise InputError(f"latents file {p} cannot be read ({type(e).__name__}: {e})",
                         hint="pass .npy/.npz/.pt arrays of W+ codes or an `fsvideo invert` latents file") from e
    raise InputError(f"latents file {p} has an unknown extension",
                     hint="use .npy, .npz, .pt or a latents file written by `fsvideo invert`")


@dataclass
class LatentSet:
    """Codes of several files and the keys that name each row."""

    codes: np.ndarray                                   # float32 [M, n_latent, style_dim]
    keys: dict[str, int] = field(default_factory=dict)  # key -> row
    sources: list[str] = field(default_factory=list)    # row -> "file:i"


def read_latents(paths: Sequence[str | Path], style_dim: int | None = None) -> LatentSet:
    """Read every file; rows are named ``NAME:i``, ``STEM:i`` (and ``NAME``, ``STEM`` for one-code files).

    ``style_dim`` None: the width the files state (module docstring), the same for all of them.
    """
    if not paths:
        raise InputError("no latents files given", hint="pass --latents FILE (one or more)")
    loaded = [(Path(p), _load(Path(p))) for p in paths]
    if style_dim is None:
        stated = [(p, _width(a)) for p, a in loaded if _width(a) is not None]
        for p, w in stated[1:]:
            if w != stated[0][1]:
                raise InputError(f"{p}: codes are {w} wide, but {stated[0][0].name}'s are {stated[0][1]} wide",
                                 hint="fit on the latents of one generator (codes of one style width)")
        style_dim = stated[0][1] if stated else STYLE_DIM
    chunks, keys, sources = [], {}, []
    n_latent = None
    row = 0
    for p, a in loaded:
        codes = _as_codes(a, p, n_latent, style_dim)
        n_latent = codes.shape[1]
        names = {p.name, p.stem}
        for i in range(len(codes)):
            for nm in names:
                keys.setdefault(f"{nm}:{i}", row + i)
            sources.append(f"{p.name}:{i}")
        if len(codes) == 1:
            for nm in names:
                keys.setdefault(nm, row)
        chunks.append(codes)
        row += len(codes)
    return LatentSet(np.concatenate(chunks), keys, sources)


# ------------------------------------------------------------------------------------------------
# labels


def read_labels(path: str | Path, attr: str, latents: LatentSet, *,
                ratio: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``latents`` and their classes (+1 with the attribute, -1 without) from ``labels.csv``."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"labels file {p} not found", hint="pass --labels labels.csv")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"labels file {p} cannot be read ({e})", hint="save it as UTF-8 CSV") from e
    reader = csv.DictReader(io.StringIO(text))
    cols = [c.strip() for c in (reader.fieldnames or [])]
    reader.fieldnames = cols
    if attr not in cols:
        raise InputError(f"{p} has no column {attr!r} (columns: {', '.join(cols) or 'none'})",
                         hint="pass --attr with one of the CSV's column names")
    by_index = "index" in cols
    key_col = "index" if by_index else next((c for c in KEY_COLUMNS if c in cols), cols[0])
    if key_col == attr:
        raise InputError(f"{p}: the attribute column {attr!r} is also the key column",
                         hint=f"add a key column ({', '.join(KEY_COLUMNS)} or index) naming each code")
    rows, values, unknown = [], [], []
    for line_no, rec in enumerate(reader, start=2):
        raw_key = (rec.get(key_col) or "").strip()
        raw_val = (rec.get(attr) or "").strip().lower()
        if raw_val in ("", "nan", "na", "none"):
            continue
        if by_index:
            try:
                r = int(raw_key)
            except ValueError:
                raise InputError(f"{p} line {line_no}: index {raw_key!r} is not an integer") from None
            if not 0 <= r < len(latents.codes):
                raise InputError(f"{p} line {line_no}: index {r} is outside the {len(latents.codes)} codes given")
        else:
            if raw_key not in latents.keys:
                unknown.append(raw_key)
                continue
            r = latents.keys[raw_key]
        rows.append(r)
        values.append(raw_val)
    if unknown:
        log.warning("%d label row(s) name no code, e.g. %s", len(unknown), ", ".join(unknown[:3]))
        if not rows:
            raise InputError(f"no key in {p} matches the latents (e.g. {unknown[0]!r}; codes are named like "
                             f"{next(iter(latents.keys))!r})", hint="use FILE or FILE:i keys, or an `index` column")
    if not rows:
        raise InputError(f"{p} has no labelled rows for {attr!r}")
    rows_a = np.asarray(rows, np.int64)
    if all(v in _TRUE | _FALSE for v in values):
        y = np.where([v in _TRUE for v in values], 1.0, -1.0)
        return rows_a, y
    try:
        scores = np.asarray([float(v) for v in values], np.float64)
    except ValueError:
        bad = next(v for v in values if v not in _TRUE | _FALSE and not _is_float(v))
        raise InputError(f"{p}: value {bad!r} in column {attr!r} is neither a label nor a score",
                         hint="use 0/1, -1/1, true/false or numeric scores") from None
    if not 0 < ratio <= 0.5:
        raise InputError(f"--ratio must be in (0, 0.5], got {ratio}")
    n = max(1, int(round(len(scores) * ratio)))
    order = np.argsort(scores, kind="stable")
    neg, pos = order[:n], order[-n:]
    log.info("scores: top %d as positive, bottom %d as negative (ratio %.3g)", n, n, ratio)
    sel = np.concatenate([pos, neg])
    return rows_a[sel], np.concatenate([np.ones(n), -np.ones(n)])


def _is_float(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------------
# the SVM


@dataclass
class LinearSVM:
    """A fitted linear SVM: ``sign(normal . x + bias)``; ``normal`` is not normalised."""

    normal: Tensor
    bias: float

    def decision(self, X: Tensor) -> Tensor:
        return X.to(self.normal) @ self.normal + self.bias

    def accuracy(self, X: Tensor, y: Tensor) -> float:
        return float((torch.sign(self.decision(X)) == y.to(self.normal)).double().mean())


def fit_linear_svm(X: Tensor, y: Tensor, C: float = 1.0, *, max_iter: int = 20000, tol: float = 1e-6,
                   seed: int = 0) -> LinearSVM:
    """Fit the squared-hinge linear SVM (module docstring) with scikit-learn's ``LinearSVC``.

    Args:
        X: [M, D] features.  y: [M] labels in {-1, +1} (both present).  C: inverse regularisation.
        max_iter, tol: LIBLINEAR's limits (a warning is logged when it stops before ``tol``).
        seed: LIBLINEAR's coordinate order (the result is deterministic for a seed).
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(f"X must be [M, D] and y [M], got {list(X.shape)} and {list(y.shape)}")
    if not ((y == 1).any() and (y == -1).any()) or not torch.all((y == 1) | (y == -1)):
        raise InputError("an SVM needs examples of both classes (labels +1 and -1)",
                         hint="label some codes with the attribute and some without")
    Xn = X.detach().cpu().double().numpy()
    mean = Xn.mean(axis=0)
    clf = LinearSVC(C=C, loss="squared_hinge", penalty="l2", dual="auto", tol=tol, max_iter=max_iter,
                    random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(Xn - mean, y.detach().cpu().numpy().astype(np.int64))
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.warning("the SVM stopped after %d iterations before reaching tol %.0e; the direction may be rough",
                    max_iter, tol)
    sign = 1.0 if clf.classes_[1] == 1 else -1.0          # coef_ points towards classes_[1]
    normal = sign * clf.coef_[0]
    bias = sign * float(clf.intercept_[0]) - float(normal @ mean)
    return LinearSVM(torch.from_numpy(normal), bias)


@dataclass
class FitResult:
    """A fitted direction and how well its hyperplane separates the codes."""

    direction: np.ndarray          # float32 (1, n_latent * style_dim), unit norm, towards the attribute
    n_pos: int
    n_neg: int
    train_accuracy: float
    val_accuracy: float | None


def fit_direction(latents: LatentSet, rows: np.ndarray, y: np.ndarray, *, C: float = 1.0, val_split: float = 0.2,
                  seed: int = 0) -> FitResult:
    """InterFaceGAN: a linear SVM on the flattened W+ codes ``latents.codes[rows]``; its unit normal.

    With at least 5 codes per class, ``val_split`` of each class is held out (shuffled with
    ``seed``) and the accuracy on it is reported; the direction is fitted on the rest, as
    InterFaceGAN does.
    """
    X = torch.from_numpy(latents.codes[rows].reshape(len(rows), -1))
    yt = torch.from_numpy(np.asarray(y, np.float64))
    n_pos, n_neg = int((yt > 0).sum()), int((yt < 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise InputError(f"the labels have {n_pos} positive and {n_neg} negative codes; both classes are needed",
                         hint="label codes with and without the attribute")
    if min(n_pos, n_neg) < 5:
        log.warning("only %d positive and %d negative codes: no accuracy can be held out, and a direction fitted on "
                    "so few is mostly noise; label at least a few dozen of each", n_pos, n_neg)
    train_idx, val_idx = np.arange(len(rows)), np.arange(0)
    if val_split > 0 and min(n_pos, n_neg) >= 5:
        rng = np.random.default_rng(seed)
        tr, va = [], []
        for cls in (1.0, -1.0):
            idx = np.flatnonzero(y == cls)
            rng.shuffle(idx)
            k = max(1, int(math.floor(len(idx) * val_split)))
            va.append(idx[:k])
            tr.append(idx[k:])
        train_idx, val_idx = np.sort(np.concatenate(tr)), np.sort(np.concatenate(va))
    svm = fit_linear_svm(X[train_idx], yt[train_idx], C)
    acc = svm.accuracy(X[train_idx], yt[train_idx])
    val = svm.accuracy(X[val_idx], yt[val_idx]) if len(val_idx) else None
    d = svm.normal / svm.normal.norm().clamp_min(1e-30)
    if not torch.isfinite(d).all() or float(svm.normal.norm()) == 0:
        raise InputError("the SVM found no separating direction (all codes identical?)")
    return FitResult(d.float().numpy().reshape(1, -1), n_pos, n_neg, acc, val)


__all__ = ["FitResult", "LatentSet", "LinearSVM", "fit_direction", "fit_linear_svm", "read_labels",
           "read_latents", "read_latents_file"]
