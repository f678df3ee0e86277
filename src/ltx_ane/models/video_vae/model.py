"""The LTX-2 / LTX-2.3 video VAE in MLX: ``VideoDecoder`` and ``VideoEncoder``, sized from their configs.

Public methods take and return channels-first tensors, (B, C, F, H, W) as in ltx-core; inside, everything
is channels-last. Frame 0 of a latent covers one pixel frame and every later one covers ``time_scale``.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ltx_ane.models import fused
from ltx_ane.models.queue import queued
from ltx_ane.models.video_vae.config import Block, DecoderConfig, EncoderConfig
from ltx_ane.models.layers import (
    CausalConv3d,
    PerChannelStatistics,
    UNetMidBlock3D,
    depth_to_space,
    eval_if_large,
    norm_silu_pad,
    patchify,
    space_to_depth,
    unpatchify,
)


def to_channels_last(x: mx.array) -> mx.array:
    return x.transpose(0, 2, 3, 4, 1)


def to_channels_first(x: mx.array) -> mx.array:
    return x.transpose(0, 4, 1, 2, 3)


class DepthToSpaceUpsample(nn.Module):
    """Decoder upsampling: conv to more channels, depth-to-space, drop frame 0 when time doubles.

    With ``residual`` the input itself, shuffled the same way and tiled over channels, is added back.
    """

    def __init__(self, channels: int, block: Block, spatial_padding_mode: str):
        super().__init__()
        self.stride = block.stride
        self.residual = block.residual
        prod = self.stride[0] * self.stride[1] * self.stride[2]
        self.conv = CausalConv3d(channels, prod * channels // block.multiplier, spatial_padding_mode=spatial_padding_mode)

    def __call__(self, x: mx.array, causal: bool) -> mx.array:
        # The conv's bias, the residual (the input, its channels repeated over the conv's: ltx-core's
        # shuffle-then-repeat moves only the (pt, ph, pw) part of each channel) and dropping frame 0 all happen in
        # the shuffle's own pass.
        y = self.conv(x, causal, bias=False)
        return eval_if_large(depth_to_space(y, self.stride, self.conv.conv.bias, x if self.residual else None,
                                            drop_first_frame=self.stride[0] == 2))


class SpaceToDepthDownsample(nn.Module):
    """Encoder downsampling (``compress_*_res``): space-to-depth of a conv's output plus a group-averaged skip."""

    def __init__(self, in_channels: int, out_channels: int, stride, spatial_padding_mode: str):
        super().__init__()
        self.stride = tuple(stride)
        prod = self.stride[0] * self.stride[1] * self.stride[2]
        self.group_size = in_channels * prod // out_channels
        self.conv = CausalConv3d(in_channels, out_channels // prod, spatial_padding_mode=spatial_padding_mode)

    def __call__(self, x: mx.array, causal: bool = True) -> mx.array:
        if self.stride[0] == 2:
            x = mx.concatenate([x[:, :1], x], axis=1)
        skip = grouped_mean_space_to_depth(x, self.stride, self.group_size)
        # The conv's bias and the skip are added in the rearrangement's own pass.
        return space_to_depth(self.conv(x, causal, bias=False), self.stride, self.conv.conv.bias, skip)


def grouped_mean_space_to_depth(x: mx.array, stride: tuple[int, int, int], group_size: int) -> mx.array:
    """``space_to_depth(x)`` with each run of ``group_size`` consecutive output channels replaced by its mean.

    The channels come out ordered (c, pt, ph, pw), so a run of g channels is a block of the last stride offsets
    (g = pw: the width pairs; g = ph * pw: 2x2 pixels ...): the mean is taken over those offsets before the
    rearrangement, on a tensor g times smaller than the rearranged one. Averaging after it (a reduction over rows of
    2-8 values of a full-size copy) took a fifth of the encoder's time on an H200
    (benchmarks/results/kernels_vae_cuda.md)."""
    b, f, h, w, c = x.shape
    pt, ph, pw = stride
    blocks = x.reshape(b, f // pt, pt, h // ph, ph, w // pw, pw, c)
    axes, remaining = [], group_size
    for axis, size in ((6, pw), (4, ph), (2, pt)):
        if remaining == 1 or size == 1:
            continue
        if remaining % size:
            break
        axes.append(axis)
        remaining //= size
    if remaining != 1:  # runs that do not line up with the stride offsets: average the rearranged channels
        skip = space_to_depth(x, stride)
        return skip.reshape(*skip.shape[:-1], -1, group_size).mean(axis=-1)
    if axes:
        blocks = blocks.mean(axis=axes, keepdims=True)
    kept = blocks.shape
    blocks = blocks.transpose(0, 1, 3, 5, 7, 2, 4, 6)
    return blocks.reshape(b, f // pt, h // ph, w // pw, c * kept[2] * kept[4] * kept[6])


class VideoDecoder(nn.Module):
    """Latent (B, C, F, h, w) -> video (B, 3, time_scale*(F-1)+1, space_scale*h, space_scale*w)."""

    # Large intermediates waiting on the device behind a sync point (layers.eval_if_large, models/queue.py): 0 waits
    # for each (the host builds the next piece while the device idles), 1 lets one wait. Only pieces at most
    # ``queue_fraction`` of the last stage's activation wait (None: all may): the lower-resolution stages overlap
    # host and device, while the last stage, whose tensors set the peak, waits for each piece as at depth 0.
    # H200, 121x512x768 (benchmarks/results/vae_decode_queue_*.md, before the fused norm kernel): depth 1 with
    # fraction 0.6 decodes in 0.83x (LTX-2) and 0.87x (LTX-2.3) ltx-core's time at depth 0's peak (6.47 / 6.17 GB;
    # ltx-core 7.25 / 6.19), against 0.89x / 0.91x at depth 0. Depth 1 for every piece peaks 24-62 % higher
    # (vae_cuda_sync*.md). runtime.tiling.estimate_decode_bytes is fitted to depth 0's peak, which this keeps (the
    # fused kernel lowered the peaks further: vae_decode_fused_*.md, so the estimate is an upper bound on CUDA).
    sync_depth: int = 1
    queue_fraction: float | None = 0.6

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        pad = config.spatial_padding_mode
        self.per_channel_statistics = PerChannelStatistics(config.latent_channels)
        channels = config.feature_channels
        self.conv_in = CausalConv3d(config.latent_channels, channels, spatial_padding_mode=pad)
        self.up_blocks = []
        for block in reversed(config.blocks):
            if block.name == "res_x":
                self.up_blocks.append(UNetMidBlock3D(channels, block.num_layers, pad))
            else:
                self.up_blocks.append(DepthToSpaceUpsample(channels, block, pad))
                channels //= block.multiplier
        self.conv_out = CausalConv3d(channels, config.out_channels * config.patch_size**2, spatial_padding_mode=pad)

    def decode_channels_last(self, latent: mx.array) -> mx.array:
        """(B, F, h, w, C) latent -> (B, F', H, W, 3) pixels, all channels-last."""
        causal = self.config.causal
        max_bytes = None if self.queue_fraction is None else int(self.queue_fraction * self.last_stage_bytes(latent))
        with queued(self.sync_depth, max_bytes):
            x = self.per_channel_statistics.un_normalize(latent)
            x = self.conv_in(x, causal)
            for block in self.up_blocks[:-1]:
                x = block(x, causal)
            last = self.up_blocks[-1]
            if isinstance(last, UNetMidBlock3D):
                padded = last.then_norm(x, causal, self.conv_out)
            else:
                padded = norm_silu_pad(last(x, causal), None, causal, self.conv_out.reflect)
            # conv_out's bias is added by unpatchify (one pass fewer); where its kernel reads the conv's output, the
            # conv runs wider, which cuDNN runs faster (fused.conv_out_width).
            channels = self.conv_out.conv.weight.shape[0]
            width = fused.conv_out_width(channels) if fused.depth_to_space_available(padded) else channels
            y = self.conv_out.convolve(padded, bias=False, width=width)
        return unpatchify(y, self.config.patch_size, self.conv_out.conv.bias, channels)

    def last_stage_bytes(self, latent: mx.array) -> int:
        """Bytes of the activation the last stage works on, for a (B, F, h, w, C) latent."""
        c = self.config
        b, f, h, w, _ = latent.shape
        scale = c.space_scale // c.patch_size
        frames = c.time_scale * (f - 1) + 1
        return b * frames * h * scale * w * scale * self.conv_out.conv.weight.shape[-1] * self.dtype.size

    @property
    def dtype(self):
        return self.conv_in.conv.weight.dtype

    def __call__(self, latent: mx.array) -> mx.array:
        return to_channels_first(self.decode_channels_last(to_channels_last(latent.astype(self.dtype))))


class VideoEncoder(nn.Module):
    """Video (B, 3, 8k+1, H, W) in [-1, 1] -> normalized latent means (B, C, k+1, H/32, W/32)."""

    # As the decoder's. H200, 121x512x768: 1 is 5-9 % faster but peaks 50-56 % higher untiled (LTX-2 11.4 vs
    # 7.6 GB), above ltx-core's 7.05 GB (benchmarks/results/vae_cuda_sync*.md).
    sync_depth: int = 0

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        pad = config.spatial_padding_mode
        self.per_channel_statistics = PerChannelStatistics(config.latent_channels)
        channels = config.latent_channels
        self.conv_in = CausalConv3d(config.in_channels * config.patch_size**2, channels, spatial_padding_mode=pad)
        self.down_blocks = []
        for block in config.blocks:
            if block.name == "res_x":
                self.down_blocks.append(UNetMidBlock3D(channels, block.num_layers, pad))
            elif block.name.endswith("_res"):
                out = channels * block.multiplier
                self.down_blocks.append(SpaceToDepthDownsample(channels, out, block.stride, pad))
                channels = out
            else:  # a plain strided conv
                self.down_blocks.append(CausalConv3d(channels, channels, stride=block.stride, spatial_padding_mode=pad))
        self.conv_out = CausalConv3d(channels, config.out_conv_channels, spatial_padding_mode=pad)

    def encode_channels_last(self, video: mx.array) -> mx.array:
        """(B, F, H, W, 3) pixels -> (B, F', h, w, C) normalized latent, all channels-last."""
        with queued(self.sync_depth):
            x = self.conv_in(patchify(video, self.config.patch_size), True)
            for block in self.down_blocks:
                x = block(x, True)
            x = self.conv_out.norm_silu_conv(x, True)
        means = x[..., : self.config.latent_channels]
        return self.per_channel_statistics.normalize(means)

    @property
    def dtype(self):
        return self.conv_in.conv.weight.dtype

    def __call__(self, video: mx.array) -> mx.array:
        return to_channels_first(self.encode_channels_last(to_channels_last(video.astype(self.dtype))))
