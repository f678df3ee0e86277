"""Concurrent tile scheduling: several backends decode (or encode) the tiles of one video at once.

``concurrent(backends)`` is an executor for ``tiling.run_tiled``. Each backend gets one worker thread that pulls
the next tile from a shared queue whenever it is free, so a fast backend takes more tiles than a slow one and
every tile runs exactly once. Model calls of a backend stay on its own thread; tiles cross threads as NumPy
float32 arrays, converted from and back to MLX on the caller's thread.

Results are handed to the tiler in job order. A tile finished early waits in the executor, never in the tiler,
and at most ``max_in_flight`` tiles are between dispatch and hand-over (queued, running or waiting): memory is
bounded by that many tile inputs and outputs plus the tiler's blend buffer, whatever the video's length.

A backend that raises is retired and the tile it failed on goes back to the queue for the others, with a one-line
note; the run fails only when no backend is left, with one line naming each backend's error (or at once, with
``failover=False``). A Core ML model that will not compile or run on this Mac then costs one tile's time, not the
video.

MLX never runs on two threads at once: the executor takes ``backends.MLX_LOCK`` around its own MLX calls (a tile's
input, a result back into MLX), an MLX backend around each of its steps, and ``run_tiled`` around its blending.
The lock is never held across a ``yield``: a caller that waits between chunks (a full queue, a slow writer) keeps
no MLX worker and no other MLX user (a generation loop taking the lock) waiting. The caller must resume the
executor on the thread that started it.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from ltx_ane.errors import LtxAneError


@dataclass
class BackendStats:
    name: str
    tiles: list[int] = field(default_factory=list)  # job indices this backend ran
    busy_s: float = 0.0
    error: str | None = None  # why it was retired, if it was

    @property
    def rate(self) -> float:
        """Tiles per second while busy: the backend's own speed, as if alone (less any contention)."""
        return len(self.tiles) / self.busy_s if self.busy_s > 0 else 0.0


@dataclass
class Throughput:
    """What a concurrent run did: per-backend tiles and busy time, wall time, and the in-flight peak."""

    backends: dict[str, BackendStats] = field(default_factory=dict)
    wall_s: float = 0.0
    max_in_flight: int = 0
    limit: int = 0

    @property
    def tiles(self) -> int:
        return sum(len(s.tiles) for s in self.backends.values())

    @property
    def rate(self) -> float:
        return self.tiles / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> str:
        parts = [
            f"{s.name} {len(s.tiles)} tiles at {s.rate:.3g} tiles/s" + (" (failed, retired)" if s.error else "")
            for s in self.backends.values()
        ]
        return f"{'; '.join(parts)}; together {self.tiles} tiles in {self.wall_s:.2f} s = {self.rate:.3g} tiles/s"


def _to_host(x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(x, dtype=np.float32)
    import mlx.core as mx

    return np.array(x.astype(mx.float32))


def _from_host(y: np.ndarray):
    import mlx.core as mx

    return mx.array(y)


def _worker(backend, name: str, inbox: queue.Queue, outbox: queue.Queue, stats: BackendStats) -> None:
    while True:
        item = inbox.get()
        if item is None:
            return
        position, x = item
        start = time.perf_counter()
        try:
            y = backend(x)
        except Exception as e:  # handed to the caller's thread, which re-queues the tile or raises
            outbox.put((position, name, e))
            return  # retired: pulls no more tiles
        stats.busy_s += time.perf_counter() - start
        stats.tiles.append(position)
        outbox.put((position, name, y))


def _print_note(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


def backend_name(backend) -> str:
    return getattr(backend, "name", None) or getattr(backend, "__name__", None) or type(backend).__name__


def concurrent(
    backends: Sequence[Callable[[np.ndarray], np.ndarray]],
    max_in_flight: int | None = None,
    throughput: Throughput | None = None,
    to_host: Callable = _to_host,
    from_host: Callable = _from_host,
    failover: bool = True,
    note: Callable[[str], None] | None = None,
):
    """An executor running tiles on all ``backends`` at once (see the module doc).

    ``backends`` are callables from a host float32 array to one (``backends.Backend`` objects, or any function);
    names must differ. ``max_in_flight`` defaults to two tiles per backend: one running, one queued behind it,
    so no backend idles waiting for the caller to hand out work. ``throughput`` is filled in as tiles finish.
    ``failover``: retire a failing backend and re-queue its tile (the default), or raise at its first error.
    ``note`` receives the one-line message about a retired backend (default: printed to stderr).
    """
    if not backends:
        raise LtxAneError("no backend to run tiles on")
    names = [backend_name(b) for b in backends]
    if len(set(names)) != len(names):
        raise LtxAneError(f"backends must have different names, got {names}")
    limit = max_in_flight or 2 * len(backends)
    if limit < 1:
        raise LtxAneError(f"max tiles in flight must be at least 1, got {limit}")
    stats = throughput if throughput is not None else Throughput()
    stats.limit = limit
    for name in names:
        stats.backends.setdefault(name, BackendStats(name))

    def run(jobs, tile_input) -> Iterator:
        from ltx_ane.runtime.backends import MLX_LOCK

        jobs = list(jobs)
        inbox: queue.Queue = queue.Queue()
        outbox: queue.Queue = queue.Queue()
        threads = [
            threading.Thread(target=_worker, args=(b, n, inbox, outbox, stats.backends[n]), name=f"ltx-ane-{n}", daemon=True)
            for b, n in zip(backends, names)
        ]
        start = time.perf_counter()
        for t in threads:
            t.start()
        finished: dict[int, np.ndarray] = {}
        retry: dict[int, np.ndarray] = {}
        alive = set(names)
        failures: list[str] = []  # one line per retired backend, for the error when none is left
        sent = handed = 0
        try:
            while handed < len(jobs):
                while sent < len(jobs) and sent - handed < limit:
                    with MLX_LOCK:
                        x = to_host(tile_input(jobs[sent]))
                    if failover:
                        retry[sent] = x  # kept until the tile is done, in case its backend fails on it
                    inbox.put((sent, x))
                    sent += 1
                    stats.max_in_flight = max(stats.max_in_flight, sent - handed)
                while handed not in finished:
                    position, name, y = outbox.get()
                    if isinstance(y, BaseException):
                        alive.discard(name)
                        stats.backends[name].error = _one_line(y)
                        failures.append(f"{name} on tile {position} ({_one_line(y)})")
                        if not failover:
                            if isinstance(y, LtxAneError):
                                raise LtxAneError(f"{name} failed on tile {position}: {y}") from y
                            raise y
                        if not alive:
                            raise LtxAneError(f"every backend failed on tile {position}: {'; '.join(failures)}") from y
                        (note or _print_note)(
                            f"note: {name} failed on tile {position} ({_one_line(y)}); "
                            f"its tiles go to {', '.join(n for n in names if n in alive)}"
                        )
                        # The input stays saved until the tile succeeds: the next backend may fail on it too.
                        inbox.put((position, retry[position]))
                        continue
                    retry.pop(position, None)
                    finished[position] = y
                y = finished.pop(handed)
                with MLX_LOCK:
                    result = from_host(y)
                del y
                handed += 1
                stats.wall_s = time.perf_counter() - start
                # Yielded outside the lock: the caller takes it around its own MLX work (``run_tiled`` does), and
                # a caller that blocks (a full chunk queue) must not keep MLX workers and other MLX users waiting.
                yield jobs[handed - 1], result
        finally:
            # Queued tiles are dropped; a tile already running finishes before its thread sees the stop.
            try:
                while True:
                    inbox.get_nowait()
            except queue.Empty:
                pass
            for _ in threads:
                inbox.put(None)
            for t in threads:
                t.join()
            stats.wall_s = time.perf_counter() - start

    return run


def measure_throughput(plan, source, backends: Sequence, direction: str = "decode", max_in_flight: int | None = None) -> dict:
    """Tiles per second of each backend alone and of all together on the same tiled run (for the bench).

    Returns ``{"tiles": n, "alone": {name: tiles/s}, "together": tiles/s, "together_by_backend": {name: tiles}}``.
    Results are discarded chunk by chunk (evaluated, then dropped), so this measures compute, not memory.
    """
    from ltx_ane.runtime.tiling import run_tiled

    def one(group) -> Throughput:
        stats = Throughput()
        # No failover: a backend that fails must fail the measurement, not quietly hand its tiles over.
        for _ in run_tiled(plan, source, concurrent(group, max_in_flight, stats, failover=False), direction):
            pass
        return stats

    alone = {backend_name(b): one([b]).rate for b in backends}
    together = one(list(backends))
    return {
        "tiles": plan.num_tiles,
        "alone": alone,
        "together": together.rate,
        "together_by_backend": {n: len(s.tiles) for n, s in together.backends.items()},
    }
