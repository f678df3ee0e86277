"""Rank-4 rewrites of ltx-core's video VAE: the decoder and the encoder, block by block."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ltx_ane.coreml.rewrites.common import (
    PixelNorm4d,
    TimeConv,
    Variant,
    depth_to_space,
    frozen,
    space_to_depth,
    time_major_channels,
)
from ltx_ane.errors import LtxAneError


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
        index = time_major_channels(block.out_channels, self.pt, self.ph * self.pw) if self.pt > 1 else None
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
        self.mean = frozen(stats.get_buffer("mean-of-means").reshape(1, c, 1, 1))
        self.std = frozen(stats.get_buffer("std-of-means").reshape(1, c, 1, 1))
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
        self.mean = frozen(stats.get_buffer("mean-of-means")[:n].reshape(1, n, 1, 1))
        self.std = frozen(stats.get_buffer("std-of-means")[:n].reshape(1, n, 1, 1))
        self.conv_in = _causal_conv(ref.conv_in, True, variant)
        self.blocks = nn.Sequential(*[_vae_block(b, True, variant) for b in ref.down_blocks])
        self.norm_out = PixelNorm4d(ref.conv_norm_out.eps, variant.norm == "prescaled")
        # Only the means are returned: the log-variance output channels are dropped from the weights.
        self.conv_out = _causal_conv(ref.conv_out, True, variant, torch.arange(n))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.conv_in(frames))
        x = self.conv_out(F.silu(self.norm_out(x)))
        return (x - self.mean) / self.std


def decode_5d(ref, x):  # VideoDecoder.forward without unpatchify
    x = ref.conv_in(ref.per_channel_statistics.un_normalize(x), causal=ref.causal)
    for block in ref.up_blocks:
        x = block(x, causal=ref.causal)
    return ref.conv_out(ref.conv_act(ref.conv_norm_out(x)), causal=ref.causal)


def encode_5d(ref, x):  # VideoEncoder.forward without patchify
    x = ref.conv_in(x)
    for block in ref.down_blocks:
        x = block(x)
    x = ref.conv_out(ref.conv_act(ref.conv_norm_out(x)))
    return ref.per_channel_statistics.normalize(x[:, : _means_channels(ref)])
