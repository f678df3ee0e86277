"""``Embeddings1DConnector``: the small transformer between the text features and the video/audio transformer.

Module names follow ltx-core's (``transformer_1d_blocks.N.attn1.to_q``, ``ff.net.0.proj``, ``learnable_registers``)
so checkpoint keys map one to one. The connector sees the prompt's valid tokens only: they go first and every
later position ``p`` holds ``learnable_registers[p % num_registers]``, which is what ltx-core's register
replacement makes of a left-padded sequence. After that replacement ltx-core's mask is all zeros, so attention
here runs unmasked over the whole length.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ltx_ane.errors import LtxAneError
from ltx_ane.models.layers import FeedForward
from ltx_ane.models.text.config import ConnectorConfig

NORM_EPS = 1e-6


def rms_norm(x: mx.array) -> mx.array:
    return mx.fast.rms_norm(x, None, NORM_EPS)


def frequency_grid(theta: float, count: int, double_precision: bool) -> np.ndarray:
    """ltx-core's RoPE frequencies ``theta ** linspace(0, 1, count) * pi / 2``, rounded as it rounds them.

    The float64 variant (``frequencies_precision: float64``, all released checkpoints) rounds to float32 once at
    the end and is reproduced exactly. The float32 variant follows torch's scalar ``linspace`` (first half
    ``i * step``, second half ``1 - (count-1-i) * step``); torch's vectorised path rounds some entries differently
    depending on the CPU's vector width, so that variant agrees only to ~1 ulp of the grid.
    """
    if double_precision:
        grid = np.power(theta, np.linspace(0.0, 1.0, count, dtype=np.float64)) * math.pi / 2
        return grid.astype(np.float32)
    step = np.float64(np.float32(1.0 / (count - 1))) if count > 1 else 0.0
    i = np.arange(count)
    exponents = np.where(i < count // 2, i * step, 1.0 - (count - 1 - i) * step).astype(np.float32)
    grid = np.power(np.float32(theta), exponents).astype(np.float32)
    return (grid * np.float32(math.pi / 2)).astype(np.float32)


def rope_tables(config: ConnectorConfig, length: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin over the token index, (length, inner/2) in float32, as ltx-core's ``precompute_freqs_cis``."""
    grid = frequency_grid(config.theta, config.inner_dim // 2, config.double_precision_rope)
    fraction = np.arange(length, dtype=np.float32) / np.float32(config.max_pos[0])
    freqs = grid[None, :] * (fraction[:, None] * np.float32(2) - np.float32(1))
    return np.cos(freqs), np.sin(freqs)


class Rope:
    """Applies the connector's rotary embedding to q or k of shape (B, T, inner)."""

    def __init__(self, config: ConnectorConfig, length: int, dtype):
        cos, sin = rope_tables(config, length)
        self.split = config.rope_type == "split"
        self.heads = config.heads
        if self.split:
            # Each head rotates its own slice of the frequency grid, its two halves against each other.
            shape = (1, length, config.heads, config.head_dim // 2)
            self.cos, self.sin = (mx.array(a.reshape(shape)).astype(dtype) for a in (cos, sin))
        else:
            # One rotation over the whole width, pairs (2i, 2i+1) sharing frequency i.
            self.cos, self.sin = (mx.array(np.repeat(a, 2, axis=-1)[None]).astype(dtype) for a in (cos, sin))

    def __call__(self, x: mx.array) -> mx.array:
        b, t, width = x.shape
        if self.split:
            x = x.reshape(b, t, self.heads, -1)
            half = x.shape[-1] // 2
            x1, x2 = x[..., :half], x[..., half:]
            out = mx.concatenate([x1 * self.cos - x2 * self.sin, x2 * self.cos + x1 * self.sin], axis=-1)
            return out.reshape(b, t, width)
        pairs = x.reshape(b, t, width // 2, 2)
        rotated = mx.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(b, t, width)
        return x * self.cos + rotated * self.sin


class Attention(nn.Module):
    def __init__(self, config: ConnectorConfig):
        super().__init__()
        dim = config.inner_dim
        self.heads = config.heads
        self.head_dim = config.head_dim
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.q_norm = nn.RMSNorm(dim, eps=NORM_EPS)
        self.k_norm = nn.RMSNorm(dim, eps=NORM_EPS)
        if config.gated_attention:
            self.to_gate_logits = nn.Linear(dim, config.heads)
        self.to_out = [nn.Linear(dim, dim)]

    def __call__(self, x: mx.array, rope: Rope) -> mx.array:
        b, t, _ = x.shape
        q = rope(self.q_norm(self.to_q(x)))
        k = rope(self.k_norm(self.to_k(x)))
        v = self.to_v(x)
        q, k, v = (a.reshape(b, t, self.heads, self.head_dim).transpose(0, 2, 1, 3) for a in (q, k, v))
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.head_dim**-0.5)
        out = out.transpose(0, 2, 1, 3)
        if "to_gate_logits" in self:
            # LTX-2.3: a per-head gate 2 * sigmoid(logits), identity at zero logits.
            out = out * (2.0 * mx.sigmoid(self.to_gate_logits(x)))[..., None]
        return self.to_out[0](out.reshape(b, t, -1))




class BasicTransformerBlock1D(nn.Module):
    def __init__(self, config: ConnectorConfig):
        super().__init__()
        self.attn1 = Attention(config)
        self.ff = FeedForward(config.inner_dim)

    def __call__(self, x: mx.array, rope: Rope) -> mx.array:
        x = x + self.attn1(rms_norm(x), rope)
        return x + self.ff(rms_norm(x))


class Embeddings1DConnector(nn.Module):
    def __init__(self, config: ConnectorConfig):
        super().__init__()
        self.config = config
        self.transformer_1d_blocks = [BasicTransformerBlock1D(config) for _ in range(config.num_layers)]
        self.learnable_registers = mx.zeros((config.num_registers, config.inner_dim))

    def __call__(self, valid_features: mx.array, length: int) -> mx.array:
        """(1, n, inner) features of the n valid tokens -> (1, length, inner) context."""
        b, n, width = valid_features.shape
        registers = self.config.num_registers
        if b != 1:
            raise LtxAneError(f"the text connector encodes one prompt at a time, got a batch of {b}")
        if length % registers:
            raise LtxAneError(f"the text length {length} is not a multiple of the {registers} connector registers")
        if n > length:
            raise LtxAneError(f"{n} valid tokens do not fit in a text length of {length}")
        dtype = valid_features.dtype
        fill = mx.tile(self.learnable_registers, (length // registers, 1))[n:].astype(dtype)
        x = mx.concatenate([valid_features, fill[None]], axis=1)
        rope = Rope(self.config, length, dtype)
        for block in self.transformer_1d_blocks:
            x = block(x, rope)
        return rms_norm(x)
