"""Backend-neutral tiled decode and encode, streamed in time.

A plan splits the latent grid (frames, h, w) into tiles that all have the same shape: fixed-shape Core ML
models need that, so overlaps vary instead, and every axis is covered exactly. The tiler never runs a model
itself; it hands each tile to a function (or an executor that may run several backends at once) and blends
what comes back with weights that form a partition of unity. Output is yielded frame-chunk by frame-chunk, as
soon as no later tile can touch those frames, so a long video never exists whole in memory.

Time is special: a latent tile starting at latent ``s`` decodes as if latent ``s`` were the first frame of a
clip, which covers one pixel frame instead of eight. That "anchor" output (pixel frame ``8s`` when decoding,
latent ``s`` when encoding) is given zero weight; the previous tile always covers it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from ltx_ane.errors import LtxAneError

# Minimum overlaps in latent units: 2 latents = 64 px, 3 latents = 24 frames (ltx-core's defaults).
SPATIAL_OVERLAP = 2
TEMPORAL_OVERLAP = 3


def split_axis(length: int, tile: int, min_overlap: int) -> list[int]:
    """Starts of equal tiles of size ``tile`` covering ``[0, length)`` with at least ``min_overlap`` shared.

    The first tile starts at 0, the last ends at ``length``, and the rest are spread evenly between.
    """
    if tile >= length:
        return [0]
    if tile <= min_overlap:
        raise LtxAneError(f"tile of {tile} latents cannot overlap its neighbour by {min_overlap}")
    n = -(-(length - min_overlap) // (tile - min_overlap))
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


@dataclass(frozen=True)
class AxisPlan:
    """One axis of a plan: tile starts in latent units and how they map to the other side."""

    length: int  # latents
    tile: int  # latents per tile
    starts: tuple[int, ...]
    scale: int  # pixels per latent
    temporal: bool

    def pixel_extent(self, latents: int) -> int:
        return self.scale * (latents - 1) + 1 if self.temporal else self.scale * latents

    def pixel_start(self, latent_start: int) -> int:
        return self.scale * latent_start

    def ranges(self, side: str) -> list[tuple[int, int]]:
        """Each tile's [start, stop) on the 'latent' or 'pixel' side."""
        if side == "latent":
            return [(s, s + self.tile) for s in self.starts]
        return [(self.pixel_start(s), self.pixel_start(s) + self.pixel_extent(self.tile)) for s in self.starts]

    def weights(self, side: str) -> list[np.ndarray]:
        """Per-tile 1-D blend weights over that tile's output range, summing to one at every position.

        Each tile ramps up linearly across the region it shares with the previous tile and down across the
        one it shares with the next; the temporal anchor gets zero. Normalising by the sum over tiles makes
        the weights an exact partition of unity however the overlaps vary.
        """
        ranges = self.ranges(side)
        total = ranges[-1][1]
        raw = []
        for i, (start, stop) in enumerate(ranges):
            w = np.ones(stop - start, dtype=np.float64)
            if i > 0:
                n = ranges[i - 1][1] - start
                w[:n] = np.minimum(w[:n], (np.arange(n) + 1) / (n + 1))
                if self.temporal:
                    w[0] = 0.0
            if i + 1 < len(ranges):
                n = stop - ranges[i + 1][0]
                w[-n:] = np.minimum(w[-n:], (np.arange(n, 0, -1)) / (n + 1))
            raw.append(w)
        norm = np.zeros(total)
        for (start, stop), w in zip(ranges, raw):
            norm[start:stop] += w
        if np.any(norm <= 0):
            raise LtxAneError("tile overlaps leave a position without weight; use larger tiles")
        return [(w / norm[start:stop]).astype(np.float32) for (start, stop), w in zip(ranges, raw)]


@dataclass(frozen=True)
class TileJob:
    index: int
    grid: tuple[int, int, int]  # (time, row, column) position in the tile grid
    latent_slices: tuple[slice, slice, slice]  # (frames, h, w) on the latent side
    pixel_slices: tuple[slice, slice, slice]  # (frames, H, W) on the pixel side


@dataclass(frozen=True)
class TilePlan:
    """Tiles over a latent grid (frames, h, w); the same plan serves decoding and encoding."""

    axes: tuple[AxisPlan, AxisPlan, AxisPlan]

    @property
    def latent_tile_shape(self) -> tuple[int, int, int]:
        return tuple(a.tile for a in self.axes)

    @property
    def pixel_tile_shape(self) -> tuple[int, int, int]:
        return tuple(a.pixel_extent(a.tile) for a in self.axes)

    @property
    def num_tiles(self) -> int:
        return int(np.prod([len(a.starts) for a in self.axes]))

    def jobs(self) -> list[TileJob]:
        t, h, w = self.axes
        lat = [a.ranges("latent") for a in self.axes]
        pix = [a.ranges("pixel") for a in self.axes]
        out = []
        for ti in range(len(t.starts)):
            for hi in range(len(h.starts)):
                for wi in range(len(w.starts)):
                    idx = (ti, hi, wi)
                    out.append(
                        TileJob(
                            index=len(out),
                            grid=idx,
                            latent_slices=tuple(slice(*lat[a][i]) for a, i in enumerate(idx)),
                            pixel_slices=tuple(slice(*pix[a][i]) for a, i in enumerate(idx)),
                        )
                    )
        return out

    def weights(self, side: str) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        return tuple(a.weights(side) for a in self.axes)


def balanced_tile(length: int, tile: int, min_overlap: int) -> int:
    """The smallest tile that covers ``length`` with as many tiles as ``tile`` needs: less overlap, less work."""
    if tile >= length:
        return length
    n = len(split_axis(length, tile, min_overlap))
    return max(min_overlap + 1, -(-(length + (n - 1) * min_overlap) // n))


def make_plan(
    latent_shape: tuple[int, int, int],
    tile: tuple[int, int, int] | None,
    time_scale: int = 8,
    space_scale: int = 32,
    overlap: tuple[int, int] = (TEMPORAL_OVERLAP, SPATIAL_OVERLAP),
    balance: bool = False,
) -> TilePlan:
    """A plan for a latent grid of (frames, h, w) with tiles of ``tile`` latents (None: one tile).

    ``balance`` shrinks the tile to the smallest that needs no more tiles (for backends that take any shape;
    fixed-shape Core ML models need the tile exactly as converted).
    """
    f, h, w = latent_shape
    tf, th, tw = tile or latent_shape
    tf, th, tw = min(tf, f), min(th, h), min(tw, w)
    if balance:
        tf = balanced_tile(f, tf, overlap[0])
        th = balanced_tile(h, th, overlap[1])
        tw = balanced_tile(w, tw, overlap[1])
    return TilePlan(
        axes=(
            AxisPlan(f, tf, tuple(split_axis(f, tf, overlap[0])), time_scale, True),
            AxisPlan(h, th, tuple(split_axis(h, th, overlap[1])), space_scale, False),
            AxisPlan(w, tw, tuple(split_axis(w, tw, overlap[1])), space_scale, False),
        )
    )


def tile_run(tile: tuple[int, int, int] | None, grid: tuple[int, int, int]) -> tuple[int, int, int]:
    """The latent tile a call actually runs on for a requested ``tile`` (None: one piece) over ``grid``: a tile
    larger than the grid shrinks to it. The bench profile is keyed by this tile."""
    return tuple(min(t, g) for t, g in zip(tile or grid, grid))


def parse_tile_spec(spec: str, time_scale: int = 8, space_scale: int = 32) -> tuple[int, int, int]:
    """'FRAMESxHEIGHTxWIDTH' in pixels (e.g. 65x512x512) -> tile shape in latents."""
    try:
        frames, height, width = (int(v) for v in spec.lower().split("x"))
    except ValueError:
        raise LtxAneError(f"tile {spec!r} is not FRAMESxHEIGHTxWIDTH in pixels, e.g. 65x512x512") from None
    if frames < 1 or (frames - 1) % time_scale:
        raise LtxAneError(f"tile frames {frames} is not {time_scale}k+1")
    if height < space_scale or width < space_scale or height % space_scale or width % space_scale:
        raise LtxAneError(f"tile size {height}x{width} is not a multiple of {space_scale}")
    return (frames - 1) // time_scale + 1, height // space_scale, width // space_scale


def estimate_decode_bytes(tile: tuple[int, int, int], base_channels: int, dtype_bytes: int, scales=(8, 32)) -> int:
    """Rough peak working memory of decoding one latent tile, excluding weights.

    The last decoder stages dominate: a few tensors of ``base_channels`` channels at 1/4 of the output
    resolution and a conv producing 8x that before depth-to-space. Calibrated on measured MLX peaks
    (benchmarks/results) to about ``0.6 * base_channels`` values per output pixel.
    """
    f, h, w = tile
    pixels = (scales[0] * (f - 1) + 1) * (scales[1] * h) * (scales[1] * w)
    return int(0.6 * base_channels * pixels * dtype_bytes)


def auto_tile(
    latent_shape: tuple[int, int, int],
    budget_bytes: int,
    base_channels: int,
    dtype_bytes: int,
    min_tile: tuple[int, int, int] = (5, 8, 8),
) -> tuple[int, int, int] | None:
    """The largest tile that fits the budget (None: decode whole), shrinking space first, then time.

    The output buffer (fp32 frames of one temporal tile at full width) counts against the budget too.
    """

    def cost(tile):
        f, h, w = tile
        frames = 8 * (f - 1) + 1
        out_buffer = 2 * frames * 32 * latent_shape[1] * 32 * latent_shape[2] * 3 * 4
        return estimate_decode_bytes(tile, base_channels, dtype_bytes) + out_buffer

    tile = tuple(latent_shape)
    if cost(tile) <= budget_bytes:
        return None
    f, h, w = tile
    while cost((f, h, w)) > budget_bytes:
        if max(h, w) > max(min_tile[1], min_tile[2]) and max(h, w) > 1:
            if h >= w and h > min_tile[1]:
                h = max(min_tile[1], h * 3 // 4)
            elif w > min_tile[2]:
                w = max(min_tile[2], w * 3 // 4)
            else:
                h = max(min_tile[1], h * 3 // 4)
        elif f > min_tile[0]:
            f = max(min_tile[0], f * 3 // 4)
        else:
            break
    return (f, h, w)


Executor = Callable[[list[TileJob], Callable[[TileJob], object]], Iterator[tuple[TileJob, object]]]


def sequential(process: Callable) -> Executor:
    """The plain executor: each tile through ``process``, one after another, in order."""
    return lambda jobs, tile_input: ((job, process(tile_input(job))) for job in jobs)


def run_tiled(plan: TilePlan, source, executor: Executor, direction: str) -> Iterator:
    """Run every tile of ``source`` through ``executor`` and yield the blended result in time chunks.

    ``source`` and results are MLX arrays, channels-last (B, F, H, W, C); chunks come out in fp32 for fp32
    tiles, else fp16. ``direction`` is 'decode' (latent
    in, pixels out) or 'encode' (pixels in, latent out). The executor gets the jobs and a function giving
    each job's input, and yields (job, result) pairs in any order; results are blended in job order, so the
    output does not depend on which backend finished first.
    """
    import mlx.core as mx

    from ltx_ane.runtime.backends import MLX_LOCK

    if direction not in ("decode", "encode"):
        raise ValueError(direction)
    in_side, out_side = ("latent", "pixel") if direction == "decode" else ("pixel", "latent")
    jobs = plan.jobs()
    wt, wh, ww = plan.weights(out_side)
    t_ranges = plan.axes[0].ranges(out_side)
    n_time = len(t_ranges)
    per_time = len(jobs) // n_time
    spatial = tuple(plan.axes[a].ranges(out_side)[-1][1] for a in (1, 2))

    def slices(job: TileJob, side: str):
        return job.latent_slices if side == "latent" else job.pixel_slices

    def tile_input(job: TileJob):
        st, sh, sw = slices(job, in_side)
        return source[:, st, sh, sw]

    buffer = None  # output frames [buf_start, buf_start + buffer.shape[1]) of the current time tile
    buf_start = t_ranges[0][0]
    done_in_time = [0] * n_time
    pending: dict[int, object] = {}
    next_index = 0
    for job, result in executor(jobs, tile_input):
        # MLX work under MLX_LOCK (other threads may run MLX); chunks are yielded outside it (see ``scheduler``).
        with MLX_LOCK:
            pending[job.index] = result
            ready_chunks, last = [], False
            while next_index in pending:
                current, result = jobs[next_index], pending.pop(next_index)
                next_index += 1
                ti, hi, wi = current.grid
                st, sh, sw = slices(current, out_side)
                expected = (st.stop - st.start, sh.stop - sh.start, sw.stop - sw.start)
                if tuple(result.shape[1:4]) != expected:
                    raise LtxAneError(f"tile produced shape {tuple(result.shape[1:4])}, expected {expected}")
                if buffer is None:
                    b, c = result.shape[0], result.shape[-1]
                    # Half-precision tiles blend in fp16: it keeps more mantissa bits than a bf16 model's output
                    # has, and halves the largest buffer of a tiled run. fp32 tiles blend in fp32.
                    acc = mx.float32 if result.dtype == mx.float32 else mx.float16
                    buffer = mx.zeros((b, t_ranges[ti][1] - buf_start, *spatial, c), dtype=acc)
                weight = (
                    mx.array(wt[ti])[:, None, None, None]
                    * mx.array(wh[hi])[None, :, None, None]
                    * mx.array(ww[wi])[None, None, :, None]
                )
                local = slice(st.start - buf_start, st.stop - buf_start)
                # The sum is evaluated before it is written back, so nothing but the write refers to the buffer
                # and MLX updates it in place instead of copying the whole buffer per tile.
                update = buffer[:, local, sh, sw] + result.astype(acc) * weight.astype(acc)
                mx.eval(update)
                buffer[:, local, sh, sw] = update
                del update
                mx.eval(buffer)
                done_in_time[ti] += 1
                if done_in_time[ti] < per_time:
                    continue
                if ti + 1 == n_time:
                    ready_chunks.append(buffer)
                    last = True
                    break
                # Frames before the next time tile's start are final; the rest carries over.
                next_start, next_stop = t_ranges[ti + 1]
                ready = next_start - buf_start
                chunk = buffer[:, :ready]
                mx.eval(chunk)
                ready_chunks.append(chunk)
                carry = buffer[:, ready:]
                grow = next_stop - buf_start - buffer.shape[1]
                buffer = mx.concatenate([carry, mx.zeros((carry.shape[0], grow, *carry.shape[2:]), acc)], axis=1)
                buf_start = next_start
                mx.eval(buffer)
        yield from ready_chunks
        if last:
            return
