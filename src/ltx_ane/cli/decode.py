"""``ltx-ane decode``: latent file -> MP4 (or raw frames as .safetensors), tiled and streamed."""

from __future__ import annotations

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
    common.add_backend_args(p, ("decoder",))
    p.add_argument("--fps", type=float, default=None, help="frame rate when the latent file carries none (default 24)")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality, 0-51, lower is better (default 18)")
    common.add_output(p, "output .mp4, or .safetensors for raw float32 frames (B, 3, F, H, W) in [-1, 1]")
    common.add_progress(p)
    p.set_defaults(run=run)


def run(args) -> None:
    import numpy as np

    from ltx_ane.errors import LtxAneError
    from ltx_ane.io.latents import read_latent
    from ltx_ane.models.loading import DTYPE_BYTES
    from ltx_ane.models.video_vae.loader import load_decoder
    from ltx_ane.pipelines.render import Rendered, render
    from ltx_ane.pipelines.video import choose_tile

    report = common.Report()
    out = Path(args.output)
    if (args.latent is None) == (args.random_latent is None):
        raise LtxAneError("give a latent file or --random-latent FxHxW, not both or neither")
    common.check_backend_flags(args, ())
    common.check_output_dir(out)
    ctx = common.BackendContext(args)
    ctx.precheck(["decoder"])
    decoder = load_decoder(common.vae_source(args), args.dtype)
    cfg = decoder.config
    if args.latent:
        latent_file = read_latent(args.latent)
        latent, fps = latent_file.latent, latent_file.fps
    else:
        grid = common.parse_grid(args.random_latent)
        latent, fps = np.random.default_rng(0).standard_normal((1, cfg.latent_channels, *grid), dtype=np.float32), None
    fps = fps or args.fps or 24.0  # --fps only where the latent file carries none, as its help says
    b, _, f, h, w = latent.shape
    tile = choose_tile(args.tiling, (f, h, w), cfg.base_channels, DTYPE_BYTES[args.dtype], args.memory_budget)
    frames = cfg.time_scale * (f - 1) + 1
    info = Rendered()
    chunks = render(latent, decoder, (), tile, pick=ctx.backends, info=info, quiet=args.quiet,
                    max_in_flight=args.max_in_flight, log=ctx.log)
    size = (h * cfg.space_scale, w * cfg.space_scale)
    outputs = common.write_frames(chunks, out, (b, cfg.out_channels, frames, *size), fps, args.crf)
    tiles = "untiled" if tile is None else f"tiles of {tile[0]}x{tile[1]}x{tile[2]} latents"
    print(f"wrote {', '.join(map(str, outputs))}: {b}x{frames} frames of {size[0]}x{size[1]} "
          f"at {fps:g} fps ({tiles}, {args.dtype}, {common.vae_source(args).describe()})")
    line = common.throughput_line("decoder", info.throughput)
    if line:
        print(line)
    report.finish("decoded")
