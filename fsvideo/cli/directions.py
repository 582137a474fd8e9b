"""``fsvideo directions``: fit InterFaceGAN directions on an encoder's latents, export SeFa directions."""
from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from fsvideo.cli import import_torch
from fsvideo.cli._console import console
from fsvideo.errors import InputError, OutputError


@click.group("directions")
def directions() -> None:
    """Fit edit directions for your encoder, or export closed-form SeFa directions of a generator.

    \b
    Every direction is saved as the released ones: (1, n_latent*512) float32 .npy of unit norm,
    used as w~ = w + 15 * strength * d.  Fitted directions go to $FSVIDEO_HOME/directions/NAME.npy
    and `fsvideo edit --attr NAME` finds them there.
    Examples:
      fsvideo directions fit --latents talk.latents.zip --labels labels.csv --attr smile
      fsvideo directions fit --latents codes/*.npy --labels celeba.csv --attr Eyeglasses --name glasses
      fsvideo directions sefa --generator stylegan2-ffhq -k 10 --out sefa/
      fsvideo directions list
    """


def _save_direction(d: np.ndarray, out: Path, overwrite: bool) -> None:
    from fsvideo.utils import atomic_output
    with atomic_output(out, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(d, dtype=np.float32))


@directions.command("fit")
@click.argument("more_latents", nargs=-1, type=click.Path(dir_okay=False), metavar="[LATENTS]...")
@click.option("--latents", "latents", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="W+ codes: an `fsvideo invert` latents file, or .npy/.npz/.pt arrays [T, n_latent, width] "
                   "(width 512 for the released networks; "
                   "key `w`). Repeat it or list several files.")
@click.option("--labels", required=True, type=click.Path(dir_okay=False), metavar="CSV",
              help="CSV with a key column (FILE or FILE:i; or `index`) and one column per attribute.")
@click.option("--attr", required=True, help="The CSV column to fit (0/1, -1/1, true/false, or scores).")
@click.option("--name", default=None, help="Save as $FSVIDEO_HOME/directions/NAME.npy (default: --attr).")
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None,
              help="Write the .npy here instead of the directions folder.")
@click.option("--ratio", type=float, default=0.02, show_default=True,
              help="For score columns: top and bottom fraction used as the two classes.")
@click.option("-C", "--C", "C", type=float, default=1.0, show_default=True, help="SVM inverse regularisation.")
@click.option("--val-split", type=click.FloatRange(0.0, 0.5), default=0.2, show_default=True,
              help="Fraction of each class held out to report the accuracy.")
@click.option("--overwrite", is_flag=True, help="Replace an existing direction file.")
def fit(more_latents, latents, labels, attr, name, out, ratio, C, val_split, overwrite) -> None:
    """Fit an InterFaceGAN direction (linear SVM normal) on W+ latents and labels."""
    from fsvideo.edits.directions import user_direction_path
    from fsvideo.edits.interfacegan import fit_direction, read_labels, read_latents
    from fsvideo.utils import check_output_path

    files = list(latents) + list(more_latents)
    if not files:
        raise InputError("no latents given", hint="pass --latents FILE (one or more)")
    if C <= 0:
        raise InputError(f"-C must be > 0, got {C}")
    if out:                                        # checked as `fsvideo edit -o`: a missing folder is an error
        target = check_output_path(out, overwrite=overwrite, inputs=(*files, labels))
    else:                                          # the directions folder is fsvideo's own: made when missing
        target = user_direction_path(name or attr)
        if target.exists() and not overwrite:      # fail before the (possibly long) fit
            raise OutputError(f"{target} already exists", hint="pass --overwrite, or choose another --name / -o")
        target.parent.mkdir(parents=True, exist_ok=True)
    lat = read_latents(files)
    rows, y = read_labels(labels, attr, lat, ratio=ratio)
    res = fit_direction(lat, rows, y, C=C, val_split=val_split)
    _save_direction(res.direction, target, overwrite)
    val = f", held-out accuracy {res.val_accuracy:.3f}" if res.val_accuracy is not None else ""
    console.print(f"fitted {attr!r} on {res.n_pos} positive / {res.n_neg} negative codes "
                  f"(training accuracy {res.train_accuracy:.3f}{val})")
    console.print(f"saved {target}  shape {tuple(res.direction.shape)}", soft_wrap=True, highlight=False)
    if not out:
        console.print(f"use it with: fsvideo edit VIDEO --attr {target.stem} --strength 1")


def _parse_layers(text: str, n_latent: int) -> list[int] | None:
    if text in ("all", ""):
        return None
    out: list[int] = []
    for part in text.split(","):
        a, sep, b = part.strip().partition("-")
        try:
            lo = int(a)
            hi = int(b) if sep else lo
        except ValueError:
            raise InputError(f"--layers {text!r}: {part!r} is not a number or a range",
                             hint="e.g. --layers 0-3 or --layers 0,1,4-7 or --layers all") from None
        if not 0 <= lo <= hi < n_latent:
            raise InputError(f"--layers {text!r}: rows must be in 0..{n_latent - 1}")
        out.extend(range(lo, hi + 1))
    return out


@directions.command("sefa")
@click.option("--generator", "generator", required=True, metavar="FILE|NAME",
              help="Generator checkpoint path or weights name (e.g. stylegan2-ffhq).")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Number of directions.")
@click.option("--layers", default="all", show_default=True,
              help="W+ rows to edit: all, or e.g. 0-3 (coarse: pose, shape), 4-7 (middle), 8-17 (fine).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Folder for sefa_00.npy ... and sefa.json (eigenvalues, layers).")
@click.option("--overwrite", is_flag=True, help="Replace existing files.")
def sefa(generator, k, layers, out, overwrite) -> None:
    """Export closed-form SeFa directions (Shen & Zhou 2021) of a generator."""
    import_torch()
    from fsvideo.edits.sefa import sefa_directions, sefa_factorize
    from fsvideo.models.loading import load_generator_checkpoint
    from fsvideo.weights import resolve as resolve_weights

    G, _ = load_generator_checkpoint(resolve_weights(generator))
    if k > G.style_dim:
        raise InputError(f"-k {k} is more than the {G.style_dim} directions W has")
    rows = _parse_layers(layers, G.n_latent)
    dirs = sefa_directions(G, layers=rows, k=k)
    vals, _, used = sefa_factorize(G, rows)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    names = [folder / f"sefa_{i:02d}.npy" for i in range(k)]
    meta = folder / "sefa.json"
    existing = [p for p in [*names, meta] if p.exists()]
    if existing and not overwrite:
        raise InputError(f"{existing[0]} already exists", hint="pass --overwrite or choose another --out")
    for i, p in enumerate(names):
        _save_direction(dirs[i].reshape(1, -1).numpy(), p, overwrite=True)
    from fsvideo.utils import atomic_output
    with atomic_output(meta, overwrite=True) as tmp:
        tmp.write_text(json.dumps({"generator": str(generator), "layers": used, "k": k,
                                   "eigenvalues": [float(v) for v in vals[:k]],
                                   "format": "(1, n_latent*512) float32, unit norm; w~ = w + 15*s*d"}, indent=1))
    console.print(f"wrote {k} SeFa directions ({G.n_latent} x {G.style_dim}, rows {layers}) to {folder}",
                  soft_wrap=True, highlight=False)
    console.print(f"use one with: fsvideo edit VIDEO --direction {names[0]} --strength 1  (or --attr sefa:0)",
                  soft_wrap=True, highlight=False)


@directions.command("list")
def list_cmd() -> None:
    """The fitted directions in $FSVIDEO_HOME/directions (usable as --attr NAME)."""
    from fsvideo.edits.directions import directions_home
    home = directions_home()
    files = sorted(home.glob("*.npy")) if home.is_dir() else []
    if not files:
        console.print(f"no fitted directions in {home}")
        return
    for p in files:
        try:
            shape = tuple(np.load(p, mmap_mode="r", allow_pickle=False).shape)
        except (ValueError, OSError):
            shape = "unreadable"
        console.print(f"{p.stem:<24} {shape}  {p}", soft_wrap=True, highlight=False)
