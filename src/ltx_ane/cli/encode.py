"""``ltx-ane encode``: video, image or raw-video file -> latent .safetensors."""

from __future__ import annotations

from pathlib import Path

from ltx_ane.cli import common


def register(sub) -> None:
    p = sub.add_parser("encode", help="encode a video or image to a latent",
                       description="Encode a video file, an image, or a .safetensors holding 'video' (B, 3, F, H, W) "
                       "in [-1, 1] into a latent .safetensors. Frames must be 8k+1 and sizes multiples of 32 "
                       "unless --crop or --resize is given.")
    p.add_argument("input", help="video file, image, or raw-video .safetensors")
    common.add_vae_source(p)
    common.add_tiling(p)
    common.add_backend_args(p, ("encoder",))
    fit = p.add_mutually_exclusive_group()
    fit.add_argument("--crop", action="store_true", help="drop trailing frames to 8k+1 and centre-crop to multiples of 32")
    fit.add_argument("--resize", action="store_true", help="resize to the nearest multiples of 32 (frames as --crop)")
    p.add_argument("--max-frames", type=int, default=None, help="read at most this many frames")
    common.add_output(p, "output latent .safetensors")
    common.add_progress(p)
    p.set_defaults(run=run)


def run(args) -> None:
    import mlx.core as mx
    import numpy as np

    from ltx_ane.errors import LtxAneError
    from ltx_ane.io.latents import LatentFile, write_latent
    from ltx_ane.models.loading import DTYPE_BYTES
    from ltx_ane.models.video_vae.loader import load_encoder
    from ltx_ane.pipelines.video import choose_tile, encode_video
    from ltx_ane.io.video import fit_to_vae, read_input

    from ltx_ane.runtime.scheduler import Throughput
    from ltx_ane.runtime.tiling import tile_run

    report = common.Report()
    out = Path(args.output)
    if out.suffix != ".safetensors":
        raise LtxAneError(f"the latent is written as .safetensors, got {out.name}")
    common.check_backend_flags(args, ())
    common.check_output_dir(out)
    ctx = common.BackendContext(args)
    ctx.precheck(["encoder"])
    video, fps = read_input(args.input, max_frames=args.max_frames)
    encoder = load_encoder(common.vae_source(args), args.dtype)
    cfg = encoder.config
    video = fit_to_vae(video, cfg.time_scale, cfg.space_scale, crop=args.crop, resize=args.resize)
    b, c, f, h, w = video.shape
    if c != cfg.in_channels:
        raise LtxAneError(f"input has {c} channels, the encoder expects {cfg.in_channels}")
    grid = ((f - 1) // cfg.time_scale + 1, h // cfg.space_scale, w // cfg.space_scale)
    # Encoding needs about as much working memory per output pixel as decoding.
    tile = choose_tile(args.tiling, grid, cfg.latent_channels, DTYPE_BYTES[args.dtype], args.memory_budget)
    backends = ctx.backends("encoder", tile_run(tile, grid), encoder)
    throughput = Throughput() if backends and len(backends) > 1 else None
    latent = encode_video(encoder, mx.array(video), tile, quiet=args.quiet, backends=backends,
                          max_in_flight=args.max_in_flight, throughput=throughput, log=ctx.log)
    write_latent(out, LatentFile(latent=np.array(latent), fps=fps, height=h, width=w, frames=f, config=cfg.raw))
    print(f"wrote {out}: latent {list(latent.shape)} from {b}x{f} frames of {h}x{w} "
          f"({common.vae_source(args).describe()}, {args.dtype})")
    if common.throughput_line("encoder", throughput):
        print(common.throughput_line("encoder", throughput))
    report.finish("encoded")
