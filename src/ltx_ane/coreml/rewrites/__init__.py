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

The package: ``common`` (the variant and the rank-4 primitives), one module per component family
(``video_vae``, ``upscaler``), and here the choice of rewrite per calling convention.
"""

from __future__ import annotations

import torch
from torch import nn

from ltx_ane.coreml.rewrites.common import Variant
from ltx_ane.coreml.rewrites.upscaler import AneUpsampler
from ltx_ane.coreml.rewrites.video_vae import AneDecoder, AneEncoder, decode_5d, encode_5d
from ltx_ane.models.registry import spec

__all__ = ["Variant", "rewrite"]


# One entry per calling convention (models.registry's ``io``): ltx-core's 5-D forward, and the rank-4 rewrite.
FORWARD_5D = {"decode": decode_5d, "encode": encode_5d, "upsample": lambda ref, x: ref(x)}
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
