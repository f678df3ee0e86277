"""``ltx-ane generate``: prompt (and images) -> MP4 with sound, through any LTX-2 pipeline.

Text encoding, denoising and decoding run one after the other, each model loaded when needed and freed after
(``pipelines.generate``); the decode runs each component on its chosen backend (``pipelines.render``), and with
``--overlap`` and several prompts the previous video decodes on a background thread while the next one denoises.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ltx_ane.cli import common
from ltx_ane.errors import LtxAneError

DECODE_COMPONENTS = ("decoder", "temporal")


def register(sub) -> None:
    from ltx_ane.pipelines.generate import PIPELINES

    p = sub.add_parser("generate", help="text/image-to-video with audio (every LTX-2 pipeline)",
                       description="Generate a video with sound from a prompt: " + "; ".join(
                           f"{name}: {spec.summary}" for name, spec in PIPELINES.items()) + ".")
    prompt = p.add_argument_group("prompt")
    prompt.add_argument("--prompt", metavar="TEXT", help="what to generate")
    prompt.add_argument("--prompts", metavar="FILE", help="one prompt per line: one video each (OUT_1.mp4, ...)")
    prompt.add_argument("--negative-prompt", metavar="TEXT", help="for guided pipelines (default: ltx-pipelines' "
                        "negative prompt)")
    prompt.add_argument("--prompt-embeddings", metavar="FILE", help="contexts written by `ltx-ane encode-prompt` "
                        "(no Gemma, text projection or connectors needed)")
    prompt.add_argument("--gemma", metavar="DIR", help="google/gemma-3-12b-it: a local directory or a cached repo id")

    model = p.add_argument_group("model")
    model.add_argument("--checkpoint", metavar="CKPT", help="LTX-2 / LTX-2.3 checkpoint (file or cached Hugging "
                       "Face repo id): transformer, VAE, audio VAE, vocoder, text projection and connectors")
    model.add_argument("--config", metavar="FILE", help="config JSON in the form checkpoints embed (with "
                       "--random-weights: the architecture to build; the preset 'tiny' is a small one)")
    model.add_argument("--random-weights", action="store_true", help="every model at random (the output is noise)")
    model.add_argument("--spatial-upscaler", metavar="FILE", help="spatial x2 upscaler (two-stage pipelines)")
    model.add_argument("--distilled-lora", metavar="FILE", help="the distilled LoRA (two-stage and hq pipelines)")
    model.add_argument("--lora", nargs=2, action="append", default=[], metavar=("FILE", "STRENGTH"),
                       help="fuse a LoRA at load time (repeatable)")
    common.add_dtype(model)
    model.add_argument("--quantize", choices=("8", "4"), help="transformer weights in 8 or 4 bits (default: the "
                       "memory plan picks the first precision that fits)")

    video = p.add_argument_group("video")
    video.add_argument("--pipeline", choices=tuple(PIPELINES), default="distilled")
    video.add_argument("--keyframes", action="store_true", help="same as --pipeline keyframes")
    video.add_argument("--frames", type=common.positive_int, default=121, help="8k+1 (default 121)")
    video.add_argument("--height", type=common.positive_int, default=512)
    video.add_argument("--width", type=common.positive_int, default=768)
    video.add_argument("--fps", type=float, default=24.0)
    video.add_argument("--steps", type=common.positive_int, help="denoising steps of a guided pipeline's first stage")
    video.add_argument("--seed", type=int, default=10)
    video.add_argument("--image", nargs="+", action="append", default=[], metavar="ARG",
                       help="PATH [FRAME [STRENGTH]]: condition on an image (frame 0 replaces the first frame, "
                       "others are appended as keyframes; strength default 1)")
    video.add_argument("--noise", metavar="FILE", help="initial noise (tensors video_noise, audio_noise and, for "
                       "two-stage pipelines, video_noise_stage2, audio_noise_stage2) instead of drawing it")

    guidance = p.add_argument_group("guidance (guided pipelines; defaults follow ltx-pipelines)")
    guidance.add_argument("--cfg", type=float, help="video classifier-free guidance scale")
    guidance.add_argument("--audio-cfg", type=float, help="audio classifier-free guidance scale")
    guidance.add_argument("--stg", type=float, help="spatio-temporal guidance scale (video and audio)")
    guidance.add_argument("--stg-blocks", type=int, nargs="+", metavar="N", help="blocks STG perturbs")
    guidance.add_argument("--modality-scale", type=float, help="audio/video modality-isolation guidance scale")
    guidance.add_argument("--rescale", type=float, help="guidance rescale factor (video and audio)")

    out = p.add_argument_group("output")
    common.add_output(out, "output .mp4 (one per prompt with --prompts)")
    out.add_argument("--no-audio", action="store_true", help="write the video without its sound track")
    out.add_argument("--temporal-upscale", metavar="FILE", nargs="?", const="", help="post-process x2 in time with "
                     "the temporal upscaler (FILE may be left out with --random-weights)")
    out.add_argument("--save-latents", metavar="FILE", help="also write the final (and stage-1) latents")
    out.add_argument("--crf", type=int, default=18, help="H.264 quality, 0-51 (default 18)")
    out.add_argument("--overlap", action="store_true", help="with --prompts: decode each video on a background "
                     "thread while the next one denoises")
    common.add_tiling(p)
    common.add_backend_args(p, DECODE_COMPONENTS)
    common.add_progress(p)
    p.set_defaults(run=run)


# ------------------------------------------------------------------------------------------------ checks


def _images(values: list[list[str]]):
    from ltx_ane.pipelines.generate import ImageInput

    images = []
    for value in values:
        if len(value) > 3:
            raise LtxAneError(f"--image takes PATH [FRAME [STRENGTH]], got {' '.join(value)}")
        path = value[0]
        if not Path(path).is_file():
            raise LtxAneError(f"image not found: {path}")
        try:
            frame = int(value[1]) if len(value) > 1 else 0
            strength = float(value[2]) if len(value) > 2 else 1.0
        except ValueError:
            raise LtxAneError(f"--image {' '.join(value)}: FRAME must be an integer and STRENGTH a number") from None
        images.append(ImageInput(path, frame, strength))
    return tuple(images)


def _prompts(args) -> list[str]:
    if args.prompts and args.prompt:
        raise LtxAneError("give --prompt or --prompts FILE, not both")
    if args.prompts:
        try:
            lines = [line.strip() for line in Path(args.prompts).read_text().splitlines()]
        except (OSError, UnicodeDecodeError) as e:
            raise LtxAneError(f"cannot read --prompts {args.prompts}: {e}") from None
        prompts = [line for line in lines if line]
        if not prompts:
            raise LtxAneError(f"{args.prompts} holds no prompt")
        return prompts
    if args.prompt_embeddings:
        if args.prompt is not None:
            raise LtxAneError("--prompt-embeddings already holds the prompt; leave out --prompt")
        return [None]
    if args.prompt is None or not args.prompt.strip():
        raise LtxAneError("no prompt: pass --prompt TEXT, --prompts FILE or --prompt-embeddings FILE")
    return [args.prompt]


def _guidance(args, spec, ltx23: bool):
    from dataclasses import replace

    from ltx_ane.pipelines.generate import default_guidance

    video, audio = default_guidance(spec, ltx23)
    common_fields = {k: v for k, v in (("stg_scale", args.stg), ("modality_scale", args.modality_scale),
                                       ("rescale_scale", args.rescale),
                                       ("stg_blocks", list(args.stg_blocks) if args.stg_blocks else None))
                     if v is not None}
    video = replace(video, **common_fields, **({"cfg_scale": args.cfg} if args.cfg is not None else {}))
    audio = replace(audio, **common_fields, **({"cfg_scale": args.audio_cfg} if args.audio_cfg is not None else {}))
    return video, audio


def _read_noise(path: str | None) -> dict | None:
    if path is None:
        return None
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        arrays = load_file(path)
    except (OSError, SafetensorError) as e:
        raise LtxAneError(f"cannot read --noise {path}: {e}") from None
    known = {"video_noise", "audio_noise", "video_noise_stage2", "audio_noise_stage2"}
    unknown = sorted(set(arrays) - known)
    if unknown or not arrays:
        raise LtxAneError(f"--noise {path}: expected tensors {', '.join(sorted(known))}, got {', '.join(arrays) or 'none'}")
    return arrays


# ------------------------------------------------------------------------------------------------ run


def run(args) -> None:
    from ltx_ane.models.loading import Source
    from ltx_ane.models.transformer.loader import transformer_config
    from ltx_ane.pipelines.generate import GenerateRequest, ModelSet, NoiseSupply, pipeline
    from ltx_ane.pipelines.memory import plan_memory
    from ltx_ane.sampling import VideoLatentShape

    report = common.Report()
    spec = pipeline("keyframes" if args.keyframes else args.pipeline)
    prompts = _prompts(args)
    out = Path(args.output)
    if out.suffix != ".mp4":
        raise LtxAneError(f"output must be .mp4, got {out.name}")
    if args.random_weights and args.checkpoint:
        raise LtxAneError("pass --checkpoint CKPT or --random-weights, not both")
    if not args.random_weights and not args.checkpoint:
        raise LtxAneError("no checkpoint: pass --checkpoint CKPT (a file or cached Hugging Face repo id) or --random-weights")
    if args.crf < 0 or args.crf > 51:
        raise LtxAneError(f"--crf must be 0-51, got {args.crf}")
    if spec.two_stage and not args.spatial_upscaler and not args.random_weights:
        raise LtxAneError(f"the {spec.name} pipeline needs the spatial x2 upscaler: pass --spatial-upscaler FILE")
    if spec.needs_distilled_lora and not args.distilled_lora and not args.random_weights:
        raise LtxAneError(f"the {spec.name} pipeline needs the distilled LoRA: pass --distilled-lora FILE")
    loras = []
    for path, strength in args.lora:
        try:
            loras.append((path, float(strength)))
        except ValueError:
            raise LtxAneError(f"--lora {path} {strength}: STRENGTH must be a number") from None
    request = GenerateRequest(frames=args.frames, height=args.height, width=args.width, fps=args.fps,
                              seed=args.seed, steps=args.steps, images=_images(args.image))
    request.check(spec)
    noise = _read_noise(args.noise)
    common.check_backend_flags(args, DECODE_COMPONENTS)
    outputs = common.numbered_outputs(out, len(prompts))
    for path in outputs:
        common.check_output_dir(path)
    if args.save_latents:
        common.check_output_dir(Path(args.save_latents))
    ctx = common.BackendContext(args)
    ctx.precheck(["decoder"] + (["temporal"] if args.temporal_upscale is not None else []))

    source = Source(checkpoint=args.checkpoint, config_file=args.config, random_weights=args.random_weights)
    config, _ = transformer_config(source)
    request.video_guidance, request.audio_guidance = _guidance(args, spec, config.cross_attention_adaln)
    size = (args.height, args.width)
    tokens = VideoLatentShape.from_pixels(args.frames, *size).token_count()
    guided = any(s.guided for s in spec.stages)
    text_bytes = 0.0
    if args.gemma and not args.prompt_embeddings:
        from ltx_ane.models.text.gemma import resolve_gemma_dir
        from ltx_ane.pipelines.memory import gemma_bytes

        text_bytes = gemma_bytes(resolve_gemma_dir(args.gemma))
    plan = plan_memory(config, args.dtype, args.quantize, tokens, text_bytes, prompts=2 if guided else 1)
    print(plan.describe())
    if args.random_weights:
        print("note: random weights: every model is random, the video and its sound are noise", file=sys.stderr)

    contexts = _contexts(args, prompts, source, guided)
    from ltx_ane.models.transformer.quantize import QuantizeMode

    models = ModelSet(
        checkpoint=source,
        spatial_upscaler=upscaler_source(args, source, "spatial") if spec.two_stage else None,
        distilled_lora=args.distilled_lora, loras=tuple(loras), dtype=plan.dtype(args.dtype),
        quantize=QuantizeMode.parse(str(plan.quantize_bits)) if plan.quantize_bits else None,
        stream_blocks=plan.stream_blocks,
        seed=args.seed, log=lambda message: print(message, file=sys.stderr))
    from ltx_ane.cli.video_output import VideoOutput

    decode = VideoOutput(args, source, ctx, overlap=args.overlap and len(prompts) > 1)
    try:
        for index, (context, path) in enumerate(zip(contexts, outputs)):
            result = _denoise(spec, request, context, models, NoiseSupply(args.seed + index, noise), args.quiet,
                              decode.step_lock())
            if args.save_latents:
                _save_latents(common.numbered_outputs(Path(args.save_latents), len(prompts))[index],
                              result, request)
            print(_stage_line(path, result))
            decode.submit(result, request, path)
        decode.finish()
    finally:
        decode.close()
    report.finish("generated")


def upscaler_source(args, source, kind: str):
    """The spatial or temporal upscaler's source; with random weights, a ``spatial_upscaler``/``temporal_upscaler``
    section of the --config (the tiny preset has them) sets its architecture, else the released one."""
    from ltx_ane.models.loading import Source

    file = args.spatial_upscaler if kind == "spatial" else args.temporal_upscale
    config = None
    if args.random_weights:
        config = (source.override() or {}).get(f"{kind}_upscaler")
    return Source(checkpoint=file or None, random_weights=args.random_weights, config=config)


def _contexts(args, prompts, source, guided: bool) -> list:
    """PromptContexts per prompt: from the embeddings file, or encoded here (the text encoder freed afterwards)."""
    import gc

    import mlx.core as mx

    from ltx_ane.pipelines.denoise import PromptContexts

    def arrays(positive, negative):
        return PromptContexts(mx.array(positive.video_context), mx.array(positive.audio_context),
                              None if negative is None else mx.array(negative.video_context),
                              None if negative is None else mx.array(negative.audio_context))

    if args.prompt_embeddings:
        from ltx_ane.models.text.prompt_store import read_prompt_file

        embeddings = read_prompt_file(args.prompt_embeddings)
        if guided and embeddings.negative is None:
            raise LtxAneError(f"{args.prompt_embeddings} holds no negative contexts, which guided pipelines need "
                              "(encode-prompt --negative TEXT)")
        return [arrays(embeddings.positive, embeddings.negative)]

    from ltx_ane.models.text.encoder import PromptEncoder
    from ltx_ane.pipelines.generate import DEFAULT_NEGATIVE_PROMPT

    start = time.perf_counter()
    encoder = PromptEncoder.load(args.gemma, source, args.dtype, seed=args.seed)
    for note in encoder.notes:
        print(f"note: {note}", file=sys.stderr)
    negative = encoder.encode(args.negative_prompt or DEFAULT_NEGATIVE_PROMPT) if guided else None
    out = [arrays(encoder.encode(text), negative) for text in prompts]
    del encoder
    gc.collect()
    mx.clear_cache()
    print(f"encoded {len(prompts)} prompt(s) in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return out


def _denoise(spec, request, contexts, models, noise, quiet: bool, step_lock):
    """Run the pipeline with a progress bar per stage; each step runs under ``step_lock`` (see ``VideoOutput``)."""
    from tqdm import tqdm

    from ltx_ane.pipelines.generate import Generation, StageEvent, generate

    result = Generation()
    bar = None
    events = generate(spec, request, contexts, models, result, noise)
    while True:
        with step_lock:
            event = next(events, None)
        if event is None:
            break
        if isinstance(event, StageEvent):
            if event.name == "started" and bar is not None:
                bar.close()
                bar = None
            continue
        if bar is None:
            bar = tqdm(total=event.total, desc=f"stage {event.stage + 1}/{event.stages}", unit="step",
                       disable=quiet, file=sys.stderr, leave=False)
        bar.set_postfix_str(f"sigma {event.sigma:.4f}")
        bar.update(1)
    if bar is not None:
        bar.close()
    return result


def _save_latents(path: Path, result, request) -> None:
    import mlx.core as mx
    import numpy as np

    from ltx_ane.io.latents import write_tensors

    tensors = {"video_latent": result.video_latent, "audio_latent": result.audio_latent}
    if len(result.video_latents) > 1:
        tensors.update(video_latent_stage1=result.video_latents[0], audio_latent_stage1=result.audio_latents[0])
    write_tensors(path, {k: np.array(v.astype(mx.float32)) for k, v in tensors.items()},
                  {"fps": str(request.fps), "height": str(request.height), "width": str(request.width),
                   "frames": str(request.frames)})


def _stage_line(path: Path, result) -> str:
    parts = []
    for name, seconds in result.seconds.items():
        if name.startswith("stage "):
            steps = result.steps.get(int(name.split()[1]) - 1, 0)
            parts.append(f"{name} {seconds:.1f} s ({seconds / max(steps, 1):.2f} s/step)")
        else:
            parts.append(f"{name} {seconds:.1f} s")
    return f"{path}: " + ", ".join(parts)
