"""The Python half of a run on the lent GPU machine (``benchmarks/device_prepare.sh`` / ``device_run.sh``).

That machine has PyTorch, OpenCV, NumPy, SciPy, pytest... but no network, no ``../shared`` and no dlib
(its 68-point model is a 100 MB wheel).  So, here, ``prepare`` copies the few clips the runs use into
``.device/shared`` (ignored by git) and records dlib's faces on their frames into ``.device/faces.npz``;
there, every command goes through this driver, which first adds those faces to the detector registry
(:func:`recorded_faces.register`: ``--detector recorded``, and ``dlib`` itself when dlib is missing)::

    python benchmarks/device_run.py prepare                       # here, once (device_prepare.sh runs it)
    python benchmarks/device_run.py pytest -q tests/test_precision.py
    python benchmarks/device_run.py script benchmarks/frontend.py --detector recorded ...
    python benchmarks/device_run.py edit --size 1024 CLIP [fsvideo edit options]

``edit`` builds the released architecture at ``--size`` with random weights in the official format
(as ``benchmarks/pipeline.py`` does) and runs ``fsvideo edit`` on CLIP with the recorded faces.

``FSVIDEO_DEVICE_SIM=1`` makes every Python package the GPU machine lacks (its list in
/work/.library/device/KINDS.md, copied below) unimportable, so that a CPU rehearsal here fails where
the real run would (``FSV_DEVICE=cpu bash benchmarks/device_run.sh``).
"""
from __future__ import annotations

import argparse
import os
import runpy
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HERE = REPO / ".device"
FACES = HERE / "faces.npz"
VIDEOS = "media/videos/other"
#: what the runs read from ../shared, and how many frames of each have faces recorded (None: all)
MEDIA = {f"{VIDEOS}/lt-FP006542HD02.mp4": None, f"{VIDEOS}/liveportrait-d18.mp4": 96,
         "media/images/wild/facerec-obama.jpg": None}

#: Python packages of the GPU machine's image (KINDS.md, read 2026-11-17), and the wheels carried there
DEVICE_PACKAGES = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers
flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py
markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham
simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
werkzeug wheel wrapt xarray xxhash yarl zipp""".split()
#: what device_prepare.sh downloads into .whl/ (it reads this line; the versions are this machine's)
CARRIED = ["av", "platformdirs"]


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def simulate_device() -> list[str]:
    """Make the top-level modules of every installed distribution the GPU machine lacks unimportable;
    returns their names.  (Versions differ there too: torch 2.11, numpy 2.5; that is not simulated.)"""
    from importlib import metadata
    keep = {_norm(n) for n in DEVICE_PACKAGES + CARRIED} | {"opencv-python", "fsvideo"}
    blocked = set()
    for dist in metadata.distributions():
        if _norm(dist.metadata["Name"] or "") in keep:
            continue
        top = (dist.read_text("top_level.txt") or "").split()
        top += [f.parts[0].removesuffix(".py") for f in dist.files or [] if len(f.parts) >= 1
                and not f.parts[0].endswith((".dist-info", ".data", ".pth")) and f.parts[0] != ".."]
        blocked.update(t for t in top if t.isidentifier())
    provided = {"cv2", "numpy", "torch", "fsvideo", "_distutils_hack", "pkg_resources", "setuptools", "_pytest",
                "pytest", "py"}
    blocked -= provided

    class Block:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name.partition(".")[0] in blocked:
                raise ModuleNotFoundError(f"No module named {name!r} (FSVIDEO_DEVICE_SIM: not on the GPU machine)",
                                          name=name)
            return None
    sys.meta_path.insert(0, Block)
    return sorted(blocked)


def prepare(out: Path, shared: Path) -> None:
    """Copy MEDIA from ``shared`` into ``out/shared`` and record dlib's faces on them into ``out/faces.npz``."""
    import itertools

    import recorded_faces
    from fsvideo.faces.registry import DEFAULT_DETECT_SIDE, make_detector
    from fsvideo.video import VideoReader
    det = make_detector("dlib", max_side=DEFAULT_DETECT_SIDE)     # what the runs detect with by default
    table, thumbs = {}, {}
    for rel, frames in MEDIA.items():
        src, dst = shared / rel, out / "shared" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        images = (f.image for f in itertools.islice(VideoReader(dst), frames))
        rec = recorded_faces.record(det, images)
        table.update(rec.table)
        thumbs.update(rec.thumbs)
        print(f"{rel}: {len(rec.table)} frames, {sum(map(len, rec.table.values()))} faces recorded")
    recorded_faces.save(recorded_faces.RecordedDetector(table, thumbs), out / FACES.name)


def build_and_edit(size: int, clip: str, extra: list[str]) -> None:
    """``fsvideo edit`` on ``clip`` with the released architecture at ``size`` px (random weights, official format)."""
    import pipeline
    from fsvideo.cli import main as cli
    with tempfile.TemporaryDirectory(prefix="fsvideo-device-") as d:
        enc, gen = pipeline.build_model(size, Path(d))
        cli(["edit", clip, "-o", str(Path(d) / "edited.mp4"), "--generator", gen, "--encoder", enc,
             "--direction", str(Path(d) / "dir.npy"), "--detector", "recorded", "--overwrite", *extra])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    cmd, rest = (argv[0], argv[1:]) if argv else ("", [])
    if cmd not in ("prepare", "pytest", "script", "edit"):
        sys.exit(__doc__ + "\nusage: device_run.py {prepare [--shared DIR] | pytest ARGS | script PATH ARGS | "
                 "edit [--size N] CLIP ARGS}")
    sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
    if os.environ.get("FSVIDEO_DEVICE_SIM"):
        print(f"FSVIDEO_DEVICE_SIM: {len(simulate_device())} packages the GPU machine lacks are blocked", flush=True)
    if cmd == "prepare":
        ap = argparse.ArgumentParser(prog="device_run.py prepare")
        ap.add_argument("--shared", type=Path, default=Path(os.environ.get("FSVIDEO_SHARED", REPO.parent / "shared")))
        HERE.mkdir(exist_ok=True)
        return prepare(HERE, ap.parse_args(rest).shared)
    import atexit

    import recorded_faces
    rec = recorded_faces.register(FACES, as_dlib=True)
    atexit.register(lambda: rec.near and print(f"recorded faces: {rec.near} frames matched by their thumbnail "
                                               "(pixels decoded differently here)", file=sys.stderr))
    if cmd == "pytest":
        import pytest
        sys.exit(pytest.main(rest))
    if cmd == "script":
        sys.argv = rest
        runpy.run_path(rest[0], run_name="__main__")
    elif cmd == "edit":
        ap = argparse.ArgumentParser(prog="device_run.py edit")
        ap.add_argument("--size", type=int, default=1024)
        ap.add_argument("clip")
        a, extra = ap.parse_known_args(rest)
        build_and_edit(a.size, a.clip, extra)


if __name__ == "__main__":
    main()
