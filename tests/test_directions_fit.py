"""InterFaceGAN fitting (linear SVM on W+), latents/labels readers, SeFa, and the `fsvideo directions` CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy.optimize import minimize

from fsvideo.cli import cli
from fsvideo.edits.directions import load_direction, user_direction_path
from fsvideo.edits.interfacegan import fit_direction, fit_linear_svm, read_labels, read_latents, read_latents_file
from fsvideo.edits.sefa import sefa_directions, sefa_factorize, style_affines
from fsvideo.errors import InputError
from fsvideo.models.random_init import random_model, save_official_checkpoints

N_LATENT = 4


def _codes(n: int, direction: np.ndarray, seed: int = 0, sep: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """W+ codes [n, N_LATENT, 512]: Gaussian noise, shifted by +-sep/2 along ``direction`` by class."""
    rng = np.random.default_rng(seed)
    y = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    x = rng.normal(size=(n, N_LATENT * 512)).astype(np.float32)
    x += (0.5 * sep * y)[:, None] * direction[None]
    return x.reshape(n, N_LATENT, 512), y


def _unit(seed: int = 1) -> np.ndarray:
    d = np.random.default_rng(seed).normal(size=N_LATENT * 512)
    return (d / np.linalg.norm(d)).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# SVM


def _reference_svm(X: np.ndarray, y: np.ndarray, C: float) -> tuple[np.ndarray, float]:
    """The squared-hinge SVM with an unregularised bias, ``1/2 |n|^2 + C sum max(0, 1 - y (X n + b))^2``,
    minimised by scipy's L-BFGS-B (an independent solver for the problem the module states)."""
    def f(v):
        n, b = v[:-1], v[-1]
        m = np.maximum(0.0, 1 - y * (X @ n + b))
        g = -2 * C * (m * y)
        return 0.5 * n @ n + C * (m ** 2).sum(), np.concatenate([n + X.T @ g, [g.sum()]])

    r = minimize(f, np.zeros(X.shape[1] + 1), jac=True, method="L-BFGS-B", options={"maxiter": 20000, "gtol": 1e-10})
    return r.x[:-1], float(r.x[-1])


def _cos(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_linear_svm_matches_the_unregularised_bias_optimum():
    rng = np.random.default_rng(0)
    d = rng.normal(size=20)
    d /= np.linalg.norm(d)
    y = np.where(np.arange(1000) % 2 == 0, 1.0, -1.0)
    X = rng.normal(size=(1000, 20)) + 2.0 * y[:, None] * d[None] + 0.7
    svm = fit_linear_svm(torch.from_numpy(X), torch.from_numpy(y), C=0.5)
    n = svm.normal.numpy()
    assert _cos(n, d) > 0.95
    assert svm.accuracy(torch.from_numpy(X), torch.from_numpy(y)) > 0.97
    ref_n, ref_b = _reference_svm(X, y, 0.5)
    assert _cos(n, ref_n) > 0.9999
    np.testing.assert_allclose(np.concatenate([n, [svm.bias]]), np.concatenate([ref_n, [ref_b]]), atol=2e-3)
    with pytest.raises(InputError, match="both classes"):
        fit_linear_svm(torch.from_numpy(X), torch.ones(1000, dtype=torch.float64))


def test_linear_svm_on_wplus_codes_far_from_the_origin():
    # codes around a large mean (as W+ codes around latent_avg): the centring keeps the bias harmless
    d = _unit()
    codes, y = _codes(120, d, sep=3.0)
    X = codes.reshape(120, -1).astype(np.float64) + 5.0 * np.random.default_rng(3).normal(size=N_LATENT * 512)
    svm = fit_linear_svm(torch.from_numpy(X), torch.from_numpy(y), C=1.0)
    ref_n, _ = _reference_svm(X, y, 1.0)
    assert _cos(svm.normal.numpy(), ref_n) > 0.999
    flipped = fit_linear_svm(torch.from_numpy(X), torch.from_numpy(-y), C=1.0)
    assert _cos(flipped.normal.numpy(), -ref_n) > 0.999


def test_fit_direction_recovers_an_attribute_in_wplus():
    d = _unit()
    codes, y = _codes(120, d, sep=10.0)       # 2048-D codes, 96 training samples: a clear attribute
    lat = read_latents_from_array(codes)
    res = fit_direction(lat, np.arange(120), y, val_split=0.2)
    assert res.direction.shape == (1, N_LATENT * 512) and res.direction.dtype == np.float32
    assert abs(np.linalg.norm(res.direction) - 1) < 1e-5
    assert float(res.direction[0] @ d) > 0.5               # points towards the attribute (label 1)
    assert res.val_accuracy is not None and res.val_accuracy >= 0.95 and res.n_pos == res.n_neg == 60
    full = fit_direction(lat, np.arange(120), y, val_split=0)
    flipped = fit_direction(lat, np.arange(120), -y, val_split=0)
    assert full.val_accuracy is None
    np.testing.assert_allclose(flipped.direction, -full.direction, atol=1e-4)   # the SVM is symmetric


def test_a_fit_on_a_handful_of_labelled_codes_warns(caplog):
    """2 labelled codes of 40 fitted silently (sweep): the direction is noise, and no accuracy is held out."""
    import logging
    codes, y = _codes(40, _unit(), sep=10.0)
    lat = read_latents_from_array(codes)
    rows = np.array([int(np.flatnonzero(y > 0)[0]), int(np.flatnonzero(y < 0)[0])])
    with caplog.at_level(logging.WARNING):
        res = fit_direction(lat, rows, y[rows])
    assert res.val_accuracy is None and "only 1 positive and 1 negative codes" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        fit_direction(lat, np.arange(40), y)
    assert "only" not in caplog.text


def read_latents_from_array(codes: np.ndarray):
    from fsvideo.edits.interfacegan import LatentSet
    return LatentSet(codes.astype(np.float32), {f"x:{i}": i for i in range(len(codes))})


# ------------------------------------------------------------------------------------------------
# latents and labels


def test_latents_in_every_documented_format(tmp_path):
    from fsvideo.latents import FrameLatents, LatentsWriter
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, N_LATENT, 512)).astype(np.float32)
    np.save(tmp_path / "a.npy", w)
    np.save(tmp_path / "one.npy", w[0])
    np.save(tmp_path / "flat.npy", w.reshape(3, -1))
    np.savez(tmp_path / "b.npz", w=w, F=np.zeros((3, 2)))
    torch.save({"w": torch.from_numpy(w)}, tmp_path / "c.pt")
    writer = LatentsWriter(tmp_path / "talk.latents", meta={"source": "talk.mp4"}, chunk_frames=2)
    for i in range(3):
        writer.add(FrameLatents(i, np.array([0]), w[i:i + 1], np.zeros((1, 8, 16, 16), np.float32),
                                np.eye(3)[None], np.zeros((1, 68, 2), np.float32)))
    writer.close()
    for name in ("a.npy", "flat.npy", "b.npz", "c.pt", "talk.latents"):
        np.testing.assert_array_equal(read_latents_file(tmp_path / name), w)
    np.testing.assert_array_equal(read_latents_file(tmp_path / "one.npy"), w[:1])
    lat = read_latents([tmp_path / "a.npy", tmp_path / "one.npy"])
    assert lat.codes.shape == (4, N_LATENT, 512)
    assert lat.keys["a.npy:2"] == lat.keys["a:2"] == 2 and lat.keys["one"] == lat.keys["one.npy:0"] == 3
    np.save(tmp_path / "bad.npy", np.zeros((3, 7)))
    with pytest.raises(InputError, match=r"bad\.npy: latents have shape"):
        read_latents_file(tmp_path / "bad.npy")
    np.save(tmp_path / "other.npy", np.zeros((2, 6, 512), np.float32))
    with pytest.raises(InputError, match="W\\+ rows"):
        read_latents([tmp_path / "a.npy", tmp_path / "other.npy"])
    with pytest.raises(InputError, match="not found"):
        read_latents_file(tmp_path / "missing.npy")


def test_labels_binary_scores_index_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "v.npy", rng.normal(size=(6, N_LATENT, 512)).astype(np.float32))
    lat = read_latents([tmp_path / "v.npy"])
    p = tmp_path / "l.csv"
    p.write_text("file,smile,age\nv:0,1,20\nv:1,0,35\nv:2,-1,50\nv:3,true,61\nv:4,,70\nnope:9,1,1\n")
    rows, y = read_labels(p, "smile", lat)
    assert rows.tolist() == [0, 1, 2, 3] and y.tolist() == [1, -1, -1, 1]
    rows, y = read_labels(p, "age", lat, ratio=0.4)
    assert sorted(rows[y > 0].tolist()) == [3, 4] and sorted(rows[y < 0].tolist()) == [0, 1]
    p.write_text("index,glasses\n5,1\n0,0\n")
    rows, y = read_labels(p, "glasses", lat)
    assert rows.tolist() == [5, 0] and y.tolist() == [1, -1]
    with pytest.raises(InputError, match="no column 'hat'"):
        read_labels(p, "hat", lat)
    p.write_text("index,glasses\n6,1\n")
    with pytest.raises(InputError, match="outside"):
        read_labels(p, "glasses", lat)
    p.write_text("file,glasses\nx:0,1\n")
    with pytest.raises(InputError, match="no key"):
        read_labels(p, "glasses", lat)
    p.write_text("file,glasses\nv:0,maybe\n")
    with pytest.raises(InputError, match="neither a label nor a score"):
        read_labels(p, "glasses", lat)


# ------------------------------------------------------------------------------------------------
# CLI fit: a direction usable by name in `fsvideo edit`


def test_cli_fit_saves_a_released_format_direction_found_by_name(tmp_path):
    d = _unit()
    codes, y = _codes(40, d, sep=20.0)
    np.savez(tmp_path / "clip.npz", w=codes)
    lines = ["key,smile"] + [f"clip:{i},{int(v > 0)}" for i, v in enumerate(y)]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    args = ["directions", "fit", "--latents", str(tmp_path / "clip.npz"), "--labels", str(tmp_path / "labels.csv"),
            "--attr", "smile", "--name", "smile_mine"]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    target = user_direction_path("smile_mine")
    assert target.is_file() and "held-out accuracy" in res.output
    arr = np.load(target)
    assert arr.shape == (1, N_LATENT * 512) and arr.dtype == np.float32
    assert abs(float(np.linalg.norm(arr)) - 1.0) < 1e-5 and float(arr[0] @ d) > 0.6
    loaded = load_direction(target, N_LATENT, 512)           # what `fsvideo edit --attr smile_mine` uses
    np.testing.assert_allclose(loaded.numpy().reshape(1, -1), arr, atol=1e-7)
    from fsvideo.edits.requests import _user_direction
    torch.testing.assert_close(_user_direction("smile_mine", N_LATENT, 512), loaded)
    res = CliRunner().invoke(cli, args)                       # exists: refuses without --overwrite
    assert res.exit_code != 0 and "already exists" in str(res.exception)
    res = CliRunner().invoke(cli, args + ["--overwrite", "-o", str(tmp_path / "x.npy")], catch_exceptions=False)
    assert res.exit_code == 0 and (tmp_path / "x.npy").is_file()
    res = CliRunner().invoke(cli, ["directions", "list"], catch_exceptions=False)
    assert "smile_mine" in res.output
    with pytest.raises(InputError, match="invalid direction name"):
        user_direction_path("../evil")


# ------------------------------------------------------------------------------------------------
# SeFa


@pytest.fixture(scope="module")
def gen():
    return random_model(64).generator


def test_sefa_directions_are_the_top_eigenvectors(gen):
    vals, vecs, rows = sefa_factorize(gen)
    assert rows == list(range(gen.n_latent)) and bool((vals[:-1] >= vals[1:] - 1e-5).all())
    # independent check: right singular vectors of the row-normalised stacked affines (numpy SVD)
    aff = style_affines(gen)
    A = np.concatenate([a.numpy() for r in rows for a in aff[r]]).astype(np.float64)
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    _, s, vt = np.linalg.svd(A, full_matrices=False)
    np.testing.assert_allclose(vals[:5].numpy(), s[:5] ** 2, rtol=1e-4)
    for i in range(3):
        assert abs(float(np.dot(vt[i], vecs[i].numpy()))) > 0.999
    d = sefa_directions(gen, k=4)
    assert d.shape == (4, gen.n_latent, gen.style_dim)
    torch.testing.assert_close(d.flatten(1).norm(dim=1), torch.ones(4))
    gram = d.flatten(1) @ d.flatten(1).T
    torch.testing.assert_close(gram, torch.eye(4), atol=1e-5, rtol=0)     # orthonormal
    # the top direction changes the styles more than random unit directions do
    An = torch.from_numpy(A).float()
    top = float((An @ vecs[0]).norm())
    rand = torch.nn.functional.normalize(torch.randn(100, gen.style_dim), dim=1)
    assert top >= float((An @ rand.T).norm(dim=0).max())


def test_sefa_layer_subset_is_zero_elsewhere(gen):
    d = sefa_directions(gen, layers=[0, 1, 2], k=2)
    assert float(d[:, 3:].abs().max()) == 0 and float(d[:, :3].abs().max()) > 0
    with pytest.raises(ValueError, match="W\\+ rows"):
        sefa_directions(gen, layers=[gen.n_latent])


def test_cli_sefa_exports_released_format(gen, tmp_path):
    model = random_model(64)
    _, gpath = save_official_checkpoints(model, tmp_path / "w")
    out = tmp_path / "sefa"
    res = CliRunner().invoke(cli, ["directions", "sefa", "--generator", str(gpath), "-k", "3", "--out", str(out)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    files = sorted(out.glob("sefa_*.npy"))
    assert [f.name for f in files] == ["sefa_00.npy", "sefa_01.npy", "sefa_02.npy"]
    want = sefa_directions(model.generator, k=3)
    for i, f in enumerate(files):
        a = np.load(f)
        assert a.shape == (1, model.generator.n_latent * model.generator.style_dim) and a.dtype == np.float32
        np.testing.assert_allclose(a, want[i].reshape(1, -1).numpy(), atol=1e-6)
    meta = json.loads((out / "sefa.json").read_text())
    assert meta["k"] == 3 and len(meta["eigenvalues"]) == 3
    res = CliRunner().invoke(cli, ["directions", "sefa", "--generator", str(gpath), "-k", "3", "--out", str(out)])
    assert res.exit_code != 0 and "already exists" in str(res.exception)
    res = CliRunner().invoke(cli, ["directions", "sefa", "--generator", str(gpath), "--layers", "0-2", "-k", "1",
                                   "--out", str(tmp_path / "s2")], catch_exceptions=False)
    a = np.load(tmp_path / "s2" / "sefa_00.npy").reshape(model.generator.n_latent, -1)
    assert float(np.abs(a[3:]).max()) == 0


def test_cli_fit_refuses_a_missing_output_folder_as_edit_does(tmp_path):
    """`directions fit -o a/b/c.npy` created the missing folders a/b where `fsvideo edit -o` refuses a
    missing folder ("output folder ... does not exist"); now both check -o the same way, before the fit."""
    from fsvideo.errors import OutputError
    from fsvideo.utils import check_output_path
    codes, y = _codes(12, _unit(), sep=20.0)
    np.savez(tmp_path / "clip.npz", w=codes)
    (tmp_path / "labels.csv").write_text("key,smile\n" + "".join(f"clip:{i},{int(v > 0)}\n" for i, v in enumerate(y)))
    base = ["directions", "fit", "--latents", str(tmp_path / "clip.npz"), "--labels", str(tmp_path / "labels.csv"),
            "--attr", "smile"]
    out = tmp_path / "a" / "b" / "c.npy"
    res = CliRunner().invoke(cli, base + ["-o", str(out)])
    with pytest.raises(OutputError) as edit_says:                # what `fsvideo edit -o` says (pipeline.jobs.check_output)
        check_output_path(out)
    assert res.exit_code != 0 and str(res.exception) == str(edit_says.value), (res.output, res.exception)
    assert f"output folder {out.parent} does not exist" in str(res.exception)
    assert not (tmp_path / "a").exists()
    res = CliRunner().invoke(cli, base + ["-o", str(tmp_path / "clip.npz"), "--overwrite"])
    assert res.exit_code != 0 and "is the input file" in str(res.exception)
    (tmp_path / "a" / "b").mkdir(parents=True)
    res = CliRunner().invoke(cli, base + ["-o", str(out)], catch_exceptions=False)
    assert res.exit_code == 0 and out.is_file(), res.output


def test_cli_fit_takes_the_code_width_from_the_latents(tmp_path):
    """`directions fit` read every file as 512-wide codes: the latents of a generator with another style
    width (the tiny test generators: 64) were refused as 'expected [T, n_latent, 512]'.  The width is now
    the codes' own, and files of different widths are a one-line error naming both."""
    from fsvideo.latents import FrameLatents, LatentsWriter
    G = random_model(256, seed=0).generator
    n_latent, width = G.n_latent, G.style_dim
    assert width != 512
    rng = np.random.default_rng(0)
    d = rng.normal(size=n_latent * width)
    d /= np.linalg.norm(d)
    y = np.where(np.arange(40) % 2 == 0, 1.0, -1.0)
    x = (rng.normal(size=(40, n_latent * width)) + 10.0 * y[:, None] * d[None]).astype(np.float32)
    codes = x.reshape(40, n_latent, width)
    writer = LatentsWriter(tmp_path / "talk.latents", meta={"source": "talk.mp4"}, chunk_frames=8)
    for i in range(20):                                   # what `fsvideo invert` writes with this generator
        writer.add(FrameLatents(i, np.array([0]), codes[i:i + 1], np.zeros((1, 8, 16, 16), np.float32),
                                np.eye(3)[None], np.zeros((1, 68, 2), np.float32)))
    writer.close()
    np.save(tmp_path / "flat.npy", x[20:])                # [T, n_latent * width]: read at the others' width
    (tmp_path / "labels.csv").write_text("index,smile\n" + "".join(f"{i},{int(v > 0)}\n" for i, v in enumerate(y)))
    out = tmp_path / "smile.npy"
    res = CliRunner().invoke(cli, ["directions", "fit", str(tmp_path / "talk.latents"), str(tmp_path / "flat.npy"),
                                   "--labels", str(tmp_path / "labels.csv"), "--attr", "smile", "-o", str(out)])
    assert res.exit_code == 0, (res.output, res.exception)
    arr = np.load(out)
    assert arr.shape == (1, n_latent * width) and _cos(arr, d) > 0.6
    assert load_direction(out, n_latent, width).shape[-1] == width    # what `fsvideo edit` with G loads

    np.save(tmp_path / "wide.npy", rng.normal(size=(3, n_latent, 512)).astype(np.float32))
    with pytest.raises(InputError) as err:
        read_latents([tmp_path / "talk.latents", tmp_path / "wide.npy"])
    msg = str(err.value)
    assert f"wide.npy: codes are 512 wide, but talk.latents's are {width} wide" in msg and "\n" not in msg, msg
    assert read_latents([tmp_path / "wide.npy"]).codes.shape == (3, n_latent, 512)
