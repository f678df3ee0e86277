"""The audio-video transformer (ltx-core's ``LTXModel``, audio-video type) and its ``X0Model`` wrapper.

Attribute paths equal the checkpoint keys under ``model.diffusion_model.``. Inputs are ``Modality`` records;
``model(video, audio, perturbations)`` returns the two velocities (None for a modality not given). A denoising loop
prepares the text once with ``model.prepare_context`` and passes it to every step as ``text=`` (see text_context.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Iterator

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ltx_ane.errors import LtxAneError
from ltx_ane.models.queue import queued, settle
from ltx_ane.models.transformer.block import SYNC_POINTS, BasicAVTransformerBlock, TransformerArgs, split_rows
from ltx_ane.models.transformer.config import TransformerConfig
from ltx_ane.models.transformer.embeddings import AdaLayerNormSingle, PixArtAlphaTextProjection
from ltx_ane.models.transformer.fused import modulate
from ltx_ane.models.transformer.modality import Modality
from ltx_ane.models.transformer.perturbations import BatchedPerturbationConfig
from ltx_ane.models.transformer.rope import precompute_freqs_cis
from ltx_ane.models.transformer.text_context import ContextCache, TextContext

if TYPE_CHECKING:
    from ltx_ane.models.transformer.streaming import BlockStreamer

# From this many video tokens (times batch) LTXModel queues 2 layers ahead, below it 3 (see LTXModel.queue_unit).
LONG_FORWARD_TOKENS = 4096

# Attribute-name prefix of each modality's own modules.
PREFIX = {"video": "", "audio": "audio_"}


class LTXModel(nn.Module):
    # Up to this many distinct timestep values per forward, AdaLN runs per value instead of per token (0: always
    # per token, as ltx-core).
    max_distinct_timesteps = 16
    # The forward runs piece by piece, each piece started on the device while the host builds the next, at most
    # a bound of pieces queued (see models/queue.py): a GPU backend keeps every buffer a queued piece uses until
    # the piece has run, so the pieces queued set the memory above the weights. A piece is the stretch between
    # two of ``layer_sync_points`` ("layer", block.SYNC_POINTS) or a whole block ("block"); "graph" builds one
    # lazy graph for the whole forward (e.g. to wrap the forward in a transform). Measured on an H200, 19B, against
    # ltx-core 1.0.0 in the same process (benchmarks/results/transformer-cuda*.md), what a forward adds above the
    # weights: at 6,144 video tokens 2 layers queued +1.07 GB at 0.93x ltx-core's time (ltx-core +1.20 GB), 1 layer
    # +1.03 GB at 1.05x, 3 layers +1.33 GB, 1 block +3.56 GB (an earlier run); at 1,536 tokens, where a layer is
    # short, 3 layers queued keep the host ahead (0.4-0.7x, +0.31-0.50 GB from run to run; ltx-core +0.35 GB).
    # Memory is held until a command buffer completes (MLX's CUDA backend), so a piece costs its intermediates in
    # full where torch reuses them in stream order.
    queue_unit: str = "layer"
    blocks_in_flight: int = 1
    layers_in_flight: int | None = None  # None: 3 below LONG_FORWARD_TOKENS video tokens (times batch), 2 from there
    layer_sync_points: tuple[str, ...] = SYNC_POINTS
    # Set by ``load_transformer(..., stream_blocks=True)``: the blocks then hold weights only while they run.
    block_streamer: BlockStreamer | None = None

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = c = config
        for side, dim, in_channels, out_channels in (
            ("video", c.inner_dim, c.in_channels, c.out_channels),
            ("audio", c.audio_inner_dim, c.audio_in_channels, c.audio_out_channels),
        ):
            p = PREFIX[side]
            setattr(self, f"{p}patchify_proj", nn.Linear(in_channels, dim))
            if c.has_caption_projection:
                setattr(self, f"{p}caption_projection", PixArtAlphaTextProjection(c.caption_channels, dim))
            setattr(self, f"{p}adaln_single", AdaLayerNormSingle(dim, c.adaln_coefficient))
            if c.cross_attention_adaln:
                setattr(self, f"{p}prompt_adaln_single", AdaLayerNormSingle(dim, 2))
            setattr(self, f"{p}scale_shift_table", mx.zeros((2, dim)))
            setattr(self, f"{p}proj_out", nn.Linear(dim, out_channels))
        self.av_ca_video_scale_shift_adaln_single = AdaLayerNormSingle(c.inner_dim, 4)
        self.av_ca_audio_scale_shift_adaln_single = AdaLayerNormSingle(c.audio_inner_dim, 4)
        self.av_ca_a2v_gate_adaln_single = AdaLayerNormSingle(c.inner_dim, 1)
        self.av_ca_v2a_gate_adaln_single = AdaLayerNormSingle(c.audio_inner_dim, 1)
        self.transformer_blocks = [BasicAVTransformerBlock(i, c) for i in range(c.num_layers)]

    def __call__(
        self,
        video: Modality | None,
        audio: Modality | None,
        perturbations: BatchedPerturbationConfig | None = None,
        text: ContextCache | None = None,
    ) -> tuple[mx.array | None, mx.array | None]:
        video_args = self.prepare("video", video, audio, text) if video is not None else None
        audio_args = self.prepare("audio", audio, video, text) if audio is not None else None
        # Each piece starts on the device while Python builds the next one's graph: otherwise the whole forward's
        # graph (~2,000 Python-level operations at 48 blocks) is built before any kernel runs. A streamed model
        # waits for each block before its weights are released.
        if self.queue_unit not in ("block", "layer", "graph"):
            raise ValueError(f"queue_unit must be 'block', 'layer' or 'graph', not {self.queue_unit!r}")
        unit = "block" if self.block_streamer is not None else self.queue_unit
        depth = {"block": 0 if self.block_streamer is not None else self.blocks_in_flight,
                 "layer": self.resolved_layers_in_flight(video), "graph": None}[unit]
        sync = self.layer_sync_points if unit == "layer" else ()
        unknown = set(sync) - set(SYNC_POINTS)
        if unknown:
            raise ValueError(f"unknown sync points {sorted(unknown)}; known: {SYNC_POINTS}")
        with queued(depth):
            for block in self.resident_blocks():
                video_args, audio_args = block(video_args, audio_args, perturbations, sync=sync)
                outputs = [args.x for args in (video_args, audio_args) if args is not None]
                # A streamed block's weights are released as the loop moves on and the next block's are read: it
                # must have run by then (a queue at depth 0 waits only before the next piece starts).
                if self.block_streamer is not None:
                    mx.eval(outputs)
                else:
                    settle(outputs)
        return (
            self.process_output("video", video_args) if video_args is not None else None,
            self.process_output("audio", audio_args) if audio_args is not None else None,
        )

    def resolved_layers_in_flight(self, video: Modality | None) -> int:
        """``layers_in_flight``, with None decided for this forward's video token count."""
        if self.layers_in_flight is not None:
            return self.layers_in_flight
        tokens = 0 if video is None else video.latent.shape[0] * video.latent.shape[1]
        return 2 if tokens >= LONG_FORWARD_TOKENS else 3

    def resident_blocks(self) -> Iterator[BasicAVTransformerBlock]:
        """The blocks in order, each with its weights while the caller uses it (a streamed model releases a block's
        weights when the next one is asked for: the caller evaluates what it computed with it first)."""
        for index, block in enumerate(self.transformer_blocks):
            if self.block_streamer is None:
                yield block
            else:
                with self.block_streamer.resident(index, block):
                    yield block

    def _module(self, side: str, name: str):
        return getattr(self, PREFIX[side] + name)

    def _side_geometry(self, side: str) -> tuple[int, int, tuple[int, ...]]:
        c = self.config
        if side == "video":
            return c.inner_dim, c.num_attention_heads, c.positional_embedding_max_pos
        return c.audio_inner_dim, c.audio_num_attention_heads, c.audio_positional_embedding_max_pos

    def _rope(self, positions, dim, heads, max_pos, dtype):
        c = self.config
        return precompute_freqs_cis(
            positions, dim, dtype, c.positional_embedding_theta, max_pos, heads, c.rope_type, c.double_precision_rope
        )

    def embed_timesteps(self, side: str, timesteps: mx.array, batch: int, dtype) -> tuple[mx.array, mx.array]:
        """(B, T[, 1]) per-token timesteps -> (B, T or 1, coefficient * D) modulation, (B, T or 1, D) embedded timestep.

        The AdaLN is a function of the timestep value alone and a step has few distinct values (one; two with a
        clean conditioning frame), so it runs once per distinct value instead of once per token (~1.4 TFLOP at
        19B and 6,144 tokens) and its rows are looked up. Where each batch item has a single value the result is
        (B, 1, ...): every block then broadcasts it instead of reading (T, 6 x D) per-token values. Reading the
        values waits for the timesteps to be computed (a small array)."""
        values = np.array(timesteps.astype(mx.float32)).reshape(batch, -1)
        distinct, index = np.unique(values, return_inverse=True)
        index = index.reshape(values.shape)
        if len(distinct) > self.max_distinct_timesteps:
            timesteps, index = timesteps.flatten(), None
        else:
            timesteps = mx.array(distinct).astype(timesteps.dtype)
            # One value per batch item: keep a single token axis entry.
            index = index[:, :1] if (index == index[:, :1]).all() else index
        scaled = timesteps * self.config.timestep_scale_multiplier
        modulation, embedded = self._module(side, "adaln_single")(scaled, dtype)
        if index is not None:
            modulation, embedded = modulation[mx.array(index)], embedded[mx.array(index)]
        return modulation.reshape(batch, -1, modulation.shape[-1]), embedded.reshape(batch, -1, embedded.shape[-1])

    def project_context(self, side: str, context: mx.array) -> mx.array:
        """(B, S, C) text features as the blocks read them (19B projects them here; LTX-2.3 already did)."""
        projected = context
        if self.config.has_caption_projection:
            projected = self._module(side, "caption_projection")(context)
        return projected.reshape(context.shape[0], -1, self._side_geometry(side)[0])

    def prepare_context(self, video_context: mx.array | None = None, audio_context: mx.array | None = None,
                        video_mask: mx.array | None = None, audio_mask: mx.array | None = None) -> ContextCache:
        """The text of one prompt (batch) as every forward reads it, evaluated now: projected context and, where
        they do not depend on the noise level (19B), each block's text keys and values. Masks as
        ``Modality.context_mask``."""

        sides = {side: (self.project_context(side, context), mask)
                 for side, context, mask in (("video", video_context, video_mask), ("audio", audio_context, audio_mask))
                 if context is not None}
        keys_values = {side: [] for side in sides}
        if not self.config.cross_attention_adaln:
            for block in self.resident_blocks():
                for side, (projected, _) in sides.items():
                    keys_values[side].append(getattr(block, PREFIX[side] + "attn2").keys_values(projected))
                if self.block_streamer is not None:
                    mx.eval([keys_values[side][-1] for side in sides])  # before the block's weights are released
        texts = {side: TextContext(projected, mask, tuple(keys_values[side]) if keys_values[side] else None)
                 for side, (projected, mask) in sides.items()}
        cache = ContextCache(texts.get("video"), texts.get("audio"))
        mx.eval([(t.context, t.keys_values) for t in texts.values()])
        return cache

    def _text(self, side: str, modality: Modality, text: ContextCache | None, batch: int) -> TextContext:
        """The prepared text for one modality, or the modality's own context projected now."""
        if text is None:
            return TextContext(self.project_context(side, modality.context), modality.context_mask, None)
        prepared = getattr(text, side)
        if prepared is None:
            raise LtxAneError(f"the prepared text holds no {side} context but a {side} latent was given")
        if prepared.context.shape[0] != batch:
            raise LtxAneError(f"the prepared {side} text has batch {prepared.context.shape[0]}, the latent {batch}")
        return prepared

    def prepare(self, side: str, modality: Modality, cross: Modality | None,
                text: ContextCache | None = None) -> TransformerArgs:
        """ltx-core's ``(MultiModal)TransformerArgsPreprocessor.prepare`` for one modality."""
        c = self.config
        dim, heads, max_pos = self._side_geometry(side)
        dtype = modality.latent.dtype
        x = self._module(side, "patchify_proj")(modality.latent)
        b = x.shape[0]
        prepared = self._text(side, modality, text, b)
        timesteps, embedded = self.embed_timesteps(side, modality.timesteps, b, dtype)
        prompt_timestep = None
        if c.cross_attention_adaln:
            sigma = (modality.sigma * c.timestep_scale_multiplier).flatten()
            prompt_modulation = self._module(side, "prompt_adaln_single")(sigma, dtype)[0]
            prompt_timestep = split_rows(prompt_modulation.reshape(b, -1, 2 * dim), 2)
        args = TransformerArgs(
            x=x,
            context=prepared.context,
            context_mask=context_bias(prepared.mask, dtype),
            text_keys_values=prepared.keys_values,
            timesteps=split_rows(timesteps, c.adaln_coefficient),
            embedded_timestep=embedded,
            positional_embeddings=self._rope(modality.positions, dim, heads, max_pos, dtype),
            cross_positional_embeddings=None,
            cross_scale_shift_timestep=None,
            cross_gate_timestep=None,
            enabled=modality.enabled,
            prompt_timestep=prompt_timestep,
            self_attention_mask=self_attention_bias(modality.attention_mask, dtype),
        )
        if cross is None:
            return args
        # The cross-modal AdaLN reads the *other* modality's scalar sigma; its gate is rescaled by
        # av_ca_timestep_scale_multiplier (1000 in the released files: the gate sees sigma x 1000 too).
        sigma = mx.broadcast_to(cross.sigma.reshape(-1, 1), (b, 1)) * c.timestep_scale_multiplier
        scale_shift = getattr(self, f"av_ca_{side}_scale_shift_adaln_single")(sigma.flatten(), dtype)[0]
        gate_adaln = self.av_ca_a2v_gate_adaln_single if side == "video" else self.av_ca_v2a_gate_adaln_single
        gate_factor = c.av_ca_timestep_scale_multiplier / c.timestep_scale_multiplier
        gate = gate_adaln(sigma.flatten() * gate_factor, dtype)[0]
        return replace(
            args,
            cross_positional_embeddings=self._rope(
                modality.positions[:, 0:1], c.audio_cross_attention_dim, heads, (c.cross_pe_max_pos,), dtype
            ),
            cross_scale_shift_timestep=split_rows(scale_shift.reshape(b, -1, scale_shift.shape[-1]), 4),
            cross_gate_timestep=gate.reshape(b, -1, gate.shape[-1]),
        )

    def process_output(self, side: str, args: TransformerArgs) -> mx.array:
        table = self._module(side, "scale_shift_table").astype(args.x.dtype)
        embedded = args.embedded_timestep  # rows 0 (shift) and 1 (scale) both add the embedded timestep
        x = mx.fast.layer_norm(args.x, None, None, self.config.norm_eps)
        return self._module(side, "proj_out")(modulate(x, table[1], embedded, table[0], embedded))


class X0Model(nn.Module):
    """Denoised latents ``latent - velocity * timesteps`` per token (float32 arithmetic, latent dtype out)."""

    def __init__(self, velocity_model: LTXModel):
        super().__init__()
        self.velocity_model = velocity_model

    def __call__(self, video: Modality | None, audio: Modality | None,
                 perturbations: BatchedPerturbationConfig | None = None, text: ContextCache | None = None):
        vx, ax = self.velocity_model(video, audio, perturbations, text)
        return (
            to_denoised(video.latent, vx, video.timesteps) if vx is not None else None,
            to_denoised(audio.latent, ax, audio.timesteps) if ax is not None else None,
        )


def to_denoised(latent: mx.array, velocity: mx.array, timesteps: mx.array) -> mx.array:
    timesteps = timesteps.reshape(*timesteps.shape[:2], 1).astype(mx.float32)
    return (latent.astype(mx.float32) - velocity.astype(mx.float32) * timesteps).astype(latent.dtype)


def context_bias(context_mask: mx.array | None, dtype) -> mx.array | None:
    """A (B, S) keep-mask -> (B, 1, 1, S) additive bias (0 or -max); a float mask is already a bias."""
    if context_mask is None or mx.issubdtype(context_mask.dtype, mx.floating):
        return context_mask
    bias = (context_mask.astype(dtype) - 1) * mx.finfo(dtype).max
    return bias.reshape(context_mask.shape[0], 1, -1, context_mask.shape[-1])


def self_attention_bias(attention_mask: mx.array | None, dtype) -> mx.array | None:
    """(B, T, T) attention weights in [0, 1] -> (B, 1, T, T) additive log bias; 0 -> the dtype's lowest value."""
    if attention_mask is None:
        return None
    finfo = mx.finfo(dtype)
    log = mx.log(mx.maximum(attention_mask, finfo.smallest_normal)).astype(dtype)
    return mx.where(attention_mask > 0, log, mx.array(finfo.min, dtype=dtype))[:, None]
