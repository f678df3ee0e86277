"""MLX LTX-2.3 vocoder (BigVGAN v2 + bandwidth extension, 48 kHz) against ltx-core 1.0.0 at the real width."""

from __future__ import annotations

import functools
import os

import mlx.core as mx
import numpy as np
import pytest
import torch

from ltx_ane.models.audio_vae.bigvgan import (KERNEL, RATIO, UP_CROP_LEFT, UP_PAD, Activation1d, hann_sinc_filter,
                                              kaiser_sinc_filter, upsample)
from ltx_ane.models.audio_vae.loader import load_vocoder
from ltx_ane.models.config import load_preset
from ltx_ane.models.loading import Source
from ltx_ane.reference import require_reference
from tests.models.audio_util import TOL, assert_half_precision, rel_err, write_audio_checkpoint
from tests.models.test_audio_hifigan import BF16_MARGIN_DB, mel_input

# The step-by-step anti-aliased activation (ltx-core's Activation1d: upsample, SnakeBeta, pad, downsample): the
# reference the model's shifted-view form is checked against; lowpass_downsample is checked against ltx-core.


def lowpass_downsample(x: mx.array, taps: tuple[float, ...]) -> mx.array:
    """ltx-core ``DownSample1d`` (x2): replicate padding (K/2 - 1 before, K/2 after), stride-2 FIR."""
    kernel = len(taps)
    x = mx.pad(x, [(0, 0), (kernel // 2 - 1, kernel // 2), (0, 0)], mode="edge")
    out = (x.shape[1] - kernel) // RATIO + 1
    acc = None
    for k in range(kernel):
        term = x[:, k : k + RATIO * (out - 1) + 1 : RATIO] * taps[k]
        acc = term if acc is None else acc + term
    return acc


def snake_beta(x: mx.array, alpha: mx.array, beta: mx.array) -> mx.array:
    """x + sin^2(x e^alpha) / (e^beta + 1e-9), per channel (log-scale parameters as in the checkpoints)."""
    return x + (1.0 / (mx.exp(beta) + 1e-9)) * mx.sin(x * mx.exp(alpha)) ** 2


def step_by_step_activation(x, alpha, beta, up_taps, down_taps):
    # In fp32 whatever the model dtype: the filters sum 6 and 12 products, which half precision would round
    # at every step (a conv accumulates in fp32).
    y = upsample(x.astype(mx.float32), up_taps, RATIO, UP_PAD, UP_CROP_LEFT)
    return lowpass_downsample(snake_beta(y, alpha, beta), down_taps).astype(x.dtype)


# Measured 60 dB on the 48 kHz waveform in fp16 (bf16: as ltx-core's own, ~40 dB).
FP16_MIN_SNR_DB = 54.0


@pytest.fixture(scope="module")
def bigvgan(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "ltx23_vocoder.safetensors"
    return path, write_audio_checkpoint(path, load_preset("ltx23"), parts=("vocoder",))["vocoder"]


@pytest.mark.parametrize("length", [1, 2, 7, 50])
def test_resamplers_match_reference(length):
    """The shifted-slice resamplers against ltx-core's conv ones, filters as ltx-core computes them."""
    require_reference()
    from ltx_core.model.audio_vae.vocoder import DownSample1d, UpSample1d

    x = torch.randn(2, 3, length, generator=torch.Generator().manual_seed(length))
    up, down, skip = UpSample1d(2, 12), DownSample1d(2, 12), UpSample1d(3, persistent=False, window_type="hann")
    channels_last = mx.array(x.numpy().transpose(0, 2, 1))
    taps = tuple(up.filter.numpy().reshape(-1).tolist())
    hann, width = hann_sinc_filter(3)
    with torch.no_grad():
        expected = [up(x), down(x), skip(x)]
    out = [
        upsample(channels_last, taps, 2, up.pad, up.pad_left),
        lowpass_downsample(channels_last, tuple(down.lowpass.filter.numpy().reshape(-1).tolist())),
        upsample(channels_last, tuple(hann.tolist()), 3, width, skip.pad_left),
    ]
    for ref, mine in zip(expected, out):
        mine = np.array(mine).transpose(0, 2, 1)
        assert mine.shape == ref.shape
        assert rel_err(ref.numpy(), mine) <= TOL
    # Random-weight models compute the filters the checkpoints store.
    np.testing.assert_allclose(kaiser_sinc_filter(0.25, 0.3, 12), up.filter.numpy(), atol=1e-7)
    np.testing.assert_allclose(hann, skip.filter.numpy().reshape(-1), atol=1e-7)


@pytest.mark.parametrize(("frames", "batch"), [(1, 1), (2, 2)])
def test_vocoder_with_bwe_matches_reference(bigvgan, frames, batch):
    path, reference = bigvgan
    mel = mel_input(frames, batch, seed=frames)
    with torch.no_grad():
        expected = reference(mel).numpy()
    vocoder = load_vocoder(Source(str(path)), "fp32")
    out = np.array(vocoder(mx.array(mel.numpy())))
    assert vocoder.config.output_sampling_rate == 48000
    assert out.shape == expected.shape == (batch, 2, 480 * frames)
    assert np.abs(expected).max() < 1  # not saturated by the final clip, so the comparison means something
    assert rel_err(expected, out) <= TOL


@pytest.mark.skipif(not os.environ.get("LTX_ANE_SLOW_TESTS"), reason="ltx-core in bf16 on a CPU: ~30 s; set LTX_ANE_SLOW_TESTS=1")
def test_vocoder_with_bwe_half_precision_snr(bigvgan):
    path, reference = bigvgan
    mel = mel_input(1, seed=5)
    assert_half_precision(load_vocoder, path, reference, mel, FP16_MIN_SNR_DB, BF16_MARGIN_DB)


def test_random_weights_vocoder_with_bwe():
    vocoder = load_vocoder(Source(random_weights=True, config_file="ltx23"), "bf16")
    waveform = vocoder(mx.zeros((1, 2, 1, 64)))
    assert waveform.shape == (1, 2, 480) and bool(mx.all(mx.abs(waveform) <= 1))


def test_random_weights_keep_the_fixed_filters():
    vocoder = load_vocoder(Source(random_weights=True, config_file="ltx23"), "fp32", seed=1)
    taps = kaiser_sinc_filter(0.5 / RATIO, 0.6 / RATIO, KERNEL)
    activation = vocoder.vocoder.act_post
    np.testing.assert_array_equal(np.array(activation.upsample.filter), taps)
    np.testing.assert_array_equal(np.array(activation.downsample.lowpass.filter), taps)


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_activation_with_literal_taps_equals_array_taps(dtype):
    """Taps compiled in as literals compute exactly what the same function computes reading them from arrays."""
    activation = Activation1d(5)
    activation.set_dtype(dtype)
    for buffer in (activation.upsample, activation.downsample.lowpass):
        buffer.reset(dtype)
    key = iter(mx.random.split(mx.random.key(3), 3))
    activation.act.alpha = 0.3 * mx.random.normal((5,), key=next(key)).astype(dtype)
    activation.act.beta = 0.3 * mx.random.normal((5,), key=next(key)).astype(dtype)
    x = mx.random.normal((2, 40, 5), key=next(key)).astype(dtype)
    with_arrays = mx.compile(step_by_step_activation)(
        x, activation.act.alpha, activation.act.beta,
        up_taps=activation.upsample.filter.reshape(-1), down_taps=activation.downsample.lowpass.filter.reshape(-1),
    )
    with_literals = mx.compile(functools.partial(
        step_by_step_activation, up_taps=activation.upsample.taps(), down_taps=activation.downsample.lowpass.taps()))
    np.testing.assert_array_equal(np.array(with_literals(x, activation.act.alpha, activation.act.beta).astype(mx.float32)),
                                  np.array(with_arrays.astype(mx.float32)))


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_shifted_view_activation_equals_the_step_by_step_form(dtype):
    """The activation as expressions of shifted views (the reads beyond either end clamped to the end samples)
    equals the step-by-step upsample, SnakeBeta, downsample up to fp32 summation order, at lengths where the two
    ends' clamped reads overlap (1-6 samples) and beyond."""
    activation = Activation1d(6)
    activation.set_dtype(dtype)
    key = iter(mx.random.split(mx.random.key(5), 10))
    activation.act.alpha = 0.3 * mx.random.normal((6,), key=next(key)).astype(dtype)
    activation.act.beta = 0.3 * mx.random.normal((6,), key=next(key)).astype(dtype)
    taps = activation.upsample.taps(), activation.downsample.lowpass.taps()
    for length in (1, 2, 5, 6, 7, 16, 97, 600):
        x = mx.random.normal((2, length, 6), key=next(key)).astype(dtype)
        expected = np.array(step_by_step_activation(x, activation.act.alpha, activation.act.beta, *taps).astype(mx.float32))
        out = np.array(activation(x).astype(mx.float32))
        assert out.shape == expected.shape
        # fp32: summation order only; bf16: the same fp32 values rounded once, so at most one bf16 step apart.
        bound = 1e-6 if dtype == mx.float32 else 2.0**-7
        assert np.abs(out - expected).max() <= bound * np.abs(expected).max()


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_amp_block_with_fused_residual_bias_equals_the_plain_steps(dtype):
    """The second conv's bias added inside the residual add computes exactly what the conv with its bias, then the
    add, computes."""
    from ltx_ane.models.audio_vae.bigvgan import AMPBlock1

    block = AMPBlock1(8, 3, (1, 3, 5))
    block.set_dtype(dtype)
    x = mx.random.normal((1, 64, 8), key=mx.random.key(2)).astype(dtype)
    expected = x
    for conv1, conv2, act1, act2 in zip(block.convs1, block.convs2, block.acts1, block.acts2):
        expected = expected + conv2(act2(conv1(act1(expected))))
    assert mx.array_equal(block(x), expected)


@pytest.mark.parametrize("biased", [False, True])
def test_activation_is_five_kernels(biased):
    """The anti-aliased activation (200 per LTX-2.3 vocoder call) runs as a gather that edge-pads its input, one
    fused kernel per phase, and two for the downsampling (MLX's compile caps a fused kernel's inputs): five
    kernels, none for SnakeBeta's factors or the preceding conv's bias. Fails if a change splits a fused kernel."""
    from ltx_ane.bench.graph import kernel_ops

    activation = Activation1d(8)
    x, bias = mx.random.normal((1, 40, 8), key=mx.random.key(0)), mx.ones((8,))
    mx.eval(activation.parameters(), x, bias, activation.act.factors())
    ops = kernel_ops(activation(x, bias) if biased else activation(x))
    assert len(ops) == 5 and ops[0] == "Gather", ops


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_activation_with_the_conv_bias_equals_the_activation_of_the_biased_input(dtype):
    activation = Activation1d(8)
    activation.set_dtype(dtype)
    key = iter(mx.random.split(mx.random.key(6), 4))
    activation.act.alpha = 0.3 * mx.random.normal((8,), key=next(key)).astype(dtype)
    activation.act.beta = 0.3 * mx.random.normal((8,), key=next(key)).astype(dtype)
    x, bias = (mx.random.normal(shape, key=next(key)).astype(dtype) for shape in [(2, 30, 8), (8,)])
    assert mx.array_equal(activation(x, bias), activation(x + bias))


def test_snake_factors_follow_new_parameters():
    """SnakeBeta's cached factors are recomputed when new arrays are loaded (load_weights, set_dtype, assignment)."""
    from mlx.utils import tree_flatten

    from ltx_ane.models.audio_vae.bigvgan import SnakeBeta, snake_factors

    snake = SnakeBeta(4)
    first = snake.factors()
    assert snake.factors() is first  # cached
    for _ in range(3):  # replaced arrays, whose ids Python may reuse
        snake.alpha = mx.random.normal((4,))
        snake.beta = mx.random.normal((4,))
        expected = snake_factors(snake.alpha, snake.beta)
        assert all(mx.array_equal(a, b) for a, b in zip(snake.factors(), expected))
    assert [name for name, _ in tree_flatten(snake.parameters())] == ["alpha", "beta"]  # the cache is no parameter
