"""Timing and error helpers shared by ``ltx-ane bench`` and the scripts in ``benchmarks/``.

A timed call is a whole call including the backend's synchronisation, so asynchronous backends (MLX, CUDA)
are charged for their work; statistics are always median and range over several runs, never one.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np


def psnr(ref: np.ndarray, out: np.ndarray) -> float:
    """PSNR in dB with max |ref| as the peak (the convention of every result in benchmarks/results)."""
    mse = float(np.mean((ref.astype(np.float64) - out.astype(np.float64)) ** 2))
    if not np.isfinite(mse):
        return float("-inf")
    return float("inf") if mse == 0 else float(20 * np.log10(np.abs(ref).max() / np.sqrt(mse)))


def rel_err(ref: np.ndarray, out: np.ndarray) -> float:
    return float(np.abs(ref.astype(np.float64) - out).max() / np.abs(ref).max())


def max_abs_err(ref: np.ndarray, out: np.ndarray) -> float:
    return float(np.abs(ref.astype(np.float64) - out.astype(np.float64)).max())


def summary(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs_s": list(times)}


def timed_call(fn, sync) -> tuple[float, object]:
    """One whole call: the function, then the backend's synchronisation."""
    t0 = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t0, out


def timed(fn, sync, runs: int, warmup: int) -> tuple[list[float], object]:
    """``warmup`` untimed calls, then ``runs`` timed ones; the last output."""
    out = None
    for _ in range(warmup):
        out = fn()
        sync()
    times = []
    for _ in range(runs):
        sync()
        dt, out = timed_call(fn, sync)
        times.append(dt)
    return times, out


def cuda_kernel_time(fn, sync, reps: int = 5, top: int = 0) -> dict:
    """GPU time per call spent in kernels, and kernels per call, as CUPTI records them (through torch.profiler);
    with ``top``, also the ``top`` kernels by time, grouped by name.

    CUPTI sees every kernel on the device, so this also measures MLX's CUDA backend. Set against the wall
    time, it separates the work the GPU does from the time it waits for the host to launch it.
    """
    from torch.profiler import ProfilerActivity, profile

    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        sync()
    rows = sorted((r for r in prof.key_averages() if str(r.device_type).endswith("CUDA")),
                  key=lambda r: r.self_device_time_total, reverse=True)
    total = sum(r.self_device_time_total for r in rows)
    out = {"kernel_s_per_call": total / 1e6 / reps, "kernels_per_call": sum(r.count for r in rows) / reps}
    if top:
        out["top"] = [{"name": r.key[:110], "ms_per_call": r.self_device_time_total / 1e3 / reps,
                       "calls": r.count / reps, "share": r.self_device_time_total / max(total, 1)} for r in rows[:top]]
    return out


def cuda_kernel_launches(fn, sync) -> list[dict]:
    """Every kernel one call of ``fn`` runs, in the order the device started them: name, start (microseconds
    from the first kernel's start) and duration, as CUPTI records them (through torch.profiler). The gaps between
    one kernel's end and the next one's start are time the device waited (for the host, or for a copy)."""
    from torch.profiler import ProfilerActivity, profile

    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        sync()
    events = sorted((e for e in prof.events() if str(e.device_type).endswith("CUDA")),
                    key=lambda e: e.time_range.start)
    if not events:
        return []
    t0 = events[0].time_range.start
    return [{"name": e.name[:240], "start_us": e.time_range.start - t0, "us": e.time_range.elapsed_us()}
            for e in events]


def write_results(stem: str | Path, payload: dict, markdown: str, results_dir: Path) -> tuple[Path, Path]:
    """``stem``.json (the payload) and ``stem``.md; a bare name (no folder) goes to ``results_dir``."""
    stem = Path(stem)
    if stem.parent == Path("."):
        stem = results_dir / stem
    stem = stem.with_suffix("") if stem.suffix in (".json", ".md") else stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    stem.with_suffix(".md").write_text(markdown)
    return stem.with_suffix(".json"), stem.with_suffix(".md")
