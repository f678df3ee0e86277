"""Cold start: the first call of each component and of whole commands, in fresh processes, against a warm call.

Every case runs in a new Python process, twice: first with empty kernel caches (MLX's compiled-kernel cache,
``MLX_PTX_CACHE_DIR``, and the CUDA driver's, ``CUDA_CACHE_PATH``, both pointed at a new empty folder), then again
in another new process with the caches the first one filled (a user's second run). Inside each process the case
runs twice: the first call pays for tracing, kernel builds and cuDNN plans, the second is the warm time. Model
loading (random weights at the real architecture) is inside each call for the commands and outside for the
components. The wall time of the whole process (imports included) is reported too.

Cases: ``generate`` is the README's example (tiny config); ``render`` a small random latent through both real
upscalers and the LTX-2 decoder (``ltx-ane render --random-weights``); ``decoder``, ``encoder``, ``spatial``,
``temporal`` one component call at a tile (latent units, as ``ltx-ane bench``).

    python benchmarks/bench_cold_start.py --device gpu --out benchmarks/results/cold_start_cuda
    python benchmarks/bench_cold_start.py --device cpu --cases generate decoder --tile-cpu 2x2x2 --out ...
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {
    "generate": ["generate", "--random-weights", "--config", "tiny", "--prompt", "a red fox in fresh snow",
                 "--frames", "9", "--height", "128", "--width", "192", "-o", "{out}/demo.mp4"],
    "render": ["render", "--random-weights", "--random-latent", "2x2x3", "--spatial-upscaler", "--temporal-upscaler",
               "--quiet", "-o", "{out}/render.mp4"],
}
COMPONENTS = ("decoder", "encoder", "spatial", "temporal")
GPU_TILES = {"decoder": "9x16x16", "encoder": "9x16x16", "spatial": "16x8x12", "temporal": "9x16x24"}


def worker(case: str, device: str, tile: str | None, out_dir: str) -> dict:
    """Runs in the fresh process: the case twice, each call timed whole (synchronised)."""
    import mlx.core as mx

    mx.set_default_device(mx.gpu if device == "gpu" else mx.cpu)
    if case in COMMANDS:
        from ltx_ane.cli.main import main

        argv = [a.format(out=out_dir) for a in COMMANDS[case]]
        calls = []
        for _ in range(2):
            start = time.perf_counter()
            if main(argv) != 0:
                raise SystemExit(f"{case} failed")
            calls.append(time.perf_counter() - start)
        return {"calls_s": calls}

    from ltx_ane.bench.runner import Setup, identity_statistics, make_input, to_host_layout
    from ltx_ane.models import registry
    from ltx_ane.models.loading import Source
    from ltx_ane.runtime.backends import MLXBackend

    spec = registry.spec(case)
    raw, _ = spec.resolve(Source(random_weights=True))
    setup = Setup(case, raw, None, "random weights, real architecture")
    start = time.perf_counter()
    model = spec.load(setup.source(), "bf16", 0)
    mx.eval(model.parameters())
    load_s = time.perf_counter() - start
    backend = MLXBackend(model, case, identity_statistics(setup) if spec.io == "upsample" else None)
    x = to_host_layout(setup, make_input(setup, tuple(int(v) for v in tile.split("x")), 0))
    calls = []
    for _ in range(2):
        start = time.perf_counter()
        backend(x)  # returns host arrays: synchronised
        calls.append(time.perf_counter() - start)
    return {"calls_s": calls, "load_s": load_s}


def run_fresh(case: str, device: str, tile: str | None, caches: Path, out_dir: Path) -> dict:
    env = dict(os.environ, MLX_PTX_CACHE_DIR=str(caches / "mlx"), CUDA_CACHE_PATH=str(caches / "cuda"),
               LTX_ANE_CACHE=str(caches / "ltx-ane"), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, __file__, "--worker", case, "--device", device, "--work", str(out_dir)]
    if tile:
        cmd += ["--tile", tile]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{case}: worker failed\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    kernels = sorted(p.name for p in (caches / "mlx").rglob("*.ptx"))
    return {**result, "process_s": wall, "kernel_cache_files": sum(1 for p in caches.rglob("*") if p.is_file()),
            "kernels": [k[:80] for k in kernels], "stderr_tail": done.stderr[-1500:]}


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [
        f"# Cold start: first calls in fresh processes ({meta['device_name']})",
        "",
        f"Command: `{meta['command']}`  ",
        f"MLX {meta['mlx']} on {meta['device']}; random weights at the real architecture (tiny config for "
        "`generate`). Each case in a new process with empty kernel caches (cold), then in another new process with "
        "the caches it filled (cached); inside each process the case runs twice (first call, then the warm call). "
        "Commands include model loading in each call; components load before the first call. Process: the whole "
        "process's wall time, imports included. Beyond warm: first call minus warm call.",
        "",
        "| case | tile | cold first s | cold warm s | cold beyond warm s | cached first s | cached warm s | "
        "cached beyond warm s | cold process s | cached process s | kernel cache files |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c, k = r["cold"], r["cached"]
        lines.append(
            f"| {r['case']} | {r.get('tile') or '-'} | {c['calls_s'][0]:.2f} | {c['calls_s'][1]:.2f} | "
            f"{c['calls_s'][0] - c['calls_s'][1]:.2f} | {k['calls_s'][0]:.2f} | {k['calls_s'][1]:.2f} | "
            f"{k['calls_s'][0] - k['calls_s'][1]:.2f} | {c['process_s']:.1f} | {k['process_s']:.1f} | "
            f"{k['kernel_cache_files']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    p.add_argument("--cases", nargs="+", default=[*COMMANDS, *COMPONENTS], choices=[*COMMANDS, *COMPONENTS])
    p.add_argument("--tile-cpu", default="2x2x2", help="component tile on the CPU (latent FxHxW; real widths are slow)")
    p.add_argument("--out", metavar="PATH", help="write PATH.json and PATH.md")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--tile", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.device, args.tile, args.work)))
        return 0

    import mlx.core as mx

    rows = []
    for case in args.cases:
        tile = None if case in COMMANDS else (GPU_TILES[case] if args.device == "gpu" else args.tile_cpu)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "out").mkdir()
            row = {"case": case, "tile": tile}
            for phase in ("cold", "cached"):
                row[phase] = run_fresh(case, args.device, tile, tmp / "caches", tmp / "out")
            rows.append(row)
            print(json.dumps(row), flush=True)
    device_name = platform.processor() or platform.machine()
    if args.device == "gpu":
        try:
            device_name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                         capture_output=True, text=True).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            device_name = "GPU"
    meta = {"mlx": mx.__version__, "device": args.device, "device_name": device_name,
            "command": " ".join(["python benchmarks/bench_cold_start.py", *(argv if argv is not None else sys.argv[1:])])}
    if args.out:
        from ltx_ane.bench.timing import write_results

        print("wrote", *write_results(args.out, {"meta": meta, "results": rows}, markdown(meta, rows),
                                           Path(__file__).parent / "results"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
