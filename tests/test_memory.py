"""Inference memory (issue 11, point 8): queues bounded by bytes, the generator's in-place inference
path (equal to the out-of-place one), activations not kept, and glibc's fixed mmap threshold."""
from __future__ import annotations

import dataclasses
import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fsvideo.models.ops import fused_leaky_relu, make_kernel, upfirdn2d
from fsvideo.models.random_init import random_model
from fsvideo.models.stylegan2 import Generator
from fsvideo.pipeline.stage_calls import Link, packet_nbytes

REPO = Path(__file__).resolve().parents[1]
MiB = 2**20


# ------------------------------------------------------------------------------------------- queues
def test_packet_nbytes_counts_arrays_tensors_and_dataclasses_once():
    @dataclasses.dataclass
    class Crop:
        image: np.ndarray
        matrix: np.ndarray

    frame = np.zeros((10, 10, 3), np.uint8)                       # 300 bytes
    crop = Crop(np.zeros((4, 4, 3), np.uint8), np.eye(3))        # 48 + 72 bytes
    batch = torch.zeros(4, 8)                                     # a per-frame view counts its own rows
    p = {"index": 1, "image": frame, "faces": [crop], "aligned": [crop], "w": batch[1:3], "again": frame}
    assert packet_nbytes(p) == 300 + 48 + 72 + 2 * 8 * 4
    assert packet_nbytes({"index": 0, "name": "x"}) == 0


def _packet(i: int, nbytes: int) -> dict:
    return {"index": i, "data": np.zeros(nbytes, np.uint8)}


def test_link_holds_at_most_max_bytes_but_always_one_packet():
    stop = threading.Event()
    link = Link(8, stop, max_bytes=3 * MiB)
    link.put(_packet(0, 2 * MiB))
    done = threading.Event()

    def second():
        link.put(_packet(1, 2 * MiB))       # 4 MiB > 3 MiB: waits until the first one is taken
        done.set()
    t = threading.Thread(target=second)
    t.start()
    time.sleep(0.3)
    assert not done.is_set() and len(link.items) == 1
    assert link.get()["index"] == 0
    t.join(5)
    assert done.is_set() and link.bytes == 2 * MiB
    assert link.get()["index"] == 1 and link.bytes == 0
    link.put(_packet(2, 10 * MiB))          # larger than the bound: an empty link still takes it
    assert link.get()["index"] == 2
    assert link.peak_bytes == 10 * MiB


def test_link_without_byte_bound_counts_packets_only():
    link = Link(3, threading.Event())
    for i in range(3):
        link.put(_packet(i, 4 * MiB))
    assert len(link.items) == 3 and link.bytes == 0


def test_link_takes_min_items_whatever_their_size():
    link = Link(8, threading.Event(), max_bytes=1 * MiB, min_items=3)
    for i in range(3):
        link.put(_packet(i, 2 * MiB))       # a batch of 3 always fits
    assert len(link.items) == 3


# ------------------------------------------------------------------------------- generator in place
def _small_generator(size: int = 64) -> Generator:
    torch.manual_seed(0)
    G = Generator(size, style_dim=32, n_mlp=2, channel_max=32).eval()
    for conv in [G.conv1, *G.convs]:
        conv.noise.weight.data.fill_(0.1)
        conv.activate.bias.data.normal_()
    for rgb in [G.to_rgb1, *G.to_rgbs]:
        rgb.bias.data.normal_()
    return G


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inplace_inference_equals_the_autograd_path_bit_for_bit(dtype):
    G = _small_generator().to(dtype)
    torch.manual_seed(1)
    w = torch.randn(2, G.n_latent, G.style_dim, dtype=dtype)
    f = torch.randn(2, *G.feature_shape(5), dtype=dtype)
    noise = G.make_noise(3, dtype=dtype)
    with torch.no_grad():                                   # in-place path
        fast = G(w, noise=noise, features_in=f)
        fast_feats = G(w, noise=noise, return_features=True)[1]
    wg = w.clone().requires_grad_(True)                     # graph recorded: the out-of-place path
    ref = G(wg, noise=noise, features_in=f)
    ref_feats = G(wg, noise=noise, return_features=True)[1]
    assert ref.requires_grad and not fast.requires_grad
    assert torch.equal(fast, ref.detach())
    assert all(torch.equal(a, b.detach()) for a, b in zip(fast_feats, ref_feats))
    ref.sum().backward()                                    # the autograd path still differentiates
    assert wg.grad is not None and torch.isfinite(wg.grad).all()


def test_fused_leaky_relu_inplace_reuses_its_input_and_refuses_a_graph():
    x = torch.randn(2, 3, 5, 5)
    b = torch.randn(3)
    want = fused_leaky_relu(x, b)
    y = x.clone()
    got = fused_leaky_relu(y, b, inplace=True)
    assert got is y and torch.equal(got, want)
    with pytest.raises(RuntimeError, match="autograd"):
        fused_leaky_relu(x.clone().requires_grad_(True), b, inplace=True)


@pytest.mark.parametrize("pad,up", [((1, 1), 1), ((2, 2), 1), ((0, 0), 1), ((2, 1), 2), ((1, -1), 1)])
def test_upfirdn2d_padding_by_the_convolution_equals_a_padded_copy(pad, up):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 9, 9)
    k = make_kernel([1, 3, 3, 1]) * up ** 2
    ref = x
    if up > 1:                                   # the reference: zero insertion, explicit pad, conv
        ref = F.pad(ref.reshape(2, 5, 9, 1, 9, 1), (0, up - 1, 0, 0, 0, up - 1)).reshape(2, 5, 9 * up, 9 * up)
    p0, p1 = pad
    ref = F.pad(ref, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
    if p0 < 0 or p1 < 0:
        ref = ref[:, :, max(-p0, 0): ref.shape[2] - max(-p1, 0), max(-p0, 0): ref.shape[3] - max(-p1, 0)]
    ref = F.conv2d(ref, torch.flip(k, (0, 1))[None, None].expand(5, 1, 4, 4), groups=5)
    assert torch.equal(upfirdn2d(x, k, up=up, pad=pad), ref)


def test_generator_keeps_no_earlier_activation_while_the_last_layer_runs():
    """Without ``return_features`` the layers' activations are not collected (at 1024 px they were
    about 500 MiB per face, alive until the call returned)."""
    G = _small_generator(128)
    w = torch.randn(1, G.n_latent, G.style_dim)
    alive: list[int] = []

    def count(module, args):
        gc.collect()
        alive.append(sum(1 for o in gc.get_objects() if type(o) is torch.Tensor and o.ndim == 4
                         and o.shape[1] > 3 and 8 <= o.shape[-1] < 128))   # 8-64 px activations
    G.to_rgbs[-1].register_forward_pre_hook(count)
    with torch.no_grad():
        G(w, noise=G.make_noise(0))
        assert alive[-1] == 0
        G(w, noise=G.make_noise(0), return_features=True)
        assert alive[-1] >= 6                      # with return_features they are kept, as asked


# ------------------------------------------------------------------------------------------- malloc
_MALLOC_CHILD = r"""
import json, sys
import numpy as np
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")) * 1024
big = np.ones(30 * 2**20, np.uint8); del big       # glibc's dynamic threshold rises to ~30 MiB
import ctypes
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
blocks, pins = [], []
for _ in range(10):                                # now from the heap, not mmapped, each one followed
    blocks.append(np.ones(6 * 2**20, np.uint8))    # by a block still in use: free() cannot trim them
    pins.append(libc.malloc(2**20))
del blocks
before = rss()
released = False
if sys.argv[1] == "release":
    from fsvideo.pipeline.memory import release_free_memory
    released = release_free_memory()
print(json.dumps({"freed": before - rss(), "released": released}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim")
def test_release_free_memory_returns_what_malloc_keeps():
    """60 MiB freed into the heap stay resident under glibc's defaults and go back to the system
    with release_free_memory."""
    def child(mode):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        out = subprocess.run([sys.executable, "-c", _MALLOC_CHILD, mode], cwd=REPO, env=env, check=True,
                             capture_output=True, text=True)
        return json.loads(out.stdout.strip().splitlines()[-1])
    assert child("keep")["freed"] < 10 * MiB
    r = child("release")
    assert r["released"] and r["freed"] > 40 * MiB


def test_model_stages_release_memory_only_for_large_generators_on_the_cpu(monkeypatch):
    import fsvideo.pipeline.model_stages as MS
    from fsvideo.models.execution import ModelExecutor
    calls = []
    monkeypatch.setattr(MS, "release_free_memory", lambda: calls.append(1))
    large = ModelExecutor(random_model(512, channel_max=8, style_dim=8, n_mlp=1), device="cpu")
    assert large.large_on_cpu
    MS._releasing(large, lambda ps: ps)([])
    assert calls == [1]
    small = ModelExecutor(random_model(64), device="cpu")           # 256 px and below: memory is no issue
    gpu = ModelExecutor.__new__(ModelExecutor)
    gpu.large_on_cpu = False                                         # what a CUDA device gives
    for ex in (small, gpu, object()):                                # object(): a stand-in (no network)
        MS._releasing(ex, lambda ps: ps)([])
    assert calls == [1]


_THP_CHILD = r"""
import json, resource, sys
from fsvideo.cli import main
try:
    main(["--version"])
except SystemExit:
    pass
import os
setting, torch_before = os.environ.get("THP_MEM_ALLOC_ENABLE"), "torch" in sys.modules
import torch
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    x = torch.empty(32 * 2**20).fill_(1.0)   # 128 MiB: mmapped fresh each time
    del x
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
from fsvideo.pipeline.memory import huge_pages_status
print(json.dumps({"setting": setting, "torch_before": torch_before, "faults": faults, "status": huge_pages_status()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux transparent huge pages")
def test_the_cli_asks_torch_for_huge_pages_before_importing_it_unless_told_not_to():
    """`fsvideo` sets THP_MEM_ALLOC_ENABLE=1 before torch is imported, and keeps a user's 0; where the
    kernel gives transparent huge pages, 8 fresh 128 MiB tensors then fault well under a tenth as often
    as with 4 KiB pages (8 x 32768 faults)."""
    def child(**env):
        full = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"} | env
        out = subprocess.run([sys.executable, "-c", _THP_CHILD], cwd=REPO, env=full, check=True,
                             capture_output=True, text=True)
        return json.loads(out.stdout.strip().splitlines()[-1])
    on, off = child(), child(THP_MEM_ALLOC_ENABLE="0")
    assert on["setting"] == "1" and off["setting"] == "0"
    assert not on["torch_before"]
    from fsvideo.pipeline.memory import kernel_huge_pages
    pages = 8 * 32 * 2**20 * 4 // 4096
    assert off["faults"] > pages // 2 or kernel_huge_pages() == "always"
    if kernel_huge_pages() in ("madvise", "always"):
        assert on["faults"] < pages // 10
        assert on["status"].startswith("huge pages on") and off["status"] == "huge pages off (THP_MEM_ALLOC_ENABLE=0)"
