"""BigVGAN v2 pieces of LTX-2.3's vocoder: SnakeBeta, anti-aliased activations, AMP residual blocks.

An anti-aliased activation upsamples x2 with a Kaiser-windowed sinc, applies SnakeBeta, and low-passes back
down x2 (ltx-core ``Activation1d``). Both filters are shared by all channels, so instead of depthwise convs
(slow in MLX) each resampler is a sum of shifted slices times filter taps, compiled into one fused function.
Activations are channels-last, (B, L, C).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ltx_ane.models.layers import biased_residual, conv_without_bias
from ltx_ane.models.queue import settle

# ltx-core's Activation1d: x2 up and down, 12-tap filters; its upsampler's replicate padding and output crop.
RATIO = 2
KERNEL = 12
UP_PAD = KERNEL // RATIO - 1
UP_CROP_LEFT = UP_PAD * RATIO + (KERNEL - RATIO) // 2


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> np.ndarray:
    """ltx-core's ``kaiser_sinc_filter1d`` (from BigVGAN), as a (1, 1, K) array; the checkpoints store these."""
    half = kernel_size // 2
    amplitude = 2.285 * (half - 1) * math.pi * 4 * half_width + 7.95
    if amplitude > 50.0:
        beta = 0.1102 * (amplitude - 8.7)
    elif amplitude >= 21.0:
        beta = 0.5842 * (amplitude - 21) ** 0.4 + 0.07886 * (amplitude - 21.0)
    else:
        beta = 0.0
    time = np.arange(-half, half) + 0.5 if kernel_size % 2 == 0 else np.arange(kernel_size) - half
    taps = 2 * cutoff * np.kaiser(kernel_size, beta) * np.sinc(2 * cutoff * time)
    return (taps / taps.sum()).astype(np.float32).reshape(1, 1, kernel_size)


def hann_sinc_filter(ratio: int, rolloff: float = 0.99, lowpass_filter_width: int = 6) -> tuple[np.ndarray, int]:
    """The Hann-windowed sinc of ltx-core's BWE skip resampler (torchaudio's ``resample``): (taps, half width)."""
    width = math.ceil(lowpass_filter_width / rolloff)
    time = (np.arange(2 * width * ratio + 1, dtype=np.float32) / ratio - width) * rolloff
    window = np.cos(np.clip(time, -lowpass_filter_width, lowpass_filter_width) * math.pi / lowpass_filter_width / 2) ** 2
    return (np.sinc(time) * window * rolloff / ratio).astype(np.float32), width


def upsample(x: mx.array, taps: Sequence[float], ratio: int, pad: int, crop_left: int) -> mx.array:
    """ltx-core ``UpSample1d``: replicate-pad by ``pad``, x``ratio`` transposed conv with ``taps``, crop, scale.

    Output sample ``ratio * s + phase`` is a dot product of the taps ``phi, phi + ratio, ...`` with the
    padded input read backwards from ``s + (phase + crop_left) // ratio``, ``phi = (phase + crop_left) % ratio``.
    """
    length = x.shape[1]
    x = mx.pad(x, [(0, 0), (pad, pad), (0, 0)], mode="edge")
    phases = []
    for phase in range(ratio):
        start, first_tap = divmod(phase + crop_left, ratio)
        acc = None
        for i, tap in enumerate(range(first_tap, len(taps), ratio)):
            term = x[:, start - i : start - i + length] * taps[tap]
            acc = term if acc is None else acc + term
        phases.append(acc)
    b, _, c = x.shape
    return ratio * mx.stack(phases, axis=2).reshape(b, ratio * length, c)


# The downsampling of output s reads the activated upsampled signal u at 2s - 5 .. 2s + 6, clamped to u's ends
# (ltx-core replicate-pads u): the phases are computed this many samples beyond either end of the input, and the
# reads that fall outside u take its first or last sample instead. The reads shift each phase by -3 .. 3 samples.
EDGE = KERNEL // (2 * RATIO)


def _tree_sum(terms: list) -> mx.array:
    # Pairwise, so the fused expression stays shallow (MLX's compile fuses expressions up to a bounded depth).
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


def _snake_phases(padded, scale, inverse, bias, up_taps):
    """SnakeBeta of the x2-upsampled signal as its two phases, ``z_p[m] = snake(y[2m + p])`` for m from -EDGE to
    L + EDGE - 1 (index m + EDGE), from the input edge-padded by UP_PAD + EDGE: phase p of sample 2m + p is a 6-tap
    sum of the padded input read backwards from m + start_p. Each phase is one fused expression of shifted views
    (nothing at the doubled rate but the two phases is written)."""
    length = padded.shape[1] - 2 * UP_PAD
    phases = []
    for phase in range(RATIO):
        start, first = divmod(phase + UP_CROP_LEFT, RATIO)
        # Each phase slices its own view of the input: the phases read some of the same samples, and equal
        # slices (with their float32 casts) would be merged by mx.compile into arrays both kernels need, which
        # it then writes to memory as kernels of their own (4 float32 copies of the input per activation).
        source = padded[:, phase:]
        start -= phase
        reads = [source[:, start - i : start - i + length] for i in range(len(up_taps) // RATIO)]
        if bias is not None:  # the preceding conv's, added as the conv would (in its dtype, before the cast)
            reads = [read + bias for read in reads]
        # RATIO (2) times each tap is exact, so this equals upsample's ``ratio * sum``.
        y = _tree_sum([read.astype(mx.float32) * (RATIO * up_taps[tap])
                       for read, tap in zip(reads, range(first, len(up_taps), RATIO))])
        phases.append(y + inverse * mx.square(mx.sin(y * scale)))
    return phases


def _downsample(even, odd, before, after, down_taps, dtype):
    """The x2 low-pass downsampling of the signal whose (extended) phases are ``even`` and ``odd``: output s sums
    the 12 taps over u[2s - 5 .. 2s + 6], each read a shifted view of one phase. ``before`` and ``after``
    (1, L, 1) hold 2s and 2(L - 1 - s), the samples of u before and after output s's centre, so that reads
    before u's first sample take u[0] and reads past its last take u[2L - 1], as replicate padding does; as
    arrays rather than constants, the length stays out of the kernel's source (MLX builds a kernel per distinct
    source: a constant per length would build kernels for every clip length), and as the products themselves,
    each test is one comparison (MLX's compile fuses expressions up to a depth of 11 operations; a deeper one is
    split into kernels whose intermediate results go through memory). One fused expression."""
    count = even.shape[1] - 2 * EDGE
    first, last = even[:, EDGE : EDGE + 1], odd[:, EDGE + count - 1 : EDGE + count]
    terms = []
    for k, tap in enumerate(down_taps):
        offset = k - (KERNEL // 2 - 1)  # output s reads u[2s + offset]
        half, phase = divmod(offset, RATIO)
        value = (odd if phase else even)[:, EDGE + half : EDGE + half + count]
        if offset < 0:  # s = 0 .. reads before u: 2s + offset < 0
            value = mx.where(before < -offset, first, value)
        if offset > 1:  # s = L - 1 .. reads past u: 2s + offset > 2L - 1
            value = mx.where(after < offset - 1, last, value)
        terms.append(value * tap)
    return _tree_sum(terms).astype(dtype)


@functools.lru_cache(maxsize=64)
def _edges(length: int) -> tuple[mx.array, mx.array, mx.array]:
    """For an input of L samples, from host memory (no kernel, no sync): the indices that read it edge-padded by
    UP_PAD + EDGE (one gather instead of a pad's fill and three copies), and 2s and 2(L - 1 - s) for the L
    outputs, (1, L, 1) int32 each."""
    pad = UP_PAD + EDGE
    gather = np.clip(np.arange(-pad, length + pad), 0, length - 1).astype(np.int32)
    twice = 2 * np.arange(length, dtype=np.int32).reshape(1, length, 1)
    return mx.array(gather), mx.array(twice), mx.array(np.ascontiguousarray(twice[:, ::-1]))


def snake_factors(alpha: mx.array, beta: mx.array) -> tuple[mx.array, mx.array]:
    """SnakeBeta's per-channel factors e^alpha and 1 / (e^beta + 1e-9) from its log-scale parameters, computed in
    the parameters' dtype (as ltx-core does), as float32."""
    return mx.exp(alpha).astype(mx.float32), (1.0 / (mx.exp(beta) + 1e-9)).astype(mx.float32)


@functools.lru_cache
def anti_aliased_snake(up_taps: tuple[float, ...], down_taps: tuple[float, ...], biased: bool = False):
    """The activation ``(x, scale, inverse[, bias]) -> y`` for one pair of filters (every layer shares the same
    pair), with SnakeBeta's factors from :func:`snake_factors`; ``biased``: of ``x + bias``, the bias of the conv
    that produced x added inside the activation's kernels (no kernel of its own).

    The step-by-step form (upsample, SnakeBeta, pad, downsample; the tests' reference) writes and reads five fp32
    signals at twice the input's length; this reads the input once through a gather that pads it, writes the two
    phases of the activated signal once and reads them once: five kernels, the downsampling's two because MLX
    caps a fused kernel's inputs (a vocoder calls it 200 times per clip, so kernel launches decide a short clip's
    time; tests/models/test_audio_bigvgan.py counts them). Equal to the step-by-step form up to fp32 summation
    order."""
    snake_phases = functools.partial(_snake_phases, up_taps=up_taps)
    downsample = functools.partial(_downsample, down_taps=down_taps)

    def activation(x, scale, inverse, gather, before, after, bias=None):
        # Edge padding commutes with a per-channel bias, so the bias can come after the gather.
        even, odd = snake_phases(mx.take(x, gather, axis=1), scale, inverse, bias)
        return downsample(even, odd, before, after, dtype=x.dtype)

    compiled = mx.compile(activation)
    if biased:
        return lambda x, scale, inverse, bias: compiled(x, scale, inverse, *_edges(x.shape[1]), bias)
    return lambda x, scale, inverse: compiled(x, scale, inverse, *_edges(x.shape[1]))


class SnakeBeta(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.alpha = mx.zeros((channels,))
        self.beta = mx.zeros((channels,))
        self._factors_of = None

    def factors(self) -> tuple[mx.array, mx.array]:
        """:func:`snake_factors` of the current parameters, computed again only when new arrays were loaded (three
        small kernels per activation call otherwise, 600 per LTX-2.3 vocoder call)."""
        # Held, not their ids: a freed array's id can be reused by the array loaded in its place.
        held = self._factors_of
        if held is None or held[0] is not self.alpha or held[1] is not self.beta:
            self._factors = snake_factors(self.alpha, self.beta)
            self._factors_of = (self.alpha, self.beta)
        return self._factors


class FilterBuffer(nn.Module):
    """Holds a (1, 1, K) ``filter`` buffer, as ltx-core's resamplers do (the checkpoints carry it)."""

    def __init__(self, taps: np.ndarray):
        super().__init__()
        self._taps = taps
        self.filter = mx.array(taps)
        self._read_from = None

    def taps(self) -> tuple[float, ...]:
        """The current filter as Python floats, read (one device sync) only when a new array was loaded."""
        if self._read_from is not self.filter:
            self._read_from, self._floats = self.filter, tuple(self.filter.astype(mx.float32).reshape(-1).tolist())
        return self._floats

    def reset(self, dtype) -> None:
        """Back to the computed taps (after random weights, which must not touch a fixed filter)."""
        self.filter = mx.array(self._taps).astype(dtype)


class DownSample1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.lowpass = FilterBuffer(kaiser_sinc_filter(0.5 / RATIO, 0.6 / RATIO, KERNEL))


class Activation1d(nn.Module):
    """SnakeBeta between a x2 upsampling and a x2 low-pass downsampling (ltx-core ``Activation1d``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.act = SnakeBeta(channels)
        self.upsample = FilterBuffer(kaiser_sinc_filter(0.5 / RATIO, 0.6 / RATIO, KERNEL))
        self.downsample = DownSample1d()

    def __call__(self, x: mx.array, bias: mx.array | None = None) -> mx.array:
        """The activation of ``x`` or, given the bias its conv left out (``conv_without_bias``), of ``x + bias``."""
        fused = anti_aliased_snake(self.upsample.taps(), self.downsample.lowpass.taps(), bias is not None)
        return fused(x, *self.act.factors()) if bias is None else fused(x, *self.act.factors(), bias)


class AMPBlock1(nn.Module):
    """Three (activation, dilated conv, activation, conv) residual steps; convs are zero-padded 'same'."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = [nn.Conv1d(channels, channels, kernel, dilation=d, padding=d * (kernel - 1) // 2) for d in dilations]
        self.convs2 = [nn.Conv1d(channels, channels, kernel, padding=(kernel - 1) // 2) for _ in dilations]
        self.acts1 = [Activation1d(channels) for _ in dilations]
        self.acts2 = [Activation1d(channels) for _ in dilations]

    def __call__(self, x: mx.array) -> mx.array:
        for conv1, conv2, act1, act2 in zip(self.convs1, self.convs2, self.acts1, self.acts2):
            h = act2(conv_without_bias(conv1, act1(x)), conv1.bias)
            x = settle(biased_residual(x, conv_without_bias(conv2, h), conv2.bias))  # a sync point of the queue
        return x
