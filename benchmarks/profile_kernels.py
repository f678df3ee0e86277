"""Where a component's GPU time goes, kernel by kernel, for MLX and ltx-core in the same process (CUDA).

CUPTI (through torch.profiler) records every kernel on the device, MLX's too. For each component and tile: the
wall time of a call, the GPU time in kernels, and the kernels that take most of it, grouped by name, with the
peak memory of one call. Random weights at the real architecture (the same file on both sides), bf16.

    python benchmarks/profile_kernels.py --cases decoder:ltx23:16x16x24 encoder:ltx2:16x16x24 --out NAME

With ``--launches`` also one call launch by launch: the convolutions paired in order across the two sides (the same
convs run in the same order on both), the longest other kernels, and where the device waited between kernels.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
from pathlib import Path

from ltx_ane.bench.timing import write_results

def sides(case: str, tmp: Path, torch_device: str):
    """The case's MLX and ltx-core backends, one at a time (the other freed), with the same random weights:
    yields (name, backend, prepared input)."""
    import mlx.core as mx
    import torch

    from ltx_ane import reference as R
    from ltx_ane.bench.runner import FAMILIES, Setup, identity_statistics, make_input, to_host_layout
    from ltx_ane.models import registry
    from ltx_ane.models.config import load_config_file
    from ltx_ane.models.loading import Source
    from ltx_ane.runtime.backends import MLXBackend, TorchBackend

    component, config, tile = case.split(":")
    spec = registry.spec(component)
    raw = load_config_file(config) if spec.family == "video_vae" else spec.resolve(Source(random_weights=True))[0]
    module = spec.reference(raw, 0)
    path = R.write_checkpoint(tmp / f"{component}.safetensors", FAMILIES[spec.family][2](module, component), raw)
    del module
    setup = Setup(component, raw, path, "random weights, real architecture")
    stats = identity_statistics(setup) if spec.io == "upsample" else None
    x = to_host_layout(setup, make_input(setup, tuple(int(v) for v in tile.split("x")), 0))
    for name in ("mlx", "ltx_core"):
        if name == "mlx":
            backend = MLXBackend(spec.load(setup.source(), "bf16", 0), component, stats)
        else:
            backend = TorchBackend(R.from_checkpoint(component, path, raw), component, stats, torch_device, "bf16")
        prepared = backend.prepare(x)
        yield name, backend, prepared
        del backend, prepared
        gc.collect()
        mx.clear_cache()
        if torch_device == "cuda":
            torch.cuda.empty_cache()


def profile_case(case: str, reps: int, top: int, tmp: Path, torch_device: str, launches: bool = False) -> dict:
    import torch

    from ltx_ane.bench.timing import cuda_kernel_launches, cuda_kernel_time, summary, timed

    out = {"case": case}
    for name, backend, prepared in sides(case, tmp, torch_device):
        def call():
            return backend.run(prepared)

        times, _ = timed(lambda: (call(), backend.sync()), lambda: None, 5, 2)
        backend.reset_peak()
        call()
        backend.sync()
        kernels = cuda_kernel_time(call, backend.sync, reps, top) if torch.cuda.is_available() else {}
        out[name] = {**summary(times), "peak_bytes": backend.peak(), "kernel_s_per_call": 0.0, "kernels_per_call": 0,
                     "top": [], **kernels}
        if launches and torch.cuda.is_available():
            out[name]["launches"] = cuda_kernel_launches(call, backend.sync)
    return out


def markdown(results: list[dict], command: str) -> str:
    lines = ["# Kernel profile: MLX and ltx-core (CUDA, bf16, random weights)", "", f"Command: `{command}`", ""]
    for r in results:
        lines += [f"## {r['case']}", "", "| side | wall ms | kernel ms | kernels | peak GB |", "|---|---|---|---|---|"]
        for side in ("mlx", "ltx_core"):
            s = r[side]
            peak = f"{s['peak_bytes'] / 1e9:.2f}" if s["peak_bytes"] else "n/a"
            lines.append(f"| {side} | {s['median_s'] * 1e3:.1f} | {s['kernel_s_per_call'] * 1e3:.1f} | "
                         f"{s['kernels_per_call']:.0f} | {peak} |")
        for side in ("mlx", "ltx_core"):
            lines += ["", f"{side}: top kernels", "", "| kernel | ms/call | calls | share |", "|---|---|---|---|"]
            for k in r[side]["top"]:
                lines.append(f"| `{k['name']}` | {k['ms_per_call']:.2f} | {k['calls']:.0f} | {k['share']:.0%} |")
        lines.append("")
        if "launches" in r["mlx"]:
            lines += launch_sections(r["mlx"]["launches"], r["ltx_core"]["launches"])
    return "\n".join(lines)


def is_conv(name: str) -> bool:
    return "fprop" in name or "conv" in name.lower()


def short(name: str) -> str:
    if "tilesize" in name:
        return "conv " + name[name.index("tilesize"):].split("_")[0]
    return name[:70]


def busy_us(launches: list[dict]) -> float:
    """Time in which at least one kernel ran (kernels of a CUDA graph may overlap)."""
    total, end = 0.0, float("-inf")
    for k in launches:
        start, stop = k["start_us"], k["start_us"] + k["us"]
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def launch_sections(mlx: list[dict], ref: list[dict]) -> list[str]:
    lines = ["### One call, launch by launch", "", "| side | span ms | busy ms | idle ms | kernels | conv ms | convs |",
             "|---|---|---|---|---|---|---|"]
    for side, ks in (("mlx", mlx), ("ltx_core", ref)):
        span = max(k["start_us"] + k["us"] for k in ks) if ks else 0.0
        busy = busy_us(ks)
        convs = [k for k in ks if is_conv(k["name"])]
        lines.append(f"| {side} | {span / 1e3:.1f} | {busy / 1e3:.1f} | {(span - busy) / 1e3:.1f} | {len(ks)} | "
                     f"{sum(k['us'] for k in convs) / 1e3:.1f} | {len(convs)} |")
    mc, rc = [k for k in mlx if is_conv(k["name"])], [k for k in ref if is_conv(k["name"])]
    lines += ["", f"Convolutions in order ({len(mc)} MLX, {len(rc)} ltx-core; paired by position):", "",
              "| # | MLX kernel | MLX us | ltx-core kernel | ltx-core us | MLX / ltx-core |", "|---|---|---|---|---|---|"]
    for i, (a, b) in enumerate(zip(mc, rc)):
        lines.append(f"| {i} | {short(a['name'])} | {a['us']:.0f} | {short(b['name'])} | {b['us']:.0f} | "
                     f"{a['us'] / max(b['us'], 1e-9):.3f} |")
    others = sorted(((i, k) for i, k in enumerate(mlx) if not is_conv(k["name"])), key=lambda t: -t[1]["us"])[:15]
    lines += ["", "MLX: the longest other kernels", "", "| launch | kernel | us |", "|---|---|---|"]
    lines += [f"| {i} | `{short(k['name'])}` | {k['us']:.0f} |" for i, k in others]
    gaps = sorted(((mlx[i + 1]["start_us"] - (k["start_us"] + k["us"]), i) for i, k in enumerate(mlx[:-1])),
                  reverse=True)[:15]
    lines += ["", "MLX: the longest waits between kernels", "", "| after launch | us | before | after |",
              "|---|---|---|---|"]
    lines += [f"| {i} | {g:.0f} | `{short(mlx[i]['name'])}` | `{short(mlx[i + 1]['name'])}` |" for g, i in gaps]
    return lines + [""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", nargs="+", required=True, metavar="COMPONENT:CONFIG:FxHxW")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--torch-device", default="cuda", help="cpu: a smoke test of the script (no kernel times)")
    p.add_argument("--out", metavar="NAME", help="write benchmarks/results/NAME.json and NAME.md")
    p.add_argument("--launches", action="store_true", help="also one call launch by launch (see above)")
    args = p.parse_args(argv)
    import mlx.core as mx

    from ltx_ane.reference import require_reference

    require_reference()
    mx.set_default_device(mx.gpu if args.torch_device == "cuda" else mx.cpu)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            results.append(profile_case(case, args.reps, args.top, Path(tmp), args.torch_device, args.launches))
            print(json.dumps(results[-1])[:2000], flush=True)
    command = " ".join(["python benchmarks/profile_kernels.py", *(argv if argv is not None else sys.argv[1:])])
    text = markdown(results, command)
    print(text)
    if args.out:
        write_results(args.out, {"command": command, "results": results}, text, Path(__file__).parent / "results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
