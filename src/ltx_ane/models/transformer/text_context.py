"""Text conditioning prepared once per prompt and reused by every denoising step.

The 19B caption projection and the keys and values of every block's text cross-attention depend only on the text
features, not on the latent or the noise level, yet a plain forward recomputes them each time: 4.2 TFLOP at 19B,
2 % of a forward at 6,144 video tokens and 9 % at 1,536. ``LTXModel.prepare_context`` computes them once; handing
the result to each step's forward gives the same velocities. The price is memory: 48 blocks of keys and values over
1,024 text tokens, (2 x 4,096 + 2 x 2,048) values per token and block, 1.2 GB in bf16 per prompt (batch item).

LTX-2.3 modulates the text by the step's noise level before its keys and values (``cross_attention_adaln``), so
there only the context itself is kept and the keys and values stay per forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx


@dataclass(frozen=True)
class TextContext:
    """One modality's text as the blocks read it."""

    context: mx.array  # (B, S, D), after the caption projection where the model has one
    mask: mx.array | None  # as ``Modality.context_mask``
    keys_values: tuple[tuple[mx.array, mx.array], ...] | None  # per block: text cross-attention K (normed) and V


@dataclass(frozen=True)
class ContextCache:
    """What ``LTXModel.prepare_context`` returns; passed as ``text=`` it replaces the modalities' context and mask."""

    video: TextContext | None
    audio: TextContext | None
