"""Gemma's hidden states -> one feature vector per token, as ltx-core's ``FeatureExtractorV1``/``V2``.

Both take the states of the valid tokens only. ltx-core runs them over the whole padded sequence but zeroes the
padding (V1 also takes its statistics over the valid tokens only), and the connector then drops every padded
position, so computing the valid rows alone gives the same context with none of the padding's work.

The states are stacked on a last "layer" axis and flattened as (width, layer), so the projection's input index is
``d * num_states + layer``: the checkpoint's ``aggregate_embed`` weights expect exactly that order.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

EPS = 1e-6


def stack_states(states: list[mx.array]) -> mx.array:
    """num_states x (1, n, D) -> (1, n, D, num_states)."""
    return mx.stack(states, axis=-1)


class FeatureExtractorV1(nn.Module):
    """LTX-2 19B: each state scaled to 8 * (x - mean) / range over all valid tokens and channels, then one
    projection shared by video and audio."""

    def __init__(self, gemma_width: int, num_states: int, width: int):
        super().__init__()
        self.aggregate_embed = nn.Linear(gemma_width * num_states, width, bias=False)

    def __call__(self, states: list[mx.array]) -> tuple[mx.array, mx.array]:
        x = stack_states(states)
        b, n, d, layers = x.shape
        # Statistics in float32: a bf16 sum over ~4 M values would lose the mean.
        x32 = x.astype(mx.float32)
        mean = x32.sum(axis=(1, 2), keepdims=True) / (n * d + EPS)
        value_range = x32.max(axis=(1, 2), keepdims=True) - x32.min(axis=(1, 2), keepdims=True)
        normed = (8 * (x32 - mean) / (value_range + EPS)).astype(x.dtype)
        features = self.aggregate_embed(normed.reshape(b, n, d * layers))
        return features, features


class FeatureExtractorV2(nn.Module):
    """LTX-2.3: per-token RMS norm of each state, then separate video and audio projections, each input scaled
    by sqrt(output width / Gemma width)."""

    def __init__(self, gemma_width: int, num_states: int, video_width: int, audio_width: int):
        super().__init__()
        self.gemma_width = gemma_width
        self.video_aggregate_embed = nn.Linear(gemma_width * num_states, video_width)
        self.audio_aggregate_embed = nn.Linear(gemma_width * num_states, audio_width)

    def __call__(self, states: list[mx.array]) -> tuple[mx.array, mx.array]:
        x = stack_states(states)
        b, n, d, layers = x.shape
        variance = mx.mean(x.astype(mx.float32) ** 2, axis=2, keepdims=True)
        normed = (x * mx.rsqrt(variance + EPS)).astype(x.dtype).reshape(b, n, d * layers)
        out = []
        for embed in (self.video_aggregate_embed, self.audio_aggregate_embed):
            out.append(embed(normed * math.sqrt(embed.weight.shape[0] / self.gemma_width)))
        return out[0], out[1]
