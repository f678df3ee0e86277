"""Running a model piece by piece as its graph is built, with a bound on the pieces queued on the device.

Starting each piece (a transformer block, an upscaler stage) with ``mx.async_eval`` as soon as it is built lets the
device run it while the host builds the next one; building the whole graph first leaves the device idle until the
host is done. But a GPU backend keeps every buffer that a queued kernel reads or writes allocated until the kernel
has run, so a host far ahead of the device holds the intermediates of every queued piece at once. The queue waits
for the oldest piece once more than ``depth`` are unfinished: 0 waits for each piece, None queues nothing (the
caller evaluates one lazy graph itself). With ``max_bytes`` only pieces whose result is at most that large are
queued; a larger one runs alone (nothing starts before it has finished), so that the largest pieces, which set the
peak, never overlap.

Waiting for a piece's result does not wait for its buffers: MLX's CUDA backend returns them on a completion thread,
which may run after the host has started allocating the next piece, so that now and then one more piece's buffers
are held than the depth allows. Where that matters, ``drain`` also waits for everything queued and for its buffers
(``mx.synchronize``) once ``depth + 1`` pieces have been pushed since the last such wait.
"""

from __future__ import annotations

import threading
from collections import deque
from contextlib import contextmanager

import mlx.core as mx


class DeviceQueue:
    def __init__(self, depth: int | None, max_bytes: int | None = None):
        self.depth, self.max_bytes = depth, max_bytes
        self.drain = False
        self._queued: deque = deque()
        self._since_drain = 0
        self._alone = False  # the newest piece must finish before the next one starts
        self.newest = None  # what the newest push started

    def push(self, arrays, overlap: bool = False) -> None:
        """Start ``arrays`` (an array or a list of them) on the device; wait for the oldest beyond ``depth``, and,
        with ``drain``, for all of them once ``depth + 1`` have been started since the last such wait.

        ``overlap``: the piece allocates at most one activation of its own (it writes its other results over
        buffers it was given), so it may wait behind one unfinished piece whatever its size and the depth: the
        device need not idle while the host starts it (``layers.UNetMidBlock3D.chained``). A piece that may not
        overlap starts after those.

        A piece that runs alone (depth 0, or larger than ``max_bytes``) is waited for, with its buffers, just before
        the next piece starts rather than right after it has started: the host builds the next piece's graph while
        the device runs it (MLX allocates a piece's buffers when it starts it, not while its graph is built). The
        last stage of the LTX-2.3 decoder waited ~0.7 ms for the host after each residual block
        (benchmarks/results/kernels_vae_launches_cuda.md)."""
        if self.depth is None:
            return
        self.finish()
        depth = max(self.depth, 1) if overlap else self.depth
        if not overlap and len(self._queued) > depth:
            # pieces that ``overlap`` let wait beyond the depth: a piece that may not overlap starts after them (and
            # their buffers), as it would have behind pieces of its own kind
            mx.synchronize()
            self._queued.clear()
        large = False
        if self.max_bytes is not None:
            large = (sum(a.nbytes for a in arrays) if isinstance(arrays, (list, tuple)) else arrays.nbytes) > (
                self.max_bytes)
        mx.async_eval(arrays)
        self._queued.append(arrays)
        self.newest = arrays
        self._alone = not overlap and (large or self.depth == 0)
        if self._alone:
            return
        while len(self._queued) > depth:
            mx.eval(self._queued.popleft())
        self._since_drain = self._since_drain + 1 if self.drain else 0
        if self._since_drain > self.depth:
            # Also waits for MLX to have returned the queued pieces' buffers. Made here rather than once the next
            # piece is built, so that whatever the caller starts next (a last stage it evaluates itself) finds them
            # returned: synchronizing just before the next piece started peaked higher (temporal upscaler 413
            # against 360 MB, benchmarks/results/upsampler_inplace_drain_ahead_cuda.md).
            mx.synchronize()
            self._queued.clear()
            self._since_drain = 0

    def finish(self) -> None:
        """If the newest piece runs alone, wait for it and everything before it, and for MLX to have returned their
        buffers (``mx.synchronize``): before the next piece, or whatever the caller starts after the queue."""
        if self._alone:
            mx.synchronize()
            self._queued.clear()
            self._alone = False


# The queue that ``settle`` feeds in this thread, set by ``queued`` for the length of a forward pass.
_local = threading.local()


@contextmanager
def queued(depth: int | None, max_bytes: int | None = None):
    """Within the block, ``settle(x)`` pushes ``x`` onto one ``DeviceQueue(depth, max_bytes)`` instead of evaluating
    it at once (at depth 0 each piece runs alone: it finishes before the next one starts). Per thread: tiles
    decoding on several threads keep their own."""
    outer = getattr(_local, "queue", None)
    _local.queue = queue = DeviceQueue(depth, max_bytes)
    try:
        yield
    finally:
        queue.finish()
        _local.queue = outer


def ends_graph() -> bool:
    """Whether ``settle`` here ends the graph of what it is given (evaluates it, or starts it on the device as a
    piece of its own): everywhere but in a ``queued(None)`` block, which leaves evaluating to the caller. A kernel
    that writes its result into a buffer it reads may only run where it does (``fused.residual_add``)."""
    queue = getattr(_local, "queue", None)
    return queue is None or queue.depth is not None


def is_newest_piece(x) -> bool:
    """Whether x is what the newest sync point of this thread's queue started: a piece built on x then holds no
    earlier, unsettled work (which may allocate more than the piece itself)."""
    queue = getattr(_local, "queue", None)
    return queue is not None and queue.newest is x


def settle(x, overlap: bool = False):
    """A sync point inside a model: evaluate ``x`` (an array or a list of them) now, or within ``queued`` let it
    wait on the device behind at most the queue's depth of earlier sync points (``overlap``: see
    ``DeviceQueue.push``)."""
    queue = getattr(_local, "queue", None)
    if queue is None:
        mx.eval(x)
    else:
        queue.push(x, overlap)
    return x
