"""Exact resume, and checkpoints that survive a failure or a kill in the middle of a write."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from train_helpers import nets_for, small_faces, tiny_config

from fsvideo.models.loading import load_encoder_checkpoint
from fsvideo.train import checkpoint as ckpt
from fsvideo.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def faces(media_dir, tmp_path_factory) -> Path:
    return small_faces(media_dir, tmp_path_factory.mktemp("faces"))


def _losses(run: Path) -> dict[int, dict]:
    out = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "loss/total" in rec:
            out[rec["step"]] = {k: v for k, v in rec.items() if k.startswith(("loss/", "eval/", "lr", "feature"))}
    return out


def _config(faces, recipe: str):
    over = {"log": {"checkpoint_every": 2, "sample_every": 3}}
    if recipe == "official":      # Ranger (Lookahead state), feature-scale ramp, BN frozen after epoch 1
        over.update(recipe="official", optim={"name": "ranger", "lookahead_k": 2}, loss={"feature_scale_ramp": 4})
    return tiny_config(faces, **over)


class Stop(Exception):
    pass


@pytest.mark.parametrize("recipe", ["paper", "official"])
def test_resume_equals_uninterrupted(faces, tmp_path, recipe):
    cfg = _config(faces, recipe)
    Trainer(cfg, tmp_path / "a", nets=nets_for(cfg)).fit()

    def interrupt(p):
        if p.step == 3:             # after step 3; the newest checkpoint is step 2
            raise Stop

    with pytest.raises(Stop):
        Trainer(cfg, tmp_path / "b", nets=nets_for(cfg), progress=interrupt).fit()
    assert ckpt.latest_checkpoint(tmp_path / "b").step == 2
    resumed = Trainer.resume(tmp_path / "b", nets=nets_for(cfg))
    assert resumed.step == 2
    resumed.fit()
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    assert a == b                                        # bit-identical losses, learning rates and evals
    ea = torch.load(tmp_path / "a" / "encoder.pt", weights_only=True)
    eb = torch.load(tmp_path / "b" / "encoder.pt", weights_only=True)
    assert all(torch.equal(ea[k], eb[k]) for k in ea)


def test_stop_after_then_resume(faces, tmp_path):
    cfg = _config(faces, "paper")
    s = Trainer(cfg, tmp_path / "r", nets=nets_for(cfg)).fit(stop_after=3)
    assert s["step"] == 3 and ckpt.latest_checkpoint(tmp_path / "r").step == 3
    assert Trainer.resume(tmp_path / "r", nets=nets_for(cfg)).fit()["step"] == 6


@pytest.mark.parametrize("damage", ["foreign-encoder", "state-without-keys", "state-is-a-tensor", "truncated-state"])
def test_resume_from_a_foreign_checkpoint_is_one_line_naming_the_file(faces, tmp_path, damage):
    """A checkpoint that reads but is not this run's (another network's file, a state without its keys)
    raised RuntimeError / KeyError / IndexError: an internal error instead of the file and the fix; a
    truncated one said "download it again"."""
    from fsvideo.errors import InputError
    cfg = _config(faces, "paper")
    Trainer(cfg, tmp_path / "r", nets=nets_for(cfg)).fit(stop_after=2)
    c = ckpt.latest_checkpoint(tmp_path / "r")
    if damage == "foreign-encoder":
        target = c.encoder
        torch.save({"conv.0.weight": torch.zeros(3, 3, 1, 1), "other": torch.zeros(2)}, target)
    elif damage == "truncated-state":      # the reader's own message, with this fix instead of "download it again"
        target = c.state
        target.write_bytes(target.read_bytes()[:300])
    else:
        target = c.state
        torch.save({"x": 1} if damage == "state-without-keys" else torch.zeros(3), target)
    with pytest.raises(InputError, match=f"{target}.*remove {c.folder} to resume from the checkpoint before it"):
        Trainer.resume(tmp_path / "r", nets=nets_for(cfg))

@pytest.mark.parametrize("target", ["state", "run-encoder"])
def test_failure_during_a_checkpoint_write_keeps_the_previous_one(faces, tmp_path, monkeypatch, target):
    cfg = _config(faces, "paper")
    run = tmp_path / "run"
    real_save = ckpt.save_file

    def failing_save(obj, path):
        path = Path(path)
        if target == "state":
            hit = path.parent.name.startswith(".step_0000004") and path.name == "state.pt"
        else:
            hit = (path.parent == run and path.name.startswith(".encoder.")
                   and (run / "checkpoints" / "step_0000004").exists())
        if hit:                                  # checkpoint 2 (step 4) fails half-way through a file
            with open(path, "wb") as f:
                f.write(b"PK\x03\x04 partial")
            raise OSError("disk full (simulated)")
        return real_save(obj, path)

    monkeypatch.setattr(ckpt, "save_file", failing_save)
    with pytest.raises(OSError, match="simulated"):
        Trainer(cfg, run, nets=nets_for(cfg)).fit()
    assert not list(run.glob(".*partial*")) and not list((run / "checkpoints").glob(".*partial*"))
    prev = load_encoder_checkpoint(run / "encoder.pt").state_dict()      # RUN/encoder.pt: still step 2's
    step2 = torch.load(run / "checkpoints" / "step_0000002" / "encoder.pt", weights_only=True)
    assert all(torch.equal(prev[k], step2[k]) for k in step2)
    latest = ckpt.latest_checkpoint(run)
    if target == "state":
        assert latest.step == 2 and (run / "checkpoints" / "latest").read_text().strip() == "step_0000002"
        assert not (run / "checkpoints" / "step_0000004").exists()
    else:                                        # the step folder was complete before RUN/encoder.pt failed
        assert latest.step == 4
    load_encoder_checkpoint(latest.encoder)
    assert latest.load_state()["step"] == latest.step


def test_kill_during_a_checkpoint_write_then_resume(faces, tmp_path):
    """A hard kill (no cleanup) while the second checkpoint is being written: the first stays complete,
    ``latest`` names it, and ``--resume`` continues to the same result as an uninterrupted run."""
    cfg = _config(faces, "paper")
    Trainer(cfg, tmp_path / "a", nets=nets_for(cfg)).fit()
    run = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import torch
        torch.set_num_threads({torch.get_num_threads()})      # as this process: same float rounding
        from fsvideo.train import checkpoint as ckpt
        from fsvideo.train.trainer import Trainer
        from train_helpers import tiny_config
        from pathlib import Path
        real_save = ckpt.save_file
        def dying_save(obj, path):
            path = Path(path)
            if path.parent.name.startswith(".step_0000004") and path.name == "encoder.pt":
                # the encoder file of checkpoint 2: half written, then an exit without any cleanup (like SIGKILL)
                with open(path, "wb") as f:
                    f.write(b"PK\\x03\\x04" + b"x" * 100)
                    f.flush()
                os._exit(137)
            return real_save(obj, path)
        ckpt.save_file = dying_save
        cfg = tiny_config({str(faces)!r}, log={{"checkpoint_every": 2, "sample_every": 3}})
        Trainer(cfg, {str(run)!r}).fit()
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 137, proc.stderr[-2000:]
    partials = list((run / "checkpoints").glob(".step_0000004*partial"))
    assert partials, "the killed write should have left its temporary folder"
    assert ckpt.latest_checkpoint(run).step == 2
    assert sorted(c.step for c in ckpt.list_checkpoints(run)) == [2]
    load_encoder_checkpoint(run / "checkpoints" / "step_0000002" / "encoder.pt")
    resumed = Trainer.resume(run, nets=nets_for(cfg))
    assert not list((run / "checkpoints").glob(".*partial")), "resume cleans leftovers"
    resumed.fit()
    assert _losses(tmp_path / "a") == _losses(run)
