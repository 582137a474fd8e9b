"""DistributedDataParallel on CPU: 2 processes with the gloo backend stay in sync."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from train_helpers import ddp_worker, small_faces


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="gloo not available")
def test_two_gloo_processes_keep_parameters_in_sync(media_dir, tmp_path):
    faces = small_faces(media_dir, tmp_path / "faces", n=7)    # 6 training images + 1 held out
    mp.spawn(ddp_worker, args=(2, _free_port(), str(faces), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2
    # identical parameters after 3 steps with averaged gradients (BN running statistics are each
    # process's own until DDP broadcasts rank 0's at the next forward; rank 0 saves its own)
    params = [k for k in r0["final"] if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(params) > 50
    for k in params:
        assert torch.equal(r0["final"][k], r1["final"][k]), k
    moved = [k for k in r0["final"] if r0["final"][k].is_floating_point()
             and not torch.equal(r0["final"][k], r0["init"][k])]
    assert len(moved) > 10                                # training changed the encoder
    # each rank read different real images (disjoint slots of the shared epoch order)
    s0, s1 = set(r0["seen"]), set(r1["seen"])
    assert len(r0["seen"]) == len(r1["seen"]) == 3 and not (s0 & s1) and s0 | s1 == set(range(6))
    # only rank 0 writes the run
    run = Path(tmp_path / "run")
    assert (run / "encoder.pt").is_file() and (run / "checkpoints" / "latest").read_text().strip() == "step_0000003"
    saved = torch.load(run / "encoder.pt", weights_only=True)
    assert all(torch.equal(saved[k], r0["final"][k]) for k in saved)
    records = [line for line in (run / "log.jsonl").read_text().splitlines() if "loss/total" in line]
    assert len(records) == 3                              # one record per step, not one per process
