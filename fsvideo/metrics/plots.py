"""Fig. 9-style box plot of identity consistency (one box per method, the source videos first).

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

    from fsvideo.utils import atomic_output

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
    out = []
    for path, fmt in ((png, "png"), (svg, "svg")):
        if path is None:
            continue
        with atomic_output(path, overwrite=True) as tmp:
            fig.savefig(tmp, format=fmt)
        out.append(Path(path))
    return out


__all__ = ["ic_boxplot"]
