#!/usr/bin/env python
"""Time the MLX latent upscalers against ltx-core on the same machine.

Random weights at the real architecture (the released files cannot be downloaded here): ltx-core's model is
given random weights, written as a released-format bf16 file, and both sides load that file, so they compute
with the same numbers. Timed: the upscaler's forward pass alone, in --dtype (default bf16), MLX and ltx-core
interleaved (A/B/A/B, each call including its synchronisation), median and range of --runs runs after --warmup. Also reported: peak memory (MLX: mx.get_peak_memory; torch on CUDA:
torch.cuda.max_memory_allocated; not measured for torch on CPU) and the error of each side's --dtype output
against ltx-core in float32.

    python benchmarks/bench_upsampler.py --device gpu --out h200            # the sizes of the brief
    python benchmarks/bench_upsampler.py --smoke --out cpu-smoke             # tiny, reduced width, CPU
    python benchmarks/bench_upsampler.py --sizes spatial:16x8x12 --chunk-frames 4
    MLX_USE_CUDA_GRAPHS=0 python benchmarks/bench_upsampler.py --device gpu --kernel-time --out x  # MLX knobs

MLX settings passed as environment variables (``MLX_*``) are recorded with the results.

``--out NAME`` writes benchmarks/results/NAME.json and NAME.md (a path with a directory is used as given).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

from ltx_ane.bench.timing import cuda_kernel_time, psnr, rel_err, summary, timed, timed_call, write_results

DEFAULT_SIZES = ("spatial:16x8x12", "spatial:16x11x20", "temporal:16x16x24")
SMOKE_SIZES = ("spatial:2x3x4", "temporal:2x3x4")
SMOKE_MID = 64
RESULTS = Path(__file__).resolve().parent / "results"


def parse_size(text: str) -> tuple[str, tuple[int, int, int]]:
    try:
        kind, dims = text.split(":")
        f, h, w = (int(v) for v in dims.lower().split("x"))
        assert kind in ("spatial", "temporal") and min(f, h, w) >= 1
    except (ValueError, AssertionError):
        raise argparse.ArgumentTypeError(f"size {text!r} is not spatial:FxHxW or temporal:FxHxW") from None
    return kind, (f, h, w)


def bench_one(kind, size, args, torch_device, tmp: Path) -> dict:
    import mlx.core as mx
    import torch

    from ltx_ane import reference as R
    from ltx_ane.reference import upscaler as RU
    from ltx_ane.models.config import load_preset
    from ltx_ane.models.loading import Source
    from ltx_ane.models.upscaler.loader import load_upscaler
    from ltx_ane.models.upscaler.upsample import LatentStatistics, upsample_chunked

    cfg = load_preset(f"{kind}-x2")
    if args.mid_channels:
        cfg["mid_channels"] = args.mid_channels
    ref_model = RU.build_upscaler(cfg, seed=args.seed)
    path = tmp / f"{kind}.safetensors"
    R.write_checkpoint(path, RU.upscaler_state_dict(ref_model), cfg)
    R.load_checkpoint_into(ref_model, path, {"": ""})  # the bf16-rounded weights, in float32
    ref_model.to(torch_device)
    n_params = sum(p.numel() for p in ref_model.parameters())

    f, h, w = size
    x = np.random.default_rng(args.seed).standard_normal((1, 128, f, h, w)).astype(np.float32)
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    cuda = torch_device.type == "cuda"

    def tsync():
        if cuda:
            torch.cuda.synchronize()

    with torch.inference_mode():
        xt = torch.from_numpy(x).to(torch_device)
        reference = ref_model(xt).float().cpu().numpy()  # float32 reference
        ref_model.to(torch_dtype)
        xt_low = xt.to(torch_dtype)
    del xt
    if cuda:
        torch.cuda.empty_cache()

    model = load_upscaler(Source(checkpoint=str(path)), args.dtype)
    xm = mx.array(x).astype(model.initial_conv.weight.dtype)
    mx.eval(xm)
    mx.clear_cache()
    m_base = mx.get_active_memory()

    def mlx_run():
        y = model(xm)
        mx.eval(y)
        return y

    def torch_run():
        with torch.inference_mode():
            return ref_model(xt_low)

    def reset_torch_peak():
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    # Interleaved A/B/A/B, each call whole with its synchronisation, so a drift in clocks or load hits both sides.
    # The first call of each side is its first-run time (MLX's runs op by op; its second, in the warm-up, compiles).
    sides = {"mlx": (mlx_run, mx.synchronize, lambda: (mx.clear_cache(), mx.reset_peak_memory()), mx.get_peak_memory),
             "ltx_core": (torch_run, tsync, reset_torch_peak,
                          (lambda: torch.cuda.max_memory_allocated()) if cuda else (lambda: None))}
    times = {name: [] for name in sides}
    peaks, first, outs = {name: None for name in sides}, {}, {}
    for i in range(args.warmup + args.runs):
        for name, (run, sync, reset_peak, peak) in sides.items():
            reset_peak()
            dt, outs[name] = timed_call(run, sync)
            if i == 0:
                first[name] = dt
            if i >= args.warmup:
                times[name].append(dt)
                if peak() is not None:
                    peaks[name] = max(peaks[name] or 0, peak())
    m_out = np.array(outs.pop("mlx").astype(mx.float32))
    t_out = outs.pop("ltx_core").float().cpu().numpy()
    t_kernels = cuda_kernel_time(torch_run, tsync) if cuda and args.kernel_time else {}
    m_kernels = cuda_kernel_time(mlx_run, mx.synchronize) if cuda and args.kernel_time else {}
    del ref_model, xt_low
    if cuda:
        torch.cuda.empty_cache()
    m_times, t_times, m_peak, t_peak, first_s = times["mlx"], times["ltx_core"], peaks["mlx"], peaks["ltx_core"], first["mlx"]
    compiled = model.compiled
    if compiled:  # the same model run op by op, for the record of what mx.compile buys
        model.compile = False
        mx.clear_cache()
        mx.reset_peak_memory()
        e_times, _ = timed(mlx_run, mx.synchronize, args.runs, args.warmup)
        eager = {**summary(e_times), "peak_bytes": mx.get_peak_memory()}
        model.compile = None
    queued = {}
    for depth in (args.stages_in_flight or []) if compiled else []:  # the compiled forward, other bounds on stages queued
        model.stages_in_flight = depth
        mx.clear_cache()
        mx.reset_peak_memory()
        q_times, _ = timed(mlx_run, mx.synchronize, args.runs, args.warmup)
        queued[str(depth)] = {**summary(q_times), "peak_bytes": mx.get_peak_memory()}
    model.stages_in_flight = type(model).stages_in_flight
    row = {
        "kind": kind,
        "latent_fhw": [f, h, w],
        "output_shape": list(m_out.shape),
        "mid_channels": cfg["mid_channels"],
        "params": n_params,
        "mlx": {**summary(m_times), "peak_bytes": m_peak, "peak_above_weights_bytes": m_peak - m_base,
                "first_call_s": first_s, "compiled": compiled, **m_kernels},
        "mlx_uncompiled": eager if compiled else None,
        "mlx_stages_in_flight": queued,
        "ltx_core": {**summary(t_times), "peak_bytes": t_peak, "first_call_s": first["ltx_core"], **t_kernels},
        "mlx_vs_fp32": {"max_rel_err": rel_err(reference, m_out), "psnr_db": psnr(reference, m_out)},
        "ltx_core_vs_fp32": {"max_rel_err": rel_err(reference, t_out), "psnr_db": psnr(reference, t_out)},
    }
    row["speedup_mlx_over_ltx_core"] = row["ltx_core"]["median_s"] / row["mlx"]["median_s"]

    if args.chunk_frames:
        ident = LatentStatistics(mean=np.zeros(128, np.float32), std=np.ones(128, np.float32))
        mx.clear_cache()
        mx.reset_peak_memory()
        c_times, c_out = timed(lambda: upsample_chunked(x, model, ident, args.chunk_frames), lambda: None,
                               max(1, args.runs), 0)
        row["mlx_chunked"] = {
            **summary(c_times),
            "chunk_frames": args.chunk_frames,
            "peak_bytes": mx.get_peak_memory(),
            "max_rel_err_vs_one_shot": rel_err(m_out, c_out),
        }
    del model
    gc.collect()  # the compiled stages and the model refer to each other: free its weights before the next row
    mx.clear_cache()
    path.unlink()
    return row


def arch_text(width) -> str:
    return "the released architectures" if not width else f"the released architectures with the width reduced to {width}"


def ms(seconds) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:.1f} ms"


def mb(n) -> str:
    return "n/a" if n is None else f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} KB"


def uncompiled(row: dict | None) -> str:
    """The op-by-op pass (what a shape's first call runs): its time and peak."""
    return "-" if row is None else f"{ms(row['median_s'])} ({mb(row['peak_bytes'])})"


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [
        "# Latent upscaler benchmark: MLX vs ltx-core",
        "",
        f"- machine: {meta['machine']}; torch device {meta['torch_device']}, MLX device {meta['mlx_device']}",
        f"- mlx {meta['mlx']}, torch {meta['torch']}, ltx-core {meta['ltx_core']}",
        f"- dtype {meta['dtype']}; {meta['runs']} timed runs after {meta['warmup']} warm-up, MLX and ltx-core "
        "interleaved; times are medians over the timed runs (range in brackets); batch 1",
        f"- MLX compiled stages queued on the device at once: {meta.get('stages_in_flight_default', 'unbounded')}",
        "- MLX settings from the environment: "
        + (", ".join(f"{k}={v}" for k, v in sorted(meta.get("mlx_env", {}).items())) or "none (MLX's defaults)"),
        f"- command: `python benchmarks/{meta['command']}`",
        f"- **random weights**, {arch_text(meta['width_override'])} (same weights both sides, written as a bf16 "
        "released-format file); errors are against ltx-core in float32",
        "",
        "| upscaler | latent FxHxW | width | MLX median (range) | ltx-core median (range) | MLX/ltx-core speed | "
        "MLX peak | ltx-core peak | MLX err (PSNR) | ltx-core err (PSNR) | MLX first call | MLX uncompiled (peak) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m, t = r["mlx"], r["ltx_core"]
        lines.append(
            f"| {r['kind']} x2 | {'x'.join(map(str, r['latent_fhw']))} | {r['mid_channels']} | "
            f"{m['median_s'] * 1e3:.1f} ms ({m['min_s'] * 1e3:.1f}-{m['max_s'] * 1e3:.1f}) | "
            f"{t['median_s'] * 1e3:.1f} ms ({t['min_s'] * 1e3:.1f}-{t['max_s'] * 1e3:.1f}) | "
            f"{r['speedup_mlx_over_ltx_core']:.2f}x | {mb(m['peak_bytes'])} | {mb(t['peak_bytes'])} | "
            f"{r['mlx_vs_fp32']['max_rel_err']:.2e} ({r['mlx_vs_fp32']['psnr_db']:.1f} dB) | "
            f"{r['ltx_core_vs_fp32']['max_rel_err']:.2e} ({r['ltx_core_vs_fp32']['psnr_db']:.1f} dB) | "
            f"{ms(m.get('first_call_s'))} | {uncompiled(r.get('mlx_uncompiled'))} |"
        )
    kernel_rows = [r for r in rows if "kernel_s_per_call" in r["mlx"]]
    if kernel_rows:
        lines += ["", "GPU time in kernels per call (CUPTI through torch.profiler, 5 calls) against the wall time above: "
                  "the rest is the GPU waiting for the host to launch work.", "",
                  "| upscaler | latent | MLX kernel time | MLX kernels | ltx-core kernel time | ltx-core kernels |",
                  "|---|---|---|---|---|---|"]
        for r in kernel_rows:
            m, t = r["mlx"], r["ltx_core"]
            lines.append(
                f"| {r['kind']} x2 | {'x'.join(map(str, r['latent_fhw']))} | {ms(m['kernel_s_per_call'])} | "
                f"{m['kernels_per_call']:.0f} | {ms(t['kernel_s_per_call'])} | {t['kernels_per_call']:.0f} |"
            )
    queued = [r for r in rows if r.get("mlx_stages_in_flight")]
    if queued:
        lines += ["", "The compiled MLX forward with other bounds on the stages queued on the device at once "
                  "(`LatentUpsampler.stages_in_flight`; the table above uses the default):", "",
                  "| upscaler | latent | stages queued | median (range) | peak |", "|---|---|---|---|---|"]
        for r in queued:
            for depth, q in r["mlx_stages_in_flight"].items():
                lines.append(f"| {r['kind']} x2 | {'x'.join(map(str, r['latent_fhw']))} | {depth} | "
                             f"{q['median_s'] * 1e3:.1f} ms ({q['min_s'] * 1e3:.1f}-{q['max_s'] * 1e3:.1f}) | "
                             f"{mb(q['peak_bytes'])} |")
    chunked = [r for r in rows if "mlx_chunked" in r]
    if chunked:
        lines += ["", "Exact chunked mode (MLX, one pass per GroupNorm):", "",
                  "| upscaler | latent | chunk frames | median (range) | peak | max rel. diff vs one shot |", "|---|---|---|---|---|---|"]
        for r in chunked:
            c = r["mlx_chunked"]
            lines.append(
                f"| {r['kind']} x2 | {'x'.join(map(str, r['latent_fhw']))} | {c['chunk_frames']} | "
                f"{c['median_s'] * 1e3:.1f} ms ({c['min_s'] * 1e3:.1f}-{c['max_s'] * 1e3:.1f}) | {mb(c['peak_bytes'])} | "
                f"{c['max_rel_err_vs_one_shot']:.2e} |"
            )
    lines += ["", "Errors: max |out - ref| / max |ref|, and PSNR with max |ref| as the peak. MLX runs its forward "
              "through mx.compile on a GPU from a shape's second call on (the first runs op by op; the second pays for "
              "the traces and, unless MLX's on-disk kernel cache already holds them, the kernel builds: both are in "
              "the warm-up); 'MLX uncompiled' is the same model op by op throughout.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="gpu: MLX's GPU and torch CUDA; cpu: both on the CPU; auto: gpu when torch sees CUDA")
    p.add_argument("--sizes", nargs="+", type=parse_size, metavar="KIND:FxHxW",
                   help=f"latent sizes (default: {' '.join(DEFAULT_SIZES)})")
    p.add_argument("--smoke", "--small", action="store_true",
                   help=f"tiny run for a CPU: {' '.join(SMOKE_SIZES)} at width {SMOKE_MID}, 3 runs")
    p.add_argument("--mid-channels", type=int, help="override the upscalers' width (default: the real one)")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--chunk-frames", type=int, help="also time MLX's exact chunked mode with this chunk")
    p.add_argument("--kernel-time", action="store_true",
                   help="on CUDA, also measure each side's GPU time in kernels per call (CUPTI via torch.profiler)")
    p.add_argument("--stages-in-flight", type=int, nargs="+", metavar="N",
                   help="also time the compiled MLX forward with at most N stages queued on the device")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="NAME", help="write benchmarks/results/NAME.json and NAME.md")
    args = p.parse_args(argv)
    if args.runs < 3:
        p.error("--runs must be at least 3 (median and range)")
    if args.warmup < 2 and not args.smoke:
        p.error("--warmup must be at least 2 (the first call runs op by op, the second compiles on a GPU)")
    if args.smoke:
        args.sizes = args.sizes or [parse_size(s) for s in SMOKE_SIZES]
        args.mid_channels = args.mid_channels or SMOKE_MID
        args.runs, args.warmup = 3, 1
        if args.device == "auto":
            args.device = "cpu"
    sizes = args.sizes or [parse_size(s) for s in DEFAULT_SIZES]

    import mlx.core as mx
    import torch

    from ltx_ane.models.upscaler.model import LatentUpsampler
    from ltx_ane.reference import require_reference

    require_reference()
    if args.device == "auto":
        args.device = "gpu" if torch.cuda.is_available() else "cpu"
    if args.device == "gpu":
        if not torch.cuda.is_available():
            p.error("--device gpu: torch sees no CUDA device")
        torch_device = torch.device("cuda")
        mx.set_default_device(mx.gpu)
    else:
        torch_device = torch.device("cpu")
        mx.set_default_device(mx.cpu)

    from importlib.metadata import version

    meta = {
        "machine": f"{platform.machine()} "
        + (torch.cuda.get_device_name() if torch_device.type == "cuda" else platform.processor() or "cpu"),
        "torch_device": str(torch_device),
        "mlx_device": str(mx.default_device()),
        "mlx": mx.__version__,
        "torch": torch.__version__,
        "ltx_core": version("ltx-core"),
        "dtype": args.dtype,
        "runs": args.runs,
        "warmup": args.warmup,
        "random_weights": True,
        "width_override": args.mid_channels,
        "stages_in_flight_default": LatentUpsampler.stages_in_flight,
        "mlx_env": {k: v for k, v in os.environ.items() if k.startswith("MLX_")},
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    }
    print(f"random weights ({arch_text(args.mid_channels)}); "
          f"torch {torch_device}, MLX {mx.default_device()}, {args.dtype}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, size in sizes:
            row = bench_one(kind, size, args, torch_device, Path(tmp))
            rows.append(row)
            m, t = row["mlx"], row["ltx_core"]
            print(f"{kind} {'x'.join(map(str, size))}: MLX {m['median_s'] * 1e3:.1f} ms "
                  f"[{m['min_s'] * 1e3:.1f}, {m['max_s'] * 1e3:.1f}] peak {mb(m['peak_bytes'])}; "
                  f"ltx-core {t['median_s'] * 1e3:.1f} ms [{t['min_s'] * 1e3:.1f}, {t['max_s'] * 1e3:.1f}] "
                  f"peak {mb(t['peak_bytes'])}; MLX err {row['mlx_vs_fp32']['max_rel_err']:.2e} "
                  f"({row['mlx_vs_fp32']['psnr_db']:.1f} dB), ltx-core err {row['ltx_core_vs_fp32']['max_rel_err']:.2e} "
                  f"({row['ltx_core_vs_fp32']['psnr_db']:.1f} dB)", flush=True)
            if "mlx_chunked" in row:
                c = row["mlx_chunked"]
                print(f"  chunked ({c['chunk_frames']} frames): {c['median_s'] * 1e3:.1f} ms, peak {mb(c['peak_bytes'])}, "
                      f"max rel. diff vs one shot {c['max_rel_err_vs_one_shot']:.2e}", flush=True)
    if args.out:
        json_path, md_path = write_results(args.out, {"meta": meta, "results": rows}, markdown(meta, rows), RESULTS)
        print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
