"""Building blocks shared by the MLX models: for the VAE a causal 3-D conv, pixel norm, residual blocks, depth/space
shuffles; for the transformer and the text connectors the GELU-tanh feed-forward; for the upscalers and vocoders a
conv whose bias joins the elementwise kernel after it.

The VAE's activations are channels-last, (B, F, H, W, C), the layout MLX's ``conv3d`` takes. Module and parameter
names follow ltx-core one-to-one, so checkpoint keys map onto them by stripping a prefix.
"""

from __future__ import annotations

import math
from functools import partial

import mlx.core as mx
import mlx.nn as nn

from ltx_ane.models import fused
from ltx_ane.models.queue import ends_graph, is_newest_piece, settle


def conv_without_bias(conv: nn.Conv1d | nn.ConvTranspose1d | nn.Conv3d, x: mx.array) -> mx.array:
    """``conv(x)`` less its bias, for a caller that adds the bias inside the elementwise kernel that follows (on a
    GPU a separate bias add is a kernel launch and a pass over the output)."""
    if isinstance(conv, nn.ConvTranspose1d):
        return mx.conv_transpose1d(x, conv.weight, conv.stride, conv.padding, conv.dilation, conv.output_padding)
    if conv.weight.ndim == 3:
        return mx.conv1d(x, conv.weight, conv.stride, conv.padding, conv.dilation, conv.groups)
    return mx.conv3d(x, conv.weight, conv.stride, conv.padding, conv.dilation)  # nn.Conv3d has no groups


@partial(mx.compile, shapeless=True)
def biased_residual(x: mx.array, y: mx.array, bias: mx.array) -> mx.array:
    """``x + (y + bias)``: a residual add with the preceding conv's bias, one kernel, the same operations and dtypes
    as the conv's own bias add followed by the add."""
    return x + (y + bias)


def settled_residual(x: mx.array, h: mx.array, bias: mx.array) -> mx.array:
    """``eval_if_large(x + (h + bias))``, h a fresh conv output that nothing else reads: one CUDA kernel
    (``fused.residual_add``) where it runs, writing the sum over h when that ends a graph of its own (a later kernel
    of the same CUDA graph could read h before the write: MLX orders kernels by the buffers they declare as
    outputs); else :func:`biased_residual`."""
    if fused.residual_add_available(h):
        return eval_if_large(fused.residual_add(x, h, bias, overwrite=is_large(h) and ends_graph()))
    return eval_if_large(biased_residual(x, h, bias))


def pixel_norm(x: mx.array, eps: float = fused.PIXEL_NORM_EPS) -> mx.array:
    # rms_norm accumulates in fp32, so x**2 cannot overflow in fp16 the way the reference's formula would.
    return mx.fast.rms_norm(x, None, eps)


# Above this size an intermediate is evaluated before the next one is built: MLX's GPU backends free a
# buffer only when the kernels using it have finished, so without these sync points every padded copy of a
# conv input stays alive at once and sets the memory peak. Below it, a sync costs more than it saves.
EVAL_BYTES = 16 * 2**20


def is_large(x: mx.array) -> bool:
    """Whether :func:`eval_if_large` makes a sync point of x."""
    return x.nbytes > EVAL_BYTES


def eval_if_large(x: mx.array) -> mx.array:
    """A sync point for a large intermediate (``models.queue.settle``: at once, or queued within a forward pass)."""
    return settle(x) if is_large(x) else x


def pad_frames(x: mx.array, causal: bool, reflect_hw: bool) -> mx.array:
    """Time padding by repeated edge frames and, if asked, reflect padding of H and W (torch's 'reflect')."""
    first = x[:, :1]
    x = mx.concatenate([first, first, x] if causal else [first, x, x[:, -1:]], axis=1)
    if not reflect_hw:
        return x
    x = eval_if_large(x)
    x = eval_if_large(mx.concatenate([x[:, :, 1:2], x, x[:, :, -2:-1]], axis=2))
    return mx.concatenate([x[:, :, :, 1:2], x, x[:, :, :, -2:-1]], axis=3)


def norm_silu_pad(x: mx.array, bias: mx.array | None, causal: bool, reflect_hw: bool) -> mx.array:
    """``pad_frames(SiLU(PixelNorm(x + bias)), causal, reflect_hw)``: one kernel on MLX's CUDA backend
    (:mod:`ltx_ane.models.fused`), MLX ops elsewhere. ``bias`` is the preceding conv's, or None."""
    if fused.fused_available(x):
        return fused.norm_silu_pad(x, bias, causal, reflect_hw)
    if bias is not None:
        x = x + bias
    return pad_frames(nn.silu(pixel_norm(x)), causal, reflect_hw)


class CausalConv3d(nn.Module):
    """A 3x3x3 conv whose time padding repeats edge frames (ltx-core ``CausalConv3d``).

    causal: two copies of frame 0 in front; non-causal: one copy of the first frame in front and one of the last
    behind. Space is padded by one, with zeros (inside the conv) or by reflection.
    """

    def __init__(self, in_channels: int, out_channels: int, stride=(1, 1, 1), spatial_padding_mode: str = "zeros"):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=stride, padding=0)
        self.stride = tuple(stride)
        self.reflect = spatial_padding_mode == "reflect"

    def __call__(self, x: mx.array, causal: bool = True, bias: bool = True) -> mx.array:
        """The conv; ``bias=False`` leaves the bias out, for a caller that adds it in a pass it makes anyway."""
        return self.convolve(pad_frames(x, causal, self.reflect), bias)

    def norm_silu_conv(self, x: mx.array, causal: bool, input_bias: mx.array | None = None, bias: bool = True):
        """``self(SiLU(PixelNorm(x + input_bias)))``; with ``bias=False`` the output lacks this conv's bias, for a
        caller that passes it on as the next call's ``input_bias`` (where the fused kernel adds it for free)."""
        return self.convolve(norm_silu_pad(x, input_bias, causal, self.reflect), bias)

    def convolve(self, padded: mx.array, bias: bool = True, width: int | None = None) -> mx.array:
        """The conv of an input already padded in time (and in space, for reflect padding). ``width``: run with
        that many output channels, those beyond the conv's from zero weights (``fused.conv_out_width``), no bias."""
        weight = self.conv.weight
        if width is not None and width != weight.shape[0]:
            if bias or width < weight.shape[0]:
                raise ValueError(f"a conv of {weight.shape[0]} output channels run {width} wide (with bias={bias})")
            weight = mx.pad(weight, [(0, width - weight.shape[0])] + [(0, 0)] * 4)
        y = mx.conv3d(padded, weight, stride=self.stride, padding=(0, 0, 0) if self.reflect else (0, 1, 1))
        return y + self.conv.bias if bias else y


class ResnetBlock3D(nn.Module):
    """PixelNorm -> SiLU -> conv -> PixelNorm -> SiLU -> conv, plus the input."""

    def __init__(self, channels: int, spatial_padding_mode: str):
        super().__init__()
        self.conv1 = CausalConv3d(channels, channels, spatial_padding_mode=spatial_padding_mode)
        self.conv2 = CausalConv3d(channels, channels, spatial_padding_mode=spatial_padding_mode)

    def __call__(self, x: mx.array, causal: bool) -> mx.array:
        h = self.conv1.norm_silu_conv(x, causal, bias=False)
        h = self.conv2.norm_silu_conv(h, causal, input_bias=self.conv1.conv.bias, bias=False)
        # conv2's bias and the residual in one pass (a broadcast bias add was the decoders' slowest elementwise
        # kernel on an H200, benchmarks/results/kernels_vae_fused_cuda.md); the same bf16 roundings as before.
        # Evaluated block by block (eval_if_large) to bound the live intermediates (and, on macOS, to keep each GPU
        # command buffer short enough not to be killed for hurting interactivity).
        return settled_residual(x, h, self.conv2.conv.bias)


class UNetMidBlock3D(nn.Module):
    """A ``res_x`` block: ``num_layers`` residual blocks at one width."""

    def __init__(self, channels: int, num_layers: int, spatial_padding_mode: str):
        super().__init__()
        self.res_blocks = [ResnetBlock3D(channels, spatial_padding_mode) for _ in range(num_layers)]

    def __call__(self, x: mx.array, causal: bool) -> mx.array:
        if chain_available(x):
            return self.chained(x, causal)
        for block in self.res_blocks:
            x = block(x, causal)
        return x

    def then_norm(self, x: mx.array, causal: bool, conv: CausalConv3d) -> mx.array:
        """``norm_silu_pad(self(x, causal), None, causal, conv.reflect)``: the padded input of the conv that follows
        the block (the decoders' ``conv_out``); chained, the last residual add and that norm are one kernel."""
        if chain_available(x):
            return self.chained(x, causal, norm_for=conv)
        return norm_silu_pad(self(x, causal), None, causal, conv.reflect)

    def chained(self, x: mx.array, causal: bool, norm_for: CausalConv3d | None = None) -> mx.array:
        """The residual blocks as pieces that each allocate one activation, the conv's output: every norm writes
        its padded result over one buffer the stage keeps, and each block's residual add is the next block's first
        norm (``fused.add_norm_silu_pad``), written over the conv output it reads. The same values as the blocks
        one by one (the same kernels' arithmetic), one pass over the activation fewer per block, and one buffer
        fewer at the peak (unless MLX returns a finished piece's buffers after the next has allocated: then as
        before, benchmarks/results/vae_chained_*ltx23.md). As such a piece allocates so little, it may be queued
        behind the one running (``settle(..., overlap=True)``), where a block that runs alone left the device idle
        while the host waited for it and started the next (~0.6-0.75 ms a block at the LTX-2.3 decoder's last
        stage on an H200, benchmarks/results/decode_gaps_ltx23_cuda.txt). A kernel's writes over a buffer are not
        outputs MLX orders the CUDA graph by, so each piece ends where its written-over results are read next: conv1
        and the norm after it; conv2 and the add + norm after it. With ``norm_for``, the last block's add is fused
        with that conv's norm as well, and the padded input of that conv is returned (:meth:`then_norm`)."""
        # The first norm allocates the stage's buffer; it may overlap only where x holds no unsettled work.
        padded = settle(fused.norm_silu_pad(x, None, causal, self.res_blocks[0].conv1.reflect),
                        overlap=is_newest_piece(x))
        for i, block in enumerate(self.res_blocks):
            h = block.conv1.convolve(padded, bias=False)
            padded = settle(fused.norm_silu_pad(h, block.conv1.conv.bias, causal, block.conv2.reflect, into=padded),
                            overlap=True)
            h = block.conv2.convolve(padded, bias=False)
            last = i + 1 == len(self.res_blocks)
            if last and norm_for is None:
                return settle(fused.residual_add(x, h, block.conv2.conv.bias, overwrite=True), overlap=True)
            following = norm_for if last else self.res_blocks[i + 1].conv1
            x, padded = settle(list(fused.add_norm_silu_pad(x, h, block.conv2.conv.bias, causal, following.reflect,
                                                            into=padded)), overlap=True)
        return padded


def chain_available(x: mx.array) -> bool:
    """Whether ``UNetMidBlock3D.chained`` runs for x: the CUDA kernels apply, every sync point ends a graph (their
    writes over buffers need that), and x is large enough that the blocks would be evaluated piece by piece anyway."""
    return fused.fused_available(x) and fused.residual_add_available(x) and ends_graph() and is_large(x)


def depth_to_space(x: mx.array, stride: tuple[int, int, int], bias: mx.array | None = None,
                   residual: mx.array | None = None, drop_first_frame: bool = False) -> mx.array:
    """(B, F, H, W, C*pt*ph*pw) -> (B, F*pt, H*ph, W*pw, C), channels ordered (c, pt, ph, pw) as in ltx-core.

    ``(x + bias) + residual`` before the rearrangement (``bias`` per input channel; ``residual`` x's shape, or with
    fewer channels that repeat over x's), then frame 0 left out with ``drop_first_frame``. One CUDA kernel where
    :func:`fused.depth_to_space_available`; with MLX ops the adds run on the rearranged views, so that they write the
    rearranged result (one pass instead of the add and a copy), the same values (a permutation of the same additions).
    """
    if fused.depth_to_space_available(x, residual):
        return fused.depth_to_space(x, stride, bias, residual, drop_first_frame)
    b, f, h, w, c = x.shape
    pt, ph, pw = stride
    c_out = c // (pt * ph * pw)

    def rearranged(a: mx.array) -> mx.array:  # (..., c_out, pt, ph, pw) -> (b, f, pt, h, ph, w, pw, c_out)
        return a.reshape(b, f, h, w, c_out, pt, ph, pw).transpose(0, 1, 5, 2, 6, 3, 7, 4)

    x = rearranged(x)
    if bias is not None:
        x = x + bias.reshape(c_out, pt, ph, pw).transpose(1, 2, 3, 0).reshape(pt, 1, ph, 1, pw, c_out)
    if residual is not None:
        x = x + rearranged(mx.tile(residual, (1, 1, 1, 1, c // residual.shape[-1])))
    x = x.reshape(b, f * pt, h * ph, w * pw, c_out)
    return x[:, 1:] if drop_first_frame else x


def space_to_depth(x: mx.array, stride: tuple[int, int, int], bias: mx.array | None = None,
                   skip: mx.array | None = None) -> mx.array:
    """Inverse of :func:`depth_to_space`: channels come out ordered (c, pt, ph, pw).

    ``space_to_depth(x + bias) + skip`` (``bias`` per input channel, ``skip`` the result's shape) as adds on the
    rearranged view: they write the rearranged result themselves, one pass fewer, the same values."""
    b, f, h, w, c = x.shape
    pt, ph, pw = stride
    x = x.reshape(b, f // pt, pt, h // ph, ph, w // pw, pw, c)
    x = x.transpose(0, 1, 3, 5, 7, 2, 4, 6)
    if bias is not None:
        x = x + bias.reshape(c, 1, 1, 1)
    if skip is not None:
        x = x + skip.reshape(x.shape)
    return x.reshape(b, f // pt, h // ph, w // pw, c * pt * ph * pw)


def patchify(x: mx.array, patch: int) -> mx.array:
    """(B, F, H, W, C) pixels -> (B, F, H/p, W/p, C*p*p), channels ordered (c, w-offset, h-offset) as in ltx-core."""
    b, f, h, w, c = x.shape
    x = x.reshape(b, f, h // patch, patch, w // patch, patch, c)
    x = x.transpose(0, 1, 2, 4, 6, 5, 3)
    return x.reshape(b, f, h // patch, w // patch, c * patch * patch)


def unpatchify(x: mx.array, patch: int, bias: mx.array | None = None, channels: int | None = None) -> mx.array:
    """Inverse of :func:`patchify`, of ``x + bias`` (one CUDA kernel where :func:`fused.depth_to_space_available`).
    ``channels``: of x's first ``channels`` channels only (x a conv output run wider, ``fused.conv_out_width``)."""
    if fused.depth_to_space_available(x):
        return fused.depth_to_space(x, (1, patch, patch), bias, width_first=True, channels=channels)
    if channels is not None:
        x = x[..., :channels]
    if bias is not None:
        x = x + bias
    b, f, h, w, cpp = x.shape
    c = cpp // (patch * patch)
    x = x.reshape(b, f, h, w, c, patch, patch)  # (c, w-offset, h-offset)
    x = x.transpose(0, 1, 2, 6, 3, 5, 4)
    return x.reshape(b, f, h * patch, w * patch, c)


class PerChannelStatistics(nn.Module):
    """The latent's per-channel mean and std, under the checkpoint's own (hyphenated) names."""

    def __init__(self, channels: int):
        super().__init__()
        self["mean-of-means"] = mx.zeros((channels,))
        self["std-of-means"] = mx.ones((channels,))

    def normalize(self, x: mx.array) -> mx.array:
        return (x - self["mean-of-means"].astype(x.dtype)) / self["std-of-means"].astype(x.dtype)

    def un_normalize(self, x: mx.array) -> mx.array:
        return x * self["std-of-means"].astype(x.dtype) + self["mean-of-means"].astype(x.dtype)


@mx.compile
def gelu_tanh(x: mx.array) -> mx.array:
    """GELU, tanh approximation, computed in float32 and rounded once to x's dtype, as torch's
    ``gelu(approximate="tanh")`` (ltx-core's) computes half-precision inputs. MLX's ``nn.gelu_approx`` computes
    in the input's dtype: on random bf16 inputs 42 % of its outputs differ from torch's, against 0.4 % here.

    Traced per shape rather than shapeless: the shapeless trace writes the result to a new buffer (and, on the
    CPU, the float32 intermediate too), while this one writes over its input when nothing else holds it, as
    after a linear layer. A GPU backend keeps a queued kernel's buffers until it has run, so the second buffer
    would cost the width of the feed-forward's hidden layer (201 MB per block at 6,144 tokens and 19B)."""
    y = x.astype(mx.float32)
    return (0.5 * y * (1 + mx.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * (y * y * y))))).astype(x.dtype)


class GELUApprox(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def __call__(self, x: mx.array) -> mx.array:
        return gelu_tanh(self.proj(x))


class FeedForward(nn.Module):
    """Linear (x4), GELU (tanh), Linear; ``net.0.proj`` and ``net.2`` as in the checkpoints (ltx-core's
    ``FeedForward``, used by the transformer blocks and the text connectors)."""

    def __init__(self, dim: int, dim_out: int | None = None, mult: int = 4):
        super().__init__()
        self.net = [GELUApprox(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim_out or dim)]

    def __call__(self, x: mx.array, settle_hidden: bool = False) -> mx.array:
        """``settle_hidden``: a sync point (``models.queue.settle``) on the GELU output, the widest intermediate."""
        hidden = self.net[0](x)
        if settle_hidden:
            settle(hidden)
        return self.net[2](hidden)
