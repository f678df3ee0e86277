"""Denoising loops over video and audio together (ltx-pipelines ``samplers.py``), as generators yielding per step.

A denoise function ``denoise(video_state, audio_state, sigma, step) -> (x0_video, x0_audio)`` stands for the model
(the transformer, ``guiders.guided_denoise`` around it, or a test's fake). After every model call the x0 is blended
with the clean latent through the denoise mask, so conditioned tokens never move.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from ltx_ane.sampling.conditioning import AppendKeyframe, ReplaceLatentFrame, apply_conditionings
from ltx_ane.sampling.noisers import blend_clean
from ltx_ane.sampling.state import AudioLatentTools, LatentState, VideoLatentTools
from ltx_ane.sampling.steppers import euler_step, res2s_coefficients, res2s_sde_step

DenoiseFn = Callable[[LatentState, LatentState, float, int], tuple[mx.array, mx.array]]
NoiseFn = Callable[[tuple[int, ...]], mx.array]
Sigmas = mx.array | Sequence[float]

# res2s cannot step to sigma 0 (its log step size would be infinite): it steps to this sigma instead and finishes with
# one plain denoise there.
RES2S_FINAL_SIGMA = 0.0011


@dataclass(frozen=True)
class LoopStep:
    """Yielded after each step: the states after it and the (blended) x0 it was computed from, for previews."""

    index: int
    total: int
    sigma: float
    video: LatentState
    audio: LatentState
    denoised_video: mx.array
    denoised_audio: mx.array


def noised_state(
    tools: VideoLatentTools | AudioLatentTools,
    dtype: mx.Dtype,
    noiser: Callable[[LatentState, float], LatentState],
    conditionings: Sequence[ReplaceLatentFrame | AppendKeyframe] = (),
    noise_scale: float = 1.0,
    initial_latent: mx.array | None = None,
) -> LatentState:
    """Initial state, then conditioning, then noise (ltx-pipelines ``create_noised_state``). ``noiser`` is a
    ``GaussianNoiser`` or ``lambda state, scale: add_noise(state, given_noise, scale)``."""
    state = tools.initial_state(dtype, initial_latent)
    if conditionings:
        state = apply_conditionings(state, list(conditionings), tools)
    return noiser(state, noise_scale)


def _float_list(sigmas: Sigmas) -> list[float]:
    """Sigma values as Python floats holding the float32 values the reference loops index."""
    return [float(s) for s in np.asarray(sigmas, dtype=np.float32)]


def euler_loop(sigmas: Sigmas, video: LatentState, audio: LatentState, denoise: DenoiseFn) -> Iterator[LoopStep]:
    """First-order loop: one model call per step (distilled, one-stage, two-stage, keyframe pipelines)."""
    values = _float_list(sigmas)
    total = len(values) - 1
    for index in range(total):
        sigma, sigma_next = values[index], values[index + 1]
        x0_video, x0_audio = denoise(video, audio, sigma, index)
        x0_video, x0_audio = blend_clean(x0_video, video), blend_clean(x0_audio, audio)
        video = video.with_latent(euler_step(video.latent, x0_video, sigma, sigma_next))
        audio = audio.with_latent(euler_step(audio.latent, x0_audio, sigma, sigma_next))
        mx.eval(video.latent, audio.latent)  # one step's graph at a time
        yield LoopStep(index, total, sigma, video, audio, x0_video, x0_audio)


def normalize_sde_noise(noise: mx.array) -> mx.array:
    """Standardize over the whole array, then over the last two axes (ltx-pipelines ``_get_new_noise``)."""
    noise = (noise - noise.mean()) / mx.sqrt(mx.var(noise, ddof=1))
    mean = noise.mean(axis=(-2, -1), keepdims=True)
    std = mx.sqrt(mx.var(noise, axis=(-2, -1), keepdims=True, ddof=1))
    return (noise - mean) / std


class Res2sNoise:
    """Seeded MLX sources of res2s SDE noise: ``step`` (seed) and ``substep`` (seed + 10000), as ltx-pipelines
    seeds its two generators. Parity tests pass their own callables instead."""

    def __init__(self, seed: int):
        self._keys = {"step": mx.random.key(seed), "substep": mx.random.key(seed + 10000)}

    def _draw(self, which: str, shape: tuple[int, ...]) -> mx.array:
        self._keys[which], key = mx.random.split(self._keys[which])
        return normalize_sde_noise(mx.random.normal(shape, dtype=mx.float32, key=key))

    def step(self, shape: tuple[int, ...]) -> mx.array:
        return self._draw("step", shape)

    def substep(self, shape: tuple[int, ...]) -> mx.array:
        return self._draw("substep", shape)


def res2s_loop(
    sigmas: Sigmas,
    video: LatentState,
    audio: LatentState,
    denoise: DenoiseFn,
    step_noise: NoiseFn,
    substep_noise: NoiseFn,
    bongmath: bool = True,
    bongmath_max_iter: int = 100,
    model_dtype: mx.Dtype | None = None,
) -> Iterator[LoopStep]:
    """Second-order exponential Runge-Kutta with SDE noise (the HQ pipeline's res_2s, ltx-pipelines' legacy mode).

    Per step: x0 at sigma; a midpoint at sqrt(sigma * sigma_next) re-noised with ``substep_noise``; the anchor
    refined by fixed-point ("bong") iteration while h < 0.5 and sigma > 0.03; x0 at the midpoint (called with step
    index 0, as ltx-pipelines does); the combined step re-noised with ``step_noise``. Each noise call gets the
    token shape and returns standardized noise, video first then audio. A schedule ending in 0 steps to 0.0011
    and ends with one more denoise (the last yield). The latents are rounded to ``model_dtype`` (default: the
    video latent's dtype) between steps; the arithmetic is float32.
    """
    model_dtype = model_dtype or video.latent.dtype
    values = _float_list(sigmas)
    full_steps = len(values) - 1
    finishes_at_zero = values[-1] == 0
    if finishes_at_zero:
        values = values[:-1] + [float(np.float32(RES2S_FINAL_SIGMA)), 0.0]
    total = full_steps + (1 if finishes_at_zero else 0)

    def inject(
        state: LatentState, anchor: mx.array, target: mx.array, sigma: float, sigma_next: float, noise: NoiseFn
    ) -> mx.array:
        noised = res2s_sde_step(anchor, target, sigma, sigma_next, noise(tuple(anchor.shape)))
        return blend_clean(noised, state)

    for index in range(full_steps):
        sigma, sigma_next = values[index], values[index + 1]
        h = -math.log(sigma_next / sigma)
        a21, b1, b2 = res2s_coefficients(h)
        sub_sigma = math.sqrt(sigma * sigma_next)

        x0_1 = denoise(video, audio, sigma, index)
        x0_1 = (blend_clean(x0_1[0], video), blend_clean(x0_1[1], audio))
        results = []
        for state, x0 in ((video, x0_1[0]), (audio, x0_1[1])):
            anchor = state.latent.astype(mx.float32)
            eps_1 = x0.astype(mx.float32) - anchor
            midpoint = inject(state, anchor, anchor + h * a21 * eps_1, sigma, sub_sigma, substep_noise)
            if bongmath and h < 0.5 and sigma > 0.03:
                for _ in range(bongmath_max_iter):
                    anchor = midpoint - h * a21 * eps_1
                    eps_1 = x0.astype(mx.float32) - anchor
            results.append((anchor, eps_1, midpoint))
        mid_video = video.with_latent(results[0][2].astype(model_dtype))
        mid_audio = audio.with_latent(results[1][2].astype(model_dtype))
        x0_2 = denoise(mid_video, mid_audio, sub_sigma, 0)

        new_latents = []
        for state, x0, (anchor, eps_1, _) in zip((video, audio), x0_2, results):
            eps_2 = blend_clean(x0, state).astype(mx.float32) - anchor
            combined = anchor + h * (b1 * eps_1 + b2 * eps_2)
            new_latents.append(inject(state, anchor, combined, sigma, sigma_next, step_noise).astype(model_dtype))
        video, audio = video.with_latent(new_latents[0]), audio.with_latent(new_latents[1])
        mx.eval(video.latent, audio.latent)
        yield LoopStep(index, total, sigma, video, audio, x0_1[0], x0_1[1])

    if finishes_at_zero:
        sigma = values[full_steps]
        x0_video, x0_audio = denoise(video, audio, sigma, full_steps)
        x0_video, x0_audio = blend_clean(x0_video, video), blend_clean(x0_audio, audio)
        video = video.with_latent(x0_video.astype(model_dtype))
        audio = audio.with_latent(x0_audio.astype(model_dtype))
        mx.eval(video.latent, audio.latent)
        yield LoopStep(full_steps, total, sigma, video, audio, x0_video, x0_audio)


def run_to_end(loop: Iterator[LoopStep]) -> tuple[LatentState, LatentState]:
    """Drain a loop; the final (video, audio) states."""
    last = None
    for last in loop:
        pass
    if last is None:
        raise ValueError("the sigma schedule has no steps")
    return last.video, last.audio
