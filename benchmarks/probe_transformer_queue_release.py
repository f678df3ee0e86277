"""Where a 1,536-token transformer forward's peak occurs, call by call, and whether the host waiting a little after
each blocking queue wait (so that MLX's completion thread has returned the finished piece's buffers before the next
piece allocates) removes the calls that peak higher. Random weights at the 19B architecture, bf16, MLX only.

Variants: the default (3 layers queued); a fixed 50 us sleep after every wait; polling the allocator for up to 200 us
after a wait that blocked; 2 layers queued. Each: 2 warm-up + 12 calls; per call, the peak above resident, and the
piece (queue push, 8 a block) by which it was reached. The GPU machine's results: results/transformer_queue_release_cuda.txt.

    python benchmarks/probe_transformer_queue_release.py [--small]
"""

import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

from bench_transformer import SIZES, make_inputs, mlx_modality
from ltx_ane.models import queue
from ltx_ane.models.config import load_preset
from ltx_ane.models.loading import Source
from ltx_ane.models.transformer.loader import load_transformer
from ltx_ane.models.transformer.model import LTXModel

SMALL = "--small" in sys.argv
t = copy.deepcopy(load_preset("ltx2")["transformer"])
grid, audio_tokens, text_tokens, calls = SIZES["121x256x384"], 126, 1024, 12
if SMALL:  # checks the script on a CPU
    t.update(num_layers=2, num_attention_heads=4, attention_head_dim=32, cross_attention_dim=128,
             audio_num_attention_heads=4, audio_attention_head_dim=16, audio_cross_attention_dim=64,
             caption_channels=96)
    grid, audio_tokens, text_tokens, calls = (2, 2, 3), 16, 32, 3
path = Path(tempfile.mkdtemp()) / "config.json"
path.write_text(json.dumps({"transformer": t}))
model = load_transformer(Source(None, str(path), random_weights=True), dtype="bf16")
mx.eval(model.parameters())
video, audio = make_inputs(t, grid, audio_tokens, text_tokens)
v, a = mlx_modality(video), mlx_modality(audio)

setting = {"sleep": 0.0, "poll": 0.0}
peaks_by_push = []


def push(self, arrays):
    """DeviceQueue.push with the variant's wait, recording the peak after every push."""
    mx.async_eval(arrays)
    self._queued.append(arrays)
    while len(self._queued) > self.depth:
        start = time.perf_counter()
        mx.eval(self._queued.popleft())
        if setting["sleep"]:
            time.sleep(setting["sleep"])
        if setting["poll"] and time.perf_counter() - start > 30e-6:  # the wait blocked: the piece finished just now
            held, deadline = mx.get_active_memory(), time.perf_counter() + setting["poll"]
            while mx.get_active_memory() >= held and time.perf_counter() < deadline:
                pass
    peaks_by_push.append(mx.get_peak_memory())


queue.DeviceQueue.push = push
VARIANTS = (("3 layers", None, 0.0, 0.0), ("3 layers, 50 us sleep after every wait", None, 50e-6, 0.0),
            ("3 layers, poll <= 200 us after a blocking wait", None, 0.0, 200e-6), ("2 layers", 2, 0.0, 0.0),
            ("2 layers, poll", 2, 0.0, 200e-6), ("3 layers again", None, 0.0, 0.0))
for label, layers, sleep_s, poll_s in VARIANTS:
    LTXModel.layers_in_flight = layers
    setting.update(sleep=sleep_s, poll=poll_s)
    mx.synchronize()
    mx.clear_cache()
    resident = mx.get_active_memory()
    rows = []
    for _ in range(2 + calls):
        peaks_by_push.clear()
        mx.synchronize()
        mx.reset_peak_memory()
        start = time.perf_counter()
        out = model(v, a)
        mx.eval(out)
        elapsed = time.perf_counter() - start
        reached = next(k for k, p in enumerate(peaks_by_push) if p >= peaks_by_push[-1]) if peaks_by_push else -1
        rows.append((elapsed, (mx.get_peak_memory() - resident) / 1e6, reached, len(peaks_by_push)))
        del out
    print(f"{label}: median {np.median([r[0] for r in rows[2:]]) * 1e3:.1f} ms; per call, MB above resident @ the "
          "push that reached it / pushes: " + "; ".join(f"{r[1]:.0f} @{r[2]}/{r[3]}" for r in rows), flush=True)
