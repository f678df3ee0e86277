"""Sigma schedules (ltx-core ``schedulers.py`` and ltx-pipelines' constants), float32 arrays from 1 down to 0."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

from ltx_ane.errors import LtxAneError

# The distilled model's 8 steps (= linear_quadratic_sigmas(8)) and the stage-2 refinement tail that re-noises an
# upscaled latent at 0.909375.
DISTILLED_SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0)
STAGE_2_SIGMAS = (0.909375, 0.725, 0.421875, 0.0)

_BASE_SHIFT_TOKENS = 1024
_MAX_SHIFT_TOKENS = 4096


def _check_steps(steps: int, minimum: int = 1) -> None:
    if steps < minimum:
        raise LtxAneError(f"the number of denoising steps must be at least {minimum}, got {steps}")


def ltx2_sigmas(
    steps: int,
    tokens: int = _MAX_SHIFT_TOKENS,
    max_shift: float = 2.05,
    base_shift: float = 0.95,
    stretch: bool = True,
    terminal: float = 0.1,
) -> mx.array:
    """``LTX2Scheduler``: a linear grid shifted by the video token count and stretched so the last sigma > 0 is
    ``terminal``. The one-stage and two-stage dev pipelines pass no latent (4,096 tokens); the HQ pipeline passes its
    stage-1 latent, ``tokens = F * h * w``."""
    # The stretch needs two non-zero sigmas; with one, ltx-core's result depends on rounding (0.1 or NaN).
    _check_steps(steps, minimum=2)
    # float32 in ltx-core's order of operations (torch evaluates ``scalar / tensor`` as ``scalar * (1 / tensor)``).
    # torch's CPU linspace rounds differently by SIMD width (an ulp here and there); the exact grid rounded once
    # is as close as any.
    sigmas = np.linspace(1.0, 0.0, steps + 1, dtype=np.float32)
    slope = (max_shift - base_shift) / (_MAX_SHIFT_TOKENS - _BASE_SHIFT_TOKENS)
    shift = np.float32(math.exp(tokens * slope + (base_shift - slope * _BASE_SHIFT_TOKENS)))
    with np.errstate(divide="ignore"):
        shifted = shift * (np.float32(1) / (shift + (np.float32(1) / sigmas - np.float32(1))))
    sigmas = np.where(sigmas != 0, shifted, np.float32(0)).astype(np.float32)
    if stretch:
        nonzero = sigmas != 0
        one_minus = np.float32(1) - sigmas[nonzero]
        scale = one_minus[-1] / np.float32(1.0 - terminal)
        sigmas[nonzero] = np.float32(1) - one_minus / scale
    return mx.array(sigmas)


def linear_quadratic_sigmas(steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None) -> mx.array:
    """``LinearQuadraticScheduler``: linear from 1 to 1 - ``threshold_noise`` over half the steps, then
    quadratic to 0."""
    _check_steps(steps)
    if steps == 1:
        return mx.array([1.0, 0.0], dtype=mx.float32)
    if linear_steps is None:
        linear_steps = steps // 2
    schedule = [i * threshold_noise / linear_steps for i in range(linear_steps)]
    step_diff = linear_steps - threshold_noise * steps
    quadratic_steps = steps - linear_steps
    if quadratic_steps > 0:
        quadratic_coef = step_diff / (linear_steps * quadratic_steps**2)
        linear_coef = threshold_noise / linear_steps - 2 * step_diff / (quadratic_steps**2)
        const = quadratic_coef * (linear_steps**2)
        schedule += [quadratic_coef * (i**2) + linear_coef * i + const for i in range(linear_steps, steps)]
    return mx.array([1.0 - x for x in schedule + [1.0]], dtype=mx.float32)
