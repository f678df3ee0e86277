"""One audio-video transformer block, as ltx-core's ``BasicAVTransformerBlock``.

Order: video self-attention, video text cross-attention, the same for audio, then audio<->video cross-attention
(both directions read the norms of the streams taken once, before either update), then the feed-forwards.
Residual gates, shifts and scales come from the block's scale-shift tables plus the per-token AdaLN output.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace

import mlx.core as mx
import mlx.nn as nn

from ltx_ane.models.layers import FeedForward
from ltx_ane.models.queue import settle
from ltx_ane.models.transformer.attention import Attention
from ltx_ane.models.transformer.config import TransformerConfig
from ltx_ane.models.transformer.fused import gated_residual, modulate
from ltx_ane.models.transformer.perturbations import BatchedPerturbationConfig, PerturbationType


@dataclass(frozen=True)
class TransformerArgs:
    """One modality's prepared block inputs (ltx-core's ``TransformerArgs``)."""

    x: mx.array
    context: mx.array
    context_mask: mx.array | None
    text_keys_values: tuple[tuple[mx.array, mx.array], ...] | None  # per block, from LTXModel.prepare_context
    timesteps: tuple[mx.array, ...]  # coefficient x (B, T or 1, D): the AdaLN output split into its rows
    embedded_timestep: mx.array  # (B, T or 1, D)
    positional_embeddings: tuple[mx.array, mx.array]
    cross_positional_embeddings: tuple[mx.array, mx.array] | None
    cross_scale_shift_timestep: tuple[mx.array, ...] | None  # 4 x (B, 1, D), from the other modality's sigma
    cross_gate_timestep: mx.array | None  # (B, 1, D)
    enabled: bool
    prompt_timestep: tuple[mx.array, ...] | None = None  # 2 x (B, 1, D), LTX-2.3 text cross-attention AdaLN
    self_attention_mask: mx.array | None = None  # (B, 1, T, T) additive


# Sync points inside a block, in order: after the video self-attention's projections (before its attention), after
# the video self-attention, after the video text cross-attention, after the audio attention, after the audio-video
# cross-attention, after the video feed-forward's hidden layer, after the video feed-forward. Between two of them
# the video work is one to three matmuls wide; the block's end is the last.
SYNC_POINTS = ("video_projections", "video_self_attention", "video_attention", "audio_attention", "audio_video",
               "video_feed_forward_hidden", "video_feed_forward")


def rms_norm(x: mx.array, eps: float) -> mx.array:
    return mx.fast.rms_norm(x, None, eps)


def split_rows(values: mx.array, n: int) -> tuple[mx.array, ...]:
    """An (..., n * D) AdaLN output as n (..., D) views. Split once per forward and paired with a scale-shift
    table's rows in each block, they are added inside the fused kernels: ltx-core's (B, T, n, D) sum of table and
    AdaLN output is never written out, and building the graph takes no per-block slicing."""
    return tuple(mx.split(values, n, axis=-1))


def table_rows(table: mx.array, dtype) -> list[mx.array]:
    """The rows of an (n, D) scale-shift table as (1, D) arrays in the activations' dtype."""
    return mx.split(table if table.dtype == dtype else table.astype(dtype), table.shape[0], axis=0)




class BasicAVTransformerBlock(nn.Module):
    def __init__(self, idx: int, config: TransformerConfig):
        super().__init__()
        c = config
        self.idx, self.norm_eps = idx, c.norm_eps
        self.cross_attention_adaln = c.cross_attention_adaln

        def attention(query_dim, context_dim, heads, dim_head):
            return Attention(query_dim, context_dim, heads, dim_head, c.norm_eps, c.apply_gated_attention)

        video_heads, audio_heads = c.num_attention_heads, c.audio_num_attention_heads
        self.attn1 = attention(c.inner_dim, None, video_heads, c.attention_head_dim)
        self.attn2 = attention(c.inner_dim, c.cross_attention_dim, video_heads, c.attention_head_dim)
        self.ff = FeedForward(c.inner_dim, c.inner_dim)
        self.scale_shift_table = mx.zeros((c.adaln_coefficient, c.inner_dim))

        self.audio_attn1 = attention(c.audio_inner_dim, None, audio_heads, c.audio_attention_head_dim)
        self.audio_attn2 = attention(c.audio_inner_dim, c.audio_cross_attention_dim, audio_heads, c.audio_attention_head_dim)
        self.audio_ff = FeedForward(c.audio_inner_dim, c.audio_inner_dim)
        self.audio_scale_shift_table = mx.zeros((c.adaln_coefficient, c.audio_inner_dim))

        # Q from video, K/V from audio (and the reverse), at the audio width and head count.
        self.audio_to_video_attn = attention(c.inner_dim, c.audio_inner_dim, audio_heads, c.audio_attention_head_dim)
        self.video_to_audio_attn = attention(c.audio_inner_dim, c.inner_dim, audio_heads, c.audio_attention_head_dim)
        self.scale_shift_table_a2v_ca_audio = mx.zeros((5, c.audio_inner_dim))
        self.scale_shift_table_a2v_ca_video = mx.zeros((5, c.inner_dim))

        if c.cross_attention_adaln:
            self.prompt_scale_shift_table = mx.zeros((2, c.inner_dim))
            self.audio_prompt_scale_shift_table = mx.zeros((2, c.audio_inner_dim))

    def _self_attention(self, attn, rows, x, args: TransformerArgs, perturbations, kind: PerturbationType,
                        settle_projections: bool = False):
        shift, scale, gate = zip(rows[0:3], args.timesteps[0:3])
        normed = modulate(rms_norm(x, self.norm_eps), *scale, *shift)
        all_perturbed = perturbations.all_in_batch(kind, self.idx)
        partly = perturbations.any_in_batch(kind, self.idx) and not all_perturbed
        mask = perturbations.mask_like(kind, self.idx, x) if partly else None
        out = attn(normed, pe=args.positional_embeddings, mask=args.self_attention_mask,
                   perturbation_mask=mask, all_perturbed=all_perturbed, settle_projections=settle_projections)
        return gated_residual(x, out, *gate)

    def _text_cross_attention(self, attn, rows, prompt_table, x, args: TransformerArgs):
        if not self.cross_attention_adaln:
            keys_values = None if args.text_keys_values is None else args.text_keys_values[self.idx]
            return x + attn(rms_norm(x, self.norm_eps), context=args.context, mask=args.context_mask,
                            keys_values=keys_values)
        shift_q, scale_q, gate = zip(rows[6:9], args.timesteps[6:9])
        shift_kv, scale_kv = zip(table_rows(prompt_table, x.dtype), args.prompt_timestep)
        query = modulate(rms_norm(x, self.norm_eps), *scale_q, *shift_q)
        context = modulate(args.context, *scale_kv, *shift_kv)
        return gated_residual(x, attn(query, context=context, mask=args.context_mask), *gate)

    def _feed_forward(self, ff, rows, x, args: TransformerArgs, settle_hidden: bool = False):
        shift, scale, gate = zip(rows[3:6], args.timesteps[3:6])
        return gated_residual(x, ff(modulate(rms_norm(x, self.norm_eps), *scale, *shift), settle_hidden), *gate)

    def __call__(
        self,
        video: TransformerArgs | None,
        audio: TransformerArgs | None,
        perturbations: BatchedPerturbationConfig | None = None,
        sync: Collection[str] = (),
    ) -> tuple[TransformerArgs | None, TransformerArgs | None]:
        """``sync``: names of sync points (``models.queue.settle``) inside the block (of ``SYNC_POINTS``), so that a
        caller's queue bounds pieces smaller than a block; none: the caller settles the block's output."""

        def sync_point(name: str, *xs):
            present = [x for x in xs if x is not None]
            if present and name in sync:
                settle(present)

        if video is None and audio is None:
            raise ValueError("at least one of video or audio must be given")
        if perturbations is None:
            perturbations = BatchedPerturbationConfig.empty((video or audio).x.shape[0])
        vx = video.x if video is not None else None
        ax = audio.x if audio is not None else None
        run_vx = video is not None and video.enabled and vx.size > 0
        run_ax = audio is not None and audio.enabled and ax.size > 0
        # A disabled modality still serves as the other's keys and values.
        run_a2v = run_vx and audio is not None and ax.size > 0
        run_v2a = run_ax and video is not None and vx.size > 0

        video_rows = table_rows(self.scale_shift_table, vx.dtype) if run_vx else None
        audio_rows = table_rows(self.audio_scale_shift_table, ax.dtype) if run_ax else None
        if run_vx:
            vx = self._self_attention(self.attn1, video_rows, vx, video, perturbations,
                                      PerturbationType.SKIP_VIDEO_SELF_ATTN,
                                      settle_projections="video_projections" in sync)
            sync_point("video_self_attention", vx)
            vx = self._text_cross_attention(self.attn2, video_rows,
                                            getattr(self, "prompt_scale_shift_table", None), vx, video)
            sync_point("video_attention", vx)
        if run_ax:
            ax = self._self_attention(self.audio_attn1, audio_rows, ax, audio, perturbations,
                                      PerturbationType.SKIP_AUDIO_SELF_ATTN)
            ax = self._text_cross_attention(self.audio_attn2, audio_rows,
                                            getattr(self, "audio_prompt_scale_shift_table", None), ax, audio)
            sync_point("audio_attention", ax)

        if run_a2v or run_v2a:
            vx_norm, ax_norm = rms_norm(vx, self.norm_eps), rms_norm(ax, self.norm_eps)
            a2v, v2a = PerturbationType.SKIP_A2V_CROSS_ATTN, PerturbationType.SKIP_V2A_CROSS_ATTN
            if run_a2v and not perturbations.all_in_batch(a2v, self.idx):
                vx = self._av_cross(
                    self.audio_to_video_attn, vx, video, audio, vx_norm, ax_norm,
                    (self.scale_shift_table_a2v_ca_video, self.scale_shift_table_a2v_ca_audio), 0,
                    perturbations.mask_like(a2v, self.idx, vx) if perturbations.any_in_batch(a2v, self.idx) else None)
            if run_v2a and not perturbations.all_in_batch(v2a, self.idx):
                ax = self._av_cross(
                    self.video_to_audio_attn, ax, audio, video, ax_norm, vx_norm,
                    (self.scale_shift_table_a2v_ca_audio, self.scale_shift_table_a2v_ca_video), 2,
                    perturbations.mask_like(v2a, self.idx, ax) if perturbations.any_in_batch(v2a, self.idx) else None)
        if run_ax or run_a2v or run_v2a:
            sync_point("audio_video", vx, ax)

        if run_vx:
            vx = self._feed_forward(self.ff, video_rows, vx, video, "video_feed_forward_hidden" in sync)
            sync_point("video_feed_forward", vx)
        if run_ax:
            ax = self._feed_forward(self.audio_ff, audio_rows, ax, audio)
        return (replace(video, x=vx) if video is not None else None,
                replace(audio, x=ax) if audio is not None else None)

    @staticmethod
    def _av_cross(attn, x, query: TransformerArgs, source: TransformerArgs, query_norm, source_norm, tables,
                  first_row: int, keep: mx.array | None) -> mx.array:
        """``x`` plus the gated residual the query modality takes from the source modality. The tables' rows
        ``first_row`` and ``first_row + 1`` are scale and shift (0-1 audio-to-video, 2-3 video-to-audio), row 4 the
        gate. ``keep`` (B, 1, 1) zeroes isolated batch items; None when no item is isolated (a multiply by 1
        changes nothing, so it is skipped)."""
        query_rows, source_rows = (table_rows(table, x.dtype) for table in tables)
        rows = slice(first_row, first_row + 2)
        scale_q, shift_q = zip(query_rows[rows], query.cross_scale_shift_timestep[rows])
        scale_s, shift_s = zip(source_rows[rows], source.cross_scale_shift_timestep[rows])
        gate = (query_rows[4], query.cross_gate_timestep)
        out = attn(modulate(query_norm, *scale_q, *shift_q), context=modulate(source_norm, *scale_s, *shift_s),
                   pe=query.cross_positional_embeddings, k_pe=source.cross_positional_embeddings)
        return gated_residual(x, out if keep is None else out * keep, *gate)
