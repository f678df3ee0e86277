"""Write docs/coreml-feasibility.md from the conversion benchmark's results (which hold `ltx-ane inspect` data).

    python benchmarks/bench_convert.py          # measure (slow: real architectures, one at a time)
    python docs/make_coreml_feasibility.py      # write the document from benchmarks/results/convert-*.json

Every number in the document comes from those results or from the public chip figures in CHIPS below; the
prose between them is fixed here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "convert-linux-cpu.json"
OUT = ROOT / "docs" / "coreml-feasibility.md"

# Public on-paper figures (docs/../shared reference, Apple spec sheets): peak fp16 TFLOP/s and GB/s.
# ANE peaks are Apple's "TOPS"; M4's 38 is probably int8, so fp16 is taken as half. ANE bandwidth is measured by
# third parties at ~60 GB/s on chips up to M2 and ~120 GB/s on M3 Max / M4 Max.
CHIPS = [
    # name, ANE TFLOP/s, ANE GB/s, GPU TFLOP/s, GPU GB/s
    ("M1", 11.0, 60, 2.6, 68),
    ("M1 Max", 11.0, 60, 10.4, 400),
    ("M2 Max", 15.8, 60, 13.6, 400),
    ("M3 Max", 18.0, 120, 15.0, 400),
    ("M4", 19.0, 60, 4.3, 120),
    ("M4 Max", 19.0, 120, 17.0, 546),
]
# Whole-clip conv work from ltx-core on meta tensors (shared reference, section 4), TFLOP.
WORKLOADS = {
    "decoder-ltx2": ("decode 121 frames 512x768", 60.2),
    "decoder-ltx23": ("decode 121 frames 512x768", 117.5),
    "encoder-ltx2": ("encode 121 frames 512x768", 139.7),
    "spatial": ("latent 16x16x24 -> 16x32x48", 14.6),
    "temporal": ("latent 16x16x24 -> 31x16x24", 2.3),
}
COMPONENT_JOBS = ["decoder-ltx2", "decoder-ltx23", "encoder-ltx2", "encoder-ltx23", "spatial", "temporal"]

REWRITES = """\
| what | ltx-core | rewrite (every tensor rank 4) | why |
|---|---|---|---|
| layout | (B, C, T, H, W) | (T, C, H, W): frames on the batch axis, batch 1 | the ANE's native layout is rank-4 channels-first; Core ML caps rank at 5 |
| 3x3x3 conv | `Conv3d` after repeating edge frames | `stacked`: one `Conv2d` over the three time-shifted frame stacks concatenated on channels; `split`: three `Conv2d` summed | no public source shows Conv3d on the ANE; `stacked` is one large matmul but triples the input, `split` copies nothing but runs three smaller convs |
| temporal padding | repeat first/last frame (VAE), zeros (upscalers) | concat of edge frames (or zeros) on the batch axis | coremltools fuses it into `pad(mode=replicate)` on axis 0 |
| depth-to-space (decoder, temporal upscaler) | rank-8 einops rearrange | the producing conv's output channels are permuted offline so the time part is a reshape; space by `pixel_shuffle` (`d2s=pixel_shuffle`) or two rank-4 reshape+transpose pairs (`d2s=reshape`) | rank <= 4; which of the two the ANE runs better must be measured on a Mac |
| decoder residual path | d2s of the input, channel repeat | one transpose for time, same spatial d2s, concat for the repeat | the input's channels cannot be permuted offline |
| space-to-depth + group mean (encoder) | rank 6-8 rearranges | `pixel_unshuffle` (or reshapes), one transpose for time, mean over a rank-4 view | unmodified it exceeds Core ML's rank limit |
| PixelNorm | x / sqrt(mean(x^2) + 1e-8) | `prescaled`: s = max_c abs(x), y = (x/s) rsqrt(mean((x/s)^2) + (1e-4/s)^2) | exact in real arithmetic; in fp16 x^2 overflows once abs(x) > 256 and 1e-8 is below the smallest subnormal |
| GroupNorm (upscalers) | statistics over channels/32 x all frames x H x W | two-stage mean over a rank-4 view, prescaled like PixelNorm, affine after | unmodified it lowers to a rank-6 reshape; the statistics must span the clip, so upscalers are converted at whole-clip shapes |
| patchify / unpatchify | inside the model | on the host (`coreml/layout.py`) | a last axis of 4 pads to 64 bytes in ANE buffers (8x waste) |
| encoder output | 129 channels, then slice the means | only the 128 mean channels are computed (rows dropped from `conv_out`) | less work, no slice |
"""


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def seconds(x: float) -> str:
    return f"{x * 1000:.2f} ms" if x < 1 else f"{x:.2f} s"


def compute_ops(op_counts: dict) -> int:
    return sum(v for k, v in op_counts.items() if k != "const" and not k.startswith("constexpr"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    data = json.loads(args.results.read_text())
    by = {(r["job"], r["variant"]): r for r in data["results"]}
    L = []
    add = L.append
    add("# Core ML on the Neural Engine: feasibility per component")
    add("")
    add(f"Generated by `docs/make_coreml_feasibility.py` from `{args.results.relative_to(ROOT)}` "
        f"(written by `benchmarks/bench_convert.py` on {data['machine']}: coremltools 9.0, torch 2.13 CPU, ltx-core 1.0.0, "
        "random weights of the real architectures). Nothing here ran on a Mac: conversion, package contents and the "
        "public ANE constraints are facts measured on Linux; device placement and speed are on paper until "
        "`ltx_ane.coreml.runtime` (compute units, MLComputePlan placement) is run on Apple hardware.")
    add("")
    add("Variants: `stacked` = `conv=stacked,d2s=pixel_shuffle,norm=prescaled` (the default), `split` = "
        "`conv=split,d2s=reshape,norm=prescaled`, `conv3d` = ltx-core's unmodified modules (the 5-D graph), with only "
        "the `aten::concatenate` converter alias added. Tiles are small but real (2 latent frames, 8x8 latents; "
        "upscalers: 3 latent frames): package size and op counts do not depend on them. fp16 PSNR: the rewritten torch "
        "model in fp16 against fp32 at 9x64x64 (conversion refuses a component below 40 dB).")
    add("")
    add("## Summary")
    add("")
    add("| component | variant | converts? | time | peak RAM | package | fp16 PSNR | compute ops | max rank | flagged (blocker / warning) |")
    add("|---|---|---|---|---|---|---|---|---|---|")
    for job in COMPONENT_JOBS + ["temporal-2tiles"]:
        for variant in ("stacked", "split", "conv3d"):
            r = by.get((job, variant))
            if r is None:
                continue
            if r["ok"]:
                f = r["functions"][0]
                flags = {fl["code"]: fl["severity"] for fn in r["functions"] for fl in fn["flags"]}
                flagged = ", ".join(f"{c} ({s})" for c, s in sorted(flags.items())) or "nothing"
                psnr = "-" if r.get("fp16_psnr_db") is None else f"{r['fp16_psnr_db']:.1f} dB"
                add(f"| {job} | {variant} | yes ({len(r['functions'])} function{'s' if len(r['functions']) > 1 else ''}) | {r['seconds']:.0f} s | "
                    f"{human(r['peak_rss_bytes'])} | {human(r['package_bytes'])} | {psnr} | {compute_ops(f['op_counts'])} | "
                    f"{max(map(int, f['ranks']))} | {flagged} |")
            else:
                add(f"| {job} | {variant} | **no** | {r['seconds']:.0f} s | {human(r['peak_rss_bytes'])} | - | - | - | - | see below |")
    add("")
    add("## What converts unmodified")
    add("")
    for job in COMPONENT_JOBS:
        r = by.get((job, "conv3d"))
        if r is None:
            continue
        if r["ok"]:
            f = r["functions"][0]
            blockers = [fl for fl in f["flags"] if fl["severity"] == "blocker"]
            add(f"- **{job}**: converts as a 5-D graph ({compute_ops(f['op_counts'])} ops, max rank {max(map(int, f['ranks']))}); "
                + ("; ".join(f"{fl['message']} ({fl['count']}, e.g. `{fl['example']}`)" for fl in blockers) or "nothing flagged") + ".")
        else:
            add(f"- **{job}**: fails: `{r['error']}`")
    add("")
    add("## What the rewrites change, and why")
    add("")
    add(REWRITES)
    for job in COMPONENT_JOBS:
        rs = {v: by.get((job, v)) for v in ("stacked", "split", "conv3d")}
        rs = {v: r for v, r in rs.items() if r and r["ok"]}
        if not rs:
            continue
        add(f"## {job}")
        add("")
        first = next(iter(rs.values()))["functions"][0]
        io = "; ".join(f"`{n}` {v[1]}" for n, v in first["inputs"].items()) + " -> " + "; ".join(f"`{n}` {v[1]}" for n, v in first["outputs"].items())
        add(f"Function at the benchmark tile: {io}.")
        add("")
        types = sorted({k for r in rs.values() for k in r["functions"][0]["op_counts"]}, key=lambda k: -max(r["functions"][0]["op_counts"].get(k, 0) for r in rs.values()))
        add("| op | " + " | ".join(rs) + " |")
        add("|---|" + "---|" * len(rs))
        for t in types:
            add(f"| {t} | " + " | ".join(str(r["functions"][0]["op_counts"].get(t, 0)) for r in rs.values()) + " |")
        add("")
        for v, r in rs.items():
            f = r["functions"][0]
            a = f["largest_activation"]
            add(f"- `{v}`: largest activation {human(a['bytes'])} ({a['dtype']} {a['shape']} from `{a['op']}`), "
                f"{human(a['padded_bytes'])} with 64-byte ANE rows; activations written per run {human(f['activation_bytes'])} "
                f"({human(f['padded_activation_bytes'])} padded); conv work {f['conv_flops'] / 1e9:.1f} GFLOP. "
                + ("Flags: " + "; ".join(f"{fl['severity']} `{fl['code']}`: {fl['message']} ({fl['count']})" for fl in f["flags"]) if f["flags"] else "Nothing flagged by the public ANE constraints."))
        add("")
        r = rs.get("stacked")
        if r:
            f = r["functions"][0]
            flops, ane_bytes, gpu_bytes = f["conv_flops"], f["padded_activation_bytes"], f["activation_bytes"]
            workload = WORKLOADS.get(job) or WORKLOADS.get(job.split("-")[0] if job.startswith(("spatial", "temporal")) else "")
            add("On paper (`stacked`; time = max(conv FLOP / peak, activation bytes / bandwidth); weights read once and ignored):")
            add("")
            header = "| chip | ANE per tile | GPU per tile |" + (f" ANE, {workload[0]} | GPU, {workload[0]} |" if workload else "")
            add(header)
            add("|---|---|---|" + ("---|---|" if workload else ""))
            for chip, ane_tf, ane_bw, gpu_tf, gpu_bw in CHIPS:
                ane = max(flops / (ane_tf * 1e12), ane_bytes / (ane_bw * 1e9))
                gpu = max(flops / (gpu_tf * 1e12), gpu_bytes / (gpu_bw * 1e9))
                row = f"| {chip} | {seconds(ane)} | {seconds(gpu)} |"
                if workload and flops:
                    scale = workload[1] * 1e12 / flops
                    row += f" {seconds(ane * scale)} | {seconds(gpu * scale)} |"
                add(row)
            add("")
    comp = [by.get((j, "stacked")) for j in ("temporal", "temporal-int8", "temporal-palette6", "temporal-palette4")]
    comp = [r for r in comp if r and r["ok"]]
    if comp:
        add("## Weight compression (temporal upscaler, real size)")
        add("")
        add("`ct.optimize.coreml` on each function before merging; PSNR of the torch model with the decompressed "
            "weights against the original weights (fp32, at 9x64x64). Random weights are uniformly distributed, a "
            "harder case for palettes than trained weights.")
        add("")
        add("| weights | package | time | PSNR of decompressed weights |")
        add("|---|---|---|---|")
        for r in comp:
            add(f"| {r.get('compression') or 'fp16'} | {human(r['package_bytes'])} | {r['seconds']:.0f} s | "
                + ("-" if r.get("compressed_psnr_db") is None else f"{r['compressed_psnr_db']:.1f} dB") + " |")
        add("")
    one, two = by.get(("temporal", "stacked")), by.get(("temporal-2tiles", "stacked"))
    if one and two and one["ok"] and two["ok"]:
        add("## Several tile shapes in one package")
        add("")
        add(f"One static function per tile shape, merged with `save_multifunction` (weights deduplicated): the temporal "
            f"upscaler with tiles {', '.join(two['tiles'])} is {human(two['package_bytes'])}, with one tile "
            f"{human(one['package_bytes'])}.")
        add("")
    add("## Not known yet")
    add("")
    add("- Which ops Core ML actually places on the ANE, and how fast: run `CoreMLComponent(pkg, 'CPU_AND_NE').placement()` "
        "and time `stacked` against `split` and `d2s=pixel_shuffle` against `d2s=reshape` on each chip.")
    add("- Whether `pad(mode=replicate)` on the batch axis (temporal padding) and `reduce_max` (prescaled norms) stay on the ANE.")
    add("- fp16 PSNR with trained weights (these are random); the conversion gate re-checks it for every real checkpoint.")
    args.out.write_text("\n".join(L) + "\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
