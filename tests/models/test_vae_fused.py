"""The VAE's fused CUDA kernels (pad(SiLU(PixelNorm(x + bias))), the decoder's depth-to-space, the residual add)
against the same steps as MLX ops.

The kernel runs only on MLX's CUDA backend: on the lent GPU machine, ``pytest tests/models/test_vae_fused.py``.
Elsewhere those tests skip, and the MLX ops they compare against are what the parity tests check.
"""

from __future__ import annotations

import itertools
import os

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
import torch
from mlx.utils import tree_map

from ltx_ane.models import fused, layers
from ltx_ane.models.loading import Source
from ltx_ane.models.video_vae.loader import load_decoder, load_encoder
from ltx_ane.reference import video_vae as RV
from tests.vae_util import assert_both_match_reference, psnr, small_config, write_vae

CUDA = pytest.mark.skipif(
    not (mx.cuda.is_available() and mx.default_device() == mx.gpu), reason="MLX's CUDA backend only (the GPU machine)"
)
# Max error against the float32 steps, relative to max |ref|: the kernel rounds once to the output dtype.
TOL = {mx.bfloat16: 2**-8, mx.float16: 2**-11, mx.float32: 1e-5}


@pytest.mark.parametrize(
    "channels, dtype, layout",
    [(128, mx.bfloat16, (16, 1, 4)), (256, mx.bfloat16, (32, 1, 4)), (264, mx.bfloat16, (32, 2, 2)),
     (1024, mx.bfloat16, (32, 4, 1)), (2048, mx.bfloat16, (32, 8, 1)), (4096, mx.bfloat16, None),
     (12, mx.bfloat16, None), (1024, mx.float32, (32, 8, 1)), (2048, mx.float32, None), (4, mx.float32, (1, 1, 4)),
     (40, mx.float16, (8, 1, 4))],
)
def test_lanes_and_loads_cover_the_channels_or_the_kernel_does_not_apply(channels, dtype, layout):
    """(threads per row, 16-byte loads per thread and row, rows per thread): a narrow row shares its warp."""
    assert fused._row_layout(mx.zeros((1, 1, 1, 1, channels), dtype)) == layout


def test_not_used_off_cuda():
    if mx.cuda.is_available() and mx.default_device() == mx.gpu:
        pytest.skip("this machine runs the kernel")
    assert not fused.fused_available(mx.zeros((1, 2, 2, 2, 128), mx.bfloat16))


def float32_steps(x: mx.array, bias: mx.array | None, causal: bool, reflect: bool) -> mx.array:
    x = x.astype(mx.float32) + (0 if bias is None else bias.astype(mx.float32))
    return layers.pad_frames(nn.silu(layers.pixel_norm(x)), causal, reflect)


@CUDA
@pytest.mark.parametrize(
    "channels, dtype",
    [(8, mx.bfloat16), (40, mx.float16), (128, mx.bfloat16), (264, mx.float16), (1024, mx.bfloat16),
     (2048, mx.bfloat16), (1024, mx.float32)],
)
def test_kernel_matches_the_float32_steps(channels, dtype):
    x = (mx.random.normal((2, 3, 4, 5, channels), key=mx.random.key(0)) * 3 + 0.5).astype(dtype)
    assert fused.fused_available(x)
    for causal, reflect, with_bias in itertools.product((False, True), repeat=3):
        bias = mx.random.normal((channels,), key=mx.random.key(1)).astype(dtype) if with_bias else None
        out = fused.norm_silu_pad(x, bias, causal, reflect)
        ref = float32_steps(x, bias, causal, reflect)
        assert out.shape == ref.shape and out.dtype == dtype
        ref, out = np.array(ref), np.array(out.astype(mx.float32))
        assert np.abs(out - ref).max() <= TOL[dtype] * np.abs(ref).max(), (causal, reflect, with_bias)


@CUDA
@pytest.mark.parametrize("shape", [(1, 1, 2, 3, 16), (2, 2, 3, 2, 16), (1, 3, 2, 2, 128)])
def test_kernel_writes_every_padded_copy_of_the_edge_rows(shape):
    """Each input row is written to every padded position that copies it: a single frame, and reflect padding of
    sides of 2 and 3 rows, where one row is the mirror image on both sides or its own."""
    x = (mx.random.normal(shape, key=mx.random.key(20)) * 2).astype(mx.bfloat16)
    for causal, reflect in itertools.product((False, True), repeat=2):
        out = fused.norm_silu_pad(x, None, causal, reflect)
        ref = np.array(float32_steps(x, None, causal, reflect))
        assert out.shape == ref.shape
        assert np.abs(np.array(out.astype(mx.float32)) - ref).max() <= TOL[mx.bfloat16] * np.abs(ref).max()


@CUDA
@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float16, mx.float32])
def test_kernel_writes_its_result_into_an_earlier_one_bit_for_bit(dtype):
    keys = mx.random.split(mx.random.key(21), 3)
    x = (mx.random.normal((2, 3, 4, 5, 64), key=keys[0]) * 3).astype(dtype)
    bias = mx.random.normal((64,), key=keys[1]).astype(dtype)
    for causal, reflect in itertools.product((False, True), repeat=2):
        want = fused.norm_silu_pad(x, bias, causal, reflect)
        target = fused.norm_silu_pad(mx.random.normal(x.shape, key=keys[2]).astype(dtype), None, causal, reflect)
        mx.eval(want, target)
        got = fused.norm_silu_pad(x, bias, causal, reflect, into=target)
        mx.eval(got)
        assert mx.array_equal(got, want).item() and mx.array_equal(target, want).item(), (causal, reflect)
    with pytest.raises(ValueError, match="cannot write"):
        fused.norm_silu_pad(x, bias, True, False, into=x)


@CUDA
@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float16, mx.float32])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5, 64), (1, 1, 2, 3, 16), (1, 2, 3, 2, 128)])
def test_add_and_norm_kernel_equals_the_residual_add_then_the_norm_bit_for_bit(dtype, shape):
    """``add_norm_silu_pad``: the sum as ``residual_add`` rounds it, written over h, and the next block's padded
    norm of it written over an earlier result."""
    keys = mx.random.split(mx.random.key(22), 4)
    x = (mx.random.normal(shape, key=keys[0]) * 4).astype(dtype)
    bias = mx.random.normal((shape[-1],), key=keys[1]).astype(dtype)
    for causal, reflect in itertools.product((False, True), repeat=2):
        h = (mx.random.normal(shape, key=keys[2]) * 4).astype(dtype)
        mx.eval(h)
        want_sum = fused.residual_add(x, h, bias)
        want_padded = fused.norm_silu_pad(want_sum, None, causal, reflect)
        target = fused.norm_silu_pad(mx.random.normal(shape, key=keys[3]).astype(dtype), None, causal, reflect)
        mx.eval(want_sum, want_padded, target)
        got_sum, got_padded = fused.add_norm_silu_pad(x, h, bias, causal, reflect, into=target)
        mx.eval(got_sum, got_padded)
        assert mx.array_equal(got_sum, want_sum).item() and mx.array_equal(h, want_sum).item(), (causal, reflect)
        assert mx.array_equal(got_padded, want_padded).item() and mx.array_equal(target, want_padded).item()


@CUDA
@pytest.mark.parametrize("padding", ["zeros", "reflect"])
@pytest.mark.parametrize("depth", [0, 1, None])
def test_chained_res_blocks_equal_the_blocks_one_by_one_bit_for_bit(padding, depth, monkeypatch):
    """``UNetMidBlock3D.chained`` (each norm written over one buffer, each residual add fused with the next norm,
    queued behind the running piece) at the decoders' last-stage width, against the blocks one by one."""
    from ltx_ane.models import queue

    monkeypatch.setattr(layers, "EVAL_BYTES", 0)
    block = layers.UNetMidBlock3D(128, 3, padding)
    block.update(tree_map(lambda p: (mx.random.normal(p.shape, key=mx.random.key(p.size)) * 0.03).astype(
        mx.bfloat16), block.parameters()))  # nonzero biases too
    x = mx.random.normal((1, 5, 16, 24, 128), key=mx.random.key(23)).astype(mx.bfloat16)
    mx.eval(block.parameters(), x)
    with queue.queued(depth):
        assert layers.chain_available(x) == (depth is not None)
        got = block(x, causal=False)
        conv = layers.CausalConv3d(128, 48, spatial_padding_mode=padding)  # the decoders' conv_out follows
        got_padded = block.then_norm(x, False, conv)
    mx.eval(got, got_padded)
    monkeypatch.setattr(layers, "chain_available", lambda x: False)
    with queue.queued(0):
        want = block(x, causal=False)
        want_padded = layers.norm_silu_pad(want, None, False, conv.reflect)
    assert mx.array_equal(got, want).item()
    assert mx.array_equal(got_padded, want_padded).item()


@CUDA
def test_kernel_reads_a_sliced_input_and_the_layer_dispatches_to_it():
    """A frame slice (as the decoder's time upsampling leaves) is read at its offset; layers.norm_silu_pad runs the
    kernel on CUDA."""
    x = mx.random.normal((1, 5, 3, 4, 256), key=mx.random.key(2)).astype(mx.bfloat16)[:, 1:]
    ref = np.array(float32_steps(x, None, False, False))
    out = fused.norm_silu_pad(x, None, False, False)
    assert np.abs(np.array(out.astype(mx.float32)) - ref).max() <= TOL[mx.bfloat16] * np.abs(ref).max()
    dispatched = layers.norm_silu_pad(x, None, False, False)
    np.testing.assert_array_equal(np.array(dispatched.astype(mx.float32)), np.array(out.astype(mx.float32)))


@CUDA
@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float16, mx.float32])
@pytest.mark.parametrize("stride", [(2, 2, 2), (1, 2, 2), (2, 1, 1)])
def test_depth_to_space_kernel_equals_the_mlx_ops_bit_for_bit(dtype, stride, monkeypatch):
    """The upsampling kernel (bias, a residual whose channels repeat over the conv's, frame 0 dropped) against
    ``layers.depth_to_space`` as MLX ops, for every combination the decoders use."""
    p = stride[0] * stride[1] * stride[2]
    keys = mx.random.split(mx.random.key(7), 4)
    x = (mx.random.normal((2, 3, 4, 5, 16 * p), key=keys[0]) * 4).astype(dtype)
    bias = mx.random.normal((16 * p,), key=keys[1]).astype(dtype)
    # residuals: none, the conv output's width, and an input of 16 * multiplier channels (multiplier 1 and 2)
    residuals = [None, mx.random.normal(x.shape, key=keys[2]).astype(dtype)] + [
        mx.random.normal((2, 3, 4, 5, 16 * m), key=keys[3]).astype(dtype) for m in (1, 2)]
    kernel = [fused.depth_to_space(x, stride, b, r, drop) for r in residuals for b in (None, bias)
              for drop in (False, True)]
    assert layers.depth_to_space(x, stride, bias).dtype == dtype
    monkeypatch.setattr(fused, "depth_to_space_available", lambda *args: False)
    ops = [layers.depth_to_space(x, stride, b, r, drop) for r in residuals for b in (None, bias)
           for drop in (False, True)]
    for i, (got, want) in enumerate(zip(kernel, ops)):
        assert got.shape == want.shape and got.dtype == want.dtype, i
        assert mx.array_equal(got, want).item(), i


@CUDA
@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float32])
def test_unpatchify_kernel_equals_the_mlx_ops(dtype, monkeypatch):
    """Also with conv_out's bias, and reading the first 48 channels of a conv output run 64 wide."""
    keys = mx.random.split(mx.random.key(9), 2)
    wide = (mx.random.normal((1, 3, 4, 5, 64), key=keys[0]) * 4).astype(dtype)
    bias = mx.random.normal((48,), key=keys[1]).astype(dtype)
    x = mx.contiguous(wide[..., :48])
    cases = [(x, None, None), (x, bias, None), (wide, None, 48), (wide, bias, 48)]
    kernel = [layers.unpatchify(a, 4, b, c) for a, b, c in cases]
    monkeypatch.setattr(fused, "depth_to_space_available", lambda *args: False)
    ops = [layers.unpatchify(x, 4, b) for _, b, _ in cases]
    for i, (got, want) in enumerate(zip(kernel, ops)):
        assert got.shape == want.shape == (1, 3, 16, 20, 3) and got.dtype == dtype, i
        assert mx.array_equal(got, want).item(), i
    with pytest.raises(ValueError):
        fused.depth_to_space(wide, (1, 4, 4), width_first=True, channels=42)  # not whole 16-byte loads


@CUDA
def test_layers_depth_to_space_dispatches_to_the_kernel(monkeypatch):
    calls, kernel = [], fused.depth_to_space
    monkeypatch.setattr(fused, "depth_to_space", lambda *args, **kw: calls.append(args[0].shape) or kernel(*args, **kw))
    x = mx.random.normal((1, 2, 3, 3, 32), key=mx.random.key(8)).astype(mx.bfloat16)
    out = layers.depth_to_space(x, (2, 2, 2), None, x[..., :16], drop_first_frame=True)
    assert calls == [x.shape] and out.shape == (1, 3, 6, 6, 4)


@CUDA
@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float16, mx.float32])
def test_residual_add_kernel_equals_the_mlx_ops_bit_for_bit_and_writes_over_h(dtype):
    keys = mx.random.split(mx.random.key(11), 3)
    x = (mx.random.normal((2, 3, 4, 5, 64), key=keys[0]) * 4).astype(dtype)
    bias = mx.random.normal((64,), key=keys[2]).astype(dtype)
    h = (mx.random.normal(x.shape, key=keys[1]) * 4).astype(dtype)
    mx.eval(x, bias, h)
    want = layers.biased_residual(x, h, bias)
    assert mx.array_equal(fused.residual_add(x, h, bias), want).item()
    got = fused.residual_add(x, h, bias, overwrite=True)
    mx.eval(got)
    assert mx.array_equal(got, want).item()
    assert mx.array_equal(h, want).item()  # h's own buffer now holds the sum


@CUDA
def test_residual_add_written_over_h_allocates_no_activation():
    keys = mx.random.split(mx.random.key(12), 3)
    x = mx.random.normal((1, 9, 64, 96, 128), key=keys[0]).astype(mx.bfloat16)
    bias = mx.random.normal((128,), key=keys[2]).astype(mx.bfloat16)
    fresh = lambda: mx.random.normal(x.shape, key=keys[1]).astype(mx.bfloat16)
    mx.eval(x, bias, fused.residual_add(x, fresh(), bias, overwrite=True))  # built outside the measurement
    h = fresh()
    mx.eval(h)
    mx.synchronize()
    mx.clear_cache()
    before = mx.get_active_memory()
    mx.reset_peak_memory()
    out = fused.residual_add(x, h, bias, overwrite=True)
    mx.eval(out)
    assert mx.get_peak_memory() - before <= 1_000_000 < x.nbytes


@CUDA
@pytest.mark.parametrize("preset", ["ltx2", "ltx23"])
def test_vae_with_residuals_written_in_place_equals_fresh_outputs_at_every_queue_depth(preset, tmp_path, monkeypatch):
    """Every block evaluated on its own (EVAL_BYTES 0), so every residual is written over its conv output, except
    in a queued(None) block, where nothing ends a graph; the values equal the MLX ops' bit for bit."""
    raw = small_config(preset, base=8)
    path = write_vae(tmp_path / "vae.safetensors", raw)
    decoder, encoder = load_decoder(Source(str(path)), "bf16"), load_encoder(Source(str(path)), "bf16")
    latent = mx.random.normal((1, 16, 3, 4, 5), key=mx.random.key(13))
    video = mx.random.uniform(-1, 1, (1, 3, 9, 64, 96), key=mx.random.key(14))
    monkeypatch.setattr(layers, "EVAL_BYTES", 0)
    in_place, kernel = [], fused.residual_add
    monkeypatch.setattr(fused, "residual_add", lambda *a, overwrite: in_place.append(overwrite) or kernel(
        *a, overwrite=overwrite))
    outputs = {}
    for depth in (0, 1, 2, None):
        decoder.sync_depth = encoder.sync_depth = depth
        in_place.clear()
        outputs[depth] = decoder(latent), encoder(video)
        mx.eval(outputs[depth])
        assert in_place and set(in_place) == {depth is not None}, depth
    monkeypatch.setattr(fused, "residual_add_available", lambda h: False)
    expected = decoder(latent), encoder(video)
    for depth, (decoded, encoded) in outputs.items():
        assert mx.array_equal(decoded, expected[0]).item() and mx.array_equal(encoded, expected[1]).item(), depth


def counting_kernel_calls(monkeypatch) -> list:
    calls, kernel = [], fused.norm_silu_pad
    monkeypatch.setattr(fused, "norm_silu_pad", lambda *args, **kw: calls.append(args[0].shape) or kernel(*args, **kw))
    return calls


@pytest.mark.skipif(os.environ.get("MLX_ENABLE_TF32") != "0", reason="fp32 parity on a GPU needs MLX_ENABLE_TF32=0 "
                    "(else MLX's convs round their inputs to TF32)")
@CUDA  # the closest mark is checked first: off CUDA, this is the reason given
@pytest.mark.parametrize("variant", ["ltx2", "ltx23", "causal-reflect"])
def test_vae_with_the_kernel_matches_ltx_core(variant, tmp_path, monkeypatch):
    raw = small_config("ltx2" if variant == "causal-reflect" else variant, base=8)
    if variant == "causal-reflect":
        raw["vae"]["causal_decoder"] = True
        raw["vae"]["spatial_padding_mode"] = "reflect"
    path = write_vae(tmp_path / "vae.safetensors", raw)
    calls = counting_kernel_calls(monkeypatch)
    latent = torch.randn(1, 16, 3, 2, 3, generator=torch.Generator().manual_seed(3))
    video = torch.rand(1, 3, 9, 64, 96, generator=torch.Generator().manual_seed(4)) * 2 - 1
    assert_both_match_reference(path, raw, latent, video)
    assert calls


@CUDA
@pytest.mark.parametrize("preset", ["ltx2", "ltx23"])
def test_decoder_runs_conv_out_wide_to_the_same_values(preset, tmp_path, monkeypatch):
    """conv_out run 64 wide (cuDNN's faster kernel; its sums in another order) against 48 wide: bf16 roundings apart."""
    raw = small_config(preset, base=8)
    decoder = load_decoder(Source(str(write_vae(tmp_path / "vae.safetensors", raw))), "bf16")
    latent = mx.random.normal((1, 16, 3, 4, 5), key=mx.random.key(15))
    widths, convolve = [], layers.CausalConv3d.convolve
    monkeypatch.setattr(layers.CausalConv3d, "convolve", lambda self, *a, width=None, **kw: widths.append(width) or
                        convolve(self, *a, width=width, **kw))
    wide = np.array(decoder(latent).astype(mx.float32))
    assert widths[-1] == 64
    monkeypatch.setattr(fused, "conv_out_width", lambda channels: channels)
    narrow = np.array(decoder(latent).astype(mx.float32))
    assert widths[-1] == 48
    assert np.abs(wide - narrow).max() <= 2**-7 * np.abs(narrow).max()


@CUDA
@pytest.mark.parametrize("preset", ["ltx2", "ltx23"])
def test_bf16_decoder_with_the_kernel_is_at_least_as_close_to_ltx_core(preset, tmp_path, monkeypatch):
    """The kernel rounds once where the MLX ops round after the norm and after SiLU."""
    raw = small_config(preset, base=8)
    path = write_vae(tmp_path / "vae.safetensors", raw)
    latent = torch.randn(1, 16, 3, 4, 5, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = RV.reference_decoder_from_checkpoint(path, raw)(latent).numpy()
    decoder = load_decoder(Source(str(path)), "bf16")
    calls = counting_kernel_calls(monkeypatch)
    with_kernel = psnr(expected, np.array(decoder(mx.array(latent.numpy())).astype(mx.float32)))
    assert calls
    monkeypatch.setattr(fused, "fused_available", lambda x: False)
    without = psnr(expected, np.array(decoder(mx.array(latent.numpy())).astype(mx.float32)))
    assert with_kernel >= without - 0.5, (with_kernel, without)
