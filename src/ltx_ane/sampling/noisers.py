"""Noising a state before denoising (ltx-core ``GaussianNoiser``), and blending the model's x0 back into it."""

from __future__ import annotations

import mlx.core as mx

from ltx_ane.errors import LtxAneError
from ltx_ane.sampling.state import LatentState


def add_noise(state: LatentState, noise: mx.array, noise_scale: float = 1.0) -> LatentState:
    """``noise * mask * scale + latent * (1 - mask * scale)`` per token; conditioned tokens (mask 0) stay clean.

    ``noise`` has the latent's shape; it is rounded to the latent dtype first, as ltx-core draws it in that dtype.
    Stage 2 re-noises the upscaled video and the carried audio with ``noise_scale = 0.909375``.
    """
    if tuple(noise.shape) != tuple(state.latent.shape):
        raise LtxAneError(f"noise has shape {tuple(noise.shape)}, the latent {tuple(state.latent.shape)}")
    scaled_mask = state.denoise_mask * mx.array(noise_scale, dtype=mx.float32)
    latent = noise.astype(state.latent.dtype) * scaled_mask + state.latent * (1 - scaled_mask)
    return state.with_latent(latent.astype(state.latent.dtype))


class GaussianNoiser:
    """Draws standard normal noise from an MLX key, one split per call (video, then audio, then stage 2 ...).

    MLX and torch generators differ, so a seed does not reproduce an ltx-pipelines video; parity tests pass the
    same arrays to ``add_noise`` on both sides instead.
    """

    def __init__(self, seed: int):
        self._key = mx.random.key(seed)

    def draw(self, shape: tuple[int, ...], dtype: mx.Dtype) -> mx.array:
        self._key, key = mx.random.split(self._key)
        return mx.random.normal(shape, dtype=dtype, key=key)

    def __call__(self, state: LatentState, noise_scale: float = 1.0) -> LatentState:
        return add_noise(state, self.draw(tuple(state.latent.shape), state.latent.dtype), noise_scale)


def blend_clean(denoised: mx.array, state: LatentState) -> mx.array:
    """``x0 * mask + clean * (1 - mask)`` in float32, back in ``denoised``'s dtype (ltx-pipelines
    ``post_process_latent``): conditioned tokens are pinned to their clean values after every model call."""
    mask = state.denoise_mask
    return (denoised * mask + state.clean_latent.astype(mx.float32) * (1 - mask)).astype(denoised.dtype)
