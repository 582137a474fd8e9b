"""The composition of the training loss (Eqs. 2-8), checked against values computed by hand.

The per-term functions are tested in ``test_train.py``; here the loss networks are replaced by
simple recording stand-ins, and the reconstructions are made again with the generator, outside the
trainer, so that which image gets which term, with which noise, and the weighted sum are checked.
"""
from __future__ import annotations

import pytest
import torch
from train_helpers import nets_for, tiny_config

from fsvideo.train.data import make_batch
from fsvideo.train.trainer import Trainer

PAPER_WEIGHTS = {"mse": 1.0, "lpips": 0.2, "feature": 0.01, "identity": 0.1, "parsing": 0.1}   # Eqs. 5 and 8


class Recorder(torch.nn.Module):
    """A stand-in loss network: ``scale * mean(|x_hat - x| ** power)`` per sample; records ``x_hat``."""

    def __init__(self, power: float, scale: float):
        super().__init__()
        self.power, self.scale, self.seen = power, scale, []

    def forward(self, x_hat, x):
        self.seen.append(x_hat.detach().clone())
        return self.scale * (x_hat - x).abs().pow(self.power).flatten(1).mean(1)


def _trainer(tmp_path, scheme: str, ramp: int = 0) -> Trainer:
    cfg = tiny_config(None, loss={"scheme": scheme, "feature_scale_ramp": ramp},
                      data={"real_per_gpu": 0, "synthetic_per_gpu": 2})
    t = Trainer(cfg, tmp_path / scheme, nets=nets_for(cfg))
    t.mlpips, t.identity, t.parsing = Recorder(1, 1.0), Recorder(2, 3.0), Recorder(3, 5.0)
    t.E.eval()                      # batch statistics aside, so that the encoder can be run again by hand
    return t


def _batch(t: Trainer):
    g = torch.Generator().manual_seed(7)
    real = torch.rand(1, 3, t.G.size, t.G.size, generator=g) * 2 - 1           # one "real" row after 2 synthetic
    return make_batch(t.G, real, 2, seed=0, rank=0, step=3)


def _rows(noise, sl):
    return [n[sl] for n in noise]


def _by_hand(stand_in: Recorder, recs, x):
    return sum(float((stand_in.scale * (r - x).abs().pow(stand_in.power).flatten(1).mean(1)).mean()) for r in recs)


def test_config_weights_are_the_papers(tmp_path):
    lc = tiny_config(None).loss
    assert {k: getattr(lc, k) for k in PAPER_WEIGHTS} == PAPER_WEIGHTS


@torch.no_grad()
def test_paper_scheme_composition_by_hand(tmp_path):
    t = _trainer(tmp_path, "paper")
    b = _batch(t)
    terms = t.compute_losses(b, step=0)
    x, G, k = b.x, t.G, t.k
    w, f = t._encode(x)
    # synthetic rows carry their ground-truth noise, the real row random noise (section 4.1)
    regen = G(b.w_syn, noise=_rows(b.noise, slice(0, 2))).clamp(-1, 1)
    torch.testing.assert_close(regen, x[:2])
    # x~1 = G(w), x~2 = G(w, F), both with that noise; F replaces G^K(w) fully without a ramp
    x1 = G(w, noise=b.noise)
    x2 = G(w, noise=b.noise, features_in=f, k=k)
    # Eq. 2: MSE of G(w) on the synthetic rows only, computed without the real row in the batch
    x1_syn = G(w[:2], noise=_rows(b.noise, slice(0, 2)))
    mse = float(torch.nn.functional.mse_loss(x1_syn, x[:2]))
    # Eq. 4: F against G^K(w) with the same noise
    gk = G.features(w, noise=b.noise, k=k)
    feature = float(torch.nn.functional.mse_loss(f, gk))
    want = {"mse": mse, "lpips": _by_hand(t.mlpips, [x1, x2], x), "feature": feature,
            "identity": _by_hand(t.identity, [x1, x2], x), "parsing": _by_hand(t.parsing, [x1, x2], x)}
    for name, v in want.items():
        assert float(terms[name]) == pytest.approx(v, rel=1e-5, abs=1e-7), name
    total = sum(PAPER_WEIGHTS[n] * want[n] for n in want)                      # Eq. 8 (= Eq. 5 + face terms)
    assert float(terms["total"]) == pytest.approx(total, rel=1e-5)
    # each perceptual / face term saw exactly the two reconstructions, G(w) first
    for stand_in in (t.mlpips, t.identity, t.parsing):
        assert len(stand_in.seen) == 2
        torch.testing.assert_close(stand_in.seen[0], x1, atol=1e-6, rtol=0)
        torch.testing.assert_close(stand_in.seen[1], x2, atol=1e-6, rtol=0)
    assert float((x1 - x2).abs().max()) > 1e-3                                 # the two are different images


@torch.no_grad()
def test_official_scheme_composition_by_hand(tmp_path):
    # official trainer.py: both reconstructions are G(w, F) blended by the ramp, the first with fresh
    # random noise (which also gives G^K(w) and the L2 on the synthetic rows), the second with the
    # dataset noise
    t = _trainer(tmp_path, "official", ramp=8)
    b = _batch(t)
    terms = t.compute_losses(b, step=2)                                         # blend s = 2 / 8
    x, G, k, s = b.x, t.G, t.k, 0.25
    w, f = t._encode(x)
    gk_rand = G.features(w, noise=b.rand_noise, k=k)
    gk_data = G.features(w, noise=b.noise, k=k)
    # the blend (1 - s) G^K(w) + s F, injected fully, by hand
    x1 = G(w, noise=b.rand_noise, features_in=(1 - s) * gk_rand + s * f, k=k)
    x2 = G(w, noise=b.noise, features_in=(1 - s) * gk_data + s * f, k=k)
    want = {"mse": float(torch.nn.functional.mse_loss(x1[:2], x[:2])),
            "lpips": _by_hand(t.mlpips, [x1, x2], x),
            "feature": float(torch.nn.functional.mse_loss(f, gk_rand)),
            "identity": _by_hand(t.identity, [x1, x2], x), "parsing": _by_hand(t.parsing, [x1, x2], x)}
    for name, v in want.items():
        assert float(terms[name]) == pytest.approx(v, rel=1e-4, abs=1e-6), name
    assert float(terms["total"]) == pytest.approx(sum(PAPER_WEIGHTS[n] * want[n] for n in want), rel=1e-4)


@torch.no_grad()
def test_real_only_batch_has_no_mse(tmp_path):
    t = _trainer(tmp_path, "paper")
    b = _batch(t)
    real_only = type(b)(b.x[2:], _rows(b.noise, slice(2, 3)), _rows(b.rand_noise, slice(2, 3)), 0)
    terms = t.compute_losses(real_only, step=0)
    assert "mse" not in terms and "lpips" in terms
    want = sum(PAPER_WEIGHTS[n] * float(terms[n]) for n in ("lpips", "feature", "identity", "parsing"))
    assert float(terms["total"]) == pytest.approx(want, rel=1e-6)
