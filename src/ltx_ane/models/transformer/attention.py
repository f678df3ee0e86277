"""Multi-head attention as ltx-core's ``Attention``: full-width q/k RMSNorm, RoPE, optional per-head gates.

Parameter names (``to_q``, ``q_norm``, ``to_out.0`` ...) are the checkpoint's.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from ltx_ane.models.queue import settle
from ltx_ane.models.transformer.fused import gate_heads
from ltx_ane.models.transformer.rope import apply_rotary_emb


class Attention(nn.Module):
    def __init__(
        self,
        query_dim: int,
        context_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        norm_eps: float = 1e-6,
        apply_gated_attention: bool = False,
    ):
        super().__init__()
        inner_dim = heads * dim_head
        context_dim = query_dim if context_dim is None else context_dim
        self.heads, self.dim_head = heads, dim_head
        self.q_norm = nn.RMSNorm(inner_dim, eps=norm_eps)
        self.k_norm = nn.RMSNorm(inner_dim, eps=norm_eps)
        self.to_q = nn.Linear(query_dim, inner_dim)
        self.to_k = nn.Linear(context_dim, inner_dim)
        self.to_v = nn.Linear(context_dim, inner_dim)
        self.gated = apply_gated_attention
        if apply_gated_attention:
            self.to_gate_logits = nn.Linear(query_dim, heads)
        self.to_out = [nn.Linear(inner_dim, query_dim)]

    def __call__(
        self,
        x: mx.array,
        context: mx.array | None = None,
        mask: mx.array | None = None,
        pe: tuple[mx.array, mx.array] | None = None,
        k_pe: tuple[mx.array, mx.array] | None = None,
        perturbation_mask: mx.array | None = None,
        all_perturbed: bool = False,
        keys_values: tuple[mx.array, mx.array] | None = None,
        settle_projections: bool = False,
    ) -> mx.array:
        """(B, T, query_dim) -> (B, T, query_dim).

        ``mask`` is an additive bias broadcastable to (B, heads, T, S). A ``perturbation_mask`` (B, 1, 1) of 0 replaces
        that batch item's attention by its value projection (STG); ``all_perturbed`` does so for the whole batch
        without computing queries and keys. ``keys_values`` are ``self.keys_values(context)`` computed earlier
        (text cross-attention: the context is the same for every denoising step). ``settle_projections``: a sync
        point (``models.queue.settle``) on the queries, keys and values before the attention itself.
        """
        context = x if context is None else context
        if all_perturbed:
            out = self.to_v(context)
        else:
            k, v = self.keys_values(context) if keys_values is None else keys_values
            q = self.q_norm(self.to_q(x))
            if pe is not None:
                q = apply_rotary_emb(q, pe)
                k = apply_rotary_emb(k, pe if k_pe is None else k_pe)
            if settle_projections:
                settle([q, k, v])
            out = self._attend(q, k, v, mask)
            if perturbation_mask is not None:
                out = out * perturbation_mask + v * (1 - perturbation_mask)
        if self.gated:
            b, t, _ = out.shape
            logits = self.to_gate_logits(x)[..., None]
            out = gate_heads(out.reshape(b, t, self.heads, self.dim_head), logits).reshape(b, t, -1)
        return self.to_out[0](out)

    def keys_values(self, context: mx.array) -> tuple[mx.array, mx.array]:
        """Normed keys (before RoPE) and values of a (B, S, context_dim) context."""
        return self.k_norm(self.to_k(context)), self.to_v(context)

    def _attend(self, q: mx.array, k: mx.array, v: mx.array, mask: mx.array | None) -> mx.array:
        b, t, _ = q.shape
        q, k, v = (a.reshape(b, a.shape[1], self.heads, self.dim_head).transpose(0, 2, 1, 3) for a in (q, k, v))
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=1 / math.sqrt(self.dim_head), mask=mask)
        return out.transpose(0, 2, 1, 3).reshape(b, t, -1)
