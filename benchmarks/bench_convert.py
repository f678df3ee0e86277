"""Core ML conversion at the real architectures: time, peak memory, package size, ops, fp16 PSNR, ANE flags.

Each job runs in its own process (one at a time: a real-size conversion needs 3.5-8 GB), with random weights
of the real architecture (package size and op counts do not depend on the values). Also records what the
unmodified 5-D graph (``--conv conv3d``) does: converts or fails, and with which error.

    python benchmarks/bench_convert.py                   # everything, results/convert-<name>.{json,md}
    python benchmarks/bench_convert.py --only decoder-ltx2 --variants stacked
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
# name -> (component, config preset, tiles). Tiles are small (sizes and op counts do not depend on them; the
# fp16 check runs a torch forward at the smallest) but real: 2 latent frames, 8x8 latents.
JOBS = {
    "decoder-ltx2": ("decoder", "ltx2", ["9x256x256"]),
    "decoder-ltx23": ("decoder", "ltx23", ["9x256x256"]),
    "encoder-ltx2": ("encoder", "ltx2", ["9x256x256"]),
    "encoder-ltx23": ("encoder", "ltx23", ["9x256x256"]),
    "spatial": ("spatial", "spatial-x2", ["17x256x256"]),
    "temporal": ("temporal", "temporal-x2", ["17x256x256"]),
    "temporal-2tiles": ("temporal", "temporal-x2", ["17x256x256", "33x256x384"]),
    # Weight compression (stacked variant only): sizes, and the PSNR of the decompressed weights.
    "temporal-int8": ("temporal", "temporal-x2", ["17x256x256"]),
    "temporal-palette6": ("temporal", "temporal-x2", ["17x256x256"]),
    "temporal-palette4": ("temporal", "temporal-x2", ["17x256x256"]),
}
COMPRESS = {"temporal-int8": "int8", "temporal-palette6": "palette6", "temporal-palette4": "palette4"}
VARIANTS = {
    "stacked": "conv=stacked,d2s=pixel_shuffle,norm=prescaled",
    "split": "conv=split,d2s=reshape,norm=prescaled",
    "conv3d": "conv=conv3d",
}


def run_one(job: dict) -> dict:
    """In the child: convert, inspect, and report (never raises: errors are results too)."""
    from ltx_ane.coreml.convert import ConvertOptions, TileShape, convert
    from ltx_ane.coreml.graph import inspect_package
    from ltx_ane.coreml.rewrites import Variant
    from ltx_ane.errors import LtxAneError
    from ltx_ane.models.loading import Source

    out = {"job": job["name"], "component": job["component"], "config": job["config"], "variant": job["variant"], "tiles": job["tiles"]}
    start = time.perf_counter()
    try:
        result = convert(
            job["component"],
            Source(config_file=job["config"], random_weights=True),
            [TileShape.parse(t) for t in job["tiles"]],
            job["out_dir"],
            Variant.parse(VARIANTS[job["variant"]]),
            ConvertOptions(fp16_check=job["fp16_check"], min_psnr=float("-inf"), force=True, compress=job.get("compress"),
                           log=lambda m: print(m, file=sys.stderr, flush=True)),
        )
        report = inspect_package(result.path)
        out.update(
            ok=True,
            seconds=round(result.seconds, 1),
            package_bytes=result.size_bytes,
            weight_bytes=report.weight_bytes,
            fp16_psnr_db=None if result.fp16_psnr_db is None else round(result.fp16_psnr_db, 2),
            compression=job.get("compress"),
            compressed_psnr_db=None if result.compressed_psnr_db is None else round(result.compressed_psnr_db, 2),
            functions=[{
                "name": f.name, "inputs": f.inputs, "outputs": f.outputs, "op_counts": f.op_counts, "ranks": f.ranks,
                "dtypes": f.dtypes, "largest_activation": f.largest_activation, "conv_flops": f.conv_flops,
                "activation_bytes": f.activation_bytes, "padded_activation_bytes": f.padded_activation_bytes,
                "flags": [vars(flag) for flag in f.flags],
            } for f in report.functions],
        )
    except LtxAneError as e:
        out.update(ok=False, seconds=round(time.perf_counter() - start, 1), error=str(e))
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return out


def markdown(results: list[dict], machine: str) -> str:
    from ltx_ane.io.checkpoint import human_bytes

    lines = [f"# Core ML conversion at the real architectures ({machine})", "",
             "Random weights, coremltools 9.0, fp16, one job per process. `benchmarks/bench_convert.py` wrote this.", "",
             "| job | variant | tiles | result | time | peak RAM | package | fp16 PSNR | ops | max rank | flags |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r["ok"]:
            f = r["functions"][0]
            ops = sum(v for k, v in f["op_counts"].items() if k != "const")
            flags = ", ".join(sorted({fl["code"] for fn in r["functions"] for fl in fn["flags"]})) or "none"
            psnr = "-" if r["fp16_psnr_db"] is None else f"{r['fp16_psnr_db']:.1f} dB"
            if r.get("compressed_psnr_db") is not None:
                psnr = f"{r['compression']} weights: {r['compressed_psnr_db']:.1f} dB"
            lines.append(f"| {r['job']} | {r['variant']} | {' '.join(r['tiles'])} | converted | {r['seconds']:.0f} s | "
                         f"{human_bytes(r['peak_rss_bytes'])} | {human_bytes(r['package_bytes'])} | {psnr} | {ops} | {max(map(int, f['ranks']))} | {flags} |")
        else:
            error = r["error"].replace("|", "/")[:160]
            lines.append(f"| {r['job']} | {r['variant']} | {' '.join(r['tiles'])} | **failed**: {error} | {r['seconds']:.0f} s | "
                         f"{human_bytes(r['peak_rss_bytes'])} | - | - | - | - | - |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(JOBS), help="jobs to run (default: all)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--no-fp16-check", action="store_true", help="skip the torch fp16-vs-fp32 forward (faster)")
    parser.add_argument("--name", default="linux-cpu", help="results file suffix")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one job (JSON) in this process
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(json.loads(args.one))), flush=True)
        return 0

    RESULTS.mkdir(exist_ok=True)
    json_path = RESULTS / f"convert-{args.name}.json"
    previous = {(r["job"], r["variant"]): r for r in json.loads(json_path.read_text())["results"]} if json_path.exists() else {}
    machine = f"{platform.machine()} {platform.system()}, {_cpus()} CPUs"
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or list(JOBS):
            component, config, tiles = JOBS[name]
            for variant in args.variants:
                if (name == "temporal-2tiles" or name in COMPRESS) and variant != "stacked":
                    continue  # multifunction and compression jobs need one variant
                job = {"name": name, "component": component, "config": config, "tiles": tiles, "variant": variant,
                       "out_dir": str(Path(tmp) / name), "fp16_check": not args.no_fp16_check and variant != "conv3d" and name not in COMPRESS,
                       "compress": COMPRESS.get(name)}
                print(f"== {name} {variant}", file=sys.stderr, flush=True)
                proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(job)], stdout=subprocess.PIPE, text=True)
                lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
                if not lines:
                    result = {"job": name, "component": component, "config": config, "variant": variant, "tiles": tiles, "ok": False,
                              "seconds": 0, "peak_rss_bytes": 0, "error": f"child exited with status {proc.returncode} (killed for memory?)"}
                else:
                    result = json.loads(lines[-1][len("RESULT "):])
                previous[(name, variant)] = result
                print(json.dumps({k: v for k, v in result.items() if k != "functions"}), file=sys.stderr, flush=True)
                shutil_rmtree(Path(tmp) / name)
                results = sorted(previous.values(), key=lambda r: (list(JOBS).index(r["job"]), list(VARIANTS).index(r["variant"])))
                json_path.write_text(json.dumps({"machine": machine, "results": results}, indent=1))
                (RESULTS / f"convert-{args.name}.md").write_text(markdown(results, machine))
    return 0


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    sys.exit(main())
