"""The two-stage upsample step, ``normalize(upscaler(un_normalize(latent)))``, in one shot or in temporal chunks.

The upscalers' GroupNorms take their statistics over the whole clip, so cutting the clip into chunks and running
each alone changes the result. The chunked mode here is exact instead: it streams the clip through the network
frame-chunk by frame-chunk once per GroupNorm. Pass k runs the layers up to GroupNorm k, normalizing GroupNorms
1..k-1 with the statistics earlier passes stored, and accumulates GroupNorm k's statistics (count, mean and
squared deviations per group, float32); a last pass produces the output. Every conv is 3x3x3 with zero
padding, so a streamed conv only has to keep the last two input frames it has seen: its output for frame t is
ready once frame t+1 has arrived, and a zero frame stands for the padding at either end of the clip. Memory is
then bounded by the chunk and a few frames per layer, whatever the clip length; the price is compute, about
(number of GroupNorms + 1) / 2 times a one-shot run's convolutions (~9x for the LTX-2 upscalers), and more wall
time than that when chunks are small, since each conv call then has little work per weight it reads: use the
largest chunk that fits.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ltx_ane.errors import LtxAneError

STATS_PREFIX = "vae.per_channel_statistics."
STAT_NAMES = ("mean-of-means", "std-of-means")


# ------------------------------------------------------------------------------------------- statistics


@dataclass
class LatentStatistics:
    """The VAE's per-channel latent mean and std (float32, one value per latent channel)."""

    mean: np.ndarray
    std: np.ndarray

    def check(self, channels: int, where: str = "statistics") -> None:
        for name, value in (("mean-of-means", self.mean), ("std-of-means", self.std)):
            if value.shape != (channels,):
                raise LtxAneError(f"{where}: {name} has shape {list(value.shape)}, the upscaler wants [{channels}]")
            if not np.all(np.isfinite(value)):
                raise LtxAneError(f"{where}: {name} holds non-finite values")
        if np.any(self.std <= 0):
            raise LtxAneError(f"{where}: std-of-means holds values <= 0")


def load_statistics(spec: str | Path) -> LatentStatistics:
    """Only the two statistics tensors of a VAE checkpoint (a file or a cached Hugging Face repo)."""
    import mlx.core as mx

    from ltx_ane.io.checkpoint import read_header, resolve_checkpoint

    path = resolve_checkpoint(spec, wanted_prefix=STATS_PREFIX)
    header = read_header(path)
    missing = [STATS_PREFIX + n for n in STAT_NAMES if STATS_PREFIX + n not in header.tensors]
    if missing:
        raise LtxAneError(f"{path} has no VAE latent statistics (missing {', '.join(missing)})")
    try:
        arrays = mx.load(str(path))
    except (RuntimeError, ValueError) as e:
        raise LtxAneError(f"cannot read {path}: {e}") from None
    mean, std = (np.array(arrays[STATS_PREFIX + n].astype(mx.float32)) for n in STAT_NAMES)
    return LatentStatistics(mean=mean, std=std)


def random_statistics(channels: int = 128, seed: int = 0) -> LatentStatistics:
    """Plausible statistics (as the random-weight VAE uses): means near 0, stds in [0.5, 1.5]."""
    rng = np.random.default_rng(seed)
    return LatentStatistics(
        mean=(rng.standard_normal(channels) * 0.1).astype(np.float32),
        std=rng.uniform(0.5, 1.5, channels).astype(np.float32),
    )


# ------------------------------------------------------------------------------------------- one shot


def output_frames(model, frames: int) -> int:
    return 2 * frames - 1 if model.config.temporal_upsample else frames


def check_latent_shape(model, shape) -> None:
    c = model.config.in_channels
    if len(shape) != 5:
        raise LtxAneError(f"latent must be 5-D (B, C, F, h, w), got shape {list(shape)}")
    if shape[1] != c:
        raise LtxAneError(f"latent has {shape[1]} channels, the upscaler takes {c} (shape {list(shape)})")
    if min(shape) < 1:
        raise LtxAneError(f"latent is empty (shape {list(shape)})")


def upsample(latent, model, stats: LatentStatistics):
    """``normalize(model(un_normalize(latent)))`` on an MLX (B, C, F, h, w) array, all at once.

    The statistics are applied in float32; the upscaler runs in its own dtype; the result is float32.
    """
    import mlx.core as mx

    check_latent_shape(model, latent.shape)
    mean, std = _stat_arrays(stats, ndim=5, channel_axis=1)
    x = (latent.astype(mx.float32) * std + mean).astype(_dtype(model))
    y = model(x).astype(mx.float32)
    return (y - mean) / std


def upsample_latent(latent: np.ndarray, model, stats: LatentStatistics, chunk_frames: int | None = None) -> np.ndarray:
    """The two-stage step on a host (B, C, F, h, w) array; ``chunk_frames`` selects the exact low-memory mode."""
    import mlx.core as mx

    check_latent_shape(model, latent.shape)
    stats.check(model.config.in_channels)
    if chunk_frames is None:
        out = upsample(mx.array(latent), model, stats)
        mx.eval(out)
        return np.array(out)
    return upsample_chunked(latent, model, stats, chunk_frames)


def _dtype(model):
    return model.initial_conv.weight.dtype


def _stat_arrays(stats: LatentStatistics, ndim: int, channel_axis: int):
    import mlx.core as mx

    shape = [1] * ndim
    shape[channel_axis] = -1
    return mx.array(stats.mean).reshape(shape), mx.array(stats.std).reshape(shape)


# ------------------------------------------------------------------------------------------- chunked


def _cat(parts):
    import mlx.core as mx

    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=1)


class _Stage:
    """A streamed layer: ``push`` takes the next frames (B, f, H, W, C) in order and returns those of its output
    that are ready (or None); ``flush`` yields the rest, piece by piece, once the clip has ended."""

    def push(self, x):
        raise NotImplementedError

    def flush(self):
        return iter(())

    def arrays(self) -> list:
        return []


class _Conv3d(_Stage):
    """A 3x3x3 conv with zero padding, streamed: it keeps the last two input frames it has not finished with."""

    def __init__(self, conv):
        self.conv = conv
        self.tail = None

    def _run(self, frames):
        import mlx.core as mx

        return mx.conv3d(frames, self.conv.weight, padding=(0, 1, 1)) + self.conv.bias

    def push(self, x):
        import mlx.core as mx

        if x is None:
            return None
        if self.tail is None:
            self.tail = mx.zeros_like(x[:, :1])  # the zero padding before frame 0
        frames = mx.concatenate([self.tail, x], axis=1)
        self.tail = frames[:, -2:]
        return self._run(frames) if frames.shape[1] >= 3 else None

    def flush(self):
        import mlx.core as mx

        if self.tail is None:
            return
        frames = mx.concatenate([self.tail, mx.zeros_like(self.tail[:, :1])], axis=1)  # padding after the last
        self.tail = None
        yield self._run(frames)

    def arrays(self):
        return [self.tail] if self.tail is not None else []


class _Norm(_Stage):
    """A GroupNorm that either applies stored clip statistics or, on its own pass, accumulates them and ends
    the stream there (nothing downstream runs)."""

    def __init__(self, norm, store: dict, collect: bool, silu: bool):
        self.norm, self.store, self.collect, self.silu = norm, store, collect, silu
        self.acc = None

    def push(self, x):
        import mlx.nn as nn

        if x is None:
            return None
        if self.collect:
            moments = self.norm.moments(x)
            self.acc = moments if self.acc is None else self.acc.merge(moments)
            return None
        y = self.norm.normalize(x, self.store[id(self.norm)])
        return nn.silu(y) if self.silu else y

    def arrays(self):
        return self.acc.arrays() if self.acc is not None else []


class _Sequence(_Stage):
    def __init__(self, stages):
        self.stages = stages

    def push(self, x, start: int = 0):
        for stage in self.stages[start:]:
            x = stage.push(x)
        return x

    def flush(self):
        # Stage i flushes only after the pieces flushed upstream have gone through it. Each piece is yielded
        # (None when nothing reached the end) so the caller can evaluate it before the next: flushing all
        # at once would hold about one frame per conv of the network at the same time.
        for i, stage in enumerate(self.stages):
            for piece in stage.flush():
                yield self.push(piece, i + 1)

    def arrays(self):
        return [a for s in self.stages for a in s.arrays()]


class _ResBlock(_Stage):
    """conv1 -> GN -> SiLU -> conv2 -> GN, then SiLU(x + residual): the residual waits, frame for frame,
    for the two convs' output (two frames behind)."""

    def __init__(self, block, store: dict, collecting):
        self.inner = _Sequence(
            [
                _Conv3d(block.conv1),
                _Norm(block.norm1, store, collecting is block.norm1, silu=True),
                _Conv3d(block.conv2),
                _Norm(block.norm2, store, collecting is block.norm2, silu=False),
            ]
        )
        # When this block's own GroupNorm is collecting, its output is never formed: keep no residual.
        self.keep_residual = collecting is not block.norm1 and collecting is not block.norm2
        self.residual = None

    def _join(self, h):
        import mlx.nn as nn

        if h is None:
            return None
        n = h.shape[1]
        r, self.residual = self.residual[:, :n], self.residual[:, n:]
        return nn.silu(h + r)

    def push(self, x):
        if x is not None and self.keep_residual:
            self.residual = _cat([self.residual, x])
        return self._join(self.inner.push(x))

    def flush(self):
        for piece in self.inner.flush():
            yield self._join(piece)

    def arrays(self):
        return self.inner.arrays() + ([self.residual] if self.residual is not None else [])


class _Upsample(_Stage):
    def __init__(self, model):
        from ltx_ane.models.upscaler.model import spatial_upsample

        self.model = model
        self.temporal = model.temporal
        self.conv = _Conv3d(model.upsampler_conv) if self.temporal else None
        self.first = True
        self._spatial = spatial_upsample

    def _shuffle(self, y):
        from ltx_ane.models.upscaler.model import temporal_shuffle

        if y is None:
            return None
        y = temporal_shuffle(y)
        if self.first:  # the clip's first upsampled frame is dropped, as in the one-shot forward
            y, self.first = y[:, 1:], False
        return y

    def push(self, x):
        if x is None:
            return None
        if self.temporal:
            return self._shuffle(self.conv.push(x))
        return self._spatial(x, self.model.upsampler_conv)

    def flush(self):
        if self.temporal:
            for piece in self.conv.flush():
                yield self._shuffle(piece)

    def arrays(self):
        return self.conv.arrays() if self.temporal else []


def _network(model, store: dict, collecting) -> _Sequence:
    stages = [
        _Conv3d(model.initial_conv),
        _Norm(model.initial_norm, store, collecting is model.initial_norm, silu=True),
    ]
    stages += [_ResBlock(b, store, collecting) for b in model.res_blocks]
    stages.append(_Upsample(model))
    stages += [_ResBlock(b, store, collecting) for b in model.post_upsample_res_blocks]
    stages.append(_Conv3d(model.final_conv))
    return _Sequence(stages)


def _collector(net: _Sequence, target):
    for stage in net.stages:
        inner = stage.inner.stages if isinstance(stage, _ResBlock) else [stage]
        for s in inner:
            if isinstance(s, _Norm) and s.norm is target:
                return s
    raise AssertionError("GroupNorm not in the network")


def upsample_chunked(latent: np.ndarray, model, stats: LatentStatistics, chunk_frames: int) -> np.ndarray:
    """Exactly :func:`upsample_latent`'s result, computed over chunks of ``chunk_frames`` latent frames.

    The input and the float32 output stay in host memory; the device holds one chunk and the streamed layers'
    few frames of state at a time.
    """
    import mlx.core as mx

    if not isinstance(chunk_frames, int) or chunk_frames < 1:
        raise LtxAneError(f"chunk frames must be a positive integer, got {chunk_frames!r}")
    check_latent_shape(model, latent.shape)
    stats.check(model.config.in_channels)
    dtype = _dtype(model)
    mean_cl, std_cl = _stat_arrays(stats, ndim=5, channel_axis=4)
    b, c, f, h, w = latent.shape

    def chunks():
        for start in range(0, f, chunk_frames):
            x = mx.array(np.ascontiguousarray(latent[:, :, start : start + chunk_frames]))
            x = x.transpose(0, 2, 3, 4, 1).astype(mx.float32)
            yield (x * std_cl + mean_cl).astype(dtype)

    store: dict = {}
    for norm in model.norms():
        net = _network(model, store, collecting=norm)
        for x in chunks():
            net.push(x)
            mx.eval(net.arrays())
        for _ in net.flush():
            mx.eval(net.arrays())
        moments = _collector(net, norm).acc
        mx.eval(moments.arrays())
        store[id(norm)] = moments

    scale = 2 if not model.temporal else 1
    out = np.empty((b, c, output_frames(model, f), h * scale, w * scale), dtype=np.float32)
    written = 0

    def emit(y):
        nonlocal written
        if y is None:
            return
        y = (y.astype(mx.float32) - mean_cl) / std_cl
        n = y.shape[1]
        out[:, :, written : written + n] = np.array(y.transpose(0, 4, 1, 2, 3))
        written += n

    net = _network(model, store, collecting=None)
    for y in itertools.chain((net.push(x) for x in chunks()), net.flush()):
        mx.eval([a for a in [y] if a is not None] + net.arrays())
        emit(y)
    assert written == out.shape[2], (written, out.shape)
    return out


# ------------------------------------------------------------------------------------------- metadata


def upsampled_metadata(latent_file, model, latent_shape) -> dict:
    """The output latent's size fields: pixel height/width doubled (spatial), or fps doubled and pixel frames
    2(frames-1)+1 (temporal; a latent of F frames decodes to 8(F-1)+1 and its 2F-1 upsampled one to 8(2F-2)+1)."""
    _, _, f, h, w = latent_shape
    height = latent_file.height if latent_file.height is not None else 32 * h
    width = latent_file.width if latent_file.width is not None else 32 * w
    frames = latent_file.frames if latent_file.frames is not None else 8 * (f - 1) + 1
    fps = latent_file.fps
    if model.config.temporal_upsample:
        return {"height": height, "width": width, "frames": 2 * (frames - 1) + 1, "fps": None if fps is None else 2 * fps}
    return {"height": 2 * height, "width": 2 * width, "frames": frames, "fps": fps}
