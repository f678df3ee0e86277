"""MLX audio decode (audio VAE decoder, vocoder) against ltx-core on the same machine, same weights, same latent.

Random weights at the real architecture (timing does not depend on values). Per preset (LTX-2: HiFi-GAN to
24 kHz; LTX-2.3: BigVGAN + bandwidth extension to 48 kHz) and clip length: median and range of ``--runs`` timed
calls of each stage after warm-up, MLX and torch interleaved, each call including its synchronisation and
starting with both allocators' caches emptied; peak memory per backend; SNR of each output against ltx-core in fp32.

  python benchmarks/bench_audio.py --device cuda --out benchmarks/results      # the lent GPU machine
  python benchmarks/bench_audio.py --small --out benchmarks/results            # reduced widths, on a CPU
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

from ltx_ane.bench.timing import summary, timed_call

LATENTS_PER_SECOND = 25  # 16 kHz mel, hop 160, 4 mel frames per latent frame


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="torch device (MLX uses its default)")
    p.add_argument("--presets", nargs="+", default=["ltx2", "ltx23"], choices=["ltx2", "ltx23"])
    p.add_argument("--seconds", nargs="+", type=float, default=[5.0, 20.0], help="clip lengths")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--small", action="store_true", help="reduced widths and a 0.4 s clip, for a CPU in about a minute")
    p.add_argument("--steps-in-flight", type=int, default=None, help="MLX vocoders, both kinds: residual steps "
                   "queued on the device ahead of the host (default: each kind's Generator.DEFAULT_STEPS_IN_FLIGHT)")
    p.add_argument("--out", help="directory for <name>.json and <name>.md")
    p.add_argument("--name", default=None, help="result file stem (default audio_<device>[_small])")
    return p.parse_args()


def small_config(raw: dict) -> dict:
    raw = copy.deepcopy(raw)
    raw["audio_vae"]["model"]["params"]["ddconfig"].update(ch=32, z_channels=2, ch_mult=[1, 1, 2], num_res_blocks=1)
    vocoder = raw["vocoder"]
    for generator in [vocoder["vocoder"], vocoder["bwe"]] if "bwe" in vocoder else [vocoder]:
        generator["upsample_initial_channel"] = 64
    return raw


def snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    noise = np.sum((ref.astype(np.float64) - out) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / noise))


def main():
    args = parse_args()
    import mlx.core as mx
    import torch

    from ltx_ane.models.audio_vae.loader import load_audio_decoder, load_vocoder
    from ltx_ane.models.audio_vae.vocoder import Generator
    from ltx_ane.models.config import load_preset
    from ltx_ane.models.loading import Source
    from ltx_ane.reference import write_checkpoint
    from ltx_ane.reference import audio as RA

    if args.steps_in_flight is not None:
        Generator.steps_in_flight = args.steps_in_flight
    if args.small:
        args.seconds, args.runs = [0.4], min(args.runs, 2)
    tdtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    machine = {
        "platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0], "mlx": mx.__version__,
        "mlx_device": str(mx.default_device()), "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "vocoder_steps_in_flight": (Generator.steps_in_flight if Generator.steps_in_flight != "default" else
                                    ", ".join(f"{k} {v}" for k, v in Generator.DEFAULT_STEPS_IN_FLIGHT.items())),
        "caches_emptied": "both",
    }
    print(json.dumps(machine))
    rows = []
    tmp = Path(tempfile.mkdtemp())
    for preset in args.presets:
        raw = load_preset(preset)
        raw = small_config(raw) if args.small else raw
        ref = {"decoder": RA.build_audio_decoder(raw), "vocoder": RA.build_vocoder(raw)}
        ckpt = write_checkpoint(tmp / f"{preset}.safetensors", RA.audio_state_dict(**ref), raw)
        for name, prefixes in (("decoder", RA.DECODER_PREFIXES), ("vocoder", RA.VOCODER_PREFIXES)):
            RA.load_checkpoint_into(ref[name], ckpt, prefixes)
        mine = {"decoder": load_audio_decoder(Source(str(ckpt)), args.dtype),
                "vocoder": load_vocoder(Source(str(ckpt)), args.dtype)}
        z = mine["decoder"].config.z_channels
        for seconds in args.seconds:
            latent = torch.randn(1, z, round(seconds * LATENTS_PER_SECOND), 16, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                mel32 = ref["decoder"](latent)
                inputs = {"decoder": latent, "vocoder": mel32}
                expected = {"decoder": mel32.numpy(), "vocoder": ref["vocoder"](mel32).numpy()}
            for part in ("decoder", "vocoder"):
                model_t = copy.deepcopy(ref[part]).to(args.device, tdtype)
                x_t = inputs[part].to(args.device, tdtype)
                x_m = mx.array(inputs[part].numpy())

                def run_torch():
                    with torch.no_grad():
                        return model_t(x_t)

                def run_mlx():
                    out = mine[part](x_m)
                    mx.eval(out)
                    return out

                times, peaks, first, outs = {"mlx": [], "torch": []}, {}, {}, {}
                for i in range(args.warmup + args.runs):
                    for backend, fn, wait in (("mlx", run_mlx, lambda: None), ("torch", run_torch, sync)):
                        gc.collect()
                        # Both allocators' caches are emptied before every call (as bench_vae and bench_upsampler
                        # do), so neither side reuses the other calls' buffers: until 2026-12 only MLX's was.
                        if backend == "mlx":
                            mx.clear_cache()
                            mx.reset_peak_memory()
                        elif args.device == "cuda":
                            torch.cuda.empty_cache()
                            torch.cuda.reset_peak_memory_stats()
                        dt, out = timed_call(fn, wait)
                        if i >= args.warmup:
                            times[backend].append(dt)
                        first.setdefault(backend, dt)  # this shape's first call: tracing and kernel builds
                        peak = mx.get_peak_memory() if backend == "mlx" else (
                            torch.cuda.max_memory_allocated() if args.device == "cuda" else float("nan"))
                        peaks[backend] = max(peaks.get(backend, peak), peak)  # stays nan for torch on a CPU
                        # The last call's output is the one checked (no extra call: on a CPU one MLX call can take minutes).
                        outs[backend] = (np.array(out.astype(mx.float32)) if backend == "mlx"
                                         else out.float().cpu().numpy())
                        del out
                row = {"preset": preset, "seconds": seconds, "part": part, "input": list(inputs[part].shape),
                       "output": list(expected[part].shape), "dtype": args.dtype}
                for backend in ("mlx", "torch"):
                    row[backend] = {**summary(times[backend]), "first_call_s": first[backend],
                                    "peak_gb": peaks[backend] / 1e9,
                                    "snr_vs_fp32_db": snr_db(expected[part], outs[backend])}
                row["mlx_over_torch_time"] = row["mlx"]["median_s"] / row["torch"]["median_s"]
                print(json.dumps(row), flush=True)
                rows.append(row)
                del model_t, x_t, outs
                gc.collect()
    if args.out:
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        name = args.name or f"audio_{args.device}{'_small' if args.small else ''}"
        weights = "random weights, reduced widths (--small)" if args.small else "random weights, real architecture"
        result = {"command": " ".join(sys.argv), "machine": machine, "weights": weights, "rows": rows}
        (out_dir / f"{name}.json").write_text(json.dumps(result, indent=1))
        (out_dir / f"{name}.md").write_text(markdown(result))
        print(f"wrote {out_dir / name}.json and .md")
    print("(random weights: timings are real, outputs are noise)")


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def gigabytes(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{value:.2f}"


def markdown(result) -> str:
    m = result["machine"]
    lines = [
        f"# Audio decode benchmark: MLX vs ltx-core ({m.get('gpu') or 'CPU'})",
        "",
        f"Machine: {m['platform']}" + (f", {m['cpus']} CPUs" if m.get("cpus") else "") + "  ",
        f"Command: `{result['command']}`  ",
        f"Weights: {result['weights']}; MLX {m['mlx']} on {m['mlx_device']}, torch {m['torch']}; MLX vocoder "
        f"residual steps queued ahead of the host: {m.get('vocoder_steps_in_flight', 'not recorded')}.  ",
        "Times: median of the timed runs after warm-up [min-max], each including synchronisation; MLX and torch "
        f"interleaved; allocator caches emptied before each call: {m.get('caches_emptied', 'MLX only')}. "
        "Peak: MLX `get_peak_memory`, torch `max_memory_allocated` (weights included; n/a on a CPU). "
        "SNR: each output against ltx-core in fp32 (vocoder rows: on ltx-core's fp32 mel). First call: the first "
        "call of that part and clip length in this process (MLX: tracing and kernel builds, on whatever kernel cache "
        "the machine had), not counted in the median.",
        "",
        "| model | clip s | part | output | MLX s | torch s | MLX/torch | MLX peak GB | torch peak GB | MLX SNR dB | torch SNR dB "
        "| MLX first call s | torch first call s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        a, b = r["mlx"], r["torch"]
        lines.append(
            f"| {r['preset']} | {r['seconds']:g} | {r['part']} | {'x'.join(map(str, r['output']))} "
            f"| {a['median_s']:.3f} [{a['min_s']:.3f}-{a['max_s']:.3f}] | {b['median_s']:.3f} [{b['min_s']:.3f}-{b['max_s']:.3f}] "
            f"| {r['mlx_over_torch_time']:.2f} | {gigabytes(a['peak_gb'])} | {gigabytes(b['peak_gb'])} "
            f"| {a['snr_vs_fp32_db']:.1f} | {b['snr_vs_fp32_db']:.1f} "
            f"| {seconds(a.get('first_call_s'))} | {seconds(b.get('first_call_s'))} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
