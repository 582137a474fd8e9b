"""The streaming runner: order, no drops, bounded queues, batching, look-ahead, failures, Ctrl-C, chains."""
from __future__ import annotations

import _thread
import os
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fsvideo.errors import ConfigError, InputError, PipelineError
from fsvideo.pipeline import (
    Components,
    FunctionStage,
    Stage,
    build_chain,
    check_chain,
    load_chain_spec,
    max_in_flight,
    register_stage,
    registered_stages,
    run_chain,
    run_pipeline,
)
from fsvideo.pipeline.chain import PIPELINES_DIR

REPO = Path(__file__).resolve().parents[1]


def _fsvideo_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("fsvideo-")]


@pytest.fixture(autouse=True)
def no_thread_leak():
    before = threading.active_count()
    yield
    # every runner thread is joined before run_pipeline returns or raises
    assert _fsvideo_threads() == []
    assert threading.active_count() == before


def source(n: int, start: int = 0):
    for i in range(start, start + n):
        yield {"index": i, "x": i}


class Jitter(Stage):
    """Adds ``key`` = f(x) after a random short sleep; records its batch sizes."""

    def __init__(self, name, key, fn, batch_size=1, seed=0, max_delay=0.002, needs=("x",)):
        self.name, self.key, self.fn, self.batch_size = name, key, fn, batch_size
        self.needs, self.adds = tuple(needs), (key,)
        self.rng = random.Random(seed)
        self.max_delay = max_delay
        self.batches: list[int] = []
        self.setup_called = self.close_called = False
        self.setup_thread = None

    def setup(self):
        self.setup_called = True
        self.setup_thread = threading.current_thread().name

    def process(self, packets):
        self.batches.append(len(packets))
        time.sleep(self.rng.random() * self.max_delay)
        for p in packets:
            p[self.key] = self.fn(p["x"])
        return packets

    def close(self):
        self.close_called = True


class LookAhead(Stage):
    """Holds up to ``window`` packets, then releases the oldest (like a centred smoothing window)."""

    name = "lookahead"
    needs = ("x",)
    adds = ("smooth",)

    def __init__(self, window=3, lose_one=False):
        self.window = window
        self.held: list[dict] = []
        self.lose_one = lose_one

    def process(self, packets):
        self.held.extend(packets)
        out = []
        while len(self.held) > self.window:
            p = self.held.pop(0)
            nxt = [q["x"] for q in self.held[: self.window]]
            p["smooth"] = float(np.mean([p["x"]] + nxt))
            out.append(p)
        return out

    def flush(self):
        out = []
        held = self.held[1:] if self.lose_one else self.held
        for j, p in enumerate(held):
            p["smooth"] = float(np.mean([q["x"] for q in held[j:]]))
            out.append(p)
        self.held = []
        return out


def chain():
    return [Jitter("a", "y", lambda x: x * 2, batch_size=1, seed=1),
            Jitter("b", "z", lambda x: x + 1, batch_size=4, seed=2),
            LookAhead(window=3),
            Jitter("c", "w", lambda x: -x, batch_size=3, seed=3)]


def run_collect(n, stages, **kw):
    out = []
    stats = run_pipeline(source(n), stages, out.append, source_keys=("index", "x"), **kw)
    return out, stats


def test_order_kept_and_nothing_dropped_under_random_delays():
    out, stats = run_collect(97, chain(), queue_size=2)
    assert [p["index"] for p in out] == list(range(97))
    assert all(p["y"] == 2 * p["x"] and p["z"] == p["x"] + 1 and p["w"] == -p["x"] for p in out)
    assert stats.packets == 97
    names = [s.name for s in stats.stages]
    assert names == ["source", "a", "b", "lookahead", "c", "sink"]
    assert all(s.packets == 97 for s in stats.stages)


def test_sequential_equals_threaded():
    threaded, _ = run_collect(50, chain(), threads=True)
    sequential, _ = run_collect(50, chain(), threads=False)
    assert threaded == sequential
    assert [p["index"] for p in sequential] == list(range(50))


def test_sequential_runs_batch_one_frame_by_frame():
    stage = Jitter("b", "z", lambda x: x, batch_size=4, max_delay=0)
    run_collect(10, [stage], threads=False)
    assert stage.batches == [1] * 10


def test_batches_are_full_except_the_last_and_setup_close_run_in_the_stage_thread():
    st = Jitter("batch", "y", lambda x: x, batch_size=4, max_delay=0)
    out, _ = run_collect(10, [st])
    assert st.batches == [4, 4, 2]
    assert len(out) == 10
    assert st.setup_called and st.close_called
    assert st.setup_thread == "fsvideo-batch"


def test_lookahead_stage_returns_held_packets_at_flush():
    out, _ = run_collect(10, [LookAhead(window=3)])
    assert [p["index"] for p in out] == list(range(10))
    assert out[0]["smooth"] == pytest.approx(np.mean([0, 1, 2, 3]))
    assert out[-1]["smooth"] == 9.0


def test_a_stage_that_loses_packets_is_an_error():
    with pytest.raises(PipelineError, match="lookahead.*lost packets"):
        run_collect(10, [LookAhead(window=3, lose_one=True)])


def test_a_stage_that_reorders_is_an_error():
    rev = FunctionStage("rev", lambda ps: ps[::-1], needs=("x",), batch_size=3)
    with pytest.raises(PipelineError, match="rev.*reordered"):
        run_collect(10, [rev])


def test_a_stage_that_does_not_add_its_keys_is_an_error():
    bad = FunctionStage("liar", lambda ps: ps, needs=("x",), adds=("y",))
    with pytest.raises(PipelineError, match="liar.*without y"):
        run_collect(3, [bad])


class InFlight:
    """A source and a slow sink that count the packets between them (``peak``: the most at once)."""

    def __init__(self, make=lambda i: {"index": i, "x": i}, sink_delay: float = 0.002):
        self.make, self.sink_delay = make, sink_delay
        self.now = self.peak = 0
        self.lock = threading.Lock()

    def source(self, n: int):
        for i in range(n):
            with self.lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
            yield self.make(i)

    def sink(self, p) -> None:
        time.sleep(self.sink_delay)
        with self.lock:
            self.now -= 1


def test_bounded_queues_slow_sink_fast_source():
    stages = [Jitter("a", "y", lambda x: x, batch_size=2, max_delay=0),
              Jitter("b", "z", lambda x: x, batch_size=5, max_delay=0), LookAhead(window=3)]
    q = 3
    bound = max_in_flight(stages, q)
    n = 300
    fl = InFlight()
    run_pipeline(fl.source(n), stages, fl.sink, queue_size=q)
    assert fl.now == 0
    assert fl.peak <= bound < n
    assert fl.peak >= bound - 4  # the queues really filled up: the sink was the bottleneck


def test_queue_bytes_bounds_the_packets_in_flight():
    """With 1 MiB packets and 2.5 MiB per queue each queue holds 2 packets instead of 8."""
    def peak(queue_bytes):
        fl = InFlight(lambda i: {"index": i, "data": np.zeros(2**20, np.uint8)}, sink_delay=0.003)
        run_pipeline(fl.source(120), stages, fl.sink, queue_size=8, queue_bytes=queue_bytes)
        return fl.peak

    stages = [FunctionStage(f"s{k}", lambda ps: ps, needs=("data",)) for k in range(3)]
    bound = max_in_flight(stages, 2)                  # each queue: at most 2 packets of 1 MiB
    assert peak(int(2.5 * 2**20)) <= bound < max_in_flight(stages, 8)
    assert peak(None) > bound                         # without the byte bound the queues fill to 8


def test_exception_in_a_middle_stage_stops_everything_promptly():
    def endless():
        i = 0
        while True:
            yield {"index": i, "x": i}
            i += 1

    def boom(ps):
        if ps[0]["index"] >= 40:
            raise ValueError("bad pixel")
        return ps

    closed = []

    class Slow(Jitter):
        def close(self):
            closed.append(self.name)

    stages = [Slow("first", "y", lambda x: x, max_delay=0), FunctionStage("middle", boom, needs=("y",)),
              Slow("last", "w", lambda x: x, max_delay=0)]
    t = time.perf_counter()
    with pytest.raises(PipelineError) as ei:
        run_pipeline(endless(), stages, lambda p: time.sleep(0.001))
    assert time.perf_counter() - t < 5
    msg = str(ei.value)
    assert "'middle'" in msg and "frame 40" in msg and "bad pixel" in msg
    assert isinstance(ei.value.__cause__, ValueError)
    assert sorted(closed) == ["first", "last"]


def test_fsvideo_errors_pass_through_unchanged():
    def fail(ps):
        raise InputError("clip.mp4 is damaged at frame 3", hint="re-export it")

    with pytest.raises(InputError, match="clip.mp4 is damaged"):
        run_collect(10, [FunctionStage("decodeish", fail, needs=("x",))])


def test_exception_in_source_and_in_sink():
    def bad_source():
        yield {"index": 0, "x": 0}
        raise OSError("disk vanished")

    with pytest.raises(PipelineError, match="'source' failed on frame 1.*disk vanished"):
        run_pipeline(bad_source(), [Jitter("a", "y", lambda x: x)], lambda p: None)

    def bad_sink(p):
        if p["index"] == 5:
            raise RuntimeError("encoder died")

    for threads in (True, False):
        with pytest.raises(PipelineError, match="'sink' failed on frame 5.*encoder died"):
            run_pipeline(source(20), [Jitter("a", "y", lambda x: x)], bad_sink, threads=threads)


def test_sequential_mode_reports_stage_and_frame():
    def boom(ps):
        if ps[0]["index"] == 7:
            raise ZeroDivisionError("oops")
        return ps

    with pytest.raises(PipelineError, match="'div' failed on frame 7") as ei:
        run_collect(20, [FunctionStage("div", boom, needs=("x",))], threads=False)
    assert isinstance(ei.value.__cause__, ZeroDivisionError)


def test_ctrl_c_in_the_caller_stops_all_threads():
    def endless():
        i = 0
        while True:
            yield {"index": i, "x": i}
            i += 1

    timer = threading.Timer(0.3, _thread.interrupt_main)  # a real Ctrl-C delivered to the main thread
    timer.start()
    t = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_pipeline(endless(), [Jitter("a", "y", lambda x: x, max_delay=0.001)], lambda p: time.sleep(0.001))
    finally:
        timer.join()
    assert time.perf_counter() - t < 5


def test_a_ctrl_c_that_reaches_the_caller_after_the_last_packet_still_stops_the_run():
    """A signal sent from a stage's thread (a writer killed by SIGHUP after its frame) runs the main thread's
    handler at its next bytecode, which may come after the last packet, while the runner joins its threads.
    The runner took it for a second Ctrl-C while shutting down, dropped it and returned as if never stopped:
    `fsvideo edit` would then keep its output and exit 0."""
    class InterruptOnClose(FunctionStage):
        def close(self):                        # after END went out: the caller is joining the threads
            time.sleep(0.3)
            _thread.interrupt_main()

    with pytest.raises(KeyboardInterrupt):
        run_collect(3, [InterruptOnClose("a", lambda ps: ps, needs=("x",))])
    # Python 3.11's Thread.join, interrupted, marks the thread it waited for as stopped while it still runs
    # (threading's bpo-45274 handling): wait for it here, or no_thread_leak would see it ending.
    deadline = time.monotonic() + 5
    while _fsvideo_threads() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_progress_callback_and_stats():
    seen = []
    out, stats = run_collect(12, [Jitter("a", "y", lambda x: x, batch_size=5, max_delay=0)],
                             progress=lambda d, t: seen.append((d, t)), total=12)
    assert seen == [(i, 12) for i in range(1, 13)]
    a = stats.stages[1]
    assert (a.name, a.packets, a.calls) == ("a", 12, 4)  # 5 + 5 + 2 and the flush call


class Slowish(Stage):
    """A per-frame stage whose calls take random times: workers finish out of order."""

    name = "slowish"
    needs = ("x",)
    adds = ("v",)
    per_frame = True

    def __init__(self, batch_size=1):
        self.batch_size = batch_size
        self.threads: set[str] = set()
        self.rng = random.Random(0)
        self.lock = threading.Lock()

    def process(self, packets):
        with self.lock:
            delay = self.rng.random() * 0.004
        self.threads.add(threading.current_thread().name)
        time.sleep(delay)
        for p in packets:
            p["v"] = p["x"] * 3
        return packets


@pytest.mark.parametrize("batch", [1, 3])
def test_per_frame_stage_runs_in_several_workers_in_order(batch):
    st = Slowish(batch)
    out, stats = run_collect(60, [st, Jitter("after", "y", lambda x: x, seed=4)], workers=3, queue_size=2)
    assert [p["index"] for p in out] == list(range(60)) and all(p["v"] == 3 * p["x"] for p in out)
    assert len(st.threads) > 1                              # really ran in several workers
    assert stats.stages[1].packets == 60 and stats.stages[1].calls == -(-60 // batch) + 1   # + flush
    seq, _ = run_collect(60, [Slowish(batch)], threads=False)
    assert [p["v"] for p in seq] == [p["v"] for p in out]
    with pytest.raises(ConfigError, match="workers"):
        run_collect(3, [Slowish()], workers=0)


def test_network_stages_get_the_network_workers_and_cpu_stages_the_others():
    class Net(Slowish):
        name, networks = "net", True
    net, cpu = Net(), Slowish()
    out, _ = run_collect(40, [net, cpu], workers=1, network_workers=3, queue_size=2)
    assert [p["v"] for p in out] == [3 * i for i in range(40)]
    assert len(net.threads) > 1 and len(cpu.threads) == 1
    assert max_in_flight([net, cpu], 2, workers=1, network_workers=3) == max_in_flight([net, cpu], 2) + 2
    with pytest.raises(ConfigError, match="network_workers"):
        run_collect(3, [net], network_workers=0)


def test_failure_in_a_worker_names_the_stage_and_frame():
    class Bad(Slowish):
        def process(self, packets):
            if any(p["index"] == 17 for p in packets):
                raise ValueError("boom")
            return super().process(packets)
    with pytest.raises(PipelineError, match="'slowish' failed on frame 17.*boom"):
        run_collect(40, [Bad()], workers=3)


def test_check_chain_names_the_stage_and_missing_key():
    stages = [Jitter("a", "y", lambda x: x), Jitter("needs_q", "z", lambda x: x, needs=("q",))]
    with pytest.raises(ConfigError, match="'needs_q' needs q"):
        check_chain(stages, ("index", "x"))
    with pytest.raises(ConfigError, match="needs_q"):
        run_pipeline(source(3), stages, lambda p: None, source_keys=("index", "x"))
    with pytest.raises(ConfigError, match="batch_size"):
        check_chain([FunctionStage("b", lambda p: p, batch_size=0)], ())


# ----------------------------------------------------------------------------------------- chains

@register_stage("test_numbers")
def _make_numbers(components, *, count: int = 5):
    from fsvideo.pipeline import SourceStage

    class Numbers(SourceStage):
        adds = ("index", "x")

        def packets(self):
            return source(count)

    return Numbers()


@register_stage("test_scale")
def _make_scale(components, *, factor: float = 2.0, gain: float = 1.0, batch: int = 1):
    return FunctionStage("test_scale", lambda ps: [{**p, "y": p["x"] * factor * gain} for p in ps],
                         needs=("x",), adds=("y",), batch_size=batch)


@register_stage("test_collect")
def _make_collect(components):
    from fsvideo.pipeline import SinkStage
    out = components.need("frame_sink", "test_collect")  # components are taken at build time

    class Collect(SinkStage):
        needs = ("y",)

        def consume(self, p):
            self.count("collected")
            out(p["y"])

    return Collect()


def _yaml(tmp_path, text):
    p = tmp_path / "chain.yaml"
    p.write_text(text)
    return p


def test_build_and_run_a_declared_chain(tmp_path):
    path = _yaml(tmp_path, "description: test\nstages:\n  - test_numbers: {count: 7}\n"
                           "  - test_scale: {factor: 3}\n  - test_collect\n")
    out: list = []
    stages = build_chain(path, Components(frame_sink=out.append), {"test_scale": {"gain": 10, "batch": 2}})
    assert [s.name for s in stages] == ["test_numbers", "test_scale", "test_collect"]
    assert stages[1].batch_size == 2
    stats = run_chain(stages)
    assert out == [30.0 * i for i in range(7)]
    assert stats.packets == 7 and stats.counts["collected"] == 7      # counts reported by the stage
    out.clear()
    stats = run_chain(build_chain(path, Components(frame_sink=out.append), {"test_scale": {"batch": 2}}),
                      threads=False)
    assert out == [3.0 * i for i in range(7)] and stats.counts["collected"] == 7


def test_yaml_options_win_over_run_options(tmp_path):
    path = _yaml(tmp_path, "stages:\n  - test_numbers: {count: 2}\n  - test_scale: {factor: 3}\n  - test_collect\n")
    out: list = []
    run_chain(build_chain(path, Components(frame_sink=out.append), {"test_scale": {"factor": 100}}))
    assert out == [0.0, 3.0]


@pytest.mark.parametrize("text, match", [
    ("stages: [test_numbers]\nextra: 1\n", "unknown key.*extra"),
    ("stages:\n  - test_numbers: {cuont: 3}\n", "test_numbers.*unknown option.*cuont"),
    ("stages:\n  - test_numbers\n  - no_such_stage\n", "unknown stage 'no_such_stage'"),
    ("stages: []\n", "non-empty list"),
    ("stages:\n  - {a: 1, b: 2}\n", "expected `name`"),
    ("stages:\n  - test_numbers\n  - test_collect\n", "'test_collect' needs y"),
    ("stages:\n  - test_scale\n  - test_collect\n", "not a source"),
    ("stages: [test_numbers\n", "not valid YAML"),
])
def test_bad_chain_files_are_config_errors(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        build_chain(_yaml(tmp_path, text), Components(frame_sink=print))


def test_unknown_run_option_is_a_config_error(tmp_path):
    path = _yaml(tmp_path, "stages:\n  - test_numbers\n  - test_scale\n  - test_collect\n")
    with pytest.raises(ConfigError, match="run options: stage 'test_scale' has unknown option.*gian"):
        build_chain(path, Components(frame_sink=print), {"test_scale": {"gian": 2}})
    with pytest.raises(ConfigError, match="unknown stage.*test_sclae"):
        build_chain(path, Components(frame_sink=print), {"test_sclae": {"gain": 2}})


def test_every_run_option_reaches_a_stage_option():
    """stage_options maps RunOptions onto keyword arguments the registered factories really take."""
    from fsvideo.pipeline.chain import _allowed_options
    from fsvideo.pipeline.options import RunOptions, stage_options
    registry = registered_stages()
    for stage, opts in stage_options(RunOptions()).items():
        assert set(opts) <= set(_allowed_options(registry[stage])), stage


def test_missing_component_is_a_config_error(tmp_path):
    path = _yaml(tmp_path, "stages:\n  - test_numbers\n  - test_scale\n  - test_collect\n")
    with pytest.raises(ConfigError, match="test_collect.*needs component 'frame_sink'"):
        build_chain(path, Components())


def test_unknown_pipeline_name():
    with pytest.raises(ConfigError, match="unknown pipeline 'nope'"):
        build_chain("nope", Components())


def test_a_missing_stage_module_is_an_error(monkeypatch):
    from fsvideo.pipeline import chain as chain_mod
    monkeypatch.setattr(chain_mod, "STAGE_MODULES", chain_mod.STAGE_MODULES + ["fsvideo.no_such_stages"])
    with pytest.raises(ConfigError, match="fsvideo.no_such_stages.*does not exist"):
        registered_stages()


@pytest.mark.parametrize("name", ["edit", "invert", "align", "edit_latents"])
def test_repo_pipeline_files_parse(name):
    assert PIPELINES_DIR == REPO / "pipelines"
    spec = load_chain_spec(name)
    names = [s.name for s in spec.stages]
    registry = registered_stages()
    assert all(n in registry for n in names)
    if name == "edit_latents":
        return
    assert names[0] == "decode" and "detect" in names and "track_align" in names
    if name != "align":
        assert names[-1] == "encode_video" and "encode" in names and "generate" in names
    if name == "edit":
        assert names == ["decode", "detect", "track_align", "encode", "edit", "generate", "mask", "blend", "encode_video"]


def test_core_budget_is_decided_once_from_the_machine_and_restored():
    import cv2
    import torch

    from fsvideo.cores import available_cores
    from fsvideo.pipeline.budget import core_budget
    seq = core_budget(device_type="cpu", threads=False, cores=2)
    assert (seq.torch_threads, seq.opencv_threads, seq.workers) == (2, 2, 1)
    cpu = core_budget(device_type="cpu", threads=True, cores=2)       # one single-threaded network call per core
    assert (cpu.torch_threads, cpu.network_workers, cpu.opencv_threads, cpu.workers) == (1, 2, 1, 1)
    big = core_budget(device_type="cpu", threads=True, cores=2, network_calls=1)   # 1024 px or compiled
    assert (big.torch_threads, big.network_workers, big.opencv_threads, big.workers) == (2, 1, 1, 1)
    many = core_budget(device_type="cpu", threads=True, cores=32)           # a few calls share many cores
    assert (many.torch_threads, many.network_workers) == (8, 4)
    assert core_budget(device_type="cpu", threads=True, cores=2, network_calls=8).network_workers == 2
    gpu = core_budget(device_type="cuda", threads=True, cores=16)     # the CPU goes to per-frame stages
    assert (gpu.torch_threads, gpu.network_workers, gpu.opencv_threads, gpu.workers) == (1, 1, 1, 15)
    assert core_budget(device_type="cuda", threads=True, cores=16, workers=3).workers == 3
    assert [core_budget(device_type="cuda", threads=True, cores=n).workers for n in (1, 2, 3, 4)] == [1, 2, 2, 3]
    assert core_budget(device_type="cpu", threads=True).cores == available_cores()
    before = (torch.get_num_threads(), cv2.getNumThreads())
    with core_budget(device_type="cuda", threads=True, cores=4).applied():
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (1, 1)
    assert (torch.get_num_threads(), cv2.getNumThreads()) == before


def _cgroup(tmp_path, cgroup_line: str, files: dict[str, str]):
    """A fake /sys/fs/cgroup tree and /proc/self/cgroup under tmp_path."""
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text + "\n")
    (tmp_path / "self").write_text(cgroup_line + "\n")
    return dict(root=root, self_cgroup=tmp_path / "self")


@pytest.mark.parametrize("line, files, want", [
    ("0::/", {}, None),                                                          # no controller files
    ("0::/", {"cpu.max": "max 100000"}, None),                                   # v2, no quota
    ("0::/", {"cpu.max": "200000 100000"}, 2.0),                                 # v2 in a container's namespace
    ("0::/kubepods/pod1/c1", {"kubepods/cpu.max": "800000 100000",               # v2: the smallest up the tree
                              "kubepods/pod1/cpu.max": "150000 100000", "kubepods/pod1/c1/cpu.max": "max 100000"},
     1.5),
    ("0::/docker/abc", {"cpu.max": "300000 100000"}, 3.0),                      # host path absent: the root's
    ("4:cpu,cpuacct:/docker/abc", {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000",    # v1
                                   "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000"}, 0.5),
    ("1:cpu:/", {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),  # v1, no quota
    ("0::/", {"cpu.max": "garbage"}, None),
])
def test_a_cgroup_cpu_quota_is_read_from_v1_and_v2_trees(tmp_path, line, files, want):
    from fsvideo.cores import cgroup_cpu_quota
    assert cgroup_cpu_quota(**_cgroup(tmp_path, line, files)) == want


def test_a_containers_cpu_quota_and_torchruns_processes_share_the_cores(monkeypatch):
    """`docker run --cpus 2` on a 64-core host: the run splits 2 cores, and torch's pool (OpenMP, sized
    when torch is imported) is told 2 threads before the CLI imports it, unless the user said;
    torchrun's processes on one machine share its cores."""
    import fsvideo.cores as B
    from fsvideo.pipeline.budget import core_budget
    monkeypatch.setattr(B, "_affinity", lambda: 64)
    monkeypatch.setattr(B, "cgroup_cpu_quota", lambda: 2.5)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert B.available_cores() == 2
    assert core_budget(device_type="cpu", threads=True).cores == 2
    assert B.codec_threads() == 2                                           # FFmpeg's decoders and x264 too
    assert B.threads_within_quota() == 2 and os.environ["OMP_NUM_THREADS"] == "2"
    monkeypatch.setenv("OMP_NUM_THREADS", "7")                             # the user's setting stays
    assert B.threads_within_quota() is None and os.environ["OMP_NUM_THREADS"] == "7"
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(B, "cgroup_cpu_quota", lambda: 0.4)                 # under one core: one thread
    assert B.available_cores() == 1
    monkeypatch.setattr(B, "cgroup_cpu_quota", lambda: None)                # no quota: nothing is set
    assert B.available_cores() == 64 and B.threads_within_quota() is None and "OMP_NUM_THREADS" not in os.environ
    assert B.codec_threads() == 0                                           # FFmpeg chooses, as before
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")                             # torchrun --nproc-per-node 4
    assert B.available_cores() == 16 and B.codec_threads() == 16
    monkeypatch.setattr(B, "cgroup_cpu_quota", lambda: 6.0)
    assert B.available_cores() == 1                                         # 6 cores' time for 4 processes
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    calls = []
    monkeypatch.setattr(B, "threads_within_quota", lambda: calls.append(1))
    from fsvideo.cli import main
    try:
        main(["--version"])
    except SystemExit:
        pass
    assert calls == [1]
