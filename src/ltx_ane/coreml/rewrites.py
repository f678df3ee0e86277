"""ANE-layout rewrites of ltx-core's modules: the same function, every tensor rank 4.

Core ML caps tensors at rank 5 and no public source shows a Conv3d or a 5-D tensor placed on the Neural Engine,
whose native layout is rank-4 channels-first. So every ltx-core module of the four components is replaced by a
counterpart built from it (same weights, rearranged offline) that works on frames-on-the-batch-axis tensors
(T, C, H, W):

- a 3x3x3 conv becomes 2-D convs over time-shifted frame stacks: ``stacked`` concatenates the three shifts on
  channels and runs one Conv2d (3x the input memory, one big matmul); ``split`` runs three Conv2d and adds them
  (no copy, three smaller kernels). Temporal padding (repeated edge frames, or zeros in the upscalers) is a
  concat on the batch axis.
- depth-to-space: the producing conv's output channels are permuted offline so the temporal part is a plain
  reshape; the spatial part is ``pixel_shuffle`` or an equivalent chain of rank-4 reshapes/transposes.
- PixelNorm and GroupNorm are ``prescaled`` (fp16-safe, see ``PixelNorm4d``) or ``plain`` (the reference formula).
- GroupNorm in the upscalers keeps its statistics over all frames (two-stage mean), as ltx-core does.

The ``conv3d`` variant keeps ltx-core's own modules (the 5-D graph) as the comparison point; only the
input/output layout is the same as the others'.

Batch size is 1: Core ML functions have fixed shapes, and the batch axis carries frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ltx_ane.errors import LtxAneError
from ltx_ane.models.registry import spec

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


def _frozen(t: torch.Tensor) -> nn.Parameter:
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
        self.bias = _frozen(bias) if bias is not None else None
        if mode == "stacked":
            # Tap k's input channels come k-th in the stack: weight[o, k*I + i] = w3d[o, i, k].
            self.weight = _frozen(weight.permute(0, 2, 1, 3, 4).reshape(out_c, kt * in_c, kh, kw))
        elif mode == "split":
            self.weights = nn.ParameterList([_frozen(weight[:, :, k]) for k in range(kt)])
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
        self.weight = _frozen(norm.weight.reshape(1, c, 1, 1))
        self.bias = _frozen(norm.bias.reshape(1, c, 1, 1))

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


def _time_major_channels(out_channels: int, pt: int, rest: int = 1) -> torch.Tensor:
    """Index that reorders conv output channels from (c, pt, rest) to (pt, c, rest)."""
    return torch.arange(out_channels).reshape(-1, pt, rest).permute(1, 0, 2).reshape(-1)


# ------------------------------------------------------------------------------------------ VAE building blocks


def _causal_conv(module, causal: bool, variant: Variant, out_index: torch.Tensor | None = None) -> TimeConv:
    """An ltx-core CausalConv3d as a TimeConv; ``out_index`` selects/reorders its output channels."""
    from ltx_core.model.video_vae.convolution import CausalConv3d

    if not isinstance(module, CausalConv3d):
        raise LtxAneError(f"ANE rewrite: expected a CausalConv3d, got {type(module).__name__}")
    conv = module.conv
    if conv.stride != (1, 1, 1) or conv.dilation != (1, 1, 1) or conv.groups != 1:
        raise LtxAneError("ANE rewrite: strided, dilated or grouped VAE convs are not supported")
    weight, bias = conv.weight, conv.bias
    if out_index is not None:
        weight, bias = weight[out_index], (bias[out_index] if bias is not None else None)
    return TimeConv(weight, bias, "causal" if causal else "symmetric", conv.padding_mode, variant.conv)


class ResBlock4d(nn.Module):
    """ltx-core ResnetBlock3D with PixelNorm: norm, SiLU, conv, norm, SiLU, conv, plus the input."""

    def __init__(self, block, causal: bool, variant: Variant):
        super().__init__()
        from ltx_core.model.common.normalization import PixelNorm

        if block.timestep_conditioning or block.inject_noise or block.in_channels != block.out_channels:
            raise LtxAneError("ANE rewrite: timestep-conditioned, noise-injecting or channel-changing res blocks are not supported")
        if not isinstance(block.norm1, PixelNorm):
            raise LtxAneError("ANE rewrite: only PixelNorm VAE res blocks are supported")
        prescaled = variant.norm == "prescaled"
        self.norm1 = PixelNorm4d(block.norm1.eps, prescaled)
        self.conv1 = _causal_conv(block.conv1, causal, variant)
        self.norm2 = PixelNorm4d(block.norm2.eps, prescaled)
        self.conv2 = _causal_conv(block.conv2, causal, variant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return x + h


class DepthToSpace4d(nn.Module):
    """ltx-core DepthToSpaceUpsample (decoder): conv, depth-to-space, drop frame 0 when time doubles."""

    def __init__(self, block, causal: bool, variant: Variant):
        super().__init__()
        self.pt, self.ph, self.pw = block.stride
        self.residual, self.d2s = block.residual, variant.d2s
        self.repeat = math.prod(block.stride) // block.out_channels_reduction_factor
        # Time-offset-major output channels make the temporal depth-to-space a plain reshape.
        index = _time_major_channels(block.out_channels, self.pt, self.ph * self.pw) if self.pt > 1 else None
        self.conv = _causal_conv(block.conv, causal, variant, index)

    def _unshuffle_time(self, x: torch.Tensor, time_major: bool) -> torch.Tensor:
        t, c, h, w = x.shape
        if self.pt == 1:
            return x
        if not time_major:  # the residual input: channels are (c, pt, ph, pw); one transpose makes them (pt, c, ...)
            x = x.reshape(t, c // self.pt // (self.ph * self.pw), self.pt, self.ph * self.pw * h * w).transpose(1, 2)
        return x.reshape(t * self.pt, c // self.pt, h, w)

    def _expand(self, x: torch.Tensor, time_major: bool) -> torch.Tensor:
        x = depth_to_space(self._unshuffle_time(x, time_major), self.ph, self.pw, self.d2s)
        return x[1:] if self.pt == 2 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._expand(self.conv(x), time_major=True)
        if self.residual:
            skip = self._expand(x, time_major=False)
            if self.repeat > 1:
                skip = torch.cat([skip] * self.repeat, dim=1)
            y = y + skip
        return y


class SpaceToDepth4d(nn.Module):
    """ltx-core SpaceToDepthDownsample (encoder): conv + space-to-depth, plus the group-averaged input."""

    def __init__(self, block, causal: bool, variant: Variant):
        super().__init__()
        self.pt, self.ph, self.pw = block.stride
        self.group_size, self.d2s = block.group_size, variant.d2s
        self.conv = _causal_conv(block.conv, causal, variant)

    def _fold(self, x: torch.Tensor) -> torch.Tensor:
        """(T, C, H, W) -> (T/pt, C*pt*ph*pw, H/ph, W/pw) with channel order (c, pt, ph, pw)."""
        x = space_to_depth(x, self.ph, self.pw, self.d2s)
        if self.pt == 1:
            return x
        t, cs, h, w = x.shape
        c = cs // (self.ph * self.pw)
        x = x.reshape(t // self.pt, self.pt, c, self.ph * self.pw * h * w).transpose(1, 2)
        return x.reshape(t // self.pt, cs * self.pt, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pt == 2:
            x = torch.cat([x[:1], x], dim=0)
        skip = self._fold(x)
        if self.group_size > 1:
            d, c, h, w = skip.shape
            skip = skip.reshape(d, c // self.group_size, self.group_size, h * w).mean(dim=2).reshape(d, c // self.group_size, h, w)
        return self._fold(self.conv(x)) + skip


def _vae_block(block, causal: bool, variant: Variant) -> nn.Module:
    from ltx_core.model.video_vae.resnet import ResnetBlock3D, UNetMidBlock3D
    from ltx_core.model.video_vae.sampling import DepthToSpaceUpsample, SpaceToDepthDownsample

    if isinstance(block, UNetMidBlock3D):
        if block.timestep_conditioning:
            raise LtxAneError("ANE rewrite: timestep-conditioned blocks are not supported")
        return nn.Sequential(*[ResBlock4d(b, causal, variant) for b in block.res_blocks])
    if isinstance(block, ResnetBlock3D):
        return ResBlock4d(block, causal, variant)
    if isinstance(block, DepthToSpaceUpsample):
        return DepthToSpace4d(block, causal, variant)
    if isinstance(block, SpaceToDepthDownsample):
        return SpaceToDepth4d(block, causal, variant)
    raise LtxAneError(f"ANE rewrite: ltx-core block {type(block).__name__} has no rank-4 counterpart (strided compress_* blocks are not supported)")


# ------------------------------------------------------------------------------------------------ components


class AneDecoder(nn.Module):
    """VideoDecoder on (F, 128, h, w) normalized latents -> (8(F-1)+1, 48, 8h, 8w) patchified frames."""

    def __init__(self, ref, variant: Variant):
        super().__init__()
        if ref.timestep_conditioning:
            raise LtxAneError("ANE rewrite: timestep-conditioned decoders are not supported")
        stats = ref.per_channel_statistics
        c = stats.get_buffer("mean-of-means").shape[0]
        self.mean = _frozen(stats.get_buffer("mean-of-means").reshape(1, c, 1, 1))
        self.std = _frozen(stats.get_buffer("std-of-means").reshape(1, c, 1, 1))
        causal = ref.causal
        self.conv_in = _causal_conv(ref.conv_in, causal, variant)
        self.blocks = nn.Sequential(*[_vae_block(b, causal, variant) for b in ref.up_blocks])
        self.norm_out = PixelNorm4d(ref.conv_norm_out.eps, variant.norm == "prescaled")
        self.conv_out = _causal_conv(ref.conv_out, causal, variant)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(latent * self.std + self.mean)
        x = self.blocks(x)
        return self.conv_out(F.silu(self.norm_out(x)))


def _means_channels(ref) -> int:
    """How many conv_out channels ltx-core's encoder returns (``torch.chunk(sample, 2)[0]`` after its log-var step)."""
    from ltx_core.model.video_vae.enums import LogVarianceType

    n = ref.latent_channels
    return n // 2 if ref.latent_log_var == LogVarianceType.NONE else n


class AneEncoder(nn.Module):
    """VideoEncoder on (F, 48, H/4, W/4) patchified frames -> ((F-1)/8+1, 128, H/32, W/32) normalized means."""

    def __init__(self, ref, variant: Variant):
        super().__init__()
        stats = ref.per_channel_statistics
        n = _means_channels(ref)
        self.mean = _frozen(stats.get_buffer("mean-of-means")[:n].reshape(1, n, 1, 1))
        self.std = _frozen(stats.get_buffer("std-of-means")[:n].reshape(1, n, 1, 1))
        self.conv_in = _causal_conv(ref.conv_in, True, variant)
        self.blocks = nn.Sequential(*[_vae_block(b, True, variant) for b in ref.down_blocks])
        self.norm_out = PixelNorm4d(ref.conv_norm_out.eps, variant.norm == "prescaled")
        # Only the means are returned: the log-variance output channels are dropped from the weights.
        self.conv_out = _causal_conv(ref.conv_out, True, variant, torch.arange(n))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.conv_in(frames))
        x = self.conv_out(F.silu(self.norm_out(x)))
        return (x - self.mean) / self.std


def _conv3d(conv: nn.Conv3d, variant: Variant, out_index: torch.Tensor | None = None) -> TimeConv:
    if conv.stride != (1, 1, 1) or conv.groups != 1 or conv.padding != tuple(k // 2 for k in conv.kernel_size):
        raise LtxAneError("ANE rewrite: only stride-1 'same' Conv3d layers are supported")
    weight, bias = conv.weight, conv.bias
    if out_index is not None:
        weight, bias = weight[out_index], bias[out_index]
    return TimeConv(weight, bias, "zeros", conv.padding_mode, variant.conv)


class UpResBlock4d(nn.Module):
    """ltx-core upsampler ResBlock: conv, GN, SiLU, conv, GN, then SiLU(x + residual)."""

    def __init__(self, block, variant: Variant):
        super().__init__()
        prescaled = variant.norm == "prescaled"
        self.conv1, self.norm1 = _conv3d(block.conv1, variant), ClipGroupNorm(block.norm1, prescaled)
        self.conv2, self.norm2 = _conv3d(block.conv2, variant), ClipGroupNorm(block.norm2, prescaled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(self.conv1(x)))
        return F.silu(x + self.norm2(self.conv2(h)))


class AneUpsampler(nn.Module):
    """LatentUpsampler on (F, 128, h, w) un-normalized latents: x2 in space or in time (F -> 2F-1).

    GroupNorm spans the whole clip, so the program is converted at the clip's full latent shape (see convert.py).
    """

    def __init__(self, ref, variant: Variant):
        super().__init__()
        from ltx_core.model.upsampler.spatial_rational_resampler import SpatialRationalResampler

        if ref.dims != 3:
            raise LtxAneError("ANE rewrite: only 3-D upscalers are supported")
        prescaled = variant.norm == "prescaled"
        self.d2s = variant.d2s
        self.initial_conv = _conv3d(ref.initial_conv, variant)
        self.initial_norm = ClipGroupNorm(ref.initial_norm, prescaled)
        self.res_blocks = nn.Sequential(*[UpResBlock4d(b, variant) for b in ref.res_blocks])
        self.temporal = bool(ref.temporal_upsample) and not ref.spatial_upsample
        if ref.spatial_upsample and ref.temporal_upsample:
            raise LtxAneError("ANE rewrite: spatio-temporal upscalers are not supported")
        if self.temporal:
            conv = ref.upsampler[0]
            self.up_conv = _conv3d(conv, variant, _time_major_channels(conv.out_channels, 2))
        else:
            if isinstance(ref.upsampler, SpatialRationalResampler):
                if ref.upsampler.num != 2 or ref.upsampler.den != 1:
                    raise LtxAneError(f"ANE rewrite: only the x2 spatial upscaler is supported (scale {ref.upsampler.scale})")
                conv = ref.upsampler.conv  # blur_down has stride 1 at scale 2: an identity
            else:
                conv = ref.upsampler[0]
            self.up_conv2d = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding)
            self.up_conv2d.load_state_dict(conv.state_dict())
            self.up_conv2d.requires_grad_(False)
        self.post_blocks = nn.Sequential(*[UpResBlock4d(b, variant) for b in ref.post_upsample_res_blocks])
        self.final_conv = _conv3d(ref.final_conv, variant)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.initial_norm(self.initial_conv(latent)))
        x = self.res_blocks(x)
        if self.temporal:
            y = self.up_conv(x)  # channels (2, c): the time shuffle is a reshape
            t, c2, h, w = y.shape
            x = y.reshape(2 * t, c2 // 2, h, w)[1:]
        else:
            x = depth_to_space(self.up_conv2d(x), 2, 2, self.d2s)
        x = self.post_blocks(x)
        return self.final_conv(x)


def _decode_5d(ref, x):  # VideoDecoder.forward without unpatchify
    x = ref.conv_in(ref.per_channel_statistics.un_normalize(x), causal=ref.causal)
    for block in ref.up_blocks:
        x = block(x, causal=ref.causal)
    return ref.conv_out(ref.conv_act(ref.conv_norm_out(x)), causal=ref.causal)


def _encode_5d(ref, x):  # VideoEncoder.forward without patchify
    x = ref.conv_in(x)
    for block in ref.down_blocks:
        x = block(x)
    x = ref.conv_out(ref.conv_act(ref.conv_norm_out(x)))
    return ref.per_channel_statistics.normalize(x[:, : _means_channels(ref)])


# One entry per calling convention (models.registry's ``io``): ltx-core's 5-D forward, and the rank-4 rewrite.
FORWARD_5D = {"decode": _decode_5d, "encode": _encode_5d, "upsample": lambda ref, x: ref(x)}
REWRITES = {"decode": AneDecoder, "encode": AneEncoder, "upsample": AneUpsampler}


class Reference5d(nn.Module):
    """The ``conv3d`` variant: ltx-core's own modules (5-D graph), with the same host layout as the rewrites."""

    def __init__(self, ref, io: str):
        super().__init__()
        self.ref, self.io = ref, io

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = FORWARD_5D[self.io](self.ref, x.permute(1, 0, 2, 3).unsqueeze(0))
        return x[0].permute(1, 0, 2, 3)


def rewrite(ref: nn.Module, component: str, variant: Variant) -> nn.Module:
    """The ANE-layout counterpart of an ltx-core component (a new module; ``ref`` is left unchanged)."""
    io = spec(component).io
    model = Reference5d(ref, io) if variant.conv == "conv3d" else REWRITES[io](ref, variant)
    return model.eval().requires_grad_(False)
