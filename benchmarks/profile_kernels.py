"""Where a component's GPU time goes, kernel by kernel, for MLX and ltx-core in the same process (CUDA).

CUPTI (through torch.profiler) records every kernel on the device, MLX's too. For each component and tile: the
wall time of a call, the GPU time in kernels, and the kernels that take most of it, grouped by name, with the
peak memory of one call. Random weights at the real architecture (the same file on both sides), bf16.

    python benchmarks/profile_kernels.py --cases decoder:ltx23:16x16x24 encoder:ltx2:16x16x24 --out NAME
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
from pathlib import Path

from ltx_ane.bench.timing import write_results

def profile_case(case: str, reps: int, top: int, tmp: Path, torch_device: str) -> dict:
    import mlx.core as mx
    import torch

    from ltx_ane import reference as R
    from ltx_ane.bench.runner import Setup, identity_statistics, make_input, to_host_layout
    from ltx_ane.bench.timing import cuda_kernel_time, summary, timed
    from ltx_ane.models import registry
    from ltx_ane.models.config import load_config_file
    from ltx_ane.models.loading import Source
    from ltx_ane.runtime.backends import MLXBackend, TorchBackend

    component, config, tile = case.split(":")
    spec = registry.spec(component)
    raw = load_config_file(config) if spec.family == "video_vae" else spec.resolve(Source(random_weights=True))[0]
    module = spec.reference(raw, 0)
    from ltx_ane.bench.runner import FAMILIES

    path = R.write_checkpoint(tmp / f"{component}.safetensors", FAMILIES[spec.family][2](module, component), raw)
    del module
    setup = Setup(component, raw, path, "random weights, real architecture")
    stats = identity_statistics(setup) if spec.io == "upsample" else None
    x = to_host_layout(setup, make_input(setup, tuple(int(v) for v in tile.split("x")), 0))
    out = {"case": case}
    for name in ("mlx", "ltx_core"):
        if name == "mlx":
            backend = MLXBackend(spec.load(setup.source(), "bf16", 0), component, stats)
        else:
            backend = TorchBackend(R.from_checkpoint(component, path, raw), component, stats, torch_device, "bf16")
        prepared = backend.prepare(x)

        def call():
            return backend.run(prepared)

        times, _ = timed(lambda: (call(), backend.sync()), lambda: None, 5, 2)
        backend.reset_peak()
        call()
        backend.sync()
        kernels = cuda_kernel_time(call, backend.sync, reps, top) if torch.cuda.is_available() else {}
        out[name] = {**summary(times), "peak_bytes": backend.peak(), "kernel_s_per_call": 0.0, "kernels_per_call": 0,
                     "top": [], **kernels}
        del backend, prepared
        gc.collect()
        mx.clear_cache()
        if torch_device == "cuda":
            torch.cuda.empty_cache()
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
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", nargs="+", required=True, metavar="COMPONENT:CONFIG:FxHxW")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--torch-device", default="cuda", help="cpu: a smoke test of the script (no kernel times)")
    p.add_argument("--out", metavar="NAME", help="write benchmarks/results/NAME.json and NAME.md")
    args = p.parse_args(argv)
    import mlx.core as mx

    from ltx_ane.reference import require_reference

    require_reference()
    mx.set_default_device(mx.gpu if args.torch_device == "cuda" else mx.cpu)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            results.append(profile_case(case, args.reps, args.top, Path(tmp), args.torch_device))
            print(json.dumps(results[-1])[:2000], flush=True)
    command = " ".join(["python benchmarks/profile_kernels.py", *(argv if argv is not None else sys.argv[1:])])
    text = markdown(results, command)
    print(text)
    if args.out:
        write_results(args.out, {"command": command, "results": results}, text, Path(__file__).parent / "results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
