"""Vocoders: log-mel spectrogram (B, 2, T, 64) -> stereo waveform (B, 2, N).

LTX-2: one HiFi-GAN generator, 240 samples per mel frame -> 24 kHz. LTX-2.3: a BigVGAN v2 generator to 16 kHz,
then bandwidth extension to 48 kHz: a causal log-mel of that waveform feeds a second BigVGAN generator whose
output is added to a sinc-upsampled copy of the 16 kHz waveform (ltx-core ``VocoderWithBWE``).
Inside, activations are channels-last, (B, L, C).
"""

from __future__ import annotations

from functools import partial

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ltx_ane.errors import LtxAneError
from ltx_ane.models.audio_vae.bigvgan import Activation1d, AMPBlock1, hann_sinc_filter, upsample
from ltx_ane.models.audio_vae.config import BweConfig, GeneratorConfig, VocoderConfig
from ltx_ane.models.layers import biased_residual, conv_without_bias
from ltx_ane.models.queue import queued, settle

# HiFi-GAN's leaky ReLU slope inside the generator; its last activation is torch's default LeakyReLU (0.01).
LRELU_SLOPE = 0.1
POST_LRELU_SLOPE = 0.01


@partial(mx.compile, shapeless=True)
def _biased_leaky_relu(y: mx.array, bias: mx.array) -> mx.array:
    # The conv's bias add and the activation after it as one kernel (the same operations, in the same dtype).
    return nn.leaky_relu(y + bias, LRELU_SLOPE)


@partial(mx.compile, shapeless=True)
def _biased_with_leaky_relu(y: mx.array, bias: mx.array) -> tuple[mx.array, mx.array]:
    # y + bias and its leaky ReLU, both written by one kernel.
    y = y + bias
    return y, nn.leaky_relu(y, LRELU_SLOPE)


@partial(mx.compile, shapeless=True)
def _residual_with_leaky_relu(x: mx.array, y: mx.array, bias: mx.array) -> tuple[mx.array, mx.array]:
    # The next step's input and its activation, both written by one kernel: the same operations and dtypes as
    # biased_residual followed by a leaky ReLU, one launch fewer.
    x = x + (y + bias)
    return x, nn.leaky_relu(x, LRELU_SLOPE)


class ResBlock1(nn.Module):
    """HiFi-GAN residual block: three (leaky ReLU, dilated conv, leaky ReLU, conv) steps.

    Each conv's bias is added inside the elementwise kernel that follows it, and each step's residual add writes
    the next step's activation too: a step is 4 kernels instead of 7, and a short clip's time on a GPU is mostly
    kernel launches (45 steps per clip). Called with ``activated``, the block's input already through the leaky
    ReLU (the three blocks of a stage share one input)."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = [nn.Conv1d(channels, channels, kernel, dilation=d, padding=d * (kernel - 1) // 2) for d in dilations]
        self.convs2 = [nn.Conv1d(channels, channels, kernel, padding=(kernel - 1) // 2) for _ in dilations]

    def __call__(self, x: mx.array, activated: mx.array | None = None) -> mx.array:
        a = nn.leaky_relu(x, LRELU_SLOPE) if activated is None else activated
        for step, (conv1, conv2) in enumerate(zip(self.convs1, self.convs2)):
            h = _biased_leaky_relu(conv_without_bias(conv1, a), conv1.bias)
            y = conv_without_bias(conv2, h)
            if step == len(self.convs1) - 1:
                x = settle(biased_residual(x, y, conv2.bias))  # a sync point of the queue
            else:
                x, a = settle(_residual_with_leaky_relu(x, y, conv2.bias))
        return x


@partial(mx.compile, shapeless=True)
def _accumulate(total: mx.array, y: mx.array) -> mx.array:
    return total + y.astype(mx.float32)


@partial(mx.compile, shapeless=True)
def _mean(total: mx.array, y: mx.array, count: mx.array) -> mx.array:
    # The last block's output added and the sum divided, in one kernel; in y's dtype.
    return ((total + y.astype(mx.float32)) / count).astype(y.dtype)


@partial(mx.compile, shapeless=True)
def _mean_leaky_relu(total: mx.array, y: mx.array, count: mx.array) -> mx.array:
    return nn.leaky_relu(_mean(total, y, count), LRELU_SLOPE)


class Generator(nn.Module):
    """ltx-core's ``Vocoder``: conv_pre, upsampling stages each followed by averaged residual blocks, conv_post."""

    # Residual steps queued on the device while the host builds the next (models/queue.py): each step of a
    # residual block is a sync point, and a queued step holds its full-length buffers until it has run; 0 waits
    # for every step, None builds one lazy graph. By default each kind's best on an H200 against ltx-core (bf16,
    # 5 s / 20 s clips, benchmarks/results/audio_cuda*.md): HiFi-GAN with 4 queued 1.01x / 0.89x the time at
    # 0.34 / 0.97 GB (2: 1.35x / 1.04x at 0.34 / 0.81 GB; 8: 1.11x / 0.99x); BigVGAN with 2 queued 0.59x / 0.50x
    # at 0.71 / 2.17 GB (ltx-core 0.20 / 0.45 and 0.40 / 0.73 GB). An int set here applies to both kinds.
    DEFAULT_STEPS_IN_FLIGHT = {"HiFi-GAN": 4, "BigVGAN": 2}
    steps_in_flight: int | None | str = "default"

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        channels = config.upsample_initial_channel
        self.conv_pre = nn.Conv1d(2 * config.mel_bins, channels, 7, padding=3)
        self.ups, self.resblocks = [], []
        for rate, kernel in zip(config.upsample_rates, config.upsample_kernel_sizes):
            self.ups.append(nn.ConvTranspose1d(channels, channels // 2, kernel, stride=rate, padding=(kernel - rate) // 2))
            channels //= 2
            for size, dilations in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes):
                block = AMPBlock1 if config.is_amp else ResBlock1
                self.resblocks.append(block(channels, size, dilations))
        if config.is_amp:
            self.act_post = Activation1d(channels)
        self.conv_post = nn.Conv1d(channels, 2, 7, padding=3, bias=config.use_bias_at_final)

    @property
    def dtype(self):
        return self.conv_pre.weight.dtype

    @property
    def kind(self) -> str:
        return "BigVGAN" if self.config.is_amp else "HiFi-GAN"

    @property
    def queue_depth(self) -> int | None:
        """The residual steps this generator queues: ``steps_in_flight``, or its kind's default."""
        if self.steps_in_flight == "default":
            return self.DEFAULT_STEPS_IN_FLIGHT[self.kind]
        return self.steps_in_flight

    def synthesize(self, frames: mx.array) -> mx.array:
        """(B, T, 2 * mel_bins) mel frames, the two channels' bins side by side -> (B, N, 2) waveform."""
        cfg = self.config
        per_stage = len(cfg.resblock_kernel_sizes)
        # HiFi-GAN's stages start with a leaky ReLU: each stage's input is written with it (the kernel that adds
        # a conv's bias or averages the blocks writes it too), one kernel per stage fewer.
        hifigan = not cfg.is_amp
        count = mx.array(per_stage, mx.float32)
        with queued(self.queue_depth):
            if hifigan:
                x = _biased_leaky_relu(conv_without_bias(self.conv_pre, frames), self.conv_pre.bias)
            else:
                x = self.conv_pre(frames)
            for i, up in enumerate(self.ups):
                if hifigan:  # x is already activated; the blocks take the upsampled x and its activation
                    x, activated = _biased_with_leaky_relu(conv_without_bias(up, x), up.bias)
                    inputs = (x, activated)
                else:
                    inputs = (up(x),)
                # ltx-core averages the blocks with a mean over a stacked tensor, which accumulates in fp32.
                *blocks, last = self.resblocks[i * per_stage : (i + 1) * per_stage]
                total = None
                for block in blocks:
                    y = block(*inputs)
                    total = settle(y.astype(mx.float32) if total is None else _accumulate(total, y))
                y = last(*inputs)
                activate = hifigan and i + 1 < len(self.ups)  # the next stage's input, written activated
                if total is None:  # one block per stage
                    x = nn.leaky_relu(y, LRELU_SLOPE) if activate else y
                else:
                    x = (_mean_leaky_relu if activate else _mean)(total, y, count)
            x = self.act_post(x) if cfg.is_amp else nn.leaky_relu(x, POST_LRELU_SLOPE)
            x = self.conv_post(x)
        if cfg.apply_final_activation:
            x = mx.tanh(x) if cfg.use_tanh_at_final else mx.clip(x, -1, 1)
        return x

    def __call__(self, mel: mx.array) -> mx.array:
        """(B, 2, T, mel_bins) log-mel -> (B, 2, N) waveform, as ltx-core."""
        check_mel(mel.shape, self.config.mel_bins)
        b, c, t, f = mel.shape
        frames = mel.astype(self.dtype).transpose(0, 2, 1, 3).reshape(b, t, c * f)
        return self.synthesize(frames).transpose(0, 2, 1)


class STFT(nn.Module):
    """ltx-core ``_STFTFn``: the checkpoint's windowed DFT basis as a strided conv, causal (left) padding."""

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.forward_basis = mx.zeros(((n_fft // 2 + 1) * 2, 1, n_fft))
        self.hop_length = hop_length

    def magnitude(self, y: mx.array) -> mx.array:
        """(N, L) waveforms -> (N, frames, n_fft/2 + 1) linear magnitudes."""
        n_fft = self.forward_basis.shape[-1]
        y = mx.pad(y, [(0, 0), (max(0, n_fft - self.hop_length), 0)])[..., None]
        spec = mx.conv1d(y, self.forward_basis.transpose(0, 2, 1).astype(y.dtype), stride=self.hop_length)
        half = spec.shape[-1] // 2
        return mx.sqrt(spec[..., :half] ** 2 + spec[..., half:] ** 2)


class MelSTFT(nn.Module):
    def __init__(self, config: BweConfig):
        super().__init__()
        self.stft_fn = STFT(config.n_fft, config.hop_length)
        self.mel_basis = mx.zeros((config.num_mels, config.n_fft // 2 + 1))

    def log_mel(self, y: mx.array) -> mx.array:
        """(N, L) waveforms -> (N, frames, n_mels) log-mel, floored at 1e-5 as in ltx-core."""
        mel = self.stft_fn.magnitude(y) @ self.mel_basis.T.astype(y.dtype)
        return mx.log(mx.maximum(mel, 1e-5))


class VocoderWithBWE(nn.Module):
    """LTX-2.3: 16 kHz generator, then a residual from a second generator on the waveform's own log-mel."""

    def __init__(self, config: VocoderConfig):
        super().__init__()
        self.config = config
        self.vocoder = Generator(config.generator)
        self.bwe_generator = Generator(config.bwe.generator)
        self.mel_stft = MelSTFT(config.bwe)
        self.ratio = config.bwe.output_sampling_rate // config.bwe.input_sampling_rate
        taps, self.skip_pad = hann_sinc_filter(self.ratio)
        self._skip_taps = tuple(taps.tolist())  # computed, not stored in checkpoints

    @property
    def dtype(self):
        return self.vocoder.dtype

    def __call__(self, mel: mx.array) -> mx.array:
        """(B, 2, T, 64) log-mel -> (B, 2, N) waveform at the output rate, clipped to [-1, 1]."""
        bwe = self.config.bwe
        check_mel(mel.shape, self.config.mel_bins)
        x = self.vocoder(mel)  # (B, 2, L)
        b, c, length = x.shape
        x = mx.pad(x, [(0, 0), (0, 0), (0, -length % bwe.hop_length)])
        log_mel = self.mel_stft.log_mel(x.reshape(b * c, -1))  # (B*2, frames, n_mels)
        residual = self.bwe_generator(log_mel.reshape(b, c, *log_mel.shape[1:]))
        # A 43-tap filter: summed in fp32, as a conv would accumulate.
        skip = upsample(x.transpose(0, 2, 1).astype(mx.float32), self._skip_taps, self.ratio, self.skip_pad,
                        crop_left=2 * self.skip_pad * self.ratio).astype(x.dtype)
        return mx.clip(residual + skip.transpose(0, 2, 1), -1, 1)[..., : length * self.ratio]


def build_vocoder(config: VocoderConfig) -> Generator | VocoderWithBWE:
    return VocoderWithBWE(config) if config.bwe else Generator(config.generator)


def check_mel(mel_shape, mel_bins: int) -> None:
    if len(mel_shape) != 4 or mel_shape[1] != 2 or mel_shape[3] != mel_bins or mel_shape[2] < 1:
        raise LtxAneError(
            f"the vocoder takes a (B, 2, T, {mel_bins}) stereo log-mel spectrogram, got shape {list(mel_shape)}"
        )


def default_stft_bases(config: BweConfig) -> tuple[np.ndarray, np.ndarray]:
    """A periodic-Hann windowed DFT basis (2F, 1, n_fft) and a Slaney mel filterbank (n_mels, F).

    Real checkpoints carry their own; these give random-weight models a plausible front end.
    """
    n_fft, freqs = config.n_fft, config.n_fft // 2 + 1
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    angle = 2 * np.pi * np.outer(np.arange(freqs), np.arange(n_fft)) / n_fft
    basis = np.concatenate([np.cos(angle), -np.sin(angle)]) * window
    hz = np.linspace(0, config.input_sampling_rate / 2, freqs)
    edges = _mel_to_hz(np.linspace(0, _hz_to_mel(config.input_sampling_rate / 2), config.num_mels + 2))
    rising = (hz[None] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    falling = (edges[2:, None] - hz[None]) / (edges[2:] - edges[1:-1])[:, None]
    bank = np.maximum(0, np.minimum(rising, falling)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return basis[:, None, :].astype(np.float32), bank.astype(np.float32)


def _hz_to_mel(hz):
    # Slaney: linear below 1 kHz, logarithmic above.
    hz = np.asarray(hz, dtype=np.float64)
    return np.where(hz < 1000, 3 * hz / 200, 15 + 27 * np.log(np.maximum(hz, 1e-9) / 1000) / np.log(6.4))


def _mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel < 15, 200 * mel / 3, 1000 * np.exp((mel - 15) * np.log(6.4) / 27))
