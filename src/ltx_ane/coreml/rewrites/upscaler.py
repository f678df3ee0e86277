"""Rank-4 rewrite of ltx-core's latent upscalers (spatial or temporal x2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ltx_ane.coreml.rewrites.common import ClipGroupNorm, TimeConv, Variant, depth_to_space, time_major_channels
from ltx_ane.errors import LtxAneError


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
            self.up_conv = _conv3d(conv, variant, time_major_channels(conv.out_channels, 2))
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
