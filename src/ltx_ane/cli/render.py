"""``ltx-ane render``: latent -> spatial x2 (optional) -> temporal x2 (optional) -> decode, into an MP4, each
component on its chosen backend (the pipeline is ``pipelines.render``)."""

from __future__ import annotations

import sys
from pathlib import Path

from ltx_ane.cli import common
from ltx_ane.errors import LtxAneError
from ltx_ane.models import registry

# The decode side: the upscalers' steps, then the decoder (each may take its own backend).
COMPONENTS = tuple(name for name in registry.NAMES if registry.spec(name).io in ("decode", "upsample"))


def register(sub) -> None:
    p = sub.add_parser("render", help="upsample (optional) and decode a latent to an MP4, per-component backends",
                       description="The post-denoise pipeline: optional spatial and temporal x2 upscalers (in that "
                       "order, each as normalize(upscaler(un_normalize(latent))) with the VAE's statistics), then a "
                       "tiled decode streamed into an H.264 MP4. Each component runs on its chosen backend; a "
                       "decode on several backends runs tiles on all of them at once.")
    p.add_argument("latent", nargs="?", metavar="LATENT", help="latent .safetensors (omit with --random-latent)")
    p.add_argument("--random-latent", metavar="FxHxW", help="a random latent of this grid instead")
    p.add_argument("--spatial-upscaler", metavar="FILE", nargs="?", const="", help="spatial x2 upscaler file (FILE "
                   "may be left out with --random-weights)")
    p.add_argument("--temporal-upscaler", metavar="FILE", nargs="?", const="", help="temporal x2 upscaler file "
                   "(FILE may be left out with --random-weights)")
    for kind in ("spatial", "temporal"):
        p.add_argument(f"--{kind}-config", metavar="FILE", help=f"{kind} upscaler config JSON (overrides the file's "
                       "metadata; with --random-weights, the architecture to build)")
    common.add_vae_source(p)
    common.add_tiling(p)
    common.add_backend_args(p, COMPONENTS)
    p.add_argument("--seed", type=int, default=0, help="seed for --random-weights and --random-latent (default 0)")
    p.add_argument("--fps", type=float, default=None, help="frame rate when the latent carries none (default 24)")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality, 0-51 (default 18)")
    common.add_output(p, "output .mp4, or .safetensors for raw float32 frames (B, 3, F, H, W) in [-1, 1]")
    common.add_progress(p)
    p.set_defaults(run=run)


def _load_upscaler(args, kind: str, file: str):
    from ltx_ane.models.loading import Source
    from ltx_ane.models.upscaler.loader import load_upscaler

    source = Source(checkpoint=file or None, config_file=getattr(args, f"{kind}_config"), random_weights=args.random_weights)
    return load_upscaler(source, args.dtype, expected_kind=kind, seed=args.seed)


def run(args) -> None:
    import numpy as np

    from ltx_ane.io.latents import read_latent
    from ltx_ane.models.loading import DTYPE_BYTES
    from ltx_ane.models.video_vae.loader import load_decoder
    from ltx_ane.pipelines.render import Rendered, render
    from ltx_ane.pipelines.video import choose_tile

    report = common.Report()
    out = Path(args.output)
    if out.suffix not in (".mp4", ".safetensors"):
        raise LtxAneError(f"output must be .mp4 or .safetensors, got {out.name}")
    if (args.latent is None) == (args.random_latent is None):
        raise LtxAneError("give a latent file or --random-latent FxHxW, not both or neither")
    steps = [(k, f) for k, f in (("spatial", args.spatial_upscaler), ("temporal", args.temporal_upscaler)) if f is not None]
    for kind, file in steps:
        if not file and not args.random_weights:
            raise LtxAneError(f"--{kind}-upscaler needs a FILE (or pass --random-weights)")
    if args.crf < 0 or args.crf > 51:
        raise LtxAneError(f"--crf must be 0-51, got {args.crf}")
    common.check_backend_flags(args, COMPONENTS)
    common.check_output_dir(out)
    ctx = common.BackendContext(args)
    ctx.precheck(["decoder"] + [k for k, _ in steps])

    decoder = load_decoder(common.vae_source(args), args.dtype, seed=args.seed)
    cfg = decoder.config
    fps = None
    if args.latent:
        latent_file = read_latent(args.latent)
        latent, fps = latent_file.latent, latent_file.fps
    else:
        grid = common.parse_grid(args.random_latent)
        latent = np.random.default_rng(args.seed).standard_normal((1, cfg.latent_channels, *grid), dtype=np.float32)
    if latent.ndim != 5 or latent.shape[1] != cfg.latent_channels:
        raise LtxAneError(f"latent has shape {list(latent.shape)}; the VAE expects (B, {cfg.latent_channels}, F, h, w)")
    fps = args.fps or fps or 24.0
    if args.random_weights:
        print("note: random weights (real architecture): the output is noise", file=sys.stderr)

    upscalers = [(kind, _load_upscaler(args, kind, file)) for kind, file in steps]
    # The tile is chosen for the latent the decoder will see, after the upsample steps.
    f, h, w = latent.shape[2:]
    for _, model in upscalers:
        f, h, w = (2 * f - 1, h, w) if model.config.temporal_upsample else (f, 2 * h, 2 * w)
    tile = choose_tile(args.tiling, (f, h, w), cfg.base_channels, DTYPE_BYTES[args.dtype], args.memory_budget)
    info = Rendered()
    chunks = render(latent, decoder, upscalers, tile, pick=ctx.backends, info=info, quiet=args.quiet,
                    max_in_flight=args.max_in_flight, log=ctx.log)
    b = latent.shape[0]
    frames, size = cfg.time_scale * (f - 1) + 1, (h * cfg.space_scale, w * cfg.space_scale)
    fps *= 2 ** sum(model.config.temporal_upsample for _, model in upscalers)
    outputs = common.write_frames(chunks, out, (b, cfg.out_channels, frames, *size), fps, args.crf)
    for line in info.steps:
        print(line)
    tiles = "untiled" if tile is None else f"tiles of {tile[0]}x{tile[1]}x{tile[2]} latents"
    print(f"wrote {', '.join(map(str, outputs))}: {b}x{frames} frames of {size[0]}x{size[1]} at {fps:g} fps "
          f"({tiles}, {args.dtype}, {common.vae_source(args).describe()})")
    line = common.throughput_line("decoder", info.throughput)
    if line:
        print(line)
    report.finish("rendered")
