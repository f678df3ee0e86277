"""Where the device waits in an MLX decode, and what the host does meanwhile (CUDA).

In the LTX-2.3 decode at 121x512x768 the device idles ~0.6-0.75 ms before each residual block of the last stage
(benchmarks/results/kernels_vae_residual_cuda.md): those blocks run alone (models/queue.py), so each starts only
once the host has waited for the one before and started it. This probe times, for one decode after warm-up, what
the host spends on each such piece (``mx.async_eval`` and ``mx.synchronize`` in ``DeviceQueue``), and lists the
CUDA runtime calls (CUPTI, through torch.profiler's trace) that fall inside each device gap above ``--min-gap-us``.
Random weights at the real architecture (timing does not depend on values), bf16.

    python benchmarks/probe_decode_gaps.py --config ltx23 --latent 16x16x24
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

from ltx_ane.models import queue as queue_module
from ltx_ane.models.loading import Source
from ltx_ane.models.video_vae.loader import load_decoder


def instrument(log: list) -> None:
    """Wrap the queue's calls into MLX so each records its host time."""
    real_async, real_sync = mx.async_eval, mx.synchronize

    class Timed:
        def async_eval(self, *args):
            t = time.perf_counter()
            real_async(*args)
            log.append(("async_eval", time.perf_counter() - t))

        def synchronize(self, *args):
            t = time.perf_counter()
            real_sync(*args)
            log.append(("synchronize", time.perf_counter() - t))

        def __getattr__(self, name):
            return getattr(mx, name)

    queue_module.mx = Timed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="ltx23")
    parser.add_argument("--latent", default="16x16x24", help="latent FxHxW")
    parser.add_argument("--min-gap-us", type=float, default=100.0)
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    decoder = load_decoder(Source(random_weights=True, config_file=args.config), "bf16", 0)
    f, h, w = (int(v) for v in args.latent.split("x"))
    latent = mx.array(np.random.default_rng(0).standard_normal((1, f, h, w, 128), dtype=np.float32)).astype(
        mx.bfloat16)
    for _ in range(2):
        mx.eval(decoder.decode_channels_last(latent))
    mx.synchronize()

    log: list = []
    instrument(log)
    t0 = time.perf_counter()
    mx.eval(decoder.decode_channels_last(latent))
    mx.synchronize()
    wall = time.perf_counter() - t0
    print(f"{args.config} {args.latent}: one decode {wall * 1e3:.1f} ms (instrumented, not profiled)")
    sums = collections.defaultdict(list)
    for name, s in log:
        sums[name].append(s * 1e6)
    for name, us in sums.items():
        print(f"  host in {name}: {len(us)} calls, total {sum(us) / 1e3:.2f} ms, per call "
              f"{' '.join(f'{u:.0f}' for u in us)} us")

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        mx.eval(decoder.decode_channels_last(latent))
        mx.synchronize()
        torch.cuda.synchronize()
    trace = Path(tempfile.mkdtemp()) / "trace.json"
    prof.export_chrome_trace(str(trace))
    events = json.loads(trace.read_text())["traceEvents"]
    kernels = sorted((e for e in events if e.get("cat") == "kernel"), key=lambda e: e["ts"])
    runtime = sorted((e for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver")), key=lambda e: e["ts"])
    print(f"profiled decode: {len(kernels)} kernels, {len(runtime)} CUDA runtime/driver calls on the host")
    totals = collections.Counter()
    counts = collections.Counter()
    for e in runtime:
        totals[e["name"]] += e.get("dur", 0)
        counts[e["name"]] += 1
    print("host CUDA calls over the whole decode (total us, calls):")
    for name, us in totals.most_common(12):
        print(f"  {name}: {us:.0f} us, {counts[name]}")
    for before, after in zip(kernels, kernels[1:]):
        end = before["ts"] + before.get("dur", 0)
        gap = after["ts"] - end
        if gap < args.min_gap_us:
            continue
        print(f"gap {gap:.0f} us: after {before['name'][:40]} ({before.get('dur', 0):.0f} us), "
              f"before {after['name'][:40]}")
        for e in runtime:
            if e["ts"] + e.get("dur", 0) >= end - 50 and e["ts"] <= after["ts"]:
                print(f"    {e['ts'] - end:+8.0f} us  {e.get('dur', 0):7.0f} us  {e['name']}")


if __name__ == "__main__":
    main()
