"""Shared helpers for the sampling parity tests: array conversion and the relative tolerance check."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ltx_ane.reference import require_reference  # noqa: E402

require_reference()  # ltx_pipelines imports torchaudio

TORCH_DTYPES = {mx.float32: torch.float32, mx.bfloat16: torch.bfloat16}


def to_torch(x: mx.array) -> torch.Tensor:
    return torch.from_numpy(np.array(x.astype(mx.float32))).to(TORCH_DTYPES[x.dtype])


def to_mx(t: torch.Tensor) -> mx.array:
    dtype = {torch.float32: mx.float32, torch.bfloat16: mx.bfloat16, torch.float64: mx.float32}[t.dtype]
    return mx.array(t.detach().to(torch.float64 if t.dtype == torch.float64 else torch.float32).numpy()).astype(dtype)


def to_ref_state(state):
    """An MLX ``LatentState`` as ltx-core's, array for array."""
    from ltx_core.types import LatentState as RefLatentState

    return RefLatentState(
        latent=to_torch(state.latent),
        denoise_mask=to_torch(state.denoise_mask),
        positions=to_torch(state.positions),
        clean_latent=to_torch(state.clean_latent),
        attention_mask=None if state.attention_mask is None else to_torch(state.attention_mask),
    )


def assert_close(actual: mx.array, expected: torch.Tensor, rel: float = 1e-5) -> float:
    """max|actual - expected| <= rel * max|expected|; returns the measured ratio."""
    a = np.array(actual.astype(mx.float32), dtype=np.float64)
    e = expected.detach().to(torch.float64).numpy()
    assert a.shape == e.shape, (a.shape, e.shape)
    scale = max(np.abs(e).max(), 1e-30)
    ratio = float(np.abs(a - e).max() / scale)
    assert ratio <= rel, f"max|mlx - ref| / max|ref| = {ratio:.3g} > {rel}"
    return ratio


def assert_equal(actual: mx.array, expected: torch.Tensor) -> None:
    """Bit-equal values (compared in float64) and the same dtype."""
    assert TORCH_DTYPES[actual.dtype] == expected.dtype, (actual.dtype, expected.dtype)
    np.testing.assert_array_equal(
        np.array(actual.astype(mx.float32), dtype=np.float64), expected.detach().to(torch.float64).numpy()
    )


def assert_state_matches(state, ref_state, exact: bool = True) -> None:
    """latent, clean latent, denoise mask, positions and attention mask of an MLX state against ltx-core's."""
    check = assert_equal if exact else assert_close
    for name in ("latent", "clean_latent", "denoise_mask", "positions"):
        check(getattr(state, name), getattr(ref_state, name))
    assert (state.attention_mask is None) == (ref_state.attention_mask is None)
    if state.attention_mask is not None:
        check(state.attention_mask, ref_state.attention_mask)
