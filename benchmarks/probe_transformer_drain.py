"""Whether the transformer forward's per-call peak spread comes from MLX returning a finished piece's buffers late
(on its completion thread, after the host has started the next piece), and what draining the queue costs.

Variants: the model's queue as it is (each wait is for the oldest piece's result) and with ``drain`` (depth + 1
pieces run, then ``mx.synchronize`` waits for them and for their buffers before the next starts), at the model's
depth and one more. Also, per push, the memory held after its wait, to see whether a higher call holds more for a
stretch of pushes (buffers returned late) or at one place. Per call: peak above resident (MB) and time; 2 warm-up + --calls calls per variant, both
sizes of bench_transformer (1,536 and 6,144 video tokens, 126 audio, 1,024 text). Random weights at the 19B
architecture, bf16, MLX only; the GPU machine's results: results/transformer_drain_cuda.txt.

    python benchmarks/probe_transformer_drain.py [--small] [--periodic-only]
"""

import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx

from bench_transformer import SIZES, SMALL_SIZES, make_inputs, mlx_modality
from ltx_ane.models import queue
from ltx_ane.models.config import load_preset
from ltx_ane.models.loading import Source
from ltx_ane.models.transformer.loader import load_transformer
from ltx_ane.models.transformer.model import LTXModel

SMALL = "--small" in sys.argv
t = copy.deepcopy(load_preset("ltx2")["transformer"])
sizes, audio_tokens, text_tokens, calls = SIZES, 126, 1024, 12
if SMALL:  # checks the script on a CPU
    t.update(num_layers=2, num_attention_heads=4, attention_head_dim=32, cross_attention_dim=128,
             audio_num_attention_heads=4, audio_attention_head_dim=16, audio_cross_attention_dim=64,
             caption_channels=96)
    sizes, audio_tokens, text_tokens, calls = SMALL_SIZES, 16, 32, 3
path = Path(tempfile.mkdtemp()) / "config.json"
path.write_text(json.dumps({"transformer": t}))
model = load_transformer(Source(None, str(path), random_weights=True), dtype="bf16")
mx.eval(model.parameters())

setting = {"drain": False, "every": 0}
after_wait: list[int] = []  # active memory after each push's wait, this call


def push(self, arrays):
    """DeviceQueue.push, or with drain: depth + 1 pieces run, then mx.synchronize waits for them and for MLX to have
    returned their buffers before the next (built meanwhile) starts."""
    if setting["drain"] and len(self._queued) > self.depth:
        mx.synchronize()
        self._queued.clear()
    mx.async_eval(arrays)
    self._queued.append(arrays)
    while len(self._queued) > self.depth and not setting["drain"]:
        mx.eval(self._queued.popleft())
    if setting["every"] and (len(after_wait) + 1) % setting["every"] == 0:
        mx.synchronize()
        self._queued.clear()
    after_wait.append(mx.get_active_memory())


queue.DeviceQueue.push = push


def one_call(v, a, resident: int) -> tuple[float, float]:
    """One forward: its time (s) and its peak above ``resident`` (MB); ``after_wait`` holds its per-push memory."""
    mx.synchronize()
    mx.reset_peak_memory()
    after_wait.clear()
    start = time.perf_counter()
    mx.eval(model(v, a))
    return time.perf_counter() - start, (mx.get_peak_memory() - resident) / 1e6
print(f"# mlx {mx.__version__}, {mx.default_device()}, {t['num_layers']} blocks, bf16, random weights; per call: MB "
      "above resident (2 warm-up calls first), then the median time of the calls after the warm-up", flush=True)
for label, grid in sizes.items() if "--periodic-only" not in sys.argv else ():
    video, audio = make_inputs(t, grid, audio_tokens, text_tokens)
    v, a = mlx_modality(video), mlx_modality(audio)
    tokens = grid[0] * grid[1] * grid[2]
    default = model.resolved_layers_in_flight(v)
    for layers, drained in ((None, False), (None, True), (default + 1, True), (None, False)):
        LTXModel.layers_in_flight = layers
        setting["drain"] = drained
        mx.synchronize()
        mx.clear_cache()
        resident = mx.get_active_memory()
        peaks, times, traces = [], [], []
        for _ in range(2 + calls):
            elapsed, peak = one_call(v, a, resident)
            times.append(elapsed)
            peaks.append(peak)
            traces.append([(m - resident) / 1e6 for m in after_wait])
        depth = model.resolved_layers_in_flight(v)
        print(f"{tokens} tokens, {depth} layers queued, {'drain' if drained else 'eval'}: median "
              f"{statistics.median(times[2:]) * 1e3:.1f} ms; peaks {' '.join(f'{p:.0f}' for p in peaks)} "
              f"(max after warm-up {max(peaks[2:]):.0f})", flush=True)
        # Memory held after each push's wait, against the lowest at that push over the calls: how far above, and
        # for how many pushes, the highest call's held memory stood (a lagging return of buffers stays up a while).
        n = min(len(tr) for tr in traces)
        low = [min(tr[i] for tr in traces) for i in range(n)]
        worst = max(range(len(traces)), key=lambda c: peaks[c])
        excess = [traces[worst][i] - low[i] for i in range(n)]
        high = [i for i, e in enumerate(excess) if e > 50]
        print(f"  highest call {worst}: held after a wait up to {max(excess):.0f} MB above the lowest call at that "
              f"push; {len(high)} of {n} pushes above +50 MB" + (f", from push {high[0]} to {high[-1]}" if high else "")
              + f"; held after a wait over all calls {min(low):.0f}-{max(max(tr) for tr in traces):.0f} MB", flush=True)
LTXModel.layers_in_flight = None
# Periodic synchronization (the model's queue, plus mx.synchronize every K pushes), the variants interleaved call by
# call so that drifts in the machine's speed hit all of them.
setting["drain"] = False
for label, grid in sizes.items():
    video, audio = make_inputs(t, grid, audio_tokens, text_tokens)
    v, a = mlx_modality(video), mlx_modality(audio)
    every_k = (0, 8, 24, 48)
    peaks, times = {k: [] for k in every_k}, {k: [] for k in every_k}
    mx.synchronize()
    mx.clear_cache()
    resident = mx.get_active_memory()
    for call in range(2 + calls):
        for k in every_k:
            setting["every"] = k
            elapsed, peak = one_call(v, a, resident)
            if call >= 2:
                times[k].append(elapsed)
                peaks[k].append(peak)
    for k in every_k:
        print(f"{grid[0] * grid[1] * grid[2]} tokens, interleaved, synchronize every {k or 'no'} pushes: median "
              f"{statistics.median(times[k]) * 1e3:.1f} ms; peaks {' '.join(f'{p:.0f}' for p in peaks[k])} "
              f"(max {max(peaks[k]):.0f})", flush=True)
setting["every"] = 0
