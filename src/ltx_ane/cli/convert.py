"""``ltx-ane convert``: one component to a Core ML package for the Neural Engine (any OS; needs the coreml extra)."""

from __future__ import annotations

import argparse
import signal

from ltx_ane.errors import LtxAneError
from ltx_ane.models.registry import NAMES


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert the VAE decoder/encoder or an upscaler to a Core ML .mlpackage (fp16, one function per tile shape)",
        description="Build the ltx-core reference with the checkpoint's config and weights, substitute the rank-4 "
        "ANE rewrites, check fp16 against fp32, and convert to an fp16 ML program with one static function per "
        "tile shape. A package with the same inputs in DIR is reused.",
    )
    p.add_argument("--component", required=True, choices=NAMES, help="which component to convert")
    source = p.add_argument_group("model (one of)")
    source.add_argument("--vae", metavar="CKPT", help="VAE checkpoint (decoder/encoder): .safetensors file or cached Hugging Face repo id")
    source.add_argument("--upscaler", metavar="FILE", help="upscaler checkpoint (spatial/temporal)")
    source.add_argument("--random-weights", action="store_true", help="the real architecture with random weights")
    source.add_argument("--config", metavar="FILE", help="config JSON (or preset name: ltx2, ltx23, spatial-x2, temporal-x2); overrides the checkpoint's metadata")
    p.add_argument("--tile", required=True, nargs="+", metavar="FxHxW", help="tile shape(s) in pixels, e.g. 9x256x384 "
                   "(frames 8k+1, sides multiples of 32); for upscalers the whole clip their input latent decodes to")
    p.add_argument("--video", nargs="+", metavar="FxHxW", help="decoder/encoder: convert the tile shapes the tiler cuts "
                   "videos of these sizes into, with each --tile as the tile size (edge-clipped where a video is smaller)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for the .mlpackage (named by a hash of its inputs)")
    rw = p.add_argument_group("rewrite variant")
    rw.add_argument("--conv", choices=("stacked", "split", "conv3d"), default="stacked",
                    help="3x3x3 conv as one Conv2d over stacked time taps (default), a sum of three Conv2d, or the unmodified 5-D Conv3d graph")
    rw.add_argument("--d2s", choices=("pixel_shuffle", "reshape"), default="pixel_shuffle", help="depth-to-space by pixel_shuffle (default) or reshape/transpose")
    rw.add_argument("--norm", choices=("prescaled", "plain"), default="prescaled", help="fp16-safe prescaled norms (default) or the reference formula")
    num = p.add_argument_group("precision")
    num.add_argument("--precision", choices=("fp16", "fp32"), default="fp16",
                     help="fp16 (default; what the ANE runs) or fp32 (GPU/CPU only, never the ANE)")
    num.add_argument("--min-psnr", type=float, default=None, metavar="DB", help="refuse fp16 below this PSNR against fp32 (default 40)")
    num.add_argument("--no-fp16-check", action="store_true", help="skip the fp16-vs-fp32 check in torch")
    num.add_argument("--check-tile", metavar="FxHxW", help="where the torch fp16/compression checks run (default: the "
                     "smallest tile capped at 9x64x64; CPU fp16 convolutions are slow at full width)")
    num.add_argument("--compress", choices=("int8", "palette6", "palette4"), help="compress the weights (ct.optimize.coreml): "
                     "int8 linear, or a 6-/4-bit palette per 16 output channels; the PSNR of the decompressed weights is reported")
    p.add_argument("--force", action="store_true", help="convert even if an identical package exists")
    p.add_argument("--seed", type=int, default=0, help="seed for --random-weights and example inputs")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=run)


def _source(args):
    from ltx_ane.models.loading import Source

    vae_part = args.component in ("decoder", "encoder")
    chosen = [name for name, value in (("--vae", args.vae), ("--upscaler", args.upscaler), ("--random-weights", args.random_weights)) if value]
    if len(chosen) > 1:
        raise LtxAneError(f"pass only one of --vae, --upscaler, --random-weights (got {' and '.join(chosen)})")
    if not chosen:
        raise LtxAneError(f"no weights given: pass {'--vae CKPT' if vae_part else '--upscaler FILE'} or --random-weights")
    if args.vae and not vae_part:
        raise LtxAneError(f"--vae is for the decoder and encoder; the {args.component} upscaler takes --upscaler FILE")
    if args.upscaler and vae_part:
        raise LtxAneError(f"--upscaler is for the spatial/temporal upscalers; the {args.component} takes --vae CKPT")
    return Source(checkpoint=args.vae or args.upscaler, config_file=args.config, random_weights=args.random_weights)


def _terminate(signum, frame):
    # SystemExit unwinds through the converter's cleanup, so a terminated run leaves no partial folder.
    raise SystemExit(128 + signum)


def run(args: argparse.Namespace) -> None:
    import sys
    import time

    start = time.perf_counter()
    if args.quiet:
        # coremltools draws tqdm bars for every pass; tqdm reads this when it is first imported.
        import os

        os.environ.setdefault("TQDM_DISABLE", "1")
    source = _source(args)
    from ltx_ane.coreml.convert import CONVERTERS, PACKAGE_MIN_PSNR_DB, ConvertOptions, TileShape
    from ltx_ane.coreml.rewrites import Variant

    tiles = [TileShape.parse(t) for t in args.tile]
    variant = Variant(conv=args.conv, d2s=args.d2s, norm=args.norm)
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    options = ConvertOptions(
        precision=args.precision,
        min_psnr=PACKAGE_MIN_PSNR_DB if args.min_psnr is None else args.min_psnr,
        fp16_check=not args.no_fp16_check,
        force=args.force,
        seed=args.seed,
        compress=args.compress,
        check_tile=TileShape.parse(args.check_tile) if args.check_tile else None,
        videos=tuple(TileShape.parse(v) for v in args.video or ()),
        log=log,
    )
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        result = CONVERTERS[args.component](source, tiles, args.output, variant, options)
    finally:
        signal.signal(signal.SIGTERM, previous)
    _summary(result)
    print(f"{'reused' if result.reused else 'converted'} in {time.perf_counter() - start:.1f} s, peak process memory {_peak_rss()}")


def _peak_rss() -> str:
    import resource
    import sys

    from ltx_ane.io.checkpoint import human_bytes

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return human_bytes(rss * (1 if sys.platform == "darwin" else 1024))


def _summary(result) -> None:
    from ltx_ane.coreml.graph import inspect_package
    from ltx_ane.io.checkpoint import human_bytes

    print(result.path)
    psnr = f", fp16 PSNR {result.fp16_psnr_db:.1f} dB" if result.fp16_psnr_db is not None else ""
    if result.compressed_psnr_db is not None:
        psnr += f", {result.metadata.get('ltx_ane.compression')} weights PSNR {result.compressed_psnr_db:.1f} dB"
    print(f"{human_bytes(result.size_bytes)}{psnr}")
    flags = {}
    for function in inspect_package(result.path).functions:
        for flag in function.flags:
            flags.setdefault((flag.severity, flag.code), flag)
    for (severity, code), flag in sorted(flags.items()):
        print(f"{severity} [{code}]: {flag.message}")
    if not flags:
        print("ANE constraints: nothing flagged (run `ltx-ane inspect` for details)")
