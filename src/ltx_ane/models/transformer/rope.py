"""Rotary position embeddings over fractional (time, height, width) positions, as ltx-core computes them.

The frequency grid ``theta ** linspace(0, 1, n) * pi / 2`` is computed in numpy float64 and rounded once to float32
when the config says ``frequencies_precision: float64`` (all released checkpoints); every later step follows the
reference's dtypes: token midpoints and fractions in the positions' own dtype (bf16 in the pipelines), phases and
their cos/sin in float32, the result in the activations' dtype.

Frequencies are ordered axis-fastest, ``[f0_t, f0_h, f0_w, f1_t, ...]``. "split" RoPE rotates the first half of
each head against the second and left-pads the frequencies with (cos 1, sin 0) up to half the width (3 x 682 = 2046
-> 2048 at 19B); "interleaved" rotates adjacent pairs and pads the same way at full width.

Both layouts are applied the same way: queries and keys are viewed as (..., 2, m) pairs (split: (B, T, heads, 2,
half); interleaved: (B, T, dim / 2, 2, 1)) and the tables are (..., 1, m), so one fused kernel rotates them without
the slices, ``stack`` and repeated tables of the textbook form (see ``fused.rotate``).
"""

from __future__ import annotations

import functools
import math

import mlx.core as mx
import numpy as np

from ltx_ane.models.transformer.fused import rotate


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
    """cos and sin tables shaped for the pair view: (B, T, heads, 1, head_dim / 2) for "split", (B, T, dim / 2, 1, 1)
    for "interleaved" (one entry per rotated pair: ltx-core's tables repeat each value twice)."""
    phases = _phases(positions, max_pos, frequency_grid(theta, len(max_pos), dim, double_precision))
    cos, sin = mx.cos(phases), mx.sin(phases)
    b, t = phases.shape[:2]
    # Pads in pairs: interleaved pads dim % (2 * n_axes) values, i.e. half as many pairs.
    pad = dim // 2 - phases.shape[-1] if rope_type == "split" else (dim % (2 * len(max_pos))) // 2
    if pad:
        cos = mx.concatenate([mx.ones((b, t, pad), dtype=cos.dtype), cos], axis=-1)
        sin = mx.concatenate([mx.zeros((b, t, pad), dtype=sin.dtype), sin], axis=-1)
    shape = (b, t, num_attention_heads, 1, -1) if rope_type == "split" else (b, t, -1, 1, 1)
    return cos.reshape(shape).astype(out_dtype), sin.reshape(shape).astype(out_dtype)


def apply_rotary_emb(x: mx.array, freqs_cis: tuple[mx.array, mx.array]) -> mx.array:
    """Rotate (B, T, heads * head_dim) queries or keys with tables from ``precompute_freqs_cis``."""
    cos, sin = freqs_cis
    pairs = x.reshape(*cos.shape[:-2], 2, cos.shape[-1])
    return rotate(pairs, pairs[..., ::-1, :], cos, sin).reshape(x.shape)
