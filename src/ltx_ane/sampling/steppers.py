"""One-step updates: Euler (ltx-core ``EulerDiffusionStep``) and res2s (``Res2sDiffusionStep`` + ltx-pipelines'
``res2s.py`` Runge-Kutta coefficients). Sigmas are Python floats; arrays keep the caller's dtype."""

from __future__ import annotations

import math

import mlx.core as mx


def euler_step(sample: mx.array, denoised: mx.array, sigma: float, sigma_next: float) -> mx.array:
    """``x + (x - x0) / sigma * (sigma_next - sigma)`` in float32, rounded back to ``sample``'s dtype.

    The velocity is rounded to the sample dtype before the update, as ltx-core does (it matters in bf16).
    """
    if sigma == 0:
        raise ValueError("an Euler step cannot start at sigma 0")
    dt = mx.array(sigma_next, dtype=mx.float32) - mx.array(sigma, dtype=mx.float32)
    velocity = ((sample.astype(mx.float32) - denoised.astype(mx.float32)) / sigma).astype(sample.dtype)
    return (sample.astype(mx.float32) + velocity.astype(mx.float32) * dt).astype(sample.dtype)


def sde_coefficients(sigma_next: float, sigma_up: float) -> tuple[float, float, float]:
    """(alpha_ratio, sigma_down, sigma_up) of a variance-preserving step that adds ``sigma_up`` of fresh noise."""
    sigma_up = min(sigma_up, sigma_next * 0.9999)  # keeps the square root below real
    sigma_residual = math.sqrt(max(sigma_next**2 - sigma_up**2, 0.0))
    alpha_ratio = (1.0 - sigma_next) + sigma_residual
    return alpha_ratio, sigma_residual / alpha_ratio, sigma_up


def res2s_sde_step(sample: mx.array, denoised: mx.array, sigma: float, sigma_next: float, noise: mx.array) -> mx.array:
    """Move ``sample`` (at ``sigma``) to ``sigma_next`` along the line through ``denoised``, half the new noise fresh.

    Returns ``denoised`` unchanged when ``sigma_next`` is 0 (nothing to re-noise), as ltx-core does.
    """
    alpha_ratio, sigma_down, sigma_up = sde_coefficients(sigma_next, sigma_next * 0.5)
    if sigma_up == 0 or sigma_next == 0:
        return denoised
    eps_next = (sample - denoised) / (sigma - sigma_next)
    denoised_next = sample - sigma * eps_next
    return (alpha_ratio * (denoised_next + sigma_down * eps_next) + sigma_up * noise).astype(denoised.dtype)


def phi(order: int, neg_h: float) -> float:
    """phi_j(z) = (e^z - sum_{k<j} z^k / k!) / z^j, with its limit 1/j! at z = 0."""
    if abs(neg_h) < 1e-10:
        return 1.0 / math.factorial(order)
    remainder = sum(neg_h**k / math.factorial(k) for k in range(order))
    return (math.exp(neg_h) - remainder) / (neg_h**order)


def res2s_coefficients(h: float, c2: float = 0.5) -> tuple[float, float, float]:
    """(a21, b1, b2) of the two-stage exponential Runge-Kutta step of log-size ``h = log(sigma / sigma_next)``."""
    a21 = c2 * phi(1, -h * c2)
    b2 = phi(2, -h) / c2
    b1 = phi(1, -h) - b2
    return a21, b1, b2
