"""``ltx-ane decode``: latent file -> MP4 (or raw frames as .safetensors), tiled and streamed; audio too.

A latent file holding an ``audio_latent`` tensor gets its sound decoded and muxed into the MP4 (AAC), fitted to
the video's duration; ``-o x.wav`` decodes the audio alone.
"""

from __future__ import annotations

from pathlib import Path

from ltx_ane.cli import common


def register(sub) -> None:
    p = sub.add_parser("decode", help="decode a latent to an MP4 (or raw frames)",
                       description="Decode a latent .safetensors (tensor 'latent', (B, C, F, h, w)) into an H.264 "
                       "MP4, streamed chunk by chunk; '-o x.safetensors' writes raw float32 frames instead. An "
                       "'audio_latent' tensor (B, 8, T, 16) in the file is decoded too (the --vae checkpoint must "
                       "hold audio_vae and vocoder) and muxed in as AAC; '-o x.wav' writes only the audio.")
    p.add_argument("latent", nargs="?", help="latent .safetensors (omit with --random-latent)")
    p.add_argument("--random-latent", metavar="FxHxW", help="decode a random latent of this grid instead "
                   "(latent frames x height x width, e.g. 2x2x3 -> 9 frames of 64x96)")
    common.add_vae_source(p)
    common.add_tiling(p)
    common.add_backend_args(p, ("decoder",))
    p.add_argument("--fps", type=float, default=None, help="frame rate when the latent file carries none (default 24)")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality, 0-51, lower is better (default 18)")
    common.add_output(p, "output .mp4, .safetensors for raw float32 frames (B, 3, F, H, W) in [-1, 1], or .wav for "
                      "the audio alone")
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
    if out.suffix.lower() == ".wav":
        _write_audio_only(args, out)
        report.finish("decoded")
        return
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
    frames = cfg.time_scale * (f - 1) + 1
    raw_output = out.suffix == ".safetensors"
    audio = None if raw_output or not args.latent else _audio_tracks(args, args.latent, b, frames / fps)
    tile = choose_tile(args.tiling, (f, h, w), cfg.base_channels, DTYPE_BYTES[args.dtype], args.memory_budget)
    info = Rendered()
    chunks = render(latent, decoder, (), tile, pick=ctx.backends, info=info, quiet=args.quiet,
                    max_in_flight=args.max_in_flight, log=ctx.log)
    size = (h * cfg.space_scale, w * cfg.space_scale)
    outputs = common.write_frames(chunks, out, (b, cfg.out_channels, frames, *size), fps, args.crf, audio)
    tiles = "untiled" if tile is None else f"tiles of {tile[0]}x{tile[1]}x{tile[2]} latents"
    print(f"wrote {', '.join(map(str, outputs))}: {b}x{frames} frames of {size[0]}x{size[1]} "
          f"at {fps:g} fps{_audio_note(audio)} ({tiles}, {args.dtype}, {common.vae_source(args).describe()})")
    line = common.throughput_line("decoder", info.throughput)
    if line:
        print(line)
    report.finish("decoded")


def _audio_tracks(args, latent_path, batch: int | None = None, seconds: float | None = None):
    """The decoded ``audio_latent`` of the file, one track per batch item, fitted to ``seconds`` if given.

    None when the file has no audio latent, unless audio alone was asked for (``seconds`` None): then an error.
    """
    from ltx_ane.errors import LtxAneError
    from ltx_ane.io.audio import read_audio_latent
    from ltx_ane.pipelines.audio import decode_audio, load_audio_models

    audio_latent = read_audio_latent(latent_path, required=seconds is None)
    if audio_latent is None:
        return None
    if batch is not None and audio_latent.shape[0] != batch:
        raise LtxAneError(f"{latent_path}: audio_latent has batch {audio_latent.shape[0]} but latent has {batch}")
    tracks = decode_audio(load_audio_models(common.vae_source(args), args.dtype), audio_latent)
    return tracks if seconds is None else [track.fit_to_duration(seconds) for track in tracks]


def _write_audio_only(args, out: Path) -> None:
    from ltx_ane.errors import LtxAneError
    from ltx_ane.io.audio import write_wav

    if args.latent is None:
        raise LtxAneError("-o .wav decodes the audio_latent of a latent file; --random-latent has none")
    tracks = _audio_tracks(args, args.latent)
    outputs = common.numbered_outputs(out, len(tracks))
    for path, track in zip(outputs, tracks):
        write_wav(path, track)
    print(f"wrote {', '.join(map(str, outputs))}: {len(tracks)}x {tracks[0].duration:.2f} s of audio at "
          f"{tracks[0].sample_rate} Hz ({args.dtype}, {common.vae_source(args).describe()})")


def _audio_note(audio) -> str:
    return "" if audio is None else f" with {audio[0].duration:.2f} s of audio at {audio[0].sample_rate} Hz"
