"""Decoding in the background for a generation loop: submit a latent, get frames as they finish.

::

    with DecodeService(decoder, tile=(9, 16, 16), backends=backends) as service:
        handle = service.submit(latent)              # returns at once
        ...                                          # keep generating
        for chunk in handle:                         # (B, f, H, W, 3) float32 in [-1, 1], in time order
            writer.write(chunk)

or ``service.submit(latent, on_chunk=fn, on_done=fn)`` to be called back on the service's thread. One thread
serves submissions in order, one at a time, so at most one decode's tiles are in memory. Chunks wait for an
iterating caller in a queue of ``max_chunks``; when it is full the decode pauses, so a slow reader bounds memory
instead of letting finished frames pile up. With ``on_chunk`` the queue is not used.

The decode uses MLX on the service's thread (and on an MLX backend's worker). MLX is not documented as thread-safe,
so a caller that runs its own MLX work meanwhile should do it under ``ltx_ane.runtime.backends.MLX_LOCK``; the service
takes that lock for every MLX call it makes.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from typing import Callable

import numpy as np

from ltx_ane.runtime.backends import MLX_LOCK
from ltx_ane.errors import LtxAneError

_END = object()


class Cancelled(LtxAneError):
    pass


class DecodeHandle:
    """One submitted decode: iterate for chunks, or wait for ``result()``; ``cancel()`` stops it between chunks."""

    def __init__(self, max_chunks: int, on_chunk: Callable | None, on_done: Callable | None):
        self._chunks: queue.Queue = queue.Queue(maxsize=max_chunks if on_chunk is None else 0)
        self._on_chunk, self._on_done = on_chunk, on_done
        self._done = threading.Event()
        self._ended = threading.Event()  # the end marker is in the queue (or was, before cancel() drained it)
        self._cancel = threading.Event()
        self._error: BaseException | None = None
        self._iterated = False
        self.throughput = None

    # ------------------------------------------------------------------ caller side

    def __iter__(self):
        if self._on_chunk is not None:
            raise LtxAneError("this decode delivers chunks to its on_chunk callback; wait with result() instead")
        if self._iterated:
            raise LtxAneError("a decode's chunks can be iterated once")
        self._iterated = True
        return self._chunks_until(None)

    def _chunks_until(self, deadline: float | None):
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError("decode still running")
            try:
                item = self._chunks.get(timeout=min(0.1, left) if left is not None else 0.1)
            except queue.Empty:
                # The end marker is gone only when cancel() drained it after the decode ended: nothing more comes.
                if self._ended.is_set() and self._chunks.empty():
                    break
                continue
            if item is _END:
                break
            yield item
        if self._error is not None:
            raise self._error

    def result(self, timeout: float | None = None) -> np.ndarray | None:
        """All frames at once (B, F, H, W, 3) when nobody iterated; with a callback, None once done.
        ``TimeoutError`` when the decode is not done within ``timeout`` seconds."""
        if self._on_chunk is not None or self._iterated:
            if not self._done.wait(timeout):
                raise TimeoutError("decode still running")
            if self._error is not None:
                raise self._error
            return None
        self._iterated = True
        deadline = None if timeout is None else time.monotonic() + timeout
        return np.concatenate(list(self._chunks_until(deadline)), axis=1)

    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        """Stop the decode between chunks. A finished decode keeps its chunks (there is nothing left to stop)."""
        if self._done.is_set():
            return
        self._cancel.set()
        self._drain()

    def _drain(self) -> None:
        # Unblocks a decode waiting for room in the queue.
        try:
            while True:
                self._chunks.get_nowait()
        except queue.Empty:
            pass

    # ------------------------------------------------------------------ service side

    def _put(self, item) -> None:
        while not self._cancel.is_set():
            try:
                self._chunks.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _put_end(self) -> None:
        # Must arrive even after cancel(), when _put gives up, and a reader may already be waiting on the queue.
        while True:
            try:
                self._chunks.put(_END, timeout=0.1)
                break
            except queue.Full:
                if self._cancel.is_set():
                    self._drain()
        self._ended.set()

    def _deliver(self, chunk: np.ndarray) -> None:
        if self._on_chunk is not None:
            self._on_chunk(chunk)
        else:
            self._put(chunk)

    def _finish(self, error: BaseException | None) -> None:
        self._error = error
        if self._on_chunk is None:
            if self._cancel.is_set():
                self._drain()  # drop chunks nobody wants, so the end marker fits
            self._put_end()
        self._done.set()
        if self._on_done is not None:
            try:
                self._on_done(error)
            except Exception as e:  # the caller's bug: said, and the service goes on serving the next decode
                print(f"note: a decode's on_done callback raised {type(e).__name__}: {e}", file=sys.stderr, flush=True)


class DecodeService:
    """A background decoder (see the module doc). ``backends``/``max_in_flight`` as in ``pipeline.decode_frames``."""

    def __init__(self, decoder, tile=None, backends=None, max_in_flight: int | None = None, max_chunks: int = 2):
        if max_chunks < 1:
            raise LtxAneError(f"max_chunks must be at least 1, got {max_chunks}")
        self.decoder, self.tile, self.backends, self.max_in_flight = decoder, tile, backends, max_in_flight
        self.max_chunks = max_chunks
        self._jobs: queue.Queue = queue.Queue()
        self._handles: list[DecodeHandle] = []  # submitted and not yet finished
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="ltx-ane-decode-service", daemon=True)
        self._thread.start()

    def submit(self, latent, on_chunk: Callable | None = None, on_done: Callable | None = None) -> DecodeHandle:
        """Queue a (B, C, F, h, w) latent (NumPy or MLX); returns at once."""
        if self._closed:
            raise LtxAneError("the decode service is closed")
        if not isinstance(latent, np.ndarray):
            with MLX_LOCK:
                import mlx.core as mx

                latent = np.array(latent.astype(mx.float32))
        from ltx_ane.pipelines.video import check_latent

        check_latent(latent.shape, self.decoder.config.latent_channels)
        handle = DecodeHandle(self.max_chunks, on_chunk, on_done)
        self._handles = [h for h in self._handles if not h.done()] + [handle]
        self._jobs.put((np.ascontiguousarray(latent, dtype=np.float32), handle))
        return handle

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            latent, handle = job
            error = None
            try:
                self._decode(latent, handle)
            except BaseException as e:  # reported to the handle's reader, the service keeps serving
                error = e
            if handle._cancel.is_set() and error is None:
                error = Cancelled("decode cancelled")
            handle._finish(error)

    def _decode(self, latent: np.ndarray, handle: DecodeHandle) -> None:
        import mlx.core as mx

        from ltx_ane.pipelines.video import decode_frames
        from ltx_ane.runtime.scheduler import Throughput

        if handle._cancel.is_set():
            return
        if self.backends and len(self.backends) > 1:
            handle.throughput = Throughput()
        with MLX_LOCK:
            x = mx.array(latent)
        chunks = decode_frames(self.decoder, x, self.tile, backends=self.backends, max_in_flight=self.max_in_flight,
                               throughput=handle.throughput)
        # With backends the scheduler takes MLX_LOCK itself, around its MLX work only: holding it across next()
        # would starve an MLX worker that the next chunk waits for.
        step = contextlib.nullcontext if self.backends else lambda: MLX_LOCK
        try:
            while True:
                with step():
                    chunk = next(chunks, None)
                if chunk is None:
                    return
                with MLX_LOCK:
                    host = np.array(chunk)
                del chunk
                handle._deliver(host)
                if handle._cancel.is_set():
                    return
        finally:
            # Not under the lock with backends: closing joins their workers, and an MLX worker needs the lock.
            with step():
                chunks.close()

    def close(self, wait: bool = True) -> None:
        """Stop taking submissions; with ``wait``, finish the queued ones first."""
        if not self._closed:
            self._closed = True
            self._jobs.put(None)
        if wait:
            self._thread.join()

    def __enter__(self):
        return self

    def cancel_all(self) -> None:
        """Cancel every decode not yet finished: the running one stops between chunks, queued ones never start."""
        for handle in self._handles:
            handle.cancel()

    def __exit__(self, exc_type, exc, tb):
        # Leaving on an exception: nobody will read the pending decodes, so waiting for them could hang for good.
        if exc_type is not None:
            self.cancel_all()
        self.close()
