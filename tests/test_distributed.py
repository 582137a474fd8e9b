"""fsvideo.distributed: the torchrun environment, sharding, and the process group (2 gloo processes)."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch

from fsvideo.distributed import DistInfo, ProcessGroup, device_for, env_info, shard, shard_indices
from fsvideo.errors import ConfigError


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_env_info(clean_env):
    assert env_info() == DistInfo(0, 1, 0) and not env_info().enabled and env_info().is_main
    clean_env.setenv("WORLD_SIZE", "4")
    clean_env.setenv("RANK", "3")
    clean_env.setenv("LOCAL_RANK", "1")
    info = env_info()
    assert info == DistInfo(3, 4, 1) and info.enabled and not info.is_main
    clean_env.setenv("WORLD_SIZE", "1")                    # one process: the rank variables do not matter
    assert env_info() == DistInfo()
    clean_env.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE='two' is not an integer"):
        env_info()
    clean_env.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="RANK=3 is not in 0..1"):
        env_info()


@pytest.mark.parametrize("n,world", [(0, 1), (7, 1), (7, 3), (2, 4), (12, 4)])
def test_shards_cover_every_item_once(n, world):
    items = [f"clip{i}" for i in range(n)]
    parts = [shard(items, DistInfo(r, world)) for r in range(world)]
    assert sorted(x for p in parts for x in p) == sorted(items)
    assert shard_indices(n, 1 % world, world) == list(range(1 % world, n, world))
    with pytest.raises(ValueError, match="not in"):
        shard_indices(n, world, world)


def test_single_process_group_is_a_no_op(clean_env):
    with ProcessGroup(backend="gloo") as pg:
        assert pg.info == DistInfo() and pg.group is None
        assert pg.gather({"a": 1}) == [{"a": 1}]
        assert pg.broadcast(5) == 5 and pg.mean({"x": 2.0}) == {"x": 2.0}
        pg.barrier()
    assert not torch.distributed.is_initialized()
    assert device_for(torch.device("cpu"), DistInfo(1, 2, 1)) == torch.device("cpu")
    with pytest.raises(ValueError, match="backend"):
        ProcessGroup(backend="mpi")


def test_a_group_is_left_after_a_barrier_unless_the_block_failed(monkeypatch):
    """Every rank waits for the others before tearing its group down (a rank that left while another
    still read its last message aborted in gloo's teardown); after a failure nobody waits."""
    import torch.distributed as dist
    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a, **k: calls.append("destroy"))
    pg = ProcessGroup(backend="gloo")
    pg._owns = True                                  # as join() leaves it after init_process_group
    pg.__exit__(None, None, None)                    # the with-block ended normally
    assert calls == ["barrier", "destroy"] and not pg._owns
    calls.clear()
    pg._owns = True
    pg.__exit__(RuntimeError, RuntimeError("a failed rank"), None)
    assert calls == ["destroy"]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with ProcessGroup(backend="auto", device="cpu") as pg:          # CPU: gloo
        mine = shard(list(range(10)), pg.info)
        gathered = pg.gather(mine)
        res = {"info": [pg.info.rank, pg.info.world, pg.info.local_rank], "mine": mine, "gathered": gathered,
               "broadcast": pg.broadcast(f"from {pg.info.rank}"), "mean": pg.mean({"loss": float(rank + 1)}),
               "owned": pg._owns, "backend": torch.distributed.get_backend()}
        pg.barrier()
    res["left"] = not torch.distributed.is_initialized()
    Path(out, f"rank{rank}.json").write_text(json.dumps(res))


def test_two_gloo_processes(tmp_path):
    pytest.importorskip("torch.distributed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["info"] == [0, 2, 0] and r1["info"] == [1, 2, 1]
    assert r0["mine"] == [0, 2, 4, 6, 8] and r1["mine"] == [1, 3, 5, 7, 9]
    assert r0["gathered"] == [r0["mine"], r1["mine"]] and r1["gathered"] is None
    assert r0["broadcast"] == r1["broadcast"] == "from 0"
    assert r0["mean"] == r1["mean"] == {"loss": 1.5}
    assert r0["owned"] and r0["backend"] == "gloo" and r0["left"] and r1["left"]
