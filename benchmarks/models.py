"""Encoder and generator throughput (images/s) at 256 and 1024 px, batch 1 and 8.

Usage::

    python benchmarks/models.py                      # current device (CUDA if available)
    python benchmarks/models.py --device cpu --sizes 256 --batches 1 8

Prints one row per (network, size, batch) with images/s, and the speed-up of batching.  Also times
one Eq. 1 edit per frame as fsvideo runs it (G^K(w), G^K(w~) up to 16 px, then one full G(w~, F~))
against the official scripts' way (three full-resolution passes).  Weights are random (the
released architecture): speed does not depend on the values.

``--compile`` adds the encoder and generator through ``torch.compile`` (what ``fsvideo edit
--compile`` runs), each with the seconds its first call took to compile.

``--data-parallel`` (CPU) compares the two ways a streaming run can spend N cores on the networks
(:mod:`fsvideo.pipeline.budget`): one call of N faces on N torch threads, against N calls of one face
at once, each on one thread (``fsvideo edit``'s default on a CPU, at most 256 px), for the encoder
and the generator G(w, F), with the ratio measured in the same run.
"""
from __future__ import annotations

import argparse
import threading
import time

from fsvideo.pipeline.memory import use_huge_pages  # noqa: E402

use_huge_pages()  # before torch, as the CLI does (THP_MEM_ALLOC_ENABLE=0 to measure without)
import torch  # noqa: E402

from fsvideo.edits.eq1 import EditSpec, edit_codes  # noqa: E402
from fsvideo.models.encoder import FeatureStyleEncoder  # noqa: E402
from fsvideo.models.fse import FeatureStyleModel  # noqa: E402
from fsvideo.models.stylegan2 import Generator  # noqa: E402
from fsvideo.utils import pick_device, pick_dtype  # noqa: E402


def timeit(fn, repeats: int, device) -> float:
    t = time.perf_counter()
    fn()  # warm-up (a compiled function compiles here)
    if device.type == "cuda":
        torch.cuda.synchronize()
    timeit.first = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", help="auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--compile", action="store_true", help="also time the torch.compile'd encoder and generator")
    ap.add_argument("--data-parallel", action="store_true",
                    help="CPU: one call on every core against one single-threaded call per core (see above)")
    a = ap.parse_args()
    if a.data_parallel:
        return data_parallel(a.sizes, a.repeats)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    dtype = pick_dtype(device, a.precision)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"device: {name}, dtype: {dtype}, torch {torch.__version__}")
    print(f"{'network':<28}{'size':>6}{'batch':>7}{'s/batch':>10}{'img/s':>9}{'batch speed-up':>16}")
    torch.manual_seed(0)
    enc = FeatureStyleEncoder(18).eval().to(device)
    ac = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    for size in a.sizes:
        G = Generator(size).eval().to(device)
        model = FeatureStyleModel(FeatureStyleEncoder(G.n_latent).eval(), G, torch.zeros(G.n_latent, 512)).to(device)
        noise = G.make_noise(0, device=device)
        d = torch.nn.functional.normalize(torch.randn(G.n_latent * 512), dim=0).view(G.n_latent, 512)
        rows = {}
        for b in a.batches:
            x = torch.rand(b, 3, size, size, device=device) * 2 - 1
            w = torch.randn(b, G.n_latent, 512, device=device)
            f = torch.randn(b, *G.feature_shape(5), device=device)
            jobs = {
                f"encoder (input {size})": lambda: enc(x),
                "generator G(w, F)": lambda: G(w, noise=noise, features_in=f),
                "G^K(w) only": lambda: G.features(w, noise=noise),
                "edit, fsvideo (G^K x2 + G)": lambda: model.decode(
                    *edit_codes(model, w, f, [EditSpec("d", d.to(device), 1.0)], noise), noise),
                "edit, official (3 x G)": lambda: [G(w, noise=noise), G(w, noise=noise),
                                                   G(w, noise=noise, features_in=f)],
            }
            if a.compile:
                ce = torch.compile(enc, dynamic=False)
                cg = torch.compile(lambda w, f: G(w, noise=noise, features_in=f), dynamic=False)
                jobs["encoder, torch.compile"] = lambda: ce(x)
                jobs["G(w, F), torch.compile"] = lambda: cg(w, f)
            for label, fn in jobs.items():
                with torch.no_grad(), ac:
                    s = timeit(fn, a.repeats, device)
                rows.setdefault(label, {})[b] = s
                base = rows[label].get(a.batches[0])
                speed = (base / a.batches[0] * b / s) if base and b != a.batches[0] else None
                compiled = f"   (compile {timeit.first:.0f} s)" if "compile" in label else ""
                print(f"{label:<28}{size:>6}{b:>7}{s:>10.3f}{b / s:>9.2f}"
                      f"{(f'{speed:.2f}x' if speed else ''):>16}{compiled}", flush=True)


def data_parallel(sizes: list[int], repeats: int) -> None:
    """Images/s of the encoder and of G(w, F): N faces in one call on N threads vs N one-face calls at once."""
    from fsvideo.cores import available_cores
    n = available_cores()
    print(f"CPU, {n} cores, torch {torch.__version__}; ratio = data-parallel / one call (same run)")
    print(f"{'network':<24}{'size':>6}{'one call, img/s':>18}{'data-parallel, img/s':>23}{'ratio':>8}")
    torch.manual_seed(0)
    for size in sizes:
        G = Generator(size).eval()
        enc = FeatureStyleEncoder(G.n_latent).eval()
        noise = G.make_noise(0)
        x = torch.rand(n, 3, 256, 256) * 2 - 1
        w, f = torch.randn(n, G.n_latent, 512), torch.randn(n, *G.feature_shape(5))
        nets = {"encoder (input 256)": lambda i: enc(x[i]), "generator G(w, F)":
                lambda i: G(w[i], noise=noise, features_in=f[i])}
        for label, fn in nets.items():
            def one_call(fn=fn):
                torch.set_num_threads(n)
                fn(slice(None))

            def per_core(fn=fn):
                torch.set_num_threads(1)              # threads started after this get 1 thread each
                ts = [threading.Thread(target=torch.no_grad()(fn), args=(slice(i, i + 1),)) for i in range(n)]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
            with torch.no_grad():
                one, dp = [], []
                for _ in range(repeats):              # interleaved, so a load change hits both
                    one.append(timeit(one_call, 1, torch.device("cpu")))
                    dp.append(timeit(per_core, 1, torch.device("cpu")))
            s1, s2 = min(one), min(dp)
            print(f"{label:<24}{size:>6}{n / s1:>18.2f}{n / s2:>23.2f}{s1 / s2:>7.2f}x", flush=True)
    torch.set_num_threads(n)


if __name__ == "__main__":
    main()
