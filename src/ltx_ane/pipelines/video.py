"""Decode and encode stages: tiling choice, the MLX model call per tile, progress, streaming.

Frames leave ``decode_frames`` as channels-last chunks (B, f, H, W, 3) in [-1, 1], in time order: float32 from
an fp32 model, float16 from a half-precision one (blending in fp16 halves the tiler's frame buffer).
"""

from __future__ import annotations

import sys
from typing import Iterator

import mlx.core as mx

from ltx_ane.errors import LtxAneError
from ltx_ane.models.video_vae.model import VideoDecoder, VideoEncoder, to_channels_first, to_channels_last
from ltx_ane.runtime.tiling import TilePlan, auto_tile, make_plan, parse_tile_spec, run_tiled, sequential

DEFAULT_BUDGET_GB = 8.0


def check_latent(latent_shape, channels: int, spatial_padding_mode: str = "zeros") -> None:
    if len(latent_shape) != 5:
        raise LtxAneError(f"latent must be 5-D (B, C, F, h, w), got shape {list(latent_shape)}")
    if latent_shape[1] != channels:
        raise LtxAneError(f"latent has {latent_shape[1]} channels but the VAE expects {channels}")
    if spatial_padding_mode == "reflect" and min(latent_shape[3:]) < 2:
        # Reflection pads each side with the next row or column inward, which a single row or column lacks.
        raise LtxAneError(f"a {latent_shape[3]}x{latent_shape[4]} latent is too small for this VAE decoder "
                          "(reflect padding): at least 2x2")


def check_video(video_shape, time_scale: int, space_scale: int, channels: int = 3) -> None:
    if len(video_shape) != 5:
        raise LtxAneError(f"video must be 5-D (B, 3, F, H, W), got shape {list(video_shape)}")
    b, c, f, h, w = video_shape
    if c != channels:
        raise LtxAneError(f"video has {c} channels, expected {channels}")
    if (f - 1) % time_scale:
        raise LtxAneError(f"{f} frames is not {time_scale}k+1")
    if h % space_scale or w % space_scale or h == 0 or w == 0:
        raise LtxAneError(f"frame size {h}x{w} is not a multiple of {space_scale}")


def choose_tile(
    tiling: str, latent_grid: tuple[int, int, int], base_channels: int, dtype_bytes: int,
    budget_gb: float, time_scale: int = 8, space_scale: int = 32,
) -> tuple[int, int, int] | None:
    """``off`` -> None (one piece); ``auto`` -> from the memory budget; else a FRAMESxHxW pixel tile."""
    if tiling == "off":
        return None
    if tiling == "auto":
        return auto_tile(latent_grid, int(budget_gb * 1e9), base_channels, dtype_bytes)
    return parse_tile_spec(tiling, time_scale, space_scale)


def _tile_plan(grid, tile, cfg, backends) -> TilePlan:
    """Tiles shrunk to the smallest that needs no more of them, unless a backend takes fixed shapes only."""
    balance = not backends or all(getattr(b, "any_shape", True) for b in backends)
    return make_plan(grid, tile, cfg.time_scale, cfg.space_scale, balance=balance)


class _Progress:
    def __init__(self, total: int, desc: str, quiet: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="tile", disable=quiet, file=sys.stderr, leave=False)

    def wrap(self, executor):
        def run(jobs, tile_input):
            for job, result in executor(jobs, tile_input):
                yield job, result
                self.bar.update(1)

        return run

    def close(self):
        self.bar.close()


def _scheduled(backends, plan, x, direction: str, progress, max_in_flight, throughput, log) -> Iterator[mx.array]:
    """Tiles on the given backends (``backends.Backend`` objects), concurrently when there are several."""
    from ltx_ane.runtime.backends import keep_supported
    from ltx_ane.runtime.scheduler import concurrent

    tile_shape = (x.shape[0], *plan.latent_tile_shape, x.shape[-1]) if direction == "decode" else (
        x.shape[0], *plan.pixel_tile_shape, x.shape[-1])
    backends = keep_supported(list(backends), tile_shape, log)
    executor = concurrent(backends, max_in_flight, throughput)
    yield from run_tiled(plan, x, progress.wrap(executor), direction)


def decode_frames(
    decoder: VideoDecoder, latent: mx.array, tile: tuple[int, int, int] | None, quiet: bool = True,
    backends=None, max_in_flight: int | None = None, throughput=None, log=None,
) -> Iterator[mx.array]:
    """Decode a (B, C, F, h, w) latent; yield (B, f, H, W, 3) chunks (float32 or float16) in time order.

    ``backends`` (``backends.Backend`` objects, see ``scheduler``) run the tiles instead of ``decoder`` itself,
    all at once when there are several; ``decoder`` then only supplies the config and dtype. The tile is shrunk to
    the smallest that needs no more tiles, unless a backend takes fixed shapes only.
    """
    cfg = decoder.config
    check_latent(latent.shape, cfg.latent_channels, cfg.spatial_padding_mode)
    x = to_channels_last(latent.astype(decoder.dtype))

    def run_tile(tile_latent):
        out = decoder.decode_channels_last(tile_latent)
        mx.eval(out)
        return out

    grid = tuple(latent.shape[2:])
    plan = _tile_plan(grid, tile, cfg, backends)
    progress = _Progress(plan.num_tiles, "decode", quiet)
    try:
        if backends:
            yield from _scheduled(backends, plan, x, "decode", progress, max_in_flight, throughput, log)
            return
        if plan.num_tiles == 1:
            out = run_tile(x)
            out = out.astype(mx.float32 if out.dtype == mx.float32 else mx.float16)
            progress.bar.update(1)
            yield out
            return
        yield from run_tiled(plan, x, progress.wrap(sequential(run_tile)), "decode")
    finally:
        progress.close()


def encode_video(
    encoder: VideoEncoder, video: mx.array, tile: tuple[int, int, int] | None, quiet: bool = True,
    backends=None, max_in_flight: int | None = None, throughput=None, log=None,
) -> mx.array:
    """Encode (B, 3, F, H, W) in [-1, 1] to a (B, C, f, h, w) float32 latent (``backends`` and the tile as in
    decode_frames)."""
    cfg = encoder.config
    check_video(video.shape, cfg.time_scale, cfg.space_scale, cfg.in_channels)
    x = to_channels_last(video.astype(encoder.dtype))

    def run_tile(tile_video):
        out = encoder.encode_channels_last(tile_video)
        mx.eval(out)
        return out

    b, _, f, h, w = video.shape
    grid = ((f - 1) // cfg.time_scale + 1, h // cfg.space_scale, w // cfg.space_scale)
    plan = _tile_plan(grid, tile, cfg, backends)
    progress = _Progress(plan.num_tiles, "encode", quiet)
    try:
        if backends:
            out = mx.concatenate(list(_scheduled(backends, plan, x, "encode", progress, max_in_flight, throughput, log)), axis=1)
        elif plan.num_tiles == 1:
            out = run_tile(x)
            progress.bar.update(1)
        else:
            out = mx.concatenate(list(run_tiled(plan, x, progress.wrap(sequential(run_tile)), "encode")), axis=1)
    finally:
        progress.close()
    return to_channels_first(out.astype(mx.float32))
