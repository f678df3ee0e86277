"""The LTX-2 latent upscalers (spatial x2, temporal x2) in MLX.

Module and parameter names follow ltx-core's ``LatentUpsampler`` one-to-one, so an upscaler file's bare keys
(``initial_conv.weight``, ``res_blocks.0.norm1.bias``, ``upsampler.conv.weight`` ...) map onto it unchanged.
Activations are channels-last inside, (B, F, H, W, C); ``__call__`` takes and returns (B, C, F, H, W).

GroupNorm statistics span the whole clip (all frames of one batch element), as the reference computes them
on its 5-D tensors, and are always computed in float32. The statistics and their application are separate
methods so that :mod:`ltx_ane.models.upscaler.upsample` can accumulate them over temporal chunks.
"""

from __future__ import annotations

import math
from functools import partial

import mlx.core as mx
import mlx.nn as nn

from ltx_ane.models import cuda_jit, fused
from ltx_ane.models.layers import conv_without_bias  # its bias: added by the GroupNorm after it
from ltx_ane.models.queue import DeviceQueue
from ltx_ane.models.upscaler.config import UpsamplerConfig
from ltx_ane.errors import LtxAneError

GROUPS = 32
EPS = 1e-5
BLUR_KERNEL_KEY = "upsampler.blur_down.kernel"


class GroupMoments:
    """Per (batch, group) element count, mean and sum of squared deviations (M2), float32.

    Chunks merge with Chan et al.'s pairwise update, which avoids the cancellation of a raw sum-of-squares
    (E[x^2] - E[x]^2) when a group's mean is large against its spread; the result is the same statistic.
    """

    def __init__(self, count: int, mean: mx.array, m2: mx.array):
        self.count, self.mean, self.m2 = count, mean, m2

    @classmethod
    def of(cls, x: mx.array, groups: int = GROUPS) -> "GroupMoments":
        if fused.group_norm_available(x, groups):  # one pass, no float32 copies (CUDA)
            moments, count = fused.group_moments(x, groups)
            return cls(count, moments[..., 0], moments[..., 1])
        total, m2, count = _group_sums(x, groups)
        b = x.shape[0]
        return cls(count, total.reshape(b, groups) / count, m2.reshape(b, groups))

    def merge(self, other: "GroupMoments") -> "GroupMoments":
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        m2 = self.m2 + other.m2 + mx.square(delta) * (self.count * other.count / n)
        return GroupMoments(n, mean, m2)

    @property
    def var(self) -> mx.array:
        return self.m2 / self.count  # biased, as torch's GroupNorm

    def arrays(self) -> list[mx.array]:
        return [self.mean, self.m2]


def _group_sums(
    x: mx.array, groups: int, bias: mx.array | None = None, split: int = 64
) -> tuple[mx.array, mx.array, int]:
    """Each (batch, group)'s sum and sum of squared deviations from its mean, (B, G, 1, 1) float32, and count.

    ``bias`` (C,), when given, is added to x in float32 first: the forward pass leaves a conv's bias to here.
    """
    b, c = x.shape[0], x.shape[-1]
    per = c // groups
    # Each group's values made contiguous first: reducing over the last axis is far faster on MLX's GPU
    # backends than reducing over two strided axes (3 ms -> well under 1 ms for a 1024x16x16x24 tensor).
    # With a bias, the cast, the bias and the transposing copy are one kernel (an elementwise op with a
    # broadcast input writes a fresh row-major array); the reshape below copies only when nothing did.
    xf = x.reshape(b, -1, groups, per).transpose(0, 2, 1, 3).astype(mx.float32)
    if bias is not None:
        xf = xf + bias.reshape(groups, 1, per).astype(mx.float32)
    count = xf.shape[2] * per
    # Each sum runs in two steps, over (B, G, k) rows first, since a GPU reduces B*G*k short rows far
    # faster than B*G long ones.
    k = math.gcd(count, split)
    xf = xf.reshape(b, groups, k, count // k)
    total = xf.sum(axis=-1, keepdims=True).sum(axis=-2, keepdims=True)
    m2 = mx.square(xf - total / count).sum(axis=-1, keepdims=True).sum(axis=-2, keepdims=True)
    return total, m2, count


class GroupNorm(nn.Module):
    """torch.nn.GroupNorm(32, C, eps=1e-5) over channels-last input, statistics over every non-batch axis."""

    def __init__(self, channels: int, groups: int = GROUPS, eps: float = EPS):
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = mx.ones((channels,))
        self.bias = mx.zeros((channels,))

    def moments(self, x: mx.array) -> GroupMoments:
        return GroupMoments.of(x, self.groups)

    def scale_shift(self, moments: GroupMoments, ndim: int) -> tuple[mx.array, mx.array]:
        """The norm as a per (batch, channel) float32 scale and shift, shaped to broadcast over ndim axes."""
        b, g = moments.mean.shape
        per = self.weight.shape[0] // g
        # Reshape before the casts: a cast followed by a reshape is a kernel of its own, even when compiled.
        scale = mx.rsqrt(moments.var + self.eps)[:, :, None] * self.weight.reshape(g, per).astype(mx.float32)
        shift = self.bias.reshape(g, per).astype(mx.float32) - moments.mean[:, :, None] * scale
        shape = (b,) + (1,) * (ndim - 2) + (g * per,)
        return scale.reshape(shape), shift.reshape(shape)

    def normalize(self, x: mx.array, moments: GroupMoments) -> mx.array:
        """Normalize with given statistics (computed in float32, returned in x's dtype)."""
        return _affine(x, *self.scale_shift(moments, x.ndim))

    def norm_silu(self, x: mx.array, bias: mx.array | None = None, residual: mx.array | None = None,
                  overwrite: bool = False) -> mx.array:
        """SiLU(norm(x [+ bias]) [+ residual]) in float32, the forward pass's form.

        ``bias`` is the preceding conv's, left out of the conv so that it is added in float32 inside the kernels
        that run anyway (no bias-add kernel, no bf16 rounding of the biased output). Everything after the
        reductions is one elementwise expression over x viewed as (B, N, G, C/G), so that, compiled, it is a
        single kernel: the per-group scale and shift are recomputed per element (a few flops) instead of being
        small kernels of their own, whose launches cost more than the arithmetic on a GPU. The expression is
        kept shallow (no division of the sums, ``rsqrt(m2 + n*eps) * sqrt(n)`` for ``rsqrt(m2/n + eps)``):
        MLX splits a fused kernel that gets too deep.

        ``overwrite`` lets the CUDA kernels write the result over x (see :func:`fused.group_norm_silu`: x a conv's
        fresh output, the result evaluated before anything reads it); the MLX ops ignore it.
        """
        b, c, g = x.shape[0], x.shape[-1], self.groups
        if fused.group_norm_available(x, g):  # CUDA: three kernels, no float32 copies (see models/fused.py)
            return fused.group_norm_silu(x, g, self.eps, self.weight, self.bias, bias, residual, overwrite)
        per = c // g
        total, m2, count = _group_sums(x, g, bias)
        total, m2 = total.reshape(b, 1, g, 1), m2.reshape(b, 1, g, 1)
        inv_std = mx.rsqrt(m2 + count * self.eps) * math.sqrt(count)
        y = x.reshape(b, -1, g, per).astype(mx.float32)
        if bias is not None:
            y = y + bias.reshape(g, per).astype(mx.float32)
        y = (y - total / count) * inv_std * self.weight.reshape(g, per) + self.bias.reshape(g, per)
        if residual is not None:
            y = y + residual.reshape(b, -1, g, per).astype(mx.float32)
        return (y * mx.sigmoid(y)).astype(x.dtype).reshape(x.shape)

    def __call__(self, x: mx.array) -> mx.array:
        return self.normalize(x, self.moments(x))


@partial(mx.compile, shapeless=True)
def _affine(x: mx.array, scale: mx.array, shift: mx.array) -> mx.array:
    # Compiled so the float32 round trip fuses into one elementwise pass instead of materializing copies.
    return (x.astype(mx.float32) * scale + shift).astype(x.dtype)


class ResBlock(nn.Module):
    """conv1 -> GN -> SiLU -> conv2 -> GN, then SiLU(x + residual) (ltx-core ``upsampler.ResBlock``).

    Also as two halves, one per conv and norm, so that each can end a queued piece of the forward pass (see
    ``LatentUpsampler.stages``); the first passes the block's input on for the residual.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.norm1 = GroupNorm(channels)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.norm2 = GroupNorm(channels)

    def first_half(self, x: mx.array, overwrite: bool = False) -> tuple[mx.array, mx.array]:
        return self.norm1.norm_silu(conv_without_bias(self.conv1, x), self.conv1.bias, overwrite=overwrite), x

    def second_half(self, hx: tuple[mx.array, mx.array], overwrite: bool = False) -> mx.array:
        h, x = hx
        return self.norm2.norm_silu(conv_without_bias(self.conv2, h), self.conv2.bias, residual=x,
                                    overwrite=overwrite)

    def __call__(self, x: mx.array) -> mx.array:
        return self.second_half(self.first_half(x))


class SpatialRationalResampler(nn.Module):
    """The v1.0 spatial x2 upsampler: per-frame Conv2d to 4x channels and a 2x2 pixel shuffle.

    Its blur-downsample has stride 1 at scale 2 and returns its input unchanged in the reference, so it has no
    counterpart here; the loader checks its kernel buffer is in the file and leaves it out.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 4 * channels, kernel_size=3, padding=1)

    def __call__(self, x: mx.array) -> mx.array:
        return spatial_upsample(x, self.conv)


def spatial_upsample(x: mx.array, conv: nn.Conv2d) -> mx.array:
    """(B, F, H, W, C) -> (B, F, 2H, 2W, C): per-frame conv, then depth-to-space with channels (c, ph, pw)."""
    b, f, h, w, c = x.shape
    y = conv(x.reshape(b * f, h, w, c))
    y = y.reshape(b, f, h, w, c, 2, 2).transpose(0, 1, 2, 5, 3, 6, 4)
    return y.reshape(b, f, 2 * h, 2 * w, c)


def temporal_shuffle(y: mx.array) -> mx.array:
    """(B, F, H, W, 2C) -> (B, 2F, H, W, C), channels ordered (c, pt) as ltx-core's PixelShuffleND(1)."""
    b, f, h, w, c2 = y.shape
    y = y.reshape(b, f, h, w, c2 // 2, 2).transpose(0, 1, 5, 2, 3, 4)
    return y.reshape(b, 2 * f, h, w, c2 // 2)


class LatentUpsampler(nn.Module):
    """Latent (B, C, F, h, w) -> (B, C, F, 2h, 2w) (spatial) or (B, C, 2F-1, h, w) (temporal).

    Works on un-normalized latents; :func:`ltx_ane.models.upscaler.upsample.upsample` wraps it with the VAE's statistics.

    ``compile`` runs the forward pass through ``mx.compile`` (each stage traced once per input shape), which fuses
    each GroupNorm's elementwise steps into a few kernels. Most kernels here are small, and on a GPU their launch
    cost rather than the convolutions decides the time: with MLX ops, compiled, a call took about half as long (7.8
    against 16.5 ms at 16x8x12 on an H200, benchmarks/results/upsampler_cuda.md). On MLX's CUDA backend each
    GroupNorm + SiLU is now three kernels of models/fused.py either way, and compiling saves up to a quarter (8.9
    against 11.7 ms at 16x8x12, 5.7 against 6.7 temporal, 14.6 either way at 16x11x20;
    upsampler_inplace_drain_cuda.md). But the compiled call's kernels are built at their first use: ~40 of them,
    40-50 s on a machine whose kernel cache is empty, 0.3-0.4 s once it holds them
    (benchmarks/results/cold_start_cuda.md). A generation upsamples once, so the build would never pay for itself
    there. None (the default) therefore compiles on a GPU from the second call of a shape on, when the model is being
    reused; True compiles from the first call, False never (nor on the CPU by default, where builds take longer than
    the small runs that happen there).
    """

    # Stages queued on the device while the host builds the next (see models/queue.py).
    stages_in_flight: int = 1

    def __init__(self, config: UpsamplerConfig, compile: bool | None = None):
        super().__init__()
        self.config = config
        self.compile = compile
        self._traced = None
        self._shapes_seen: set = set()
        c, mid, n = config.in_channels, config.mid_channels, config.num_blocks_per_stage
        self.initial_conv = nn.Conv3d(c, mid, kernel_size=3, padding=1)
        self.initial_norm = GroupNorm(mid)
        self.res_blocks = [ResBlock(mid) for _ in range(n)]
        if config.temporal_upsample:
            self.upsampler = [nn.Conv3d(mid, 2 * mid, kernel_size=3, padding=1)]
        elif config.rational_resampler:
            self.upsampler = SpatialRationalResampler(mid)
        else:
            self.upsampler = [nn.Conv2d(mid, 4 * mid, kernel_size=3, padding=1)]
        self.post_upsample_res_blocks = [ResBlock(mid) for _ in range(n)]
        self.final_conv = nn.Conv3d(mid, c, kernel_size=3, padding=1)

    @property
    def temporal(self) -> bool:
        return self.config.temporal_upsample

    @property
    def upsampler_conv(self):
        return self.upsampler.conv if isinstance(self.upsampler, SpatialRationalResampler) else self.upsampler[0]

    def norms(self) -> list[GroupNorm]:
        """Every GroupNorm in the order the forward pass meets them."""
        out = [self.initial_norm]
        for block in [*self.res_blocks, *self.post_upsample_res_blocks]:
            out += [block.norm1, block.norm2]
        return out

    def upsample_channels_last(self, x: mx.array) -> mx.array:
        """The middle step alone: (B, F, H, W, mid) -> upsampled, still channels-last."""
        if self.temporal:
            return temporal_shuffle(self.upsampler_conv(x))[:, 1:]  # frame 0 stands for one pixel frame
        return spatial_upsample(x, self.upsampler_conv)

    def initial(self, x: mx.array, overwrite: bool = False) -> mx.array:
        return self.initial_norm.norm_silu(conv_without_bias(self.initial_conv, x), self.initial_conv.bias,
                                           overwrite=overwrite)

    @property
    def norms_in_place(self) -> bool:
        """Whether each norm writes over its conv's output: where MLX's CUDA backend runs the norm kernels and the
        forward pass is queued piece by piece, each piece ending its own CUDA graph (``stages_in_flight`` not None).
        Each norm then allocates no activation-sized buffer; a res block held its input, both convs' outputs and
        both norms' outputs until its graph had run (benchmarks/results/upscaler_memory_cuda.txt)."""
        return self.stages_in_flight is not None and cuda_jit.available() and fused.group_layout_fits(
            self.config.mid_channels, self.initial_conv.weight.dtype, GROUPS)

    def stages(self) -> list:
        """The forward pass as a sequence of channels-last steps: the unit of compilation and of queueing (see
        ``forward_channels_last``). With ``norms_in_place`` each res block is two steps, a conv and the norm that
        overwrites its output each, so that every overwritten buffer is read only in a later CUDA graph."""
        if not self.norms_in_place:
            return [self.initial, *self.res_blocks, self.upsample_channels_last, *self.post_upsample_res_blocks,
                    self.final_conv]

        def halves(blocks):
            return [partial(half, overwrite=True) for b in blocks for half in (b.first_half, b.second_half)]

        return [partial(self.initial, overwrite=True), *halves(self.res_blocks), self.upsample_channels_last,
                *halves(self.post_upsample_res_blocks), self.final_conv]

    def forward_channels_last(self, x: mx.array, stages: list | None = None) -> mx.array:
        """The stages (``stages()`` op by op unless given) in order, each started on the device as soon as it is
        built, so that the device works on the first blocks while the host still builds the later ones; at most
        ``stages_in_flight`` wait on the device, since each queued stage holds its buffers until it has run (see
        models/queue.py). Built as one graph instead, the op-by-op pass (a shape's first call on a GPU) held
        1.1 / 2.6 GB above the weights (temporal / spatial on an H200, results/upscaler_memory_cuda.txt). After the
        upsampling, where the activations are 2-4x larger and the peak is set, the queue drains (models/queue.py),
        so that no finished stage's buffers are still held when a later one allocates
        (results/upscaler_pieces_cuda.txt)."""
        *head, last = self.stages() if stages is None else stages
        upsampling = len(head) // 2  # head: the initial stage, n pieces, the upsampling, n pieces
        queue = DeviceQueue(self.stages_in_flight)
        for i, stage in enumerate(head):
            x = stage(x)
            queue.drain = i > upsampling
            queue.push(x)
        queue.finish()
        return last(x)

    def __call__(self, latent: mx.array) -> mx.array:
        if latent.ndim != 5 or latent.shape[1] != self.config.in_channels:
            raise LtxAneError(
                f"upscaler input must be (B, {self.config.in_channels}, F, h, w), got {list(latent.shape)}"
            )
        x = latent.transpose(0, 2, 3, 4, 1)
        x = self._run_compiled(x) if self._compiles_call(tuple(x.shape)) else self.forward_channels_last(x)
        return x.transpose(0, 4, 1, 2, 3)

    @property
    def compiled(self) -> bool:
        """Whether calls run the compiled forward: ``compile``, or by default on a GPU from a shape's second call."""
        return self.compile if self.compile is not None else mx.default_device() == mx.gpu

    def _compiles_call(self, shape: tuple[int, ...]) -> bool:
        if self.compile is not None or not self.compiled:
            return self.compiled
        seen = shape in self._shapes_seen
        self._shapes_seen.add(shape)
        return seen

    def _run_compiled(self, x: mx.array) -> mx.array:
        # One compiled function per stage, queued as the op-by-op stages are: one function for the whole pass
        # leaves the GPU idle until the host has encoded a large part of it; on an H100 (MLX's CUDA backend) the
        # temporal x2 pass took 6.4 ms that way and 5.3 ms this way.
        in_place = self.norms_in_place
        if self._traced is None or self._traced[0] != in_place:
            # The traces hold the parameters as constants: passing them as inputs instead (``inputs=state``)
            # costs a tree walk over ~140 arrays on every call. ``update`` (which load_weights, apply and
            # set_dtype go through) drops the traces, so changed weights are never run with stale ones.
            self._traced = in_place, [mx.compile(stage) for stage in self.stages()]
        return self.forward_channels_last(x, self._traced[1])

    def update(self, parameters: dict, strict: bool = True):
        self._traced = None
        return super().update(parameters, strict=strict)
