"""Fig. 9-style box plot of identity consistency (one box per method, the source videos first), and
the per-frame curves of an edited video against its source (:func:`temporal_curves`).

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend switch, no
display needed), written as PNG and SVG atomically.

Example::

    ic_boxplot({"source": [0.97, 0.95], "fse-ffhq": [0.93, 0.91]}, "ic.png", svg="ic.svg",
               ylabel="identity consistency (dlib-resnet-v1)")
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence


def _clean(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _save(fig, png, svg) -> list[Path]:
    from fsvideo.utils import atomic_output
    out = []
    for path, fmt in ((png, "png"), (svg, "svg")):
        if path is None:
            continue
        with atomic_output(path, overwrite=True) as tmp:
            fig.savefig(tmp, format=fmt)
        out.append(Path(path))
    return out


def ic_boxplot(groups: Mapping[str, Sequence[float | None]], png: str | os.PathLike, *,
               svg: str | os.PathLike | None = None, ylabel: str = "identity consistency",
               title: str | None = "Identity consistency of video inversion") -> list[Path]:
    """Box plot of per-clip values, one box per group (in the mapping's order).

    Args:
        groups: label -> per-clip values (None/NaN are left out; an empty group is drawn empty).
        png: output PNG path; ``svg``: optional SVG path.  Both are replaced atomically.
        ylabel, title: axis label (name the identity network here) and title.

    Returns the written paths.  The mean of each group is marked with a triangle and printed
    under its label (Fig. 9 compares the averages).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not groups:
        raise ValueError("groups is empty: nothing to plot")
    labels = list(groups)
    data = [_clean(groups[k]) for k in labels]
    fig = Figure(figsize=(max(3.5, 1.4 * len(labels) + 1.5), 4.0), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ticks = []
    for lab, d in zip(labels, data):
        ticks.append(f"{lab}\n(n={len(d)}" + (f", mean {sum(d) / len(d):.3f})" if d else ")"))
    ax.boxplot([d if d else [math.nan] for d in data], showmeans=True, widths=0.5,
               meanprops={"marker": "^", "markerfacecolor": "tab:green", "markeredgecolor": "tab:green"},
               medianprops={"color": "tab:orange"})
    ax.set_xticks(range(1, len(labels) + 1))
    ax.set_xticklabels(ticks, fontsize=8)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, png, svg)


def _series(frames: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for fr in frames:
        v = fr.get(key)
        if v is not None and math.isfinite(float(v)):
            xs.append(int(fr["index"]))
            ys.append(float(v))
    return xs, ys


def temporal_curves(frames: Sequence[dict], png: str | os.PathLike, *, title: str = "",
                    identity: str = "identity") -> list[Path]:
    """Per-frame curves of an edited video against its source, as PNG.

    Args:
        frames: per-frame records of a :class:`fsvideo.metrics.temporal.PairResult` (``index``,
            ``sim_source``, ``sim_edited``, ``warp_face``, ``warp_face_source``, ``warp_bg``,
            ``warp_bg_source``; None/NaN are gaps).
        png: output path (replaced atomically).
        title: the clip's name; identity: the identity network (the first panel's unit).

    Top: identity similarity to the first frame with a face (source dashed, edit solid).  Bottom:
    the flow-warping error of each frame against the previous one, in the face and outside it
    (source dashed: the floor).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 5.0), dpi=120)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2, sharex=None)
    for key, style, label in (("sim_source", "--", "source"), ("sim_edited", "-", "edited")):
        ax1.plot(*_series(frames, key), style, color="tab:blue", label=label, lw=1.2)
    ax1.set_ylabel(f"cosine to frame 0\n({identity})", fontsize=8)
    ax1.legend(fontsize=7, loc="lower left")
    for key, colour, label in (("warp_face", "tab:red", "face"), ("warp_bg", "tab:green", "background")):
        ax2.plot(*_series(frames, key), "-", color=colour, label=f"{label}, edited", lw=1.2)
        ax2.plot(*_series(frames, key + "_source"), "--", color=colour, label=f"{label}, source (floor)", lw=1.0)
    ax2.set_ylabel("warping error\n(8-bit levels)", fontsize=8)
    ax2.set_xlabel("frame")
    ax2.legend(fontsize=7, loc="upper right", ncol=2)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    if title:
        ax1.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, png, None)


__all__ = ["ic_boxplot", "temporal_curves"]
