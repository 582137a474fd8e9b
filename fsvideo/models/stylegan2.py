"""StyleGAN2 generator with Feature-Style feature injection.

Module and parameter names follow rosinality's ``stylegan2-pytorch`` (the layout of pSp's
``psp_ffhq_encode.pt`` decoder and of ``stylegan2-ffhq-config-f.pt``'s ``g_ema``), so released
checkpoints load strictly.  Written from the published architecture; pure PyTorch.

Layer bookkeeping (``n_latent = 2 * log2(size) - 2`` rows of W+; ``num_layers`` noise inputs)::

    outs[0]  constant input (4x4)
    outs[1]  conv1 (4x4)                  style row 0, to_rgb1 uses row 1, noise[0]
    outs[2j+2] convs[2j]   (upsampling)   style row 2j+1,               noise[2j+1]
    outs[2j+3] convs[2j+1]                style row 2j+2, to_rgbs[j] row 2j+3, noise[2j+2]

The Feature-Style encoder's ``F`` replaces ``outs[K]`` (K = 5: ``convs[3]``, 16x16; any K in
:attr:`Generator.feature_indices`, shaped :meth:`Generator.feature_shape`) as the input
of the next convolution, blended as ``(1 - s) * x + s * F``.  The ToRGB skip at that resolution
has already consumed the generator's own activation, and ``outs[K]`` keeps the un-replaced
value, so ``G^K(w)`` can be read from the same call.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsvideo.models.ops import fused_leaky_relu, make_kernel, no_graph, upfirdn2d

# rosinality's channel table; the multiplier scales 64 px and above.
_BASE_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}


def generator_channels(size: int, channel_multiplier: int = 2, channel_max: int = 512) -> dict[int, int]:
    """Channels per resolution for a generator of output ``size``.

    ``channel_max`` < 512 caps every entry: tiny models for tests keep the layout and key names.
    """
    ch = {}
    for r in (2 ** i for i in range(2, int(math.log2(size)) + 1)):
        base = _BASE_CHANNELS.get(r, max(16 * 1024 // r, 1))
        c = base * (channel_multiplier if r >= 64 else 1)
        ch[r] = max(1, min(c, channel_max))
    return ch


class PixelNorm(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: ``weight * (lr_mul / sqrt(in))``, ``bias * lr_mul``."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class Blur(nn.Module):
    def __init__(self, kernel: Sequence[int], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_kernel(kernel) * upsample_factor ** 2)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    def __init__(self, kernel: Sequence[int], factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor ** 2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution (StyleGAN2), optionally with 2x upsampling.

    Each sample gets its own weight ``w * s`` (demodulated), and the batch runs as one grouped
    convolution: on CPU and GPU this costs the same per image as a plain convolution and saves
    two full-size multiplications per layer over modulating the activations.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False, blur_kernel: Sequence[int] = (1, 3, 3, 1)):
        super().__init__()
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, kernel_size
        self.upsample, self.demodulate = upsample, demodulate
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        n, _, h, w = x.shape
        k = self.kernel_size
        s = self.modulation(style)                                           # [N, in]
        acc = torch.promote_types(s.dtype, torch.float32)                    # fp16/bf16 -> fp32, fp64 stays
        weight = self.scale * self.weight.to(acc) * s.to(acc)[:, None, :, None, None]   # [N, out, in, k, k]
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum((2, 3, 4)) + 1e-8)[:, :, None, None, None]
        weight = weight.to(x.dtype)
        x = x.reshape(1, n * self.in_ch, h, w)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(n * self.in_ch, self.out_ch, k, k)
            x = F.conv_transpose2d(x, weight, stride=2, groups=n)
        else:
            x = F.conv2d(x, weight.reshape(n * self.out_ch, self.in_ch, k, k), padding=self.padding, groups=n)
        x = x.reshape(n, self.out_ch, *x.shape[2:])
        return self.blur(x) if self.upsample else x


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor | None = None, inplace: bool = False) -> Tensor:
        """``x + weight * noise``; ``inplace`` adds into ``x`` (a temporary the caller owns, no graph)."""
        if noise is None:
            n, _, h, w = x.shape
            noise = x.new_empty(n, 1, h, w).normal_()
        if inplace:
            return x.add_(self.weight.to(x.dtype) * noise.to(x.dtype))
        return x + self.weight.to(x.dtype) * noise.to(x.dtype)


class ConstantInput(nn.Module):
    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> Tensor:
        return self.input.repeat(batch, 1, 1, 1)


class FusedLeakyReLU(nn.Module):
    def __init__(self, channel: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel))

    def forward(self, x: Tensor, inplace: bool = False) -> Tensor:
        return fused_leaky_relu(x, self.bias, inplace=inplace)


class StyledConv(nn.Module):
    """Modulated conv -> ``+ noise.weight * noise`` -> ``leaky_relu(+ bias) * sqrt(2)``.

    Without an autograd graph (:func:`~fsvideo.models.ops.no_graph`) the noise and activation steps
    overwrite the convolution's output in place: the same values, without three full-size temporaries
    (at 1024 px each is 128 MiB per face).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int, upsample: bool = False,
                 blur_kernel: Sequence[int] = (1, 3, 3, 1)):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, kernel_size, style_dim, upsample=upsample,
                                    blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch)

    def forward(self, x: Tensor, style: Tensor, noise: Tensor | None = None) -> Tensor:
        out = self.conv(x, style)                  # a fresh tensor: only this call holds it
        inplace = no_graph(out, self.noise.weight, self.activate.bias) and (noise is None or no_graph(noise))
        return self.activate(self.noise(out, noise, inplace=inplace), inplace=inplace)


class ToRGB(nn.Module):
    def __init__(self, in_ch: int, style_dim: int, upsample: bool = True, blur_kernel: Sequence[int] = (1, 3, 3, 1)):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, style)
        inplace = no_graph(out, self.bias) and (skip is None or no_graph(skip))
        bias = self.bias.to(x.dtype)
        out = out.add_(bias) if inplace else out + bias
        if skip is not None:
            up = self.upsample(skip)
            out = out.add_(up) if inplace else out + up
        return out


class Generator(nn.Module):
    """StyleGAN2 generator (config-f layout) with Feature-Style injection.

    Args:
        size: output resolution (a power of two, at least 32 so that layer K = 5 exists).
        style_dim: width of z, w and of each W+ row (512 for released models).
        n_mlp: layers of the mapping network (8).
        channel_multiplier: rosinality's multiplier for 64 px and above (2 for FFHQ config-f).
        channel_max: cap on channels (512 for released models; small values make tiny test models).
        blur_kernel: the FIR kernel of up-sampling ([1, 3, 3, 1]).
        lr_mlp: learning-rate multiplier of the mapping network (0.01).
        channels: explicit {resolution: channels} table (overrides the two arguments above; the
            checkpoint loader reads it off a state dict).

    Example::

        G = Generator(1024).eval()
        noise = G.make_noise(seed=0)
        img = G(w, noise=noise)                       # w: [N, 18, 512] -> [N, 3, 1024, 1024]
        img = G(w, noise=noise, features_in=F)        # F: [N, 512, 16, 16] replaces G^5(w)
        gk = G.features(w, noise=noise)               # G^5(w), runs only up to 16 px
    """

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 channel_max: int = 512, blur_kernel: Sequence[int] = (1, 3, 3, 1), lr_mlp: float = 0.01,
                 channels: dict[int, int] | None = None):
        super().__init__()
        log_size = int(math.log2(size))
        if 2 ** log_size != size or size < 32:
            raise ValueError(f"size must be a power of two >= 32, got {size}")
        self.size, self.style_dim, self.log_size = size, style_dim, log_size
        self.channels = {int(r): int(c) for r, c in channels.items()} if channels else \
            generator_channels(size, channel_multiplier, channel_max)
        self.config = dict(size=size, style_dim=style_dim, n_mlp=n_mlp, blur_kernel=list(blur_kernel), lr_mlp=lr_mlp,
                           channels=dict(self.channels))
        self.style = nn.Sequential(PixelNorm(), *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True)
                                                  for _ in range(n_mlp)])
        ch = self.channels
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(ch[4], style_dim, upsample=False)
        self.num_layers = (log_size - 2) * 2 + 1
        self.n_latent = log_size * 2 - 2
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        self.noises = nn.Module()                              # filled below, once the sizes are known
        # (C, H, W) of outs[i], written down as the layers are built: const and conv1 at 4 px, then
        # an (upsampling conv, conv) pair per resolution.  feature_shape and the noise maps read it.
        self._out_shapes: list[tuple[int, int, int]] = [(ch[4], 4, 4), (ch[4], 4, 4)]
        in_ch = ch[4]
        for i in range(3, log_size + 1):
            out_ch = ch[2 ** i]
            self.convs.append(StyledConv(in_ch, out_ch, 3, style_dim, upsample=True, blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_ch, out_ch, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_ch, style_dim))
            self._out_shapes += [(out_ch, 2 ** i, 2 ** i)] * 2
            in_ch = out_ch
        assert len(self._out_shapes) == self.num_layers + 1
        for i in range(self.num_layers):                       # noise[i] enters the conv that makes outs[i + 1]
            r = self._out_shapes[i + 1][1]
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r))

    # ----------------------------------------------------------------------------------------
    @property
    def feature_indices(self) -> range:
        """The layers K where a feature code can replace the activation: ``1 .. num_layers - 1``.

        ``outs[0]`` is the learned constant, and the last layer's activation feeds only the final
        ToRGB, which reads it before any replacement, so a code there would change nothing.
        """
        return range(1, self.num_layers)

    def feature_shape(self, k: int = 5) -> tuple[int, int, int]:
        """(C, H, W) of ``outs[k]`` = ``G^K(w)``, the shape ``F`` must have for K = ``k``.

        Read off the layers as built (a conv pair per resolution after two 4 px layers), so
        (512, 16, 16) for K = 4 and 5, (512, 32, 32) for K = 6 and 7 in a released model.
        """
        if k not in self.feature_indices:
            raise ValueError(f"feature index K must be in {self.feature_indices.start}.."
                             f"{self.feature_indices.stop - 1} for a {self.size} px generator, got {k}")
        return self._out_shapes[k]

    def noise_shapes(self) -> list[tuple[int, int, int, int]]:
        return [tuple(getattr(self.noises, f"noise_{i}").shape) for i in range(self.num_layers)]

    def make_noise(self, seed: int = 0, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> list[Tensor]:
        """A fixed noise list (one map per layer, shape [1, 1, r, r]) drawn from ``seed`` on the CPU.

        The same seed gives the same noise on every device, so a video edited twice, or on another
        machine, gets the same frames.  Pass the list to every generator call of a video.
        """
        g = torch.Generator().manual_seed(int(seed))
        return [torch.randn(s, generator=g).to(device=device, dtype=dtype) for s in self.noise_shapes()]

    def mapping(self, z: Tensor) -> Tensor:
        """z [N, style_dim] -> w [N, style_dim]."""
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, seed: int = 0) -> Tensor:
        """Average w of ``n`` seeded z (a (style_dim,) tensor): the truncation centre."""
        p = next(self.parameters())
        z = torch.randn(n, self.style_dim, generator=torch.Generator().manual_seed(seed)).to(p)
        return self.mapping(z).mean(0)

    def truncate(self, w: Tensor, w_avg: Tensor, psi: float) -> Tensor:
        """``w_avg + psi * (w - w_avg)``."""
        return w_avg + psi * (w - w_avg)

    def _check_w(self, w: Tensor) -> Tensor:
        if w.ndim == 2 and w.shape[1] == self.style_dim:       # one W per sample -> W+
            w = w[:, None].expand(-1, self.n_latent, -1)
        if w.ndim != 3 or w.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(f"w must be [N, {self.n_latent}, {self.style_dim}] (W+) or [N, {self.style_dim}], "
                             f"got {list(w.shape)}")
        return w

    def forward(self, w: Tensor, noise: Sequence[Tensor | None] | None = None, features_in: Tensor | None = None,
                feature_scale: float = 1.0, k: int = 5, return_features: bool = False, stop_at: int | None = None):
        """Synthesise images from W+ codes.

        Args:
            w: [N, n_latent, style_dim] W+ codes (or [N, style_dim], broadcast to every layer).
            noise: ``num_layers`` tensors broadcastable to [N, 1, r, r] (see :meth:`make_noise`);
                ``None`` draws fresh random noise (non-deterministic, as the official inference).
            features_in: optional feature code ``F`` [N, C, H, W] = :meth:`feature_shape`\\(k) that replaces
                ``outs[k]`` as the input of the next convolution: ``(1 - s) * x + s * F``.
            feature_scale: the blend ``s`` (1: full replacement; the official trainer ramps it).
            k: feature index K (5 for released models).
            return_features: also return ``outs`` (the un-replaced activation of every layer).
            stop_at: return ``outs[stop_at]`` as soon as it is computed (only the layers up to it run).

        Returns:
            image [N, 3, size, size] in the generator's raw range (about [-1, 1]); ``(image, outs)``
            with ``return_features``; ``outs[stop_at]`` with ``stop_at``.
        """
        w = self._check_w(w)
        n = w.shape[0]
        if noise is None:
            noise = [None] * self.num_layers
        if len(noise) != self.num_layers:
            raise ValueError(f"noise must have {self.num_layers} entries, got {len(noise)}")
        if features_in is not None:
            want = (n, *self.feature_shape(k))
            if tuple(features_in.shape) != want:
                raise ValueError(f"features_in must be {list(want)}, got {list(features_in.shape)}")
        # Activations are kept only for ``return_features``: holding every layer's would keep about
        # 500 MiB per face alive at 1024 px until the last layer is done.
        outs: list[Tensor] = []
        n_out = 0

        def record(x: Tensor) -> Tensor | None:
            nonlocal n_out
            if return_features:
                outs.append(x)
            n_out += 1
            return x if stop_at is not None and n_out - 1 == stop_at else None

        def inject(x: Tensor, idx: int) -> Tensor:
            if features_in is not None and idx == k:
                if feature_scale == 1.0:
                    return features_in.to(x.dtype)
                return (1 - feature_scale) * x + feature_scale * features_in.to(x.dtype)
            return x

        x = self.input(n).to(w.dtype)
        if (r := record(x)) is not None:
            return r
        x = self.conv1(x, w[:, 0], noise=noise[0])
        if (r := record(x)) is not None:
            return r
        skip = self.to_rgb1(x, w[:, 1])
        x = inject(x, 1)
        i = 1
        for j, to_rgb in enumerate(self.to_rgbs):
            x = self.convs[2 * j](x, w[:, i], noise=noise[2 * j + 1])
            if (r := record(x)) is not None:
                return r
            x = inject(x, 2 * j + 2)
            x = self.convs[2 * j + 1](x, w[:, i + 1], noise=noise[2 * j + 2])
            if (r := record(x)) is not None:
                return r
            skip = to_rgb(x, w[:, i + 2], skip)
            x = inject(x, 2 * j + 3)
            i += 2
        if stop_at is not None:
            raise ValueError(f"stop_at must be in 0..{n_out - 1}, got {stop_at}")
        return (skip, outs) if return_features else skip

    def features(self, w: Tensor, noise: Sequence[Tensor | None] | None = None, k: int = 5) -> Tensor:
        """G^K(w) [N, *feature_shape(k)]: the activation ``outs[k]``, computing only the layers up to it
        (16 px for K = 5)."""
        return self.forward(w, noise=noise, stop_at=k)
