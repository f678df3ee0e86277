"""The upscalers' CUDA kernels for GroupNorm + SiLU against float64 numpy and against the MLX ops they replace.

The kernels run only on MLX's CUDA backend (the lent GPU machine: ``pytest tests/models/test_upscaler_fused.py``, and
``LTX_ANE_SLOW_TESTS=1 MLX_ENABLE_TF32=0 pytest tests/models/test_upsampler.py`` for the full-width upscalers, which
use it, against ltx-core). Elsewhere these tests skip.
"""

from __future__ import annotations

import os

import mlx.core as mx
import numpy as np
import pytest

from ltx_ane.models import fused
from ltx_ane.models.upscaler import model as upscaler_model

CUDA = pytest.mark.skipif(
    not (mx.cuda.is_available() and mx.default_device() == mx.gpu), reason="MLX's CUDA backend only (the GPU machine)"
)


@pytest.mark.parametrize(
    "channels, dtype, fits",
    [(1024, mx.bfloat16, True), (512, mx.bfloat16, True), (256, mx.bfloat16, True), (128, mx.bfloat16, False),
     (64, mx.bfloat16, False), (1024, mx.float32, True), (512, mx.float32, True), (96, mx.float32, False), (768, mx.bfloat16, False),
     (1000, mx.bfloat16, False)],
)
def test_layout_a_group_is_whole_loads_and_warps_are_full(channels, dtype, fits):
    assert fused.group_layout_fits(channels, dtype, 32) == fits


def numpy_moments(x: np.ndarray, bias: np.ndarray | None, groups: int):
    b, c = x.shape[0], x.shape[-1]
    y = x.reshape(b, -1, c).astype(np.float64) + (0 if bias is None else bias.astype(np.float64))
    y = y.reshape(b, -1, groups, c // groups).transpose(0, 2, 1, 3).reshape(b, groups, -1)
    mean = y.mean(axis=-1)
    return mean, ((y - mean[..., None]) ** 2).sum(axis=-1), y.shape[-1]


@CUDA
@pytest.mark.parametrize(
    "shape, dtype, offset",
    [((2, 37, 256), mx.float32, 0.0), ((1, 3, 7, 11, 512), mx.bfloat16, 0.0), ((1, 16, 22, 40, 1024), mx.bfloat16, 0.0),
     ((2, 6144, 512), mx.float16, 0.0), ((1, 4096, 1024), mx.float32, 50.0), ((1, 100, 512), mx.bfloat16, 20.0)],
)
@pytest.mark.parametrize("with_bias", [False, True])
def test_kernel_matches_float64(shape, dtype, offset, with_bias):
    """Including a mean far from zero against the spread (the shifted sums must not cancel) and a last block of
    fewer positions than the others."""
    x = (mx.random.normal(shape, key=mx.random.key(0)) * 0.1 + offset).astype(dtype)
    bias = mx.random.normal((shape[-1],), key=mx.random.key(1)).astype(dtype) if with_bias else None
    assert fused.group_norm_available(x, 32)
    moments, count = fused.group_moments(x, 32, bias)
    mean, m2 = moments[..., 0], moments[..., 1]
    ref_mean, ref_m2, ref_count = numpy_moments(
        np.array(x.astype(mx.float32)), None if bias is None else np.array(bias.astype(mx.float32)), 32)
    assert count == ref_count
    spread = np.sqrt(ref_m2 / ref_count)
    assert np.abs(np.array(mean) - ref_mean).max() <= 1e-5 * np.abs(ref_mean).max() + 1e-4 * spread.max()
    assert np.abs(np.array(m2) - ref_m2).max() <= 1e-3 * ref_m2.max()


@CUDA
@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
@pytest.mark.parametrize("with_bias, with_residual", [(False, False), (True, False), (True, True)])
def test_group_norm_silu_with_the_kernels_matches_the_mlx_ops(dtype, with_bias, with_residual, monkeypatch):
    """GroupNorm.norm_silu and GroupMoments through the kernels equal the ops path: to float32 rounding in float32,
    to one bf16 rounding step in bf16 (both compute in float32 and round once)."""
    x = (mx.random.normal((1, 4, 6, 8, 512), key=mx.random.key(2)) * 2 + 0.5).astype(dtype)
    bias = mx.random.normal((512,), key=mx.random.key(3)).astype(dtype) if with_bias else None
    residual = mx.random.normal(x.shape, key=mx.random.key(4)).astype(dtype) if with_residual else None
    norm = upscaler_model.GroupNorm(512)
    norm.weight = mx.random.normal((512,), key=mx.random.key(5)).astype(dtype)
    norm.bias = mx.random.normal((512,), key=mx.random.key(6)).astype(dtype)
    calls = []
    kernel = fused.group_moments
    monkeypatch.setattr(fused, "group_moments", lambda *a: calls.append(1) or kernel(*a))
    with_kernel = [np.array(y.astype(mx.float32)) for y in (norm.norm_silu(x, bias, residual), norm(x))]
    assert len(calls) == 2
    monkeypatch.setattr(fused, "group_norm_available", lambda x, groups: False)
    without = [np.array(y.astype(mx.float32)) for y in (norm.norm_silu(x, bias, residual), norm(x))]
    tol = 1e-5 if dtype == mx.float32 else 2**-7
    for a, b in zip(with_kernel, without):
        assert np.abs(a - b).max() <= tol * np.abs(b).max()


@CUDA
def test_group_norm_silu_is_exact_against_float64_and_writes_nothing_but_its_output():
    """Against float64 numpy (a mean far from zero included), and the call's peak is its output and a few floats per
    group: the ops path's float32 copies are what the kernels exist to avoid."""
    shape, groups = (1, 16, 22, 40, 1024), 32
    x = (mx.random.normal(shape, key=mx.random.key(7)) + 8.0).astype(mx.bfloat16)
    bias = mx.random.normal((1024,), key=mx.random.key(8)).astype(mx.bfloat16)
    residual = mx.random.normal(shape, key=mx.random.key(9)).astype(mx.bfloat16)
    weight = mx.random.normal((1024,), key=mx.random.key(10)).astype(mx.bfloat16)
    beta = mx.random.normal((1024,), key=mx.random.key(11)).astype(mx.bfloat16)
    mx.eval(x, bias, residual, weight, beta)
    fused.group_norm_silu(x, groups, 1e-5, weight, beta, bias, residual)  # kernels built outside the measurement
    mx.synchronize()
    mx.clear_cache()
    before = mx.get_active_memory()
    mx.reset_peak_memory()
    out = fused.group_norm_silu(x, groups, 1e-5, weight, beta, bias, residual)
    mx.eval(out)
    assert mx.get_peak_memory() - before <= out.nbytes + 1_000_000
    f64 = lambda a: np.array(a.astype(mx.float32)).astype(np.float64)
    y = (f64(x) + f64(bias)).reshape(1, -1, groups, 1024 // groups)
    mean = y.mean(axis=(1, 3), keepdims=True)
    var = y.var(axis=(1, 3), keepdims=True)
    y = ((y - mean) / np.sqrt(var + 1e-5)).reshape(shape) * f64(weight) + f64(beta) + f64(residual)
    ref = y / (1 + np.exp(-y))
    assert np.abs(f64(out) - ref).max() <= 2**-7 * np.abs(ref).max()


@pytest.mark.skipif(os.environ.get("MLX_ENABLE_TF32") != "0", reason="fp32 parity on a GPU needs MLX_ENABLE_TF32=0")
@CUDA
@pytest.mark.parametrize("kind", ["spatial", "temporal"])
def test_upscaler_at_256_channels_with_the_kernel_matches_ltx_core(kind, tmp_path, monkeypatch):
    from tests.models.test_upsampler import FP32_TOL, latent, rel_err, run_mlx, run_reference, small_config, write_upscaler
    from ltx_ane.models.loading import Source
    from ltx_ane.models.upscaler.loader import load_upscaler

    cfg = small_config(kind, mid=256, blocks=2)
    path = tmp_path / "up.safetensors"
    ref_model = write_upscaler(path, cfg)
    calls = []
    kernel = fused.group_moments
    monkeypatch.setattr(fused, "group_moments", lambda *a: calls.append(1) or kernel(*a))
    x = latent((1, 128, 3, 4, 5))
    for compiled in (False, True):
        model = load_upscaler(Source(checkpoint=str(path)), "fp32")
        model.compile = compiled
        assert rel_err(run_reference(ref_model, x), run_mlx(model, x)) <= FP32_TOL
    assert calls


@CUDA
@pytest.mark.parametrize("with_residual", [False, True])
def test_group_norm_silu_written_over_a_conv_output_gives_the_same_values_and_no_new_buffer(with_residual):
    """The in-place form is the same kernel writing elsewhere: bit for bit the fresh-output form's values, and the
    call adds only a few floats per group to the memory held (the result lives in the conv output's buffer)."""
    shape, groups = (1, 16, 22, 40, 1024), 32
    h = mx.random.normal(shape, key=mx.random.key(1)).astype(mx.bfloat16)
    w = (mx.random.normal((1024, 1, 1, 1, 1024), key=mx.random.key(2)) * 0.03).astype(mx.bfloat16)
    residual = mx.random.normal(shape, key=mx.random.key(3)).astype(mx.bfloat16) if with_residual else None
    weight, beta, bias = (mx.random.normal((1024,), key=mx.random.key(k)).astype(mx.bfloat16) for k in (4, 5, 6))
    mx.eval(h, w, weight, beta, bias, *([residual] if with_residual else []))
    args = (groups, 1e-5, weight, beta, bias, residual)
    expected = fused.group_norm_silu(mx.conv3d(h, w), *args)
    mx.eval(expected)
    for _ in range(2):  # the first builds the kernels
        conv = mx.conv3d(h, w)
        mx.eval(conv)
        mx.synchronize()
        mx.clear_cache()
        before = mx.get_active_memory()
        mx.reset_peak_memory()
        out = fused.group_norm_silu(conv, *args, overwrite=True)
        mx.eval(out)
        peak = mx.get_peak_memory() - before
    del conv
    assert peak < 1_000_000
    np.testing.assert_array_equal(np.array(out.astype(mx.float32)), np.array(expected.astype(mx.float32)))


@CUDA
@pytest.mark.parametrize("kind", ["spatial", "temporal"])
def test_upscaler_with_norms_in_place_equals_fresh_outputs_at_every_queue_depth(kind):
    """Queued piece by piece, each norm writes over its conv's output and each piece ends a CUDA graph before the
    next reads it: the result is bit for bit the one with fresh outputs (no queue, one graph, no writing in place),
    compiled or op by op. Writing in place inside one graph raced with the readers (upsampler_overwrite_cuda.md)."""
    from tests.models.test_upsampler import small_config
    from ltx_ane.models.loading import randomize
    from ltx_ane.models.upscaler.config import UpsamplerConfig

    model = upscaler_model.LatentUpsampler(UpsamplerConfig.from_dict(small_config(kind, mid=256, blocks=2)))
    randomize(model, mx.bfloat16, seed=3)
    x = mx.random.normal((1, 128, 4, 6, 8), key=mx.random.key(4)).astype(mx.bfloat16)
    model.stages_in_flight = None
    assert not model.norms_in_place
    expected = np.array(model.forward_channels_last(x.transpose(0, 2, 3, 4, 1)).astype(mx.float32))
    for compiled in (False, True):
        model.compile = compiled
        for depth in (0, 1, 3):
            model.stages_in_flight = depth
            assert model.norms_in_place and len(model.stages()) == 3 + 4 * len(model.res_blocks)
            for _ in range(2):
                out = np.array(model(x).transpose(0, 2, 3, 4, 1).astype(mx.float32))
                np.testing.assert_array_equal(out, expected)
