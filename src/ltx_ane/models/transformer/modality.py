"""The transformer's per-modality input, mirroring ltx-core's ``Modality``."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx


@dataclass(frozen=True)
class Modality:
    """One modality's tokens and conditioning for one forward pass.

    latent: (B, T, C) patchified tokens (noisy and appended conditioning tokens).
    sigma: (B,) the step's noise level; the *other* modality's cross-attention AdaLN reads it.
    timesteps: (B, T) or (B, T, 1) per-token noise level, ``denoise_mask * sigma`` (0 on clean conditioning tokens).
    positions: (B, 3, T, 2) video [start, end) bounds (seconds, pixels, pixels) or (B, 1, T, 2) audio seconds.
        The reference pipelines hand video positions over in bf16; pass them in the same dtype for the same result.
    context: (B, S, D) text features (caption_channels wide for 19B, the modality's width for LTX-2.3).
    enabled: False keeps this modality's tokens unchanged through the blocks (they still serve as the other's K/V).
    context_mask: optional (B, S) text mask, 1 = keep (integer/bool), or an additive float bias.
    attention_mask: optional (B, T, T) self-attention weights in [0, 1]; 0 = no attention.
    """

    latent: mx.array
    sigma: mx.array
    timesteps: mx.array
    positions: mx.array
    context: mx.array
    enabled: bool = True
    context_mask: mx.array | None = None
    attention_mask: mx.array | None = None
