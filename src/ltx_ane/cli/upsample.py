"""``ltx-ane upsample``: the two-stage step on a latent file, with the spatial or the temporal x2 upscaler."""

from __future__ import annotations

import sys

from ltx_ane.cli.common import Report, add_dtype, add_output, check_output_dir, positive_int
from ltx_ane.errors import LtxAneError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "upsample",
        help="upsample a latent x2 in space or time (normalize(upscaler(un_normalize(latent))))",
        description="Run a latent upscaler between the VAE's un-normalize and normalize, as LTX-2's two-stage "
        "generation does. The output latent's metadata is updated: height/width doubled (spatial), or fps doubled "
        "and the frame count 2(frames-1)+1 (temporal).",
    )
    p.add_argument("latent", metavar="LATENT", help="input latent .safetensors (tensor 'latent', (B, 128, F, h, w))")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--spatial", metavar="FILE", nargs="?", const="", help="spatial x2 upscaler file "
                       "(.safetensors or cached Hugging Face repo id; FILE may be left out with --random-weights)")
    which.add_argument("--temporal", metavar="FILE", nargs="?", const="", help="temporal x2 upscaler file "
                       "(FILE may be left out with --random-weights)")
    group = p.add_argument_group("model")
    group.add_argument("--vae", metavar="CKPT", help="VAE checkpoint whose latent statistics "
                       "(vae.per_channel_statistics.mean-of-means / std-of-means) wrap the upscaler; only those two "
                       "tensors are read")
    group.add_argument("--config", metavar="FILE", help="upscaler config JSON (or preset name spatial-x2, "
                       "temporal-x2); overrides the file's metadata")
    group.add_argument("--random-weights", action="store_true", help="random upscaler weights at the real "
                       "architecture (and random statistics unless --vae is given); the output is noise")
    group.add_argument("--seed", type=int, default=0, help="seed for --random-weights (default 0)")
    add_dtype(group)
    p.add_argument("--chunk-frames", type=positive_int, metavar="N", help="exact low-memory mode: stream N latent "
                   "frames at a time, one pass per GroupNorm (same result, device memory bounded by the chunk, "
                   "~9x the compute)")
    add_output(p, "output latent .safetensors (written only when the whole run succeeds)")
    p.set_defaults(run=run)


def run(args) -> None:
    import numpy as np

    from ltx_ane.io.latents import LatentFile, read_latent, write_latent
    from ltx_ane.models.loading import Source
    from ltx_ane.models.upscaler.loader import load_upscaler
    from ltx_ane.models.upscaler.upsample import check_latent_shape, load_statistics, random_statistics, upsample_latent, upsampled_metadata

    report = Report()
    kind = "spatial" if args.spatial is not None else "temporal"
    file = args.spatial if kind == "spatial" else args.temporal
    if not args.random_weights:
        if not file:
            raise LtxAneError(f"--{kind} needs an upscaler FILE (or pass --random-weights)")
        if not args.vae:
            raise LtxAneError("no VAE checkpoint given: pass --vae CKPT for the latent statistics (or --random-weights)")

    check_output_dir(args.output)
    latent_file = read_latent(args.latent)
    stats = load_statistics(args.vae) if args.vae else random_statistics(seed=args.seed)
    source = Source(checkpoint=file or None, config_file=args.config, random_weights=args.random_weights)
    model = load_upscaler(source, args.dtype, expected_kind=kind, seed=args.seed)
    check_latent_shape(model, latent_file.latent.shape)
    stats.check(model.config.in_channels, where=f"{args.vae} latent statistics" if args.vae else "statistics")
    if args.random_weights:
        print("note: random upscaler weights (real architecture): the output is noise", file=sys.stderr)

    out = upsample_latent(latent_file.latent, model, stats, chunk_frames=args.chunk_frames)
    if not np.isfinite(out).all():
        raise LtxAneError(f"the upscaler produced non-finite values in {args.dtype} (overflow?); try --dtype fp32")
    meta = upsampled_metadata(latent_file, model, latent_file.latent.shape)
    write_latent(args.output, LatentFile(latent=out, config=latent_file.config, **meta))
    report.finish(f"{kind} x2 {list(latent_file.latent.shape)} -> {list(out.shape)}, wrote {args.output}")
