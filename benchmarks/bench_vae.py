"""MLX VAE decode/encode against ltx-core on the same machine, same weights, same input.

Random weights at the real architecture (timing does not depend on values). Per case: median and range of
``--runs`` timed calls after a warm-up, MLX and torch interleaved A/B/A/B, each call including its
synchronisation; peak memory per backend; max error and PSNR against ltx-core in fp32.

Tiled rows give both sides the same tile size: ``--tile FxS`` is ltx-core's ``TilingConfig`` (temporal tiles of
F-1 frames, which its causal split extends to F after the first, spatial tiles of S px, overlaps 24 frames and
64 px, its defaults), and MLX gets the largest tile ltx-core cuts from each video (decode: S px on the long side,
the short side scaled by the aspect ratio as ltx-core does; encode: S x S) with the same minimum overlaps. Each
side then cuts tiles its own way: ltx-core shortens the last tile of an axis, MLX spreads equal tiles. Each row
gives the tile count and the volume each side decodes or encodes (latent units summed over tiles), which must
match for the times to compare the same work.

``--torch-compile MODE`` adds, for untiled rows, ltx-core under ``torch.compile(mode=MODE)`` with channels-last
weights and input (the fastest form of the reference a user can run): its first call (tracing, autotuning, kernel
builds) reported apart as the compile time, then timed like the others, with its own peak and error.

  python benchmarks/bench_vae.py --device cuda --out benchmarks/results      # the lent GPU machine
  python benchmarks/bench_vae.py --device cuda --parts decode --modes untiled --torch-compile max-autotune ...
  python benchmarks/bench_vae.py --smoke                                     # a few minutes on a CPU
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from ltx_ane.bench.timing import psnr, timed_call as timed


def model_setting(number):
    """An argparse type: 'model' (the library's own), 'none', or a number converted by ``number``."""
    def parse(text: str):
        if text in ("model", "none"):
            return text
        try:
            value = number(text)
        except ValueError:
            kind = "whole number" if number is int else "number"
            raise argparse.ArgumentTypeError(f"{text!r} is not 'model', 'none' or a {kind}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text!r} is negative")
        return value
    return parse


TORCH_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="torch device (MLX uses its default)")
    p.add_argument("--config", default="ltx2", help="VAE preset or config JSON (default ltx2)")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--sizes", nargs="+", default=["121x512x768", "121x704x1280"], help="pixel FxHxW")
    p.add_argument("--parts", nargs="+", default=["decode", "encode"], choices=["decode", "encode"])
    p.add_argument("--modes", nargs="+", default=["untiled", "tiled"], choices=["untiled", "tiled"])
    p.add_argument("--tile", default="65x512", help="FxS: the tile of tiled rows on both sides, F frames (8k+1) "
                   "and S px (a multiple of 32), as ltx-core's TilingConfig takes it (default 65x512: its default)")
    p.add_argument("--length-sweep", nargs="*", default=[], help="extra pixel FxHxW sizes, tiled decode only, "
                   "to show memory against video length")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--sync-depth", default="model", type=model_setting(int),
                   help="MLX: large intermediates allowed to wait on the device behind a sync point "
                   "(VideoDecoder/VideoEncoder.sync_depth; 'none': one lazy graph; default: the models' own)")
    p.add_argument("--queue-fraction", default="model", type=model_setting(float),
                   help="MLX decoder: only pieces at most this fraction of the last stage's activation wait behind a "
                   "sync point (VideoDecoder.queue_fraction; 'none': all may; default: the model's own)")
    p.add_argument("--torch-compile", default=None, choices=TORCH_COMPILE_MODES,
                   help="untiled rows: also time ltx-core under torch.compile(mode=MODE), channels-last "
                   "; its compile time is reported apart")
    p.add_argument("--smoke", "--small", action="store_true", help="reduced decoder width and a tiny size, "
                   "for a CPU")
    p.add_argument("--out", help="directory for <name>.json and <name>.md")
    p.add_argument("--name", default=None, help="result file stem (default vae_<device>)")
    return p.parse_args()


class Torch:
    def __init__(self, device):
        import torch

        self.torch, self.device = torch, device

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def reset_peak(self):
        if self.device == "cuda":
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def peak(self):
        return self.torch.cuda.max_memory_allocated() if self.device == "cuda" else float("nan")


class Mlx:
    def __init__(self):
        import mlx.core as mx

        self.mx = mx

    def reset_peak(self):
        self.mx.clear_cache()
        self.mx.reset_peak_memory()

    def peak(self):
        return self.mx.get_peak_memory()


def parse_shared_tile(text: str) -> tuple[int, int]:
    """'FxS' -> (frames, side px), checked against what ltx-core's TilingConfig accepts with its overlaps."""
    try:
        frames, side = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--tile {text!r} is not FxS, e.g. 65x512") from None
    if (frames - 1) % 8 or frames - 1 <= TEMPORAL_OVERLAP_FRAMES or side % 32 or side <= SPATIAL_OVERLAP_PX:
        raise SystemExit(f"--tile {text!r}: F must be 8k+1 above {TEMPORAL_OVERLAP_FRAMES + 1} and S a multiple of "
                         f"32 above {SPATIAL_OVERLAP_PX}")
    return frames, side


# ltx-core's default overlaps, the minimum ones of the MLX tiler too (3 and 2 latents).
TEMPORAL_OVERLAP_FRAMES, SPATIAL_OVERLAP_PX = 24, 64


def ltx_core_tiling(text: str):
    from ltx_core.model.video_vae import SpatialTilingConfig, TemporalTilingConfig, TilingConfig

    frames, side = parse_shared_tile(text)
    return TilingConfig(spatial_config=SpatialTilingConfig(side, SPATIAL_OVERLAP_PX),
                        temporal_config=TemporalTilingConfig(frames - 1, TEMPORAL_OVERLAP_FRAMES))


def shared_tile(part: str, grid, text: str) -> tuple[int, int, int]:
    """The latent tile ltx-core cuts from ``grid`` for ``--tile`` (its ``_prepare_tiles`` for the decoder,
    ``prepare_tiles_for_encoding`` for the encoder), clipped to the grid: the tile size MLX gets (it then cuts
    equal tiles of at most that size)."""
    frames, side = parse_shared_tile(text)
    f, h, w = grid
    s = side // 32
    if part == "decode":  # the long side gets S px, the other its share; never below overlap + 1
        th, tw = (max(SPATIAL_OVERLAP_PX // 32 + 1, round(s * n / max(h, w))) for n in (h, w))
    else:
        th = tw = s
    return min((frames - 1) // 8 + 1, f), min(th, h), min(tw, w)


def ltx_core_tiles(ref, part: str, x, tiling) -> list:
    """The tiles ltx-core cuts (its own functions, as its tiled_decode / tiled_encode call them)."""
    if part == "decode":
        return ref._prepare_tiles(x, tiling)
    from ltx_core.model.video_vae.video_vae import prepare_tiles_for_encoding

    return prepare_tiles_for_encoding(x, tiling)


def _volume(slices) -> int:
    volume = 1
    for s in slices:
        volume *= s.stop - s.start
    return volume


def torch_tile_volume(tiles, part: str) -> float:
    """Latent units summed over tiles (encode: pixel volume over 8 x 32 x 32, the latent's share)."""
    total = sum(_volume(t.in_coords[2:]) for t in tiles)
    return total if part == "decode" else total / (8 * 32 * 32)


def mlx_tile_volume(plan, part: str) -> float:
    jobs = plan.jobs()
    if part == "decode":
        return sum(_volume(j.latent_slices) for j in jobs)
    return sum(_volume(j.pixel_slices) for j in jobs) / (8 * 32 * 32)


def tile_pair(row: dict, key: str, fmt: str) -> str:
    """'MLX / ltx-core' of a tiled row's count or volume ('-' for untiled rows and older files)."""
    if row["mode"] == "untiled" or key not in row:
        return "-"
    return f"{fmt.format(row[key]['mlx'])} / {fmt.format(row[key]['torch'])}"


def tile_px(tile) -> str:
    f, h, w = tile
    return f"{(f - 1) * 8 + 1}x{h * 32}x{w * 32}"


def main():
    args = parse_args()
    import mlx.core as mx
    import torch

    from ltx_ane import reference as R
    from ltx_ane.reference import video_vae as RV
    from ltx_ane.models.config import load_config_file
    from ltx_ane.models.loading import Source
    from ltx_ane.models.video_vae.loader import load_decoder, load_encoder
    from ltx_ane.pipelines.video import decode_frames, encode_video
    from ltx_ane.runtime.tiling import make_plan

    raw = load_config_file(args.config)
    if args.smoke:
        raw["vae"]["decoder_base_channels"] = 8  # the encoder keeps its width: ltx-core reads no key for it
        raw["vae"]["latent_channels"] = 16
        args.sizes, args.tile, args.runs = ["41x64x128"], "33x96", 2
    tdtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    from ltx_ane.models.video_vae.model import VideoDecoder, VideoEncoder

    if args.sync_depth != "model":
        depth = None if args.sync_depth == "none" else args.sync_depth
        VideoDecoder.sync_depth = VideoEncoder.sync_depth = depth
    if args.queue_fraction != "model":
        VideoDecoder.queue_fraction = None if args.queue_fraction == "none" else args.queue_fraction
    T, M = Torch(args.device), Mlx()
    tmp = Path(tempfile.mkdtemp())
    ckpt = R.write_checkpoint(tmp / "vae.safetensors", RV.vae_state_dict(RV.build_decoder(raw), RV.build_encoder(raw)), raw)
    rows = []
    machine = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "mlx": mx.__version__,
        "mlx_device": str(mx.default_device()),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
    }
    weights = "random weights, " + ("reduced decoder width (smoke)" if args.smoke else "real architecture")
    print(json.dumps({**machine, "weights": weights}))

    def compiled_reference(build, x_dev, expected) -> dict:
        """ltx-core's module under torch.compile, channels-last: compile time (its first call), then timed."""
        module = build(ckpt, raw).to(args.device, tdtype).to(memory_format=torch.channels_last_3d)
        compiled = torch.compile(module, mode=args.torch_compile)
        x_cl = x_dev.contiguous(memory_format=torch.channels_last_3d)

        def run():
            with torch.no_grad():
                return compiled(x_cl)

        compile_s, _ = timed(run, T.sync)
        times, peak = [], 0
        for i in range(args.warmup + args.runs):
            gc.collect()
            T.reset_peak()
            dt, out = timed(run, T.sync)
            if i >= args.warmup:
                times.append(dt)
            peak = max(peak, T.peak())
            del out
        out = run().float().cpu().numpy()
        result = {"mode": args.torch_compile, "compile_s": compile_s, "median_s": statistics.median(times),
                  "min_s": min(times), "max_s": max(times), "runs_s": times, "peak_gb": peak / 1e9}
        if expected is not None:
            result["max_abs_err_vs_fp32"] = float(np.abs(out - expected).max())
            result["psnr_vs_fp32_db"] = psnr(expected, out)
        return result

    def sweep(part, sizes, modes):
        build = RV.reference_decoder_from_checkpoint if part == "decode" else RV.reference_encoder_from_checkpoint
        ref32 = build(ckpt, raw)
        ref = build(ckpt, raw).to(args.device, tdtype)
        model = (load_decoder if part == "decode" else load_encoder)(Source(str(ckpt)), args.dtype)
        cfg = model.config
        for size in sizes:
            f, h, w = (int(v) for v in size.split("x"))
            grid = ((f - 1) // 8 + 1, h // 32, w // 32)
            g = torch.Generator().manual_seed(0)
            if part == "decode":
                x_t = torch.randn(1, cfg.latent_channels, *grid, generator=g)
            else:
                x_t = torch.rand(1, 3, f, h, w, generator=g) * 2 - 1
            # Both sides hold their input in the compute dtype (a float32 MLX input held 0.57 GB more than
            # torch's bf16 one at 121x512x768, the whole of the encode peak's gap before 2026-12-02).
            x_mx = mx.array(x_t.numpy()).astype(model.dtype)
            with torch.no_grad():
                expected = None
                if "untiled" in modes:
                    # The fp32 reference visits the GPU only for this call, so it never counts in torch's peak.
                    ref32.to(args.device)
                    expected = ref32(x_t.to(args.device)).float().cpu().numpy()
                    ref32.to("cpu")
                    T.sync()
            gc.collect()
            x_dev = x_t.to(args.device, tdtype)
            for mode in modes:
                tile = shared_tile(part, grid, args.tile) if mode == "tiled" else None

                # Timed decodes consume the streamed chunks as a video writer would, without keeping them;
                # one more untimed call per backend keeps the frames for the error.
                def run_mlx(keep=False):
                    if part == "decode":
                        chunks = []
                        for c in decode_frames(model, x_mx, tile):
                            mx.eval(c)
                            if keep:
                                chunks.append(c)
                        return mx.concatenate(chunks, axis=1) if keep else None
                    return encode_video(model, x_mx, tile)

                def run_torch(keep=False):
                    with torch.no_grad():
                        if mode == "untiled":
                            return ref(x_dev)
                        if part == "decode":
                            chunks = [c if keep else c.sum() for c in ref.tiled_decode(x_dev, tiling)]
                            return torch.cat(chunks, dim=2) if keep else None
                        return ref.tiled_encode(x_dev, tiling)

                tiling = ltx_core_tiling(args.tile) if tile else None
                times = {"mlx": [], "torch": []}
                peaks = {}
                outs = {}
                for i in range(args.warmup + args.runs):
                    for name, fn, sync, mem in (("mlx", run_mlx, lambda: None, M), ("torch", run_torch, T.sync, T)):
                        gc.collect()
                        mem.reset_peak()
                        dt, out = timed(fn, sync)
                        if i >= args.warmup:
                            times[name].append(dt)
                        peaks[name] = max(peaks.get(name, 0), mem.peak())
                        del out
                outs = {"mlx": run_mlx(keep=True), "torch": run_torch(keep=True)}
                mlx_out = np.array(outs["mlx"].astype(mx.float32))
                if part == "decode":
                    mlx_out = mlx_out.transpose(0, 4, 1, 2, 3)
                torch_out = outs["torch"].float().cpu().numpy()
                del outs
                plan = make_plan(grid, tile, balance=True) if tile else None
                used = plan.latent_tile_shape if tile else None
                row = {"part": part, "size": size, "latent": list(grid), "mode": mode, "dtype": args.dtype,
                       "tile_latents": list(used) if used else None,
                       "tile_px": tile_px(used) if used else None,
                       "ltx_core_tiling": args.tile if tile else None}
                if tile:
                    torch_tiles = ltx_core_tiles(ref, part, x_t, tiling)
                    row["tiles"] = {"mlx": plan.num_tiles, "torch": len(torch_tiles)}
                    row["tile_volume"] = {"mlx": mlx_tile_volume(plan, part),
                                          "torch": torch_tile_volume(torch_tiles, part)}
                for name, out in (("mlx", mlx_out), ("torch", torch_out)):
                    ts = times[name]
                    row[name] = {
                        "median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "runs_s": ts,
                        "peak_gb": peaks[name] / 1e9,
                    }
                    if expected is not None:
                        row[name]["max_abs_err_vs_fp32"] = float(np.abs(out - expected).max())
                        row[name]["psnr_vs_fp32_db"] = psnr(expected, out)
                row["mlx_over_torch_time"] = row["mlx"]["median_s"] / row["torch"]["median_s"]
                if args.torch_compile and mode == "untiled":
                    row["torch_compiled"] = compiled_reference(build, x_dev, expected)
                    row["mlx_over_torch_compiled_time"] = row["mlx"]["median_s"] / row["torch_compiled"]["median_s"]
                print(json.dumps(row), flush=True)
                rows.append(row)
                del mlx_out, torch_out
            del x_dev, x_mx, expected
            gc.collect()
            mx.clear_cache()
            if args.device == "cuda":
                torch.cuda.empty_cache()
        del ref32, ref, model
        gc.collect()

    for part in args.parts:
        sweep(part, args.sizes, args.modes)
    if args.length_sweep:
        sweep("decode", args.length_sweep, ["tiled"])

    if args.out:
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        name = args.name or f"vae_{args.device}{'_smoke' if args.smoke else ''}"
        result = {"command": " ".join(sys.argv), "machine": machine, "weights": weights, "config": args.config,
                  "sync_depth": VideoDecoder.sync_depth, "queue_fraction": VideoDecoder.queue_fraction,
                  "rows": rows}
        (out_dir / f"{name}.json").write_text(json.dumps(result, indent=1))
        (out_dir / f"{name}.md").write_text(markdown(result))
        print(f"wrote {out_dir / name}.json and .md")


def markdown(result) -> str:
    m = result["machine"]
    lines = [
        f"# VAE benchmark: MLX vs ltx-core ({m.get('gpu') or 'CPU'})",
        "",
        f"Command: `{result['command']}`  ",
        f"Weights: {result['weights']}; config `{result['config']}`; MLX {m['mlx']} on {m['mlx_device']} "
        f"(sync depth {result.get('sync_depth', 0)}, decoder queue fraction {result.get('queue_fraction')}), torch {m['torch']}.  ",
        "Times: median of the timed runs after warm-up [min-max], each including synchronisation; MLX and torch "
        "interleaved. Peak: MLX `get_peak_memory`, torch `max_memory_allocated` (weights included). "
        "Error: PSNR of each bf16 output against ltx-core in fp32 (untiled rows). Tiled rows: both sides get the "
        "same tile size from ltx-core's TilingConfig of `--tile` (F-1 frames, S px; overlaps 24 frames, 64 px) and "
        "cut their own tiles (ltx-core shortens each axis's last tile, MLX spreads equal ones, the tile shown); "
        "tiles and volume (latent units summed over the tiles) per side, MLX / ltx-core.",
        "",
        "| part | size | mode | tiles | volume | MLX s | torch s | MLX/torch | MLX peak GB | torch peak GB | MLX PSNR "
        "| torch PSNR |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        a, b = r["mlx"], r["torch"]
        lines.append(
            f"| {r['part']} | {r['size']} | {r['mode']}{' ' + r['tile_px'] + ' px' if r['tile_px'] else ''} "
            f"| {tile_pair(r, 'tiles', '{:d}')} | {tile_pair(r, 'tile_volume', '{:.0f}')} "
            f"| {a['median_s']:.3f} [{a['min_s']:.3f}-{a['max_s']:.3f}] | {b['median_s']:.3f} [{b['min_s']:.3f}-{b['max_s']:.3f}] "
            f"| {r['mlx_over_torch_time']:.2f} | {a['peak_gb']:.2f} | {b['peak_gb']:.2f} "
            f"| {a.get('psnr_vs_fp32_db', float('nan')):.1f} | {b.get('psnr_vs_fp32_db', float('nan')):.1f} |"
        )
    compiled = [r for r in result["rows"] if "torch_compiled" in r]
    if compiled:
        lines += ["", "Against ltx-core under `torch.compile` (channels-last weights and input; its first call, which "
                  "traces, autotunes and builds kernels, is the compile time):", "",
                  "| part | size | mode | MLX s | torch.compile s | MLX/torch.compile | compile s | torch.compile peak GB "
                  "| torch.compile PSNR |", "|---|---|---|---|---|---|---|---|---|"]
        for r in compiled:
            a, c = r["mlx"], r["torch_compiled"]
            lines.append(
                f"| {r['part']} | {r['size']} | {c['mode']} | {a['median_s']:.3f} | {c['median_s']:.3f} "
                f"[{c['min_s']:.3f}-{c['max_s']:.3f}] | {r['mlx_over_torch_compiled_time']:.2f} | {c['compile_s']:.1f} "
                f"| {c['peak_gb']:.2f} | {c.get('psnr_vs_fp32_db', float('nan')):.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
