"""Timestep embedding, AdaLN-single and the caption projection, named as ltx-core's modules."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ltx_ane.models.layers import gelu_tanh

TIMESTEP_CHANNELS = 256
MAX_PERIOD = 10000


def _timestep_frequencies(channels: int) -> np.ndarray:
    half = channels // 2
    exponent = np.float32(-math.log(MAX_PERIOD)) * np.arange(half, dtype=np.float32) / np.float32(half)
    return np.exp(exponent)


def timestep_embedding(timesteps: mx.array, channels: int = TIMESTEP_CHANNELS) -> mx.array:
    """(N,) -> (N, channels) float32 sinusoids, cos first (``flip_sin_to_cos``, no frequency shift)."""
    args = timesteps.astype(mx.float32)[:, None] * mx.array(_timestep_frequencies(channels))[None]
    return mx.concatenate([mx.cos(args), mx.sin(args)], axis=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, in_channels: int, time_embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, time_embed_dim)
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)

    def __call__(self, x: mx.array) -> mx.array:
        return self.linear_2(nn.silu(self.linear_1(x)))


class PixArtAlphaCombinedTimestepSizeEmbeddings(nn.Module):
    def __init__(self, embedding_dim: int):
        super().__init__()
        self.timestep_embedder = TimestepEmbedding(TIMESTEP_CHANNELS, embedding_dim)

    def __call__(self, timesteps: mx.array, dtype) -> mx.array:
        return self.timestep_embedder(timestep_embedding(timesteps).astype(dtype))


class AdaLayerNormSingle(nn.Module):
    """Scaled timesteps (N,) -> (modulation (N, coefficient * dim), embedded timestep (N, dim))."""

    def __init__(self, embedding_dim: int, embedding_coefficient: int = 6):
        super().__init__()
        self.emb = PixArtAlphaCombinedTimestepSizeEmbeddings(embedding_dim)
        self.linear = nn.Linear(embedding_dim, embedding_coefficient * embedding_dim)

    def __call__(self, timesteps: mx.array, dtype) -> tuple[mx.array, mx.array]:
        embedded = self.emb(timesteps, dtype)
        return self.linear(nn.silu(embedded)), embedded


class PixArtAlphaTextProjection(nn.Module):
    """19B's caption projection inside the transformer: Linear, GELU (tanh), Linear."""

    def __init__(self, in_features: int, hidden_size: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, hidden_size)
        self.linear_2 = nn.Linear(hidden_size, hidden_size)

    def __call__(self, caption: mx.array) -> mx.array:
        return self.linear_2(gelu_tanh(self.linear_1(caption)))
