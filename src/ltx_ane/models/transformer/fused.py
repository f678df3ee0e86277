"""The transformer's elementwise glue as compiled functions, so each runs as one kernel.

Eager MLX launches one kernel per operation and writes every intermediate at full size: AdaLN modulation
``rms_norm(x) * (1 + scale) + shift`` with ``scale = table_row + timestep_slice`` is six passes over a (T, D)
tensor, a gated residual two, RoPE's slices, products and ``stack`` about ten. ``mx.compile`` fuses each function
below into a single kernel that reads its inputs once and writes one result. The operations, their order and their
dtypes are those of the eager code (and of ltx-core), so results are unchanged: MLX keeps every intermediate of a
fused kernel in its own dtype (bf16 stays bf16).

All functions are ``shapeless``: one trace serves every token count, batch size and broadcast (a (B, 1, D)
per-item modulation or a (B, T, D) per-token one) of the same rank and dtype. Shape changes (reshapes, slices)
stay outside, as views.
"""

from __future__ import annotations

from functools import partial

import mlx.core as mx


@partial(mx.compile, shapeless=True)
def modulate(normed: mx.array, scale_row: mx.array, scale_step: mx.array, shift_row: mx.array,
             shift_step: mx.array) -> mx.array:
    """``normed * (1 + scale) + shift`` where each of scale and shift is a scale-shift table row plus the
    matching slice of the timestep's AdaLN output (summed here rather than materialised per token)."""
    return normed * (1 + (scale_row + scale_step)) + (shift_row + shift_step)


@partial(mx.compile, shapeless=True)
def gated_residual(x: mx.array, update: mx.array, gate_row: mx.array, gate_step: mx.array) -> mx.array:
    """``x + update * gate`` with the gate a table row plus the AdaLN slice."""
    return x + update * (gate_row + gate_step)


@partial(mx.compile, shapeless=True)
def rotate(pairs: mx.array, swapped: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
    """RoPE on ``pairs`` (..., 2, m): ``(a, b) -> (a cos - b sin, b cos + a sin)``; ``swapped`` is ``pairs`` with
    the 2-axis reversed (a view). Multiplying ``b sin`` by -1 is exact, so this equals the subtraction."""
    sign = mx.array([[-1.0], [1.0]], dtype=pairs.dtype)
    return pairs * cos + swapped * sin * sign


@partial(mx.compile, shapeless=True)
def gate_heads(out: mx.array, logits: mx.array) -> mx.array:
    """LTX-2.3's per-head attention gate on (B, T, heads, head_dim): ``2 * sigmoid`` leaves a zero logit neutral."""
    return out * (2.0 * mx.sigmoid(logits))
