"""The latent state the denoising loops carry, and the tools that build and tear it down (ltx-core ``tools.py``).

A state holds patchified tokens: ``latent`` and ``clean_latent`` (B, T, C) in the model dtype, ``denoise_mask``
(B, T, 1) float32 (1 = denoise fully, 0 = keep clean; the transformer's per-token timestep is ``mask * sigma``),
``positions`` and an optional (B, T, T) self-attention ``attention_mask`` built by conditioning items. Conditioning
may append tokens after the T noisy ones; ``clear_conditioning`` drops them again before unpatchifying.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import mlx.core as mx

from ltx_ane.errors import LtxAneError
from ltx_ane.sampling.patchify import (
    AudioLatentShape,
    VideoLatentShape,
    audio_positions,
    patchify_audio,
    patchify_video,
    unpatchify_audio,
    unpatchify_video,
    video_positions,
)


@dataclass(frozen=True)
class LatentState:
    latent: mx.array
    denoise_mask: mx.array
    positions: mx.array
    clean_latent: mx.array
    attention_mask: mx.array | None = None

    def with_latent(self, latent: mx.array) -> LatentState:
        return replace(self, latent=latent)


def _check_initial_latent(initial_latent: mx.array, expected: tuple[int, ...]) -> None:
    if tuple(initial_latent.shape) != expected:
        raise LtxAneError(f"initial latent has shape {tuple(initial_latent.shape)}, expected {expected}")


@dataclass(frozen=True)
class VideoLatentTools:
    """Builds video states for one target latent shape at one frame rate."""

    shape: VideoLatentShape
    fps: float

    def initial_state(self, dtype: mx.Dtype, initial_latent: mx.array | None = None) -> LatentState:
        """A zero (or ``initial_latent``) state to be denoised everywhere; positions rounded to ``dtype`` as in
        ltx-core."""
        if initial_latent is None:
            initial_latent = mx.zeros(tuple(self.shape), dtype=dtype)
        _check_initial_latent(initial_latent, tuple(self.shape))
        tokens = patchify_video(initial_latent)
        return LatentState(
            latent=tokens,
            denoise_mask=mx.ones((self.shape.batch, self.shape.token_count(), 1), dtype=mx.float32),
            positions=video_positions(self.shape, self.fps).astype(dtype),
            clean_latent=tokens,
        )

    def unpatchify(self, state: LatentState) -> LatentState:
        """Tokens back to (B, C, F, h, w) latents and a (B, 1, F, h, w) mask; call ``clear_conditioning`` first."""
        return replace(
            state,
            latent=unpatchify_video(state.latent, self.shape),
            clean_latent=unpatchify_video(state.clean_latent, self.shape),
            denoise_mask=unpatchify_video(state.denoise_mask, self.shape),
        )

    def clear_conditioning(self, state: LatentState) -> LatentState:
        return _clear_conditioning(state, self.shape.token_count())


@dataclass(frozen=True)
class AudioLatentTools:
    """Builds audio states; audio positions stay float32 (ltx-core does not round them)."""

    shape: AudioLatentShape

    def initial_state(self, dtype: mx.Dtype, initial_latent: mx.array | None = None) -> LatentState:
        if initial_latent is None:
            initial_latent = mx.zeros(tuple(self.shape), dtype=dtype)
        _check_initial_latent(initial_latent, tuple(self.shape))
        tokens = patchify_audio(initial_latent)
        return LatentState(
            latent=tokens,
            denoise_mask=mx.ones((self.shape.batch, self.shape.frames, 1), dtype=mx.float32),
            positions=audio_positions(self.shape),
            clean_latent=tokens,
        )

    def unpatchify(self, state: LatentState) -> LatentState:
        """Tokens back to (B, C, T, mel) latents and a (B, 1, T, 1) mask."""
        return replace(
            state,
            latent=unpatchify_audio(state.latent, self.shape.channels, self.shape.mel_bins),
            clean_latent=unpatchify_audio(state.clean_latent, self.shape.channels, self.shape.mel_bins),
            denoise_mask=unpatchify_audio(state.denoise_mask, 1, 1),
        )

    def clear_conditioning(self, state: LatentState) -> LatentState:
        return _clear_conditioning(state, self.shape.token_count())


def _clear_conditioning(state: LatentState, num_tokens: int) -> LatentState:
    """Keep the first ``num_tokens`` (the generated ones); the mask becomes all ones as in ltx-core."""
    return LatentState(
        latent=state.latent[:, :num_tokens],
        denoise_mask=mx.ones_like(state.denoise_mask)[:, :num_tokens],
        positions=state.positions[:, :, :num_tokens],
        clean_latent=state.clean_latent[:, :num_tokens],
        attention_mask=None,
    )
