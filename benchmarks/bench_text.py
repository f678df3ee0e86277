#!/usr/bin/env python
"""Time prompt encoding in MLX (mlx-lm's Gemma 3 + this project's feature extractor and connectors) against
transformers' Gemma 3 + ltx-core's ``EmbeddingsProcessor``, in one process.

Random weights at the real architecture (Gemma 3 12B and the LTX-2 19B or 2.3 text side; the released files
cannot be downloaded here): the reference models are built with their own random init, saved in the released
formats (a Hugging Face Gemma directory, an LTX checkpoint with the text projection and connectors), and MLX loads
those files, so both sides compute with the same numbers. One prompt of --tokens valid tokens, left-padded to
1,024. Timed, median and range of --runs runs after --warmup, in --dtype (default bf16):

- ltx-core: Gemma over all 1,024 positions (as ltx-core runs it), then the processor;
- MLX: the same over all 1,024 positions, and Gemma over the valid tokens only (exact up to rounding).

Also reported: peak memory of each side (torch.cuda.max_memory_allocated / mx.get_peak_memory; not measured for
torch on the CPU) and the MLX contexts' error against ltx-core's.

    python benchmarks/bench_text.py --config ltx2 --out text_h200_ltx2      # GPU machine, real widths
    python benchmarks/bench_text.py --small --out text-cpu-smoke            # tiny widths, CPU, < 1 min

``--out NAME`` writes benchmarks/results/NAME.json and NAME.md (a path with a directory is used as given).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

from ltx_ane.bench.timing import rel_err, summary, timed

LENGTH = 1024


def gemma_config(small: bool, layers: int | None) -> dict:
    from ltx_ane.reference import text as ref

    if small:
        return ref.tiny_gemma_config()
    from ltx_core.text_encoders.gemma.config import GEMMA3_CONFIG_FOR_LTX

    config = GEMMA3_CONFIG_FOR_LTX.to_dict()
    if layers:
        config["text_config"]["num_hidden_layers"] = layers
    return config


def ltx_config(name: str, small: bool) -> dict:
    from ltx_ane.models.config import load_preset
    from ltx_ane.reference import text as ref

    if small:
        return ref.TINY_V1_CONFIG if name == "ltx2" else ref.TINY_V2_CONFIG
    return load_preset(name)["transformer"]


def write_models(args, torch_device, tmp: Path) -> tuple[dict, Path, Path, int, int]:
    """Random reference models at their own init, saved in the released formats on ``tmp``."""
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    from ltx_ane.reference import text as ref
    from ltx_ane.reference import write_checkpoint

    torch.manual_seed(args.seed)
    gcfg = gemma_config(args.small, args.gemma_layers)
    torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    with torch.device(torch_device):
        gemma = Gemma3ForConditionalGeneration(Gemma3Config.from_dict(gcfg)).to(torch_dtype).eval()
    ref.save_gemma(gemma, gcfg, tmp / "gemma")
    del gemma
    width = gcfg["text_config"]["hidden_size"]
    states = gcfg["text_config"]["num_hidden_layers"] + 1
    tcfg = ltx_config(args.config, args.small)
    with torch.device(torch_device):
        processor = ref.build_processor(tcfg, width, states, args.seed)
    write_checkpoint(tmp / "ltx.safetensors", ref.processor_state_dict(processor), {"transformer": tcfg},
                     dtype=args.dtype)
    del processor
    return tcfg, tmp / "gemma", tmp / "ltx.safetensors", width, states


def prompt_tokens(args, vocab: int):
    from ltx_ane.models.text.gemma import TokenizedPrompt

    rng = np.random.default_rng(args.seed)
    ids = np.zeros((1, LENGTH), np.int32)
    mask = np.zeros((1, LENGTH), np.int32)
    ids[0, LENGTH - args.tokens:] = rng.integers(3, min(vocab, 200_000), args.tokens)
    ids[0, LENGTH - args.tokens] = 2  # <bos>
    mask[0, LENGTH - args.tokens:] = 1
    return TokenizedPrompt(ids, mask)


def bench_reference(args, torch_device, gemma_dir, ckpt, tcfg, width, states, prompt) -> tuple[dict, tuple]:
    import torch
    from transformers import Gemma3ForConditionalGeneration

    from ltx_ane.reference import text as ref

    torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    cuda = torch_device.type == "cuda"
    gemma = Gemma3ForConditionalGeneration.from_pretrained(gemma_dir, dtype=torch_dtype).to(torch_device).eval()
    processor = ref.reference_processor_from_checkpoint(ckpt, tcfg, width, states).to(torch_device, torch_dtype)
    ids = torch.as_tensor(prompt.ids, dtype=torch.long, device=torch_device)
    mask = torch.as_tensor(prompt.mask, dtype=torch.long, device=torch_device)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def encode():
        with torch.inference_mode():
            hidden = gemma.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            out = processor.process_hidden_states(hidden, mask, "left")
        return out.video_encoding, out.audio_encoding

    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times, (video, audio) = timed(encode, sync, args.runs, args.warmup)
    peak = torch.cuda.max_memory_allocated() if cuda else None
    outputs = (video.float().cpu().numpy(), audio.float().cpu().numpy())
    del gemma, processor
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return {**summary(times), "peak_bytes": peak}, outputs


def bench_mlx(args, gemma_dir, ckpt, prompt) -> tuple[dict, dict]:
    import mlx.core as mx

    from ltx_ane.models.loading import Source
    from ltx_ane.models.text.gemma import load_gemma
    from ltx_ane.models.text.loader import load_embeddings_processor

    gemma, _, _ = load_gemma(str(gemma_dir), args.dtype)
    processor = load_embeddings_processor(Source(checkpoint=str(ckpt)), gemma.hidden_size, gemma.num_states,
                                          args.dtype)
    rows, outputs = {}, {}
    for mode, valid_only in (("mlx_full", False), ("mlx_valid_only", True)):
        def encode():
            video, audio = processor(gemma.valid_states(prompt, valid_only), LENGTH)
            mx.eval(video, audio)
            return video, audio

        mx.clear_cache()
        mx.reset_peak_memory()
        times, (video, audio) = timed(encode, mx.synchronize, args.runs, args.warmup)
        rows[mode] = {**summary(times), "peak_bytes": mx.get_peak_memory()}
        outputs[mode] = (np.array(video.astype(mx.float32)), np.array(audio.astype(mx.float32)))
    return rows, outputs


def mb(n) -> str:
    return "n/a" if n is None else f"{n / 1e6:,.0f} MB"


def markdown(meta: dict, row: dict) -> str:
    lines = [f"# Prompt encoding: MLX vs transformers + ltx-core ({meta['config']}, random weights)", "",
             f"{meta['machine']}; torch {meta['torch_device']}, MLX {meta['mlx_device']}; {meta['dtype']}; "
             f"{meta['tokens']} valid tokens of {LENGTH}; Gemma {meta['gemma_layers']} layers x "
             f"{meta['gemma_width']}; median of {meta['runs']} after {meta['warmup']} warm-up.", "",
             "| side | median | range | peak memory | vs ltx-core |", "|---|---|---|---|---|"]
    base = row["ltx_core"]["median_s"]
    for side in ("ltx_core", "mlx_full", "mlx_valid_only"):
        r = row[side]
        ratio = "1.00x" if side == "ltx_core" else f"{r['median_s'] / base:.2f}x time"
        lines.append(f"| {side} | {r['median_s'] * 1e3:.1f} ms | {r['min_s'] * 1e3:.1f}-{r['max_s'] * 1e3:.1f} ms | "
                     f"{mb(r['peak_bytes'])} | {ratio} |")
    lines += ["", "Max relative error of the MLX contexts against ltx-core's (same dtype): " +
              ", ".join(f"{k} {v:.2e}" for k, v in row["errors"].items()), "", f"Command: `{meta['command']}`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    p.add_argument("--config", choices=("ltx2", "ltx23"), default="ltx2", help="LTX text side: 19B (V1) or 2.3 (V2)")
    p.add_argument("--small", action="store_true", help="tiny Gemma and reduced-width LTX side, for a CPU")
    p.add_argument("--gemma-layers", type=int, help="fewer Gemma layers than the real 48 (memory, time)")
    p.add_argument("--tokens", type=int, default=128, help="valid tokens in the prompt (default 128)")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="NAME", help="write benchmarks/results/NAME.json and NAME.md")
    args = p.parse_args(argv)
    if args.runs < 5:
        p.error("--runs must be at least 5")
    if not 1 <= args.tokens <= LENGTH:
        p.error(f"--tokens must be in 1..{LENGTH}")

    import mlx.core as mx
    import torch

    from ltx_ane.reference import require_reference

    require_reference()
    if args.device == "auto":
        args.device = "cpu" if args.small or not torch.cuda.is_available() else "gpu"
    torch_device = torch.device("cuda" if args.device == "gpu" else "cpu")
    mx.set_default_device(mx.gpu if args.device == "gpu" else mx.cpu)
    from importlib.metadata import version

    gcfg = gemma_config(args.small, args.gemma_layers)
    meta = {
        "machine": f"{platform.machine()} "
        + (torch.cuda.get_device_name() if torch_device.type == "cuda" else platform.processor() or "cpu"),
        "torch_device": str(torch_device), "mlx_device": str(mx.default_device()), "mlx": mx.__version__,
        "mlx_lm": version("mlx-lm"), "torch": torch.__version__, "transformers": version("transformers"),
        "ltx_core": version("ltx-core"), "config": args.config, "small": args.small, "dtype": args.dtype,
        "tokens": args.tokens, "gemma_layers": gcfg["text_config"]["num_hidden_layers"],
        "gemma_width": gcfg["text_config"]["hidden_size"], "runs": args.runs, "warmup": args.warmup,
        "random_weights": True, "mlx_env": {k: v for k, v in os.environ.items() if k.startswith("MLX_")},
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    }
    print(f"random weights ({'reduced widths' if args.small else 'real architecture'}, {args.config}); "
          f"torch {torch_device}, MLX {mx.default_device()}, {args.dtype}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tcfg, gemma_dir, ckpt, width, states = write_models(args, torch_device, Path(tmp))
        prompt = prompt_tokens(args, gcfg.get("vocab_size", 262208))
        reference, (ref_video, ref_audio) = bench_reference(args, torch_device, gemma_dir, ckpt, tcfg, width,
                                                            states, prompt)
        mlx_rows, mlx_outputs = bench_mlx(args, gemma_dir, ckpt, prompt)
    row = {"ltx_core": reference, **mlx_rows, "errors": {}}
    for mode, (video, audio) in mlx_outputs.items():
        row["errors"][f"{mode}_video"] = rel_err(ref_video, video)
        row["errors"][f"{mode}_audio"] = rel_err(ref_audio, audio)
    for side in ("ltx_core", "mlx_full", "mlx_valid_only"):
        r = row[side]
        print(f"{side}: {r['median_s'] * 1e3:.1f} ms [{r['min_s'] * 1e3:.1f}, {r['max_s'] * 1e3:.1f}] "
              f"peak {mb(r['peak_bytes'])}", flush=True)
    print("max rel. error vs ltx-core: " + ", ".join(f"{k} {v:.2e}" for k, v in row["errors"].items()))
    if args.out:
        from ltx_ane.bench.timing import write_results

        print("wrote", *write_results(args.out, {"meta": meta, "results": row}, markdown(meta, row),
                                           Path(__file__).resolve().parent / "results"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
