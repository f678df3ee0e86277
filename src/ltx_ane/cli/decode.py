"""``ltx-ane decode``: latent file -> MP4 (or raw frames as .safetensors), tiled and streamed."""

from __future__ import annotations

import contextlib
from pathlib import Path

from ltx_ane.cli import common


def register(sub) -> None:
    p = sub.add_parser("decode", help="decode a latent to an MP4 (or raw frames)",
                       description="Decode a latent .safetensors (tensor 'latent', (B, C, F, h, w)) into an H.264 "
                       "MP4, streamed chunk by chunk; '-o x.safetensors' writes raw float32 frames instead.")
    p.add_argument("latent", nargs="?", help="latent .safetensors (omit with --random-latent)")
    p.add_argument("--random-latent", metavar="FxHxW", help="decode a random latent of this grid instead "
                   "(latent frames x height x width, e.g. 2x2x3 -> 9 frames of 64x96)")
    common.add_vae_source(p)
    common.add_tiling(p)
    from ltx_ane.cli.render import add_backend_args

    add_backend_args(p, ("decoder",))
    p.add_argument("--fps", type=float, default=None, help="frame rate when the latent file carries none (default 24)")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality, 0-51, lower is better (default 18)")
    common.add_output(p, "output .mp4, or .safetensors for raw float32 frames (B, 3, F, H, W) in [-1, 1]")
    common.add_progress(p)
    p.set_defaults(run=run)


def run(args) -> None:
    import mlx.core as mx
    import numpy as np

    from ltx_ane.errors import LtxAneError
    from ltx_ane.io.latents import RawVideoWriter, read_latent
    from ltx_ane.models.loading import DTYPE_BYTES
    from ltx_ane.models.video_vae.loader import load_decoder
    from ltx_ane.pipelines.video import choose_tile, decode_frames

    from ltx_ane.cli.render import BackendContext, check_backend_flags, throughput_line
    from ltx_ane.runtime.scheduler import Throughput

    report = common.Report()
    out = Path(args.output)
    raw_output = out.suffix == ".safetensors"
    if (args.latent is None) == (args.random_latent is None):
        raise LtxAneError("give a latent file or --random-latent FxHxW, not both or neither")
    check_backend_flags(args, ())
    common.check_output_dir(out)
    ctx = BackendContext(args)
    ctx.precheck(["decoder"])
    decoder = load_decoder(common.vae_source(args), args.dtype)
    cfg = decoder.config
    if args.latent:
        latent_file = read_latent(args.latent)
        latent, fps = latent_file.latent, latent_file.fps
    else:
        grid = common.parse_grid(args.random_latent)
        latent, fps = np.random.default_rng(0).standard_normal((1, cfg.latent_channels, *grid), dtype=np.float32), None
    fps = args.fps or fps or 24.0
    b, _, f, h, w = latent.shape
    tile = choose_tile(args.tiling, (f, h, w), cfg.base_channels, DTYPE_BYTES[args.dtype], args.memory_budget)
    frames = cfg.time_scale * (f - 1) + 1
    backends = ctx.backends("decoder", tuple(min(t, g) for t, g in zip(tile or (f, h, w), (f, h, w))), decoder)
    throughput = Throughput() if backends and len(backends) > 1 else None
    chunks = decode_frames(decoder, mx.array(latent), tile, quiet=args.quiet, backends=backends,
                           max_in_flight=args.max_in_flight, throughput=throughput, log=ctx.log)
    if raw_output:
        with RawVideoWriter(out, (b, cfg.out_channels, frames, h * cfg.space_scale, w * cfg.space_scale), fps) as writer:
            for chunk in chunks:
                writer.write(np.array(chunk).transpose(0, 4, 1, 2, 3))
        outputs = [out]
    else:
        from ltx_ane.io.video import Mp4Writer

        outputs = [out] if b == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(b)]
        with contextlib.ExitStack() as stack:
            writers = [stack.enter_context(Mp4Writer(o, fps, crf=args.crf)) for o in outputs]
            for chunk in chunks:
                pixels = np.array(mx.clip((chunk + 1.0) * 127.5 + 0.5, 0, 255).astype(mx.uint8))
                for i, writer in enumerate(writers):
                    writer.write(pixels[i])
    tiles = "untiled" if tile is None else f"tiles of {tile[0]}x{tile[1]}x{tile[2]} latents"
    print(f"wrote {', '.join(map(str, outputs))}: {b}x{frames} frames of {h * cfg.space_scale}x{w * cfg.space_scale} "
          f"at {fps:g} fps ({tiles}, {args.dtype}, {common.vae_source(args).describe()})")
    if throughput_line("decoder", throughput):
        print(throughput_line("decoder", throughput))
    report.finish("decoded")
