"""How the MLX upscalers' peak memory and time depend on how the forward pass is cut into queued pieces.

Pieces: ``blocks`` (a res block per piece, every norm writing a fresh buffer) or ``halves`` (``LatentUpsampler.stages``
on MLX's CUDA backend: a conv and the norm that writes over its output per piece). Depth: pieces queued on the device
before the host waits for the oldest. Wait: ``eval`` waits for the oldest piece's result (MLX returns the piece's
buffers afterwards, on its completion thread, possibly after the host has started allocating the next piece);
``drain`` lets depth + 1 pieces run, then waits for all of them with ``mx.synchronize``, which also waits for that
thread to have returned their buffers, before it starts the next piece (built meanwhile); ``sync`` synchronizes as
soon as more than depth pieces are queued (the next piece is built after the wait); ``eval/K`` is ``eval`` with an
``mx.synchronize`` after every K pieces. Each variant: compiled pieces, --runs calls after --warmup, the allocator's cache emptied before each
call; per call its peak above the memory held before it (weights and input). Random weights at the released
architectures, bf16; results in results/upscaler_pieces_cuda.txt.

    python benchmarks/probe_upscaler_pieces.py --runs 30
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import deque

import mlx.core as mx

from ltx_ane.models.loading import Source
from ltx_ane.models.queue import DeviceQueue
from ltx_ane.models.upscaler.loader import load_upscaler

MB = 1e6
CASES = (("spatial", (16, 8, 12)), ("spatial", (16, 11, 20)), ("temporal", (16, 16, 24)))


def run(pieces, x, depth: int, wait: str) -> mx.array:
    if wait.startswith("eval"):  # the model's queue (models/queue.py); "eval/K": also synchronize every K pieces
        every = int(wait.partition("/")[2] or 0)
        queue, h = DeviceQueue(depth), x
        for i, piece in enumerate(pieces[:-1]):
            h = piece(h)
            queue.push(h)
            if every and (i + 1) % every == 0:
                mx.synchronize()
    else:
        queued, h = deque(), x
        for piece in pieces[:-1]:
            h = piece(h)
            if wait == "drain" and len(queued) > depth:  # built while the queued ones ran
                mx.synchronize()
                queued.clear()
            mx.async_eval(h)
            queued.append(h)
            if wait == "sync" and len(queued) > depth:
                mx.synchronize()
                queued.clear()
    out = pieces[-1](h)
    mx.eval(out)
    return out


def measure(pieces, x, depth: int, wait: str, runs: int, warmup: int) -> tuple[list[float], list[float], mx.array]:
    times, peaks = [], []
    for i in range(warmup + runs):
        mx.synchronize()
        mx.clear_cache()
        before = mx.get_active_memory()
        mx.reset_peak_memory()
        t0 = time.perf_counter()
        out = run(pieces, x, depth, wait)
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
            peaks.append((mx.get_peak_memory() - before) / MB)
        del out
    return times, peaks, run(pieces, x, depth, wait)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--waits", nargs="+", default=["eval", "drain", "sync"], help="eval, eval/K, drain, sync")
    parser.add_argument("--depths", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--kinds", nargs="+", default=["spatial", "temporal"])
    args = parser.parse_args()
    print(f"# mlx {mx.__version__}, device {mx.default_device()}, bf16, random weights; per call: peak above the "
          f"memory held before it (MB), median [max] over {args.runs} calls; time median (ms)")
    for kind, (f, h, w) in (case for case in CASES if case[0] in args.kinds):
        model = load_upscaler(Source(None, f"{kind}-x2", random_weights=True), "bf16")
        x = mx.random.normal((1, f, h, w, 128), key=mx.random.key(0)).astype(mx.bfloat16)
        mx.eval(x)
        variants = {"blocks": [model.initial, *model.res_blocks, model.upsample_channels_last,
                               *model.post_upsample_res_blocks, model.final_conv]}
        if model.norms_in_place:
            variants["halves"] = model.stages()
        reference = None
        for name, stages in variants.items():
            pieces = [mx.compile(s) for s in stages]
            for depth in args.depths:
                for wait in args.waits:
                    times, peaks, out = measure(pieces, x, depth, wait, args.runs, args.warmup)
                    if reference is None:
                        reference = out
                    same = mx.array_equal(out, reference).item()
                    print(f"{kind} {f}x{h}x{w} {name:6s} depth {depth} wait {wait}: "
                          f"peak {statistics.median(peaks):5.0f} [{max(peaks):5.0f}] MB, "
                          f"{statistics.median(times) * 1e3:5.2f} ms, output equal to the first variant's: {same}",
                          flush=True)
        del model


if __name__ == "__main__":
    main()
