"""What every rewrite shares: the variant that names it, and the rank-4 primitives (time-shifted 2-D convs,
fp16-safe norms, depth-to-space) the component rewrites are built from."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ltx_ane.errors import LtxAneError

CONV_MODES = ("stacked", "split", "conv3d")
D2S_MODES = ("pixel_shuffle", "reshape")
NORM_MODES = ("prescaled", "plain")


@dataclass(frozen=True)
class Variant:
    """Which rewrite: conv form, depth-to-space form, norm form. ``conv3d`` ignores the other two."""

    conv: str = "stacked"
    d2s: str = "pixel_shuffle"
    norm: str = "prescaled"

    def __post_init__(self):
        for value, allowed, what in ((self.conv, CONV_MODES, "conv"), (self.d2s, D2S_MODES, "d2s"), (self.norm, NORM_MODES, "norm")):
            if value not in allowed:
                raise LtxAneError(f"unknown {what} rewrite {value!r} (choose from {', '.join(allowed)})")

    @property
    def name(self) -> str:
        if self.conv == "conv3d":
            return "conv=conv3d"
        return f"conv={self.conv},d2s={self.d2s},norm={self.norm}"

    @classmethod
    def parse(cls, text: str) -> "Variant":
        """The inverse of ``name``: 'conv=split,d2s=reshape,norm=prescaled' (missing keys take the defaults)."""
        fields = {}
        for part in filter(None, text.split(",")):
            key, _, value = part.partition("=")
            if key not in ("conv", "d2s", "norm"):
                raise LtxAneError(f"bad rewrite variant {text!r}: unknown key {key!r}")
            fields[key] = value
        return cls(**fields)


def frozen(t: torch.Tensor) -> nn.Parameter:
    """A float32 copy held as a parameter that is never trained (so it is saved and moved with the module)."""
    return nn.Parameter(t.detach().clone().float(), requires_grad=False)


# ----------------------------------------------------------------------------------------------- primitives


class TimeConv(nn.Module):
    """A kt x kh x kw conv (stride 1) on (T, C, H, W): 2-D convs over time-shifted frames.

    ``time_pad``: 'causal' (kt-1 copies of the first frame in front, ltx-core's CausalConv3d causal=True),
    'symmetric' (copies of the first and last frame, causal=False) or 'zeros' (nn.Conv3d padding).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, time_pad: str, spatial_pad: str, mode: str):
        super().__init__()
        out_c, in_c, kt, kh, kw = weight.shape
        if kt % 2 == 0 or kh % 2 == 0 or kw % 2 == 0:
            raise LtxAneError(f"ANE rewrite: even conv kernel {tuple(weight.shape[2:])} is not supported")
        if spatial_pad not in ("zeros", "reflect"):
            raise LtxAneError(f"ANE rewrite: spatial padding {spatial_pad!r} is not supported")
        self.kt, self.pad_hw, self.time_pad, self.spatial_pad, self.mode = kt, (kh // 2, kw // 2), time_pad, spatial_pad, mode
        self.bias = frozen(bias) if bias is not None else None
        if mode == "stacked":
            # Tap k's input channels come k-th in the stack: weight[o, k*I + i] = w3d[o, i, k].
            self.weight = frozen(weight.permute(0, 2, 1, 3, 4).reshape(out_c, kt * in_c, kh, kw))
        elif mode == "split":
            self.weights = nn.ParameterList([frozen(weight[:, :, k]) for k in range(kt)])
        else:
            raise LtxAneError(f"ANE rewrite: unknown conv mode {mode!r}")

    def _pad_time(self, x: torch.Tensor) -> torch.Tensor:
        if self.kt == 1:
            return x
        if self.time_pad == "causal":
            return torch.cat([x[:1]] * (self.kt - 1) + [x], dim=0)
        half = (self.kt - 1) // 2
        if self.time_pad == "symmetric":
            return torch.cat([x[:1]] * half + [x] + [x[-1:]] * half, dim=0)
        zero = torch.zeros_like(x[:1])
        return torch.cat([zero] * half + [x] + [zero] * half, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[0]
        x = self._pad_time(x)
        padding = self.pad_hw
        if self.spatial_pad == "reflect":
            ph, pw = self.pad_hw
            x = F.pad(x, (pw, pw, ph, ph), mode="reflect")
            padding = (0, 0)
        if self.mode == "stacked":
            taps = torch.cat([x[k : k + t] for k in range(self.kt)], dim=1) if self.kt > 1 else x
            return F.conv2d(taps, self.weight, self.bias, padding=padding)
        y = F.conv2d(x[0:t], self.weights[0], self.bias, padding=padding)
        for k in range(1, self.kt):
            y = y + F.conv2d(x[k : k + t], self.weights[k], None, padding=padding)
        return y


def _eps_root(eps: float) -> float:
    return math.sqrt(eps)


def _floor(x: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    # torch.clamp(min=) becomes clip(beta=float32 max), which overflows when cast to fp16; maximum has no upper bound.
    return torch.maximum(x, floor)


class PixelNorm4d(nn.Module):
    """x / sqrt(mean_c(x^2) + eps) over channels of (T, C, H, W).

    ``prescaled`` divides by s = max_c |x| first: y = (x/s) * rsqrt(mean_c((x/s)^2) + (sqrt(eps)/s)^2). This is
    exact in real arithmetic, and in fp16 nothing overflows ((x/s)^2 <= 1, where x^2 overflows once |x| > 256)
    and the sum cannot vanish (its largest term is 1). eps = 1e-8 is below fp16's smallest subnormal, so it is
    carried as sqrt(eps)/s, which underflows only when s is large, where eps never mattered. s is floored so an
    all-zero pixel still gives 0, not 0/0.
    """

    FLOOR = 1e-3

    def __init__(self, eps: float = 1e-8, prescaled: bool = True):
        super().__init__()
        self.eps, self.prescaled = eps, prescaled
        self.register_buffer("floor", torch.tensor(self.FLOOR), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.prescaled:
            return x / torch.sqrt(torch.mean(x * x, dim=1, keepdim=True) + self.eps)  # x*x, not x**2: no pow op
        s = _floor(x.abs().amax(dim=1, keepdim=True), self.floor)
        z = x / s
        e = _eps_root(self.eps) / s
        return z * torch.rsqrt(torch.mean(z * z, dim=1, keepdim=True) + e * e)


class ClipGroupNorm(nn.Module):
    """nn.GroupNorm of a (1, C, T, H, W) tensor, computed on (T, C, H, W): statistics span all frames.

    Means are two-stage (per frame, then over frames), exact because every frame has the same count, and every
    intermediate stays rank 4. ``prescaled`` works as in PixelNorm4d with s = max |x - mean| per group.
    """

    FLOOR = 1e-3

    def __init__(self, norm: nn.GroupNorm, prescaled: bool = True):
        super().__init__()
        if not norm.affine:
            raise LtxAneError("ANE rewrite: GroupNorm without affine parameters is not supported")
        self.groups, self.eps, self.prescaled = norm.num_groups, norm.eps, prescaled
        self.register_buffer("floor", torch.tensor(self.FLOOR), persistent=False)
        c = norm.num_channels
        self.weight = frozen(norm.weight.reshape(1, c, 1, 1))
        self.bias = frozen(norm.bias.reshape(1, c, 1, 1))

    @staticmethod
    def _clip_mean(g: torch.Tensor) -> torch.Tensor:
        return g.mean(dim=(2, 3), keepdim=True).mean(dim=0, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, c, h, w = x.shape
        g = x.reshape(t, self.groups, c // self.groups, h * w)
        d = g - self._clip_mean(g)
        if self.prescaled:
            s = _floor(d.abs().amax(dim=(2, 3), keepdim=True).amax(dim=0, keepdim=True), self.floor)
            z = d / s
            e = _eps_root(self.eps) / s
            y = z * torch.rsqrt(self._clip_mean(z * z) + e * e)
        else:
            y = d / torch.sqrt(self._clip_mean(d * d) + self.eps)
        return y.reshape(t, c, h, w) * self.weight + self.bias


def depth_to_space(x: torch.Tensor, rh: int, rw: int, mode: str) -> torch.Tensor:
    """(N, c*rh*rw, H, W) -> (N, c, H*rh, W*rw), channel order (c, rh, rw) as ltx-core's rearranges."""
    if rh == rw == 1:
        return x
    if mode == "pixel_shuffle" and rh == rw:
        return F.pixel_shuffle(x, rh)
    n, crr, h, w = x.shape
    c = crr // (rh * rw)
    # Interleave the w-offset into W, then the h-offset into H, never above rank 4.
    x = x.reshape(n * c * rh, rw, h, w).permute(0, 2, 3, 1).reshape(n * c, rh, h, w * rw)
    return x.permute(0, 2, 1, 3).reshape(n, c, h * rh, w * rw)


def space_to_depth(x: torch.Tensor, rh: int, rw: int, mode: str) -> torch.Tensor:
    """The inverse of depth_to_space: (N, c, H*rh, W*rw) -> (N, c*rh*rw, H, W)."""
    if rh == rw == 1:
        return x
    if mode == "pixel_shuffle" and rh == rw:
        return F.pixel_unshuffle(x, rh)
    n, c, hr, wr = x.shape
    h, w = hr // rh, wr // rw
    x = x.reshape(n * c, h, rh, wr).permute(0, 2, 1, 3).reshape(n * c * rh, h, w, rw)
    return x.permute(0, 3, 1, 2).reshape(n, c * rh * rw, h, w)


def time_major_channels(out_channels: int, pt: int, rest: int = 1) -> torch.Tensor:
    """Index that reorders conv output channels from (c, pt, rest) to (pt, c, rest)."""
    return torch.arange(out_channels).reshape(-1, pt, rest).permute(1, 0, 2).reshape(-1)
