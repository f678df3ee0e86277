"""MLX LTX-2 vocoder (HiFi-GAN, 24 kHz) against ltx-core 1.0.0 at the real width, from the same bf16 checkpoint."""

from __future__ import annotations


import mlx.core as mx
import numpy as np
import pytest
import torch

from ltx_ane.errors import LtxAneError
from ltx_ane.models.audio_vae.loader import load_vocoder
from ltx_ane.models.config import load_preset
from ltx_ane.models.loading import Source
from tests.models.audio_util import TOL, assert_half_precision, rel_err, write_audio_checkpoint

# As for the decoder: MLX bf16 within 1 dB of ltx-core's own bf16 error (both ~48 dB on the waveform);
# fp16, 3 more mantissa bits: measured 66 dB, bound 60 dB.
BF16_MARGIN_DB = 1.0
FP16_MIN_SNR_DB = 60.0


@pytest.fixture(scope="module")
def hifigan(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "ltx2_vocoder.safetensors"
    return path, write_audio_checkpoint(path, load_preset("ltx2"), parts=("vocoder",))["vocoder"]


def mel_input(frames: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    # Log-mel values: around log(1e-2) with the spread of real speech and music.
    return torch.randn(batch, 2, frames, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 4


@pytest.mark.parametrize(("frames", "batch"), [(1, 1), (4, 2), (9, 1)])
def test_vocoder_matches_reference(hifigan, frames, batch):
    path, reference = hifigan
    mel = mel_input(frames, batch, seed=frames)
    with torch.no_grad():
        expected = reference(mel).numpy()
    vocoder = load_vocoder(Source(str(path)), "fp32")
    out = np.array(vocoder(mx.array(mel.numpy())))
    assert vocoder.config.output_sampling_rate == 24000
    assert out.shape == expected.shape == (batch, 2, 240 * frames)
    assert rel_err(expected, out) <= TOL


def test_vocoder_half_precision_snr(hifigan):
    path, reference = hifigan
    mel = mel_input(3, seed=5)
    assert_half_precision(load_vocoder, path, reference, mel, FP16_MIN_SNR_DB, BF16_MARGIN_DB)


@pytest.mark.parametrize("shape", [(1, 2, 3, 80), (1, 1, 3, 64), (2, 3, 64), (1, 2, 0, 64)])
def test_bad_mel(hifigan, shape):
    vocoder = load_vocoder(Source(str(hifigan[0])), "fp32")
    with pytest.raises(LtxAneError, match=r"takes a \(B, 2, T, 64\) stereo log-mel"):
        vocoder(mx.zeros(shape))


def test_checkpoint_without_vocoder(tmp_path):
    raw = load_preset("ltx2")
    path = tmp_path / "vae_only.safetensors"
    write_audio_checkpoint(path, raw, parts=("decoder",))
    with pytest.raises(LtxAneError, match="holds no vocoder"):
        load_vocoder(Source(str(path)))


@pytest.mark.parametrize("preset", ["ltx2", "ltx23"])
def test_vocoder_steps_in_flight_change_nothing(preset, monkeypatch):
    """Queueing residual steps on the device (Generator.steps_in_flight) changes when kernels run, not what they
    compute: 0, 2 and one lazy graph (None) give the same waveform, bit for bit."""
    from ltx_ane.models.audio_vae.vocoder import Generator

    vocoder = load_vocoder(Source(random_weights=True, config_file=preset), "fp32")
    mel = mx.array(mel_input(3, seed=1).numpy())
    expected = np.array(vocoder(mel))
    for in_flight in (0, 2, None):
        monkeypatch.setattr(Generator, "steps_in_flight", in_flight)
        np.testing.assert_array_equal(np.array(vocoder(mel)), expected)


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_residual_block_with_fused_biases_equals_the_plain_steps(dtype):
    """Each conv's bias added inside the elementwise kernel after it computes exactly what a conv with its bias,
    then the activation or the residual add, computes."""
    import mlx.nn as nn

    from ltx_ane.models.audio_vae.vocoder import LRELU_SLOPE, ResBlock1

    block = ResBlock1(16, 3, (1, 3, 5))
    block.set_dtype(dtype)
    x = mx.random.normal((2, 50, 16), key=mx.random.key(1)).astype(dtype)
    expected = x
    for conv1, conv2 in zip(block.convs1, block.convs2):
        expected = expected + conv2(nn.leaky_relu(conv1(nn.leaky_relu(expected, LRELU_SLOPE)), LRELU_SLOPE))
    assert mx.array_equal(block(x), expected)


@pytest.mark.parametrize(("preset", "blocks_per_stage"), [("ltx2", 3), ("ltx2", 1), ("ltx23", 3)])
def test_generator_with_fused_kernels_equals_the_plain_steps(preset, blocks_per_stage):
    """Every fusion in a generator (conv biases added in the kernels after the convs, each residual add writing the
    next activation, the block average in one kernel; BigVGAN's biases inside its activations) computes, in bf16,
    exactly what the operations one at a time compute: both generator kinds at reduced width, and a HiFi-GAN with
    one residual block per stage (no average)."""
    from ltx_ane.models.audio_vae.vocoder import Generator
    from tests.models.audio_util import plain_synthesize, small_audio_config

    raw = small_audio_config(preset)
    if blocks_per_stage == 1:
        raw["vocoder"].update(resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3, 5]])
    vocoder = load_vocoder(Source(config=raw, random_weights=True), "bf16")
    generator = vocoder if isinstance(vocoder, Generator) else vocoder.vocoder
    frames = mx.random.normal((1, 6, 2 * generator.config.mel_bins), key=mx.random.key(4)).astype(mx.bfloat16)
    assert mx.array_equal(generator.synthesize(frames), plain_synthesize(generator, frames))


def test_residual_step_is_four_kernels():
    """A HiFi-GAN residual step given its input's activation: conv, bias with leaky ReLU, conv, and one kernel
    for the residual add with the bias and the next step's activation (a short clip's time is kernel launches)."""
    import mlx.nn as nn

    from ltx_ane.models.audio_vae.vocoder import LRELU_SLOPE, ResBlock1
    from ltx_ane.models.queue import queued
    from ltx_ane.bench.graph import kernel_ops

    block = ResBlock1(16, 3, (1, 3, 5))
    x = mx.random.normal((1, 50, 16), key=mx.random.key(1))
    activated = nn.leaky_relu(x, LRELU_SLOPE)
    mx.eval(block.parameters(), x, activated)
    with queued(None):  # one lazy graph: the steps' sync points evaluate nothing
        ops = kernel_ops(block(x, activated))
    assert len(ops) == 3 * 4, ops
