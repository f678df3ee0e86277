"""``ltx-ane render``: the post-denoise pipeline in one command, each component on its chosen backend.

latent -> spatial x2 (optional) -> temporal x2 (optional) -> decode, streamed into an MP4. The spatial step runs
first: the temporal upscaler costs about a sixth of the spatial one per input, so upsampling time after space
(4x the area) costs less than space after time (2x the frames).

Also home of the backend flags that decode and encode share.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from ltx_ane.cli import common
from ltx_ane.errors import LtxAneError


# ------------------------------------------------------------------------------------------------ shared flags


def add_backend_args(parser, components: tuple[str, ...]) -> None:
    group = parser.add_argument_group("backends")
    group.add_argument("--backend", default="auto", metavar="SPEC", help="auto (the bench profile's fastest backend "
                       "that passed parity; MLX without a profile or off macOS), mlx, torch (ltx-core reference), "
                       "coreml[:CPU_AND_NE|CPU_AND_GPU|ALL|CPU_ONLY], or several joined by commas to run tiles on "
                       "all at once (e.g. mlx,coreml:CPU_AND_NE)" + (" ; default for every component" if len(components) > 1 else ""))
    if len(components) > 1:
        for c in components:
            group.add_argument(f"--{c}-backend", metavar="SPEC", help=f"backend for the {c} (default: --backend)")
    group.add_argument("--profile", metavar="FILE", help="bench profile JSON (default ~/.cache/ltx-ane/profile.json)")
    group.add_argument("--package", action="append", default=[], metavar="FILE", help="Core ML package made by "
                       "`ltx-ane convert` (its component is read from it); repeat for several components")
    group.add_argument("--max-in-flight", type=common.positive_int, metavar="N", help="tiles dispatched but not yet "
                       "blended when several backends run (default: 2 per backend); bounds memory")


class BackendContext:
    """The profile and packages of one command, and the per-component choice (printed as it is made)."""

    def __init__(self, args, log=print):
        from ltx_ane.runtime.profile import load_profile

        self.args, self.log = args, log
        self.profile = load_profile(args.profile) if args.profile else load_profile()
        self.packages = self._packages(args.package)
        self.choices = []

    @staticmethod
    def _packages(paths) -> dict[str, str]:
        out: dict[str, str] = {}
        for path in paths:
            from ltx_ane.coreml.convert import META_PREFIX, read_metadata

            if not Path(path).exists():
                raise LtxAneError(f"Core ML package {path} does not exist")
            component = read_metadata(path).get(META_PREFIX + "component")
            if not component:
                raise LtxAneError(f"{path} was not made by `ltx-ane convert` (no component in its metadata)")
            if component in out:
                raise LtxAneError(f"two Core ML packages for the {component}: {out[component]} and {path}")
            out[component] = str(path)
        return out

    def precheck(self, components) -> None:
        """Explicit choices that cannot work here (Core ML off macOS or without a package) fail before loading."""
        from ltx_ane.runtime.backends import choose

        for c in components:
            if self.spec(c).strip().lower() != "auto":
                choose(c, self.spec(c), None, None, self.packages.get(c))

    def spec(self, component: str) -> str:
        return getattr(self.args, f"{component}_backend", None) or self.args.backend

    def choose(self, component: str, tile):
        from ltx_ane.runtime.backends import choose

        choice = choose(component, self.spec(component), tile, self.profile, self.packages.get(component))
        self.choices.append(choice)
        self.log(f"backend {choice.describe()}")
        return choice

    def backends(self, component: str, tile, model, stats=None):
        """None when the choice is MLX alone (the plain path), else the backend objects."""
        from ltx_ane.runtime.backends import build

        choice = self.choose(component, tile)
        if choice.names == ["mlx"] and component in ("decoder", "encoder"):
            return None
        return build(choice, model, stats)


def check_backend_flags(args, components) -> None:
    """Reject malformed backend names before any model loads."""
    from ltx_ane.runtime.backends import parse_spec

    parse_spec(args.backend)
    for c in components:
        value = getattr(args, f"{c}_backend", None)
        if value is not None:
            parse_spec(value)


def throughput_line(component: str, throughput) -> str | None:
    if throughput is None or len(throughput.backends) < 2:
        return None
    return f"{component} throughput: {throughput.summary()}"


# ------------------------------------------------------------------------------------------------ render


COMPONENTS = ("decoder", "spatial", "temporal")


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
    add_backend_args(p, COMPONENTS)
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
    import mlx.core as mx
    import numpy as np

    from ltx_ane.runtime.backends import keep_supported
    from ltx_ane.io.latents import RawVideoWriter, read_latent
    from ltx_ane.models.loading import DTYPE_BYTES
    from ltx_ane.models.video_vae.loader import load_decoder
    from ltx_ane.pipelines.video import choose_tile, decode_frames
    from ltx_ane.runtime.scheduler import Throughput
    from ltx_ane.pipelines.upsample import LatentStatistics, check_latent_shape

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
    check_backend_flags(args, COMPONENTS)
    common.check_output_dir(out)
    ctx = BackendContext(args)
    ctx.precheck(["decoder"] + [k for k, _ in steps])

    decoder = load_decoder(common.vae_source(args), args.dtype, seed=args.seed)
    cfg = decoder.config
    # The upscalers are wrapped in the VAE's own statistics, so their output decodes with the same VAE.
    stats = LatentStatistics(
        mean=np.array(decoder.per_channel_statistics["mean-of-means"].astype(mx.float32)),
        std=np.array(decoder.per_channel_statistics["std-of-means"].astype(mx.float32)),
    )
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

    for kind, file in steps:
        model = _load_upscaler(args, kind, file)
        check_latent_shape(model, latent.shape)
        stats.check(model.config.in_channels, where="VAE latent statistics")
        backend = keep_supported(ctx.backends(kind, latent.shape[2:], model, stats), latent.shape, ctx.log)[0]
        before = list(latent.shape)
        latent = np.asarray(backend(latent), dtype=np.float32)
        if not np.isfinite(latent).all():
            raise LtxAneError(f"the {kind} upscaler on {backend.name} produced non-finite values; try --dtype fp32")
        if kind == "temporal":
            fps *= 2
        print(f"{kind} x2 on {backend.name}: {before} -> {list(latent.shape)}")
        del model, backend

    b, _, f, h, w = latent.shape
    tile = choose_tile(args.tiling, (f, h, w), cfg.base_channels, DTYPE_BYTES[args.dtype], args.memory_budget)
    # The profile is keyed by the tile actually run: a requested tile larger than the grid shrinks to it.
    backends = ctx.backends("decoder", tuple(min(t, g) for t, g in zip(tile or (f, h, w), (f, h, w))), decoder)
    throughput = Throughput() if backends and len(backends) > 1 else None
    chunks = decode_frames(decoder, mx.array(latent), tile, quiet=args.quiet, backends=backends,
                           max_in_flight=args.max_in_flight, throughput=throughput, log=ctx.log)
    frames = cfg.time_scale * (f - 1) + 1
    size = (h * cfg.space_scale, w * cfg.space_scale)
    if out.suffix == ".safetensors":
        with RawVideoWriter(out, (b, cfg.out_channels, frames, *size), fps) as writer:
            for chunk in chunks:
                writer.write(np.array(chunk).transpose(0, 4, 1, 2, 3))
        outputs = [out]
    else:
        outputs = write_mp4(chunks, out, b, fps, args.crf)
    tiles = "untiled" if tile is None else f"tiles of {tile[0]}x{tile[1]}x{tile[2]} latents"
    print(f"wrote {', '.join(map(str, outputs))}: {b}x{frames} frames of {size[0]}x{size[1]} at {fps:g} fps "
          f"({tiles}, {args.dtype}, {common.vae_source(args).describe()})")
    line = throughput_line("decoder", throughput)
    if line:
        print(line)
    report.finish("rendered")


def write_mp4(chunks, out: Path, batch: int, fps: float, crf: int) -> list[Path]:
    """Stream (B, f, H, W, 3) float32 chunks in [-1, 1] into one MP4 per batch item."""
    import mlx.core as mx
    import numpy as np

    from ltx_ane.runtime.backends import MLX_LOCK
    from ltx_ane.io.video import Mp4Writer

    outputs = [out] if batch == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(batch)]
    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(Mp4Writer(o, fps, crf=crf)) for o in outputs]
        for chunk in chunks:
            with MLX_LOCK:
                pixels = np.array(mx.clip((chunk + 1.0) * 127.5 + 0.5, 0, 255).astype(mx.uint8))
            for i, writer in enumerate(writers):
                writer.write(pixels[i])
    return outputs
