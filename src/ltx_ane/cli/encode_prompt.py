"""``ltx-ane encode-prompt``: a prompt (and a negative one) -> the video and audio text contexts, in a file.

Encoding apart from generation means the 12B text model and the transformer never need to be in memory together.
"""

from __future__ import annotations

import sys

from ltx_ane.cli.common import Report, add_dtype, add_output, check_output_dir


def register(subparsers) -> None:
    from ltx_ane.models.config import MODEL_PRESETS

    p = subparsers.add_parser(
        "encode-prompt",
        help="encode a prompt with Gemma 3 and LTX's text connectors into video/audio contexts",
        description="Tokenize (stripped, left-padded to 1,024 tokens, truncated on the right), run Gemma 3, LTX's "
        "feature extractor and the video and audio connectors. Writes tensors video_context and audio_context "
        "(1, 1024, D) float32 (and *_negative with --negative); metadata: the prompts, model hashes, version.",
    )
    p.add_argument("prompt", metavar="TEXT", help="the prompt")
    p.add_argument("--negative", metavar="TEXT", help="also encode this negative prompt")
    group = p.add_argument_group("model")
    group.add_argument("--gemma", metavar="DIR", help="Gemma 3 12B: a model directory (google/gemma-3-12b-it, full "
                       "precision or an mlx-lm quantised copy) or that repo id in the Hugging Face cache; may be left "
                       "out with --random-weights (a tiny random Gemma and a stand-in tokenizer)")
    group.add_argument("--checkpoint", metavar="CKPT", help="the full LTX-2 checkpoint holding "
                       "text_embedding_projection.* and the embeddings connectors (a file or cached repo id)")
    group.add_argument("--config", metavar="FILE", help="LTX config JSON with a 'transformer' section, or a preset "
                       f"({', '.join(MODEL_PRESETS)}); overrides the checkpoint's metadata (random weights default: "
                       "ltx2)")
    group.add_argument("--random-weights", action="store_true", help="random text projection and connectors at "
                       "the real architecture (the contexts are noise)")
    group.add_argument("--seed", type=int, default=0, help="seed for --random-weights (default 0)")
    add_dtype(group)
    group.add_argument("--padded", action="store_true", help="run Gemma over all 1,024 positions as ltx-core does "
                       "(default: the valid tokens only, the same up to rounding and much cheaper)")
    cache = p.add_argument_group("cache")
    cache.add_argument("--cache-dir", metavar="DIR", help="prompt cache, keyed by text, model hashes and version "
                       "(default $LTX_ANE_CACHE/prompts, ~/.cache/ltx-ane/prompts)")
    cache.add_argument("--no-cache", action="store_true", help="neither read nor write the prompt cache")
    add_output(p, "output .safetensors (written atomically when both prompts are encoded)")
    p.set_defaults(run=run)


def run(args) -> None:
    from ltx_ane.errors import LtxAneError
    from ltx_ane.models.loading import Source
    from ltx_ane.models.text.encoder import PromptEncoder
    from ltx_ane.models.text.prompt_store import PromptCache, write_prompt_file

    report = Report()
    for label, text in (("prompt", args.prompt), ("negative prompt", args.negative)):
        if text is not None and not text.strip():
            raise LtxAneError(f"the {label} is empty")
    check_output_dir(args.output)
    source = Source(checkpoint=args.checkpoint, config_file=args.config, random_weights=args.random_weights)
    cache = None if args.no_cache else PromptCache(args.cache_dir)
    encoder = PromptEncoder.load(args.gemma, source, args.dtype, valid_tokens_only=not args.padded, seed=args.seed,
                                 cache=cache)
    for note in encoder.notes:
        print(f"note: {note}", file=sys.stderr)
    positive = encoder.encode(args.prompt)
    negative = encoder.encode(args.negative) if args.negative is not None else None
    metadata = {"prompt": args.prompt.strip(), **encoder.metadata()}
    if negative is not None:
        metadata["negative_prompt"] = args.negative.strip()
    write_prompt_file(args.output, positive, negative, metadata)
    shapes = f"video {list(positive.video_context.shape)}, audio {list(positive.audio_context.shape)}"
    counts = f"{positive.num_tokens} tokens" + (f" (+{negative.num_tokens} negative)" if negative else "")
    report.finish(f"encoded {counts}: {shapes}, wrote {args.output}")
