"""Running a model piece by piece as its graph is built, with a bound on the pieces queued on the device.

Starting each piece (a transformer block, an upscaler stage) with ``mx.async_eval`` as soon as it is built lets the
device run it while the host builds the next one; building the whole graph first leaves the device idle until the
host is done. But a GPU backend keeps every buffer that a queued kernel reads or writes allocated until the kernel
has run, so a host far ahead of the device holds the intermediates of every queued piece at once. The queue waits
for the oldest piece once more than ``depth`` are unfinished: 0 waits for each piece, None queues nothing (the
caller evaluates one lazy graph itself).
"""

from __future__ import annotations

from collections import deque

import mlx.core as mx


class DeviceQueue:
    def __init__(self, depth: int | None):
        self.depth = depth
        self._queued: deque = deque()

    def push(self, arrays) -> None:
        """Start ``arrays`` (an array or a list of them) on the device; wait for the oldest beyond ``depth``."""
        if self.depth is None:
            return
        mx.async_eval(arrays)
        self._queued.append(arrays)
        while len(self._queued) > self.depth:
            mx.eval(self._queued.popleft())
