"""Why the LTX-2.3 decoder's last-stage convolutions run 8-13 % longer under MLX than in ltx-core, with the same
cuDNN kernel (benchmarks/results/kernels_vae_chained_profile_cuda.md). Two candidate causes, one measurement each,
in one process (CUDA, bf16, random values and weights):

1. The launch: the same kernel name can hide another launch configuration (cuDNN's knobs: tile order, split
   slices). For the last stage's conv (input padded by one on every side, no padding inside the conv) and for
   ``conv_out``, each side's kernel with its grid, block, registers and shared memory (torch.profiler's trace),
   timed "spaced" (the device idle for 50 ms before each conv: clocks at their idle maximum) and "back to back"
   (ten queued at once).
2. The clock: the board caps power at 700 W; a decode whose kernels leave the device fewer cool moments may run its
   convs at a lower SM clock. nvidia-smi samples the SM clock, power and the power-cap throttle flag every 10 ms
   while each side decodes ten times; each sample is assigned to the side whose decodes it falls in. With
   ``--torch-compile MODE`` ltx-core under ``torch.compile`` (channels-last, as benchmarks/bench_vae.py compiles
   it) is a third side.
3. The cause, tested: the MLX decode again with the device left idle for ``--idle-ms`` after each queued piece
   (the host waits for the piece, then sleeps), each conv's time from CUPTI against a decode without the idle
   time. If the clock is the cause, the convs take their unloaded time again.

    python benchmarks/probe_conv_clocks.py --case decoder:ltx23:16x16x24
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

import mlx.core as mx
import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from profile_kernels import sides

SHAPES = {  # name: (frames, H, W, channels in, channels out), input already padded by one on every side
    "last stage 128 -> 128": (123, 130, 194, 128, 128),
    "conv_out 128 -> 48": (123, 130, 194, 128, 48),
}


def kernel_launches(fn, sync) -> list[dict]:
    """The conv kernels one call of ``fn`` launches, with their launch configuration from the profiler's trace."""
    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        sync()
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        prof.export_chrome_trace(f.name)
        events = json.load(open(f.name))["traceEvents"]
    out = []
    for e in sorted((e for e in events if e.get("cat") == "kernel"), key=lambda e: e["ts"]):
        if "fprop" not in e["name"] or "init_device_workspace" in e["name"]:
            continue
        a = e.get("args", {})
        out.append({"us": e["dur"], "name": e["name"],
                    "launch": f"grid {a.get('grid')} block {a.get('block')} regs {a.get('registers per thread')} "
                              f"smem {a.get('shared memory')}"})
    return out


def launch_probe() -> None:
    sync = lambda: (mx.synchronize(), torch.cuda.synchronize())  # noqa: E731
    for name, (f, h, w, cin, cout) in SHAPES.items():
        rng = np.random.default_rng(0)
        x = rng.standard_normal((1, f, h, w, cin), dtype=np.float32)
        wt = rng.standard_normal((cout, 3, 3, 3, cin), dtype=np.float32) / np.sqrt(27 * cin)
        mx_x, mx_w = mx.array(x).astype(mx.bfloat16), mx.array(wt).astype(mx.bfloat16)
        t_x = torch.from_numpy(x).cuda().bfloat16().permute(0, 4, 1, 2, 3).contiguous(
            memory_format=torch.channels_last_3d)
        t_w = torch.from_numpy(wt).cuda().bfloat16().permute(0, 4, 1, 2, 3).contiguous(
            memory_format=torch.channels_last_3d)
        mx.eval(mx_x, mx_w)
        one = {"mlx": lambda: mx.eval(mx.conv3d(mx_x, mx_w)), "torch": lambda: torch.nn.functional.conv3d(t_x, t_w)}
        ten = {"mlx": lambda: mx.eval([mx.conv3d(mx_x, mx_w) for _ in range(10)]),
               "torch": lambda: [torch.nn.functional.conv3d(t_x, t_w) for _ in range(10)]}
        for side in one:  # warm: plans built, buffers in the pools
            ten[side]()
        sync()
        rows = {}
        for _ in range(3):
            for side in one:
                spaced = []
                for _ in range(5):
                    time.sleep(0.05)
                    spaced += kernel_launches(one[side], sync)
                rows.setdefault((side, "spaced"), []).extend(spaced)
                time.sleep(0.05)
                rows.setdefault((side, "back to back"), []).extend(kernel_launches(ten[side], sync))
        print(f"## {name}: input {f}x{h}x{w}x{cin} (padded), {cout} out")
        for (side, mode), ks in rows.items():
            us = [k["us"] for k in ks]
            launches = sorted({k["launch"] for k in ks})
            names = sorted({k["name"].split("tilesize")[-1] for k in ks})
            print(f"  {side:5s} {mode:12s} median {statistics.median(us):7.0f} us [{min(us):.0f}-{max(us):.0f}] "
                  f"n={len(us)}; {names}; {launches}")
        del mx_x, mx_w, t_x, t_w
        mx.clear_cache()
        torch.cuda.empty_cache()


def compiled_side(backend, prepared, mode: str):
    """ltx-core's module under torch.compile as benchmarks/bench_vae.py compiles it: (run, sync, compile seconds)."""
    module = torch.compile(backend.module.to(memory_format=torch.channels_last_3d), mode=mode)
    x = prepared.contiguous(memory_format=torch.channels_last_3d)

    def run():
        with torch.no_grad():
            return module(x)

    t = time.perf_counter()
    run()
    backend.sync()
    return run, time.perf_counter() - t


def clock_probe(case: str, reps: int, torch_compile: str | None) -> None:
    log = Path(tempfile.mkstemp(suffix=".csv")[1])
    smi = subprocess.Popen(
        ["nvidia-smi", "--query-gpu=timestamp,clocks.sm,power.draw,clocks_event_reasons.sw_power_cap,"
         "temperature.gpu", "--format=csv,noheader,nounits", "-lms", "10"], stdout=log.open("w"))
    windows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, backend, prepared in sides(case, Path(tmp), "cuda"):
            runs = [(name, lambda: backend.run(prepared))]
            if name == "ltx_core" and torch_compile:
                run, compile_s = compiled_side(backend, prepared, torch_compile)
                print(f"  torch.compile({torch_compile}): first call {compile_s:.1f} s")
                runs.append(("compiled", run))
            for side, run in runs:
                for _ in range(3):
                    run()
                    backend.sync()
                time.sleep(1.0)  # idle first: every side starts from the same clock
                times = []
                start = datetime.now()
                for _ in range(reps):
                    t = time.perf_counter()
                    run()
                    backend.sync()
                    times.append(time.perf_counter() - t)
                windows.append((side, start, datetime.now(), times))
    time.sleep(0.2)
    smi.terminate()
    smi.wait()
    samples = []
    for line in log.read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        try:
            samples.append((datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f"), float(parts[1]), float(parts[2]),
                            parts[3], float(parts[4])))
        except (ValueError, IndexError):
            continue
    print(f"## {case}: {reps} decodes per side, nvidia-smi every 10 ms ({len(samples)} samples in all)")
    for name, start, end, times in windows:
        inside = [s for s in samples if start <= s[0] <= end]
        if not inside:
            print(f"  {name}: no samples inside its decodes")
            continue
        clocks, power = [s[1] for s in inside], [s[2] for s in inside]
        capped = sum(s[3] == "Active" for s in inside)
        print(f"  {name:8s} decode median {statistics.median(times) * 1e3:6.1f} ms; {len(inside)} samples: SM clock "
              f"mean {statistics.mean(clocks):.0f} MHz [{min(clocks):.0f}-{max(clocks):.0f}], power mean "
              f"{statistics.mean(power):.0f} W (max {max(power):.0f}), power cap active in {capped}, "
              f"temperature {inside[-1][4]:.0f} C at the end")


def idle_probe(case: str, idle_ms: float) -> None:
    from ltx_ane.bench.timing import cuda_kernel_launches
    from ltx_ane.models import queue as queue_module
    from ltx_ane.models.loading import Source
    from ltx_ane.models.video_vae.loader import load_decoder

    _, config, latent = case.split(":")
    decoder = load_decoder(Source(random_weights=True, config_file=config), "bf16", 0)
    f, h, w = (int(v) for v in latent.split("x"))
    z = mx.array(np.random.default_rng(0).standard_normal((1, f, h, w, 128), dtype=np.float32)).astype(mx.bfloat16)

    def decode():
        mx.eval(decoder.decode_channels_last(z))

    class Idle:  # the queue's view of MLX: each piece waited for, then the device left idle
        def async_eval(self, *args):
            mx.async_eval(*args)
            mx.synchronize()
            time.sleep(idle_ms / 1e3)

        def __getattr__(self, name):
            return getattr(mx, name)

    convs = {}
    for mode in ("dense", "idle", "dense again"):
        queue_module.mx = Idle() if mode == "idle" else mx
        for _ in range(2):
            decode()
        mx.synchronize()
        time.sleep(1.0)
        launches = cuda_kernel_launches(decode, mx.synchronize)
        convs[mode] = [k["us"] for k in launches if "fprop" in k["name"] and "init_device_workspace" not in k["name"]]
    queue_module.mx = mx
    print(f"## {case}: conv times in one MLX decode, dense (as it runs) and with the device idle {idle_ms:g} ms "
          "after each queued piece")
    print("  conv | dense us | idle us | dense again us | dense / idle")
    for i, (a, b, c) in enumerate(zip(convs["dense"], convs["idle"], convs["dense again"])):
        print(f"  {i:4d} | {a:8.0f} | {b:7.0f} | {c:14.0f} | {a / b:.3f}")
    for mode, us in convs.items():
        print(f"  {mode}: {len(us)} convs, {sum(us) / 1e3:.1f} ms in convs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="decoder:ltx23:16x16x24")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--parts", nargs="+", default=["launch", "clock", "idle"], choices=["launch", "clock", "idle"])
    parser.add_argument("--torch-compile", default=None, help="clock part: also ltx-core under torch.compile(MODE)")
    parser.add_argument("--idle-ms", type=float, default=5.0)
    args = parser.parse_args()
    mx.set_default_device(mx.gpu)
    if "launch" in args.parts:
        launch_probe()
    if "clock" in args.parts:
        clock_probe(args.case, args.reps, args.torch_compile)
    if "idle" in args.parts:
        idle_probe(args.case, args.idle_ms)


if __name__ == "__main__":
    main()
