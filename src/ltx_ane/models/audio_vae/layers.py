"""Blocks of the audio VAE: causal 2-D convs over (time, mel), residual blocks, attention, resampling.

Activations are channels-last, (B, T, F, C): torch's NCHW with H = time and W = mel bins. ltx-core's
"height" causality axis is therefore time. Module and parameter names follow ltx-core one-to-one.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ltx_ane.models.layers import pixel_norm

# ltx-core's audio blocks build PixelNorm with eps 1e-6 (the video VAE uses 1e-8).
PIXEL_NORM_EPS = 1e-6


def norm(x: mx.array) -> mx.array:
    return pixel_norm(x, PIXEL_NORM_EPS)


def causal_padding(kernel: int, axis: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """((time_lo, mel_lo), (time_hi, mel_hi)) zero padding of ltx-core's ``CausalConv2d`` for a square kernel."""
    total = kernel - 1
    centred = (total // 2, total - total // 2)
    time, mel = {
        "none": (centred, centred),
        "height": ((total, 0), centred),
        "width": (centred, (total, 0)),
        "width-compatibility": (centred, (total, 0)),
    }[axis]
    return (time[0], mel[0]), (time[1], mel[1])


class CausalConv2d(nn.Module):
    """A stride-1 conv padded on one side of the causal axis, so no output looks ahead (``causal_conv_2d.py``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, axis: str):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel)
        self.padding = causal_padding(kernel, axis)

    def __call__(self, x: mx.array) -> mx.array:
        return mx.conv_general(x, self.conv.weight, padding=self.padding) + self.conv.bias


class ResnetBlock(nn.Module):
    """PixelNorm -> SiLU -> conv -> PixelNorm -> SiLU -> conv, plus the input (1x1-projected if widths differ)."""

    def __init__(self, in_channels: int, out_channels: int, axis: str):
        super().__init__()
        self.conv1 = CausalConv2d(in_channels, out_channels, 3, axis)
        self.conv2 = CausalConv2d(out_channels, out_channels, 3, axis)
        if in_channels != out_channels:
            self.nin_shortcut = CausalConv2d(in_channels, out_channels, 1, axis)

    def __call__(self, x: mx.array) -> mx.array:
        h = self.conv1(nn.silu(norm(x)))
        h = self.conv2(nn.silu(norm(h)))
        if "nin_shortcut" in self:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all (time, mel) positions, with 1x1-conv projections."""

    def __init__(self, channels: int):
        super().__init__()
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def __call__(self, x: mx.array) -> mx.array:
        b, t, f, c = x.shape
        h = norm(x)
        q, k, v = (proj(h).reshape(b, 1, t * f, c) for proj in (self.q, self.k, self.v))
        h = mx.fast.scaled_dot_product_attention(q, k, v, scale=c**-0.5)
        return x + self.proj_out(h.reshape(b, t, f, c))


class MidBlock(nn.Module):
    def __init__(self, channels: int, axis: str, attention: bool):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, axis)
        if attention:
            self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, axis)

    def __call__(self, x: mx.array) -> mx.array:
        x = self.block_1(x)
        if "attn_1" in self:
            x = self.attn_1(x)
        return self.block_2(x)


class Level(nn.Module):
    """One resolution of the encoder or decoder: residual blocks, attention after each where configured."""

    def __init__(self, blocks: list[ResnetBlock], attention: bool):
        super().__init__()
        self.block = blocks
        self.attn = [AttnBlock(b.conv2.conv.weight.shape[0]) for b in blocks] if attention else []

    def __call__(self, x: mx.array) -> mx.array:
        for i, block in enumerate(self.block):
            x = block(x)
            if self.attn:
                x = self.attn[i](x)
        return x


class Upsample(nn.Module):
    """Nearest x2 in time and mel, a causal conv, then the first step of the causal axis dropped.

    The drop undoes the encoder's padding: T latent frames give 2T - 1 (time causal), as in ltx-core.
    """

    def __init__(self, channels: int, axis: str):
        super().__init__()
        self.conv = CausalConv2d(channels, channels, 3, axis)
        self.axis = axis

    def __call__(self, x: mx.array) -> mx.array:
        b, t, f, c = x.shape
        x = mx.broadcast_to(x[:, :, None, :, None], (b, t, 2, f, 2, c)).reshape(b, 2 * t, 2 * f, c)
        x = self.conv(x)
        if self.axis == "height":
            return x[:, 1:]
        if self.axis == "width":
            return x[:, :, 1:]
        return x


class Downsample(nn.Module):
    """A stride-2 3x3 conv after ltx-core's asymmetric zero padding."""

    # ((time_lo, mel_lo), (time_hi, mel_hi)) for each causality axis.
    PADDING = {
        "none": ((0, 0), (1, 1)),
        "height": ((2, 0), (0, 1)),
        "width": ((0, 2), (1, 0)),
        "width-compatibility": ((0, 1), (1, 0)),
    }

    def __init__(self, channels: int, axis: str):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)
        self.padding = self.PADDING[axis]

    def __call__(self, x: mx.array) -> mx.array:
        return mx.conv_general(x, self.conv.weight, stride=2, padding=self.padding) + self.conv.bias


class LatentStatistics(nn.Module):
    """The checkpoint's ``per_channel_statistics`` buffers under their own (hyphenated) names.

    ltx-core normalises each latent frame's (channel, mel bin) pairs as one vector of ``ch`` numbers,
    channel-major; on channels-last (B, T, F, C) latents that is an (F, C) table.
    """

    def __init__(self, size: int, z_channels: int):
        super().__init__()
        self["mean-of-means"] = mx.zeros((size,))
        self["std-of-means"] = mx.ones((size,))
        self.z_channels = z_channels

    def _table(self, name: str, dtype) -> mx.array:
        return self[name].reshape(self.z_channels, -1).T.astype(dtype)

    def normalize(self, x: mx.array) -> mx.array:
        return (x - self._table("mean-of-means", x.dtype)) / self._table("std-of-means", x.dtype)

    def un_normalize(self, x: mx.array) -> mx.array:
        return x * self._table("std-of-means", x.dtype) + self._table("mean-of-means", x.dtype)
