"""Small shared helpers: atomic outputs, device choice, seeding."""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import torch


from fsvideo.errors import FsvideoError, InputError, OutputError

log = logging.getLogger(__name__)


def check_input_file(path: str | os.PathLike, what: str = "input") -> Path:
    """Return ``path`` as a Path after checking it is a readable, non-empty file."""
    p = Path(path)
    try:
        found = p.exists()
    except OSError as e:        # e.g. a name past the file system's 255 bytes (ENAMETOOLONG)
        raise InputError(f"{p}: {e.strerror or e}", hint=f"check the {what} path") from e
    if not found:
        raise InputError(f"{p}: no such file", hint=f"check the {what} path")
    if p.is_dir():
        raise InputError(f"{p} is a folder, not a file", hint=f"pass a {what} file")
    if p.stat().st_size == 0:
        raise InputError(f"{p} is empty (0 bytes)", hint=f"pass a complete {what} file")
    if not os.access(p, os.R_OK):
        raise InputError(f"{p} is not readable", hint="check its permissions")
    return p


def check_output_path(out: str | os.PathLike, *, overwrite: bool = False,
                      inputs: tuple[str | os.PathLike, ...] = (), option: str = "-o") -> Path:
    """Validate an output path before any work starts (fail early, lose nothing); the hints name ``option``,
    the one that gave the path (``--latents-out`` for a latents file)."""
    o = Path(out)
    try:
        found = o.exists()
    except OSError as e:        # a name longer than the file system allows (255 bytes): ENAMETOOLONG
        raise OutputError(f"cannot write {o} ({e.strerror or e})", hint=f"choose a shorter name with {option}"
                          if e.errno == errno.ENAMETOOLONG else f"choose another {option}") from e
    for i in inputs:
        ip = Path(i)
        if ip.exists() and (o.resolve() == ip.resolve() or (found and o.samefile(ip))):
            raise OutputError(f"output {o} is the input file", hint=f"choose another output name with {option}")
    if found and not overwrite:
        raise OutputError(f"{o} already exists", hint=f"pass --overwrite to replace it, or choose another name with {option}")
    if found and o.is_dir():
        raise OutputError(f"{o} is a folder", hint=f"give a file name with {option}")
    parent = o.parent if str(o.parent) else Path(".")
    if not parent.exists():
        raise OutputError(f"output folder {parent} does not exist", hint=f"create it first or choose another {option}")
    if not parent.is_dir():
        raise OutputError(f"output folder {parent} is a file, not a folder", hint=f"choose another {option}")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output folder {parent} is not writable", hint=f"choose another {option}")
    return o


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool = False,
                  inputs: tuple[str | os.PathLike, ...] = (), fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only when the block succeeds.

    The one way fsvideo writes a file: readers never see a half-written output, and an
    interrupted run leaves nothing at ``path``.  The temporary name
    (``.<stem>.<random>.partial<suffix>``) keeps the extension (container formats are guessed from
    it).  On any exception, KeyboardInterrupt included, the temporary file is removed; an
    :class:`~fsvideo.errors.FsvideoError` that names the temporary file is rewritten to name
    ``path``, the file the user asked for.  ``fsync=True`` flushes the file and the folder to disk
    around the rename (checkpoints: the file survives a power cut, not only a crash).

    Example::

        with atomic_output("out.json", overwrite=True) as tmp:
            tmp.write_text(text)
    """
    final = check_output_path(path, overwrite=overwrite, inputs=inputs)
    parent = final.parent if str(final.parent) else Path(".")
    try:
        tmp_path = _new_temp(parent, f".{_short(final.stem)}.", f".partial{final.suffix}")
    except OSError as e:
        raise OutputError(f"cannot write {final} ({e.strerror or e})", hint="choose another output folder") from e
    try:
        yield tmp_path
        if final.exists() and not overwrite:  # appeared while we worked
            raise OutputError(f"{final} appeared while writing", hint="pass --overwrite or choose another -o")
        if fsync:
            _fsync(tmp_path)
        os.replace(tmp_path, final)
        if fsync:
            _fsync(parent)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(e, FsvideoError):
            _rename_in_error(e, str(tmp_path), str(final))
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False, fsync: bool = False) -> Iterator[Path]:
    """The folder twin of :func:`atomic_output`: fill the yielded temporary folder; it becomes ``path`` on success.

    With ``overwrite`` an existing ``path`` is replaced (moved aside, then removed after the rename);
    without it an existing ``path`` is an :class:`~fsvideo.errors.OutputError`.  On failure the
    temporary folder (``.<name>.<random>.partial``) is removed.
    """
    final = Path(path)
    if final.exists() and not overwrite:
        raise OutputError(f"{final} already exists", hint="pass --overwrite or choose another name")
    parent = final.parent if str(final.parent) else Path(".")
    try:
        tmp = _new_temp(parent, f".{_short(final.name)}.", ".partial", folder=True)
    except OSError as e:
        raise OutputError(f"cannot write {final} ({e.strerror or e})", hint="choose another output folder") from e
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        trash = None
        try:
            if final.exists():
                trash = final.with_name(f".{_short(final.name)}.old-{os.getpid()}.partial")
                os.replace(final, trash)
            os.replace(tmp, final)
        except OSError as e:    # e.g. `path` is a mount point (EBUSY): it cannot be moved aside
            if trash is not None and not final.exists():
                os.replace(trash, final)
            raise OutputError(f"cannot replace {final} ({e.strerror or e})",
                              hint="choose a folder that does not exist yet") from e
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        if fsync:
            _fsync(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _short(name: str, limit: int = 200) -> str:
    """``name`` cut to ``limit`` bytes of UTF-8 for a temporary name beside it: a 250-byte output name is
    allowed, but the temporary name around it (``.<name>.<random>.partial<suffix>``) passed the file
    system's 255 and the run failed as an internal error."""
    return name.encode()[:limit].decode(errors="ignore")


def _new_temp(parent: Path, prefix: str, suffix: str, *, folder: bool = False) -> Path:
    """Create an empty file (or folder) with a fresh random name in ``parent``, with the permissions
    a new file gets from the umask (``tempfile.mkstemp``'s 0600 would survive the rename and make the
    user's output readable by its owner only)."""
    for _ in range(100):
        p = parent / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            if folder:
                os.mkdir(p, 0o777)
            else:
                os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return p
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {parent}")


def _fsync(path: Path) -> None:
    """Flush a file's or a folder's contents to disk (best effort for folders)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _rename_in_error(e: FsvideoError, old: str, new: str) -> None:
    """Replace the temporary name ``old`` by the user's ``new`` in the message and hint of ``e``."""
    e.message = e.message.replace(old, new)
    if e.hint:
        e.hint = e.hint.replace(old, new)
    e.args = tuple(a.replace(old, new) if isinstance(a, str) else a for a in e.args)


def pick_device(name: str | None = "auto") -> torch.device:
    """``auto`` picks CUDA when available, then MPS, then CPU."""
    import torch  # here, not at module level: the CLI's --help and the video modules stay light
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise InputError(f"unknown device {name!r}", hint="use auto, cpu, cuda, cuda:N or mps") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} requested but CUDA is not available",
                         hint="use --device cpu (or auto)")
    if dev.type != "cpu":
        try:                                   # mps on Linux, cuda:3 of 1 GPU, a backend torch lacks
            torch.empty(1, device=dev)
        except (RuntimeError, AssertionError) as e:
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"device {name!r} is not usable here ({why})", hint="use --device cpu (or auto)") from e
    return dev


def pick_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """float32 on CPU; float16 on CUDA unless ``precision`` says otherwise (fp32, fp16, bf16)."""
    import torch
    table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
             "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision not in table:
        raise InputError(f"unknown precision {precision!r}", hint="use auto, fp32, fp16 or bf16")
    return table[precision]
