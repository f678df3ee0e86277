"""Rotary position embeddings over fractional (time, height, width) positions, as ltx-core computes them.

The frequency grid ``theta ** linspace(0, 1, n) * pi / 2`` is computed in numpy float64 and rounded once to float32
when the config says ``frequencies_precision: float64`` (all released checkpoints); every later step follows the
reference's dtypes: token midpoints and fractions in the positions' own dtype (bf16 in the pipelines), phases and
their cos/sin in float32, the result in the activations' dtype.

Frequencies are ordered axis-fastest, ``[f0_t, f0_h, f0_w, f1_t, ...]``. "split" RoPE rotates the first half of
each head against the second and left-pads the frequencies with (cos 1, sin 0) up to half the width (3 x 682 = 2046
-> 2048 at 19B); "interleaved" rotates adjacent pairs and pads the same way at full width.
"""

from __future__ import annotations

import functools
import math

import mlx.core as mx
import numpy as np


@functools.lru_cache(maxsize=8)
def frequency_grid(theta: float, n_axes: int, dim: int, double_precision: bool) -> np.ndarray:
    """The ``dim // (2 * n_axes)`` base frequencies shared by all axes, float32."""
    count = dim // (2 * n_axes)
    if double_precision:
        grid = np.power(float(theta), np.linspace(0.0, 1.0, count, dtype=np.float64)) * math.pi / 2
        return grid.astype(np.float32)
    # ltx-core's float32 grid (torch.linspace and pow in float32): equal up to float32 rounding of the grid.
    exponents = np.linspace(0.0, 1.0, count, dtype=np.float64).astype(np.float32)
    grid = np.power(np.float32(theta), exponents, dtype=np.float32)
    return grid * np.float32(math.pi) / np.float32(2)


def _phases(positions: mx.array, max_pos: tuple[int, ...], grid: np.ndarray) -> mx.array:
    """(B, n_axes, T, 2) [start, end) bounds -> (B, T, n_freq * n_axes) float32 phases, axis-fastest."""
    if positions.ndim != 4 or positions.shape[-1] != 2 or positions.shape[1] != len(max_pos):
        raise ValueError(f"positions must be (B, {len(max_pos)}, T, 2), got {tuple(positions.shape)}")
    middle = (positions[..., 0] + positions[..., 1]) / 2.0
    fractions = mx.stack([middle[:, i] / max_pos[i] for i in range(len(max_pos))], axis=-1)  # (B, T, n_axes)
    phases = mx.array(grid) * (fractions[..., None] * 2 - 1)  # (B, T, n_axes, n_freq), float32
    b, t = phases.shape[:2]
    return phases.swapaxes(-1, -2).reshape(b, t, -1)


def precompute_freqs_cis(
    positions: mx.array,
    dim: int,
    out_dtype,
    theta: float,
    max_pos: tuple[int, ...],
    num_attention_heads: int,
    rope_type: str,
    double_precision: bool,
) -> tuple[mx.array, mx.array]:
    """cos and sin tables: (B, T, heads, head_dim / 2) for "split", (B, T, dim) for "interleaved"."""
    phases = _phases(positions, max_pos, frequency_grid(theta, len(max_pos), dim, double_precision))
    cos, sin = mx.cos(phases), mx.sin(phases)
    if rope_type == "split":
        pad = dim // 2 - phases.shape[-1]
    else:
        cos, sin = mx.repeat(cos, 2, axis=-1), mx.repeat(sin, 2, axis=-1)
        pad = dim % (2 * len(max_pos))
    if pad:
        b, t = phases.shape[:2]
        cos = mx.concatenate([mx.ones((b, t, pad), dtype=cos.dtype), cos], axis=-1)
        sin = mx.concatenate([mx.zeros((b, t, pad), dtype=sin.dtype), sin], axis=-1)
    if rope_type == "split":
        b, t = cos.shape[:2]
        cos = cos.reshape(b, t, num_attention_heads, -1)
        sin = sin.reshape(b, t, num_attention_heads, -1)
    return cos.astype(out_dtype), sin.astype(out_dtype)


def apply_rotary_emb(x: mx.array, freqs_cis: tuple[mx.array, mx.array], rope_type: str) -> mx.array:
    """Rotate (B, T, heads * head_dim) queries or keys."""
    cos, sin = freqs_cis
    if rope_type == "split":
        b, t, h, half = cos.shape
        halves = x.reshape(b, t, h, 2, half)
        first, second = halves[..., 0, :], halves[..., 1, :]
        rotated = mx.stack([first * cos - second * sin, second * cos + first * sin], axis=-2)
        return rotated.reshape(b, t, -1)
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    swapped = mx.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
    return x * cos + swapped * sin
