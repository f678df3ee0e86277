"""A whole distilled two-stage generation, MLX (``ltx_ane.pipelines.generate``) against ltx-pipelines 1.0.0's own
helpers (``denoise_audio_video``, ``euler_denoising_loop``, ``upsample_video``, ``decode_video``, ``decode_audio``)
in the same process on the same GPU.

Random weights at the real LTX-2 19B architecture on both sides (timing does not depend on values; the two sides
hold different random weights), precomputed random text contexts (1, 1,024, 3,840), bf16, no images. Per side:
seconds per stage (stage 1: 8 steps at half size; upsample; stage 2: 3 steps; video decode, untiled; audio decode),
transformer seconds per step, peak memory (MLX ``get_peak_memory``; torch ``max_memory_allocated``), and the ratio.
Each side runs ``--warmup`` whole generations first (kernel builds), then ``--runs`` timed ones; medians are reported.
Also an on-paper estimate for Apple chips from the per-step FLOPs (labelled as an estimate, not a measurement).

    python benchmarks/bench_generate.py                   # GPU machine: 121 frames at 512x768
    python benchmarks/bench_generate.py --small           # CPU smoke test of the script (tiny widths)
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
STAGES = ("stage 1", "upsample", "stage 2", "video decode", "audio decode")
# Dense bf16 GPU rates of Apple chips (TFLOP/s, published or derived from ALU counts and clocks): for the on-paper
# estimate only, at the 5-6 TFLOP/s effective rate a 19B port reaches on an M3 Max (reference section 6).
APPLE_EFFECTIVE_TFLOPS = {"M3 Max (measured effective by a port)": 5.5}


def configs(small: bool):
    from ltx_ane.models.config import load_preset

    full = copy.deepcopy(load_preset("ltx2"))
    upscaler = load_preset("spatial-x2")
    if small:
        full["transformer"].update(num_layers=2, num_attention_heads=4, attention_head_dim=16, cross_attention_dim=64,
                                   audio_num_attention_heads=4, audio_attention_head_dim=8,
                                   audio_cross_attention_dim=32, caption_channels=48)
        full["vae"]["decoder_base_channels"] = 8
        upscaler.update(mid_channels=32, num_blocks_per_stage=1)
    return full, upscaler


def _audio_config(full: dict) -> dict:
    return {k: full[k] for k in ("audio_vae", "vocoder")}


# ------------------------------------------------------------------------------------------------ MLX


def run_mlx(full, upscaler_cfg, contexts, frames, height, width, runs, warmup):
    import mlx.core as mx

    from ltx_ane.models.loading import Source
    from ltx_ane.pipelines import generate as G
    from ltx_ane.pipelines.audio import decode_audio, load_audio_models
    from ltx_ane.pipelines.denoise import PromptContexts
    from ltx_ane.pipelines.render import render
    from ltx_ane.models.video_vae.loader import load_decoder

    source = Source(random_weights=True, config=full)
    models = G.ModelSet(source, Source(random_weights=True, config=upscaler_cfg), log=lambda m: None)
    ctx = PromptContexts(mx.array(contexts[0]).astype(mx.bfloat16), mx.array(contexts[1]).astype(mx.bfloat16))
    decoder = load_decoder(source, "bf16")
    audio = load_audio_models(Source(random_weights=True, config=_audio_config(full)), "bf16")
    # Keep the transformer loaded across runs (as a batch of prompts would): only the first run loads it.
    models.drop = lambda *names: None
    request = G.GenerateRequest(frames=frames, height=height, width=width, seed=1)
    results = []
    for run in range(warmup + runs):
        mx.reset_peak_memory()
        seconds = {}
        result = G.Generation()
        for _ in G.generate(G.pipeline("distilled"), request, ctx, models, result):
            pass
        seconds["stage 1"] = result.seconds["stage 1"]
        seconds["upsample"] = result.seconds["upsample 1"]
        seconds["stage 2"] = result.seconds["stage 2"]
        start = time.perf_counter()
        for chunk in render(np.array(result.video_latent.astype(mx.float32)), decoder, (), None):
            mx.eval(chunk)
        seconds["video decode"] = time.perf_counter() - start
        start = time.perf_counter()
        decode_audio(audio, np.array(result.audio_latent.astype(mx.float32)))
        seconds["audio decode"] = time.perf_counter() - start
        seconds["peak GB"] = mx.get_peak_memory() / 1e9
        print(f"MLX run {run}: " + ", ".join(f"{k} {v:.3f}" for k, v in seconds.items()), flush=True)
        if run >= warmup:
            results.append(seconds)
    del models, decoder, audio
    gc.collect()
    mx.clear_cache()
    return results


# ------------------------------------------------------------------------------------------------ ltx-pipelines


def run_reference(full, upscaler_cfg, contexts, frames, height, width, runs, warmup, device):
    import torch

    from ltx_ane import reference as R
    from ltx_ane.reference import video_vae as RV
    from ltx_ane.reference import upscaler as RU
    from ltx_ane.reference import audio as RA
    from ltx_ane.reference import transformer as RT

    R.require_reference()
    from ltx_core.components.diffusion_steps import EulerDiffusionStep
    from ltx_core.components.noisers import GaussianNoiser
    from ltx_core.model.audio_vae import decode_audio
    from ltx_core.model.transformer import X0Model
    from ltx_core.model.upsampler import upsample_video
    from ltx_core.model.video_vae import decode_video
    from ltx_core.types import VideoPixelShape
    from ltx_pipelines.utils.constants import DISTILLED_SIGMA_VALUES, STAGE_2_DISTILLED_SIGMA_VALUES
    from ltx_pipelines.utils.helpers import denoise_audio_video, simple_denoising_func
    from ltx_pipelines.utils.samplers import euler_denoising_loop
    from ltx_pipelines.utils.types import PipelineComponents

    dtype = torch.bfloat16
    dev = torch.device(device)
    transformer = X0Model(RT.build_transformer(full, seed=0, device=device, dtype=dtype)).eval()
    encoder = RV.build_encoder(full).to(dev, dtype).eval()
    decoder = RV.build_decoder(full).to(dev, dtype).eval()
    upscaler = RU.build_upscaler(upscaler_cfg).to(dev, dtype).eval()
    audio_cfg = _audio_config(full)
    audio_decoder = RA.build_audio_decoder(audio_cfg).to(dev, dtype).eval()
    vocoder = RA.build_vocoder(audio_cfg).to(dev, dtype).eval()
    components = PipelineComponents(dtype, dev)
    v_ctx, a_ctx = (torch.from_numpy(c).to(dev, dtype) for c in contexts)
    fn = simple_denoising_func(v_ctx, a_ctx, transformer)

    def loop(sigmas, video_state, audio_state, stepper):
        return euler_denoising_loop(sigmas=sigmas, video_state=video_state, audio_state=audio_state,
                                    stepper=stepper, denoise_fn=fn)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    results = []
    with torch.inference_mode():
        for run in range(warmup + runs):
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            noiser = GaussianNoiser(torch.Generator(device=dev).manual_seed(1))
            seconds = {}
            start = time.perf_counter()
            shape1 = VideoPixelShape(batch=1, frames=frames, width=width // 2, height=height // 2, fps=24.0)
            video, audio = denoise_audio_video(
                output_shape=shape1, conditionings=[], noiser=noiser,
                sigmas=torch.tensor(DISTILLED_SIGMA_VALUES, device=dev), stepper=EulerDiffusionStep(),
                denoising_loop_fn=loop, components=components, dtype=dtype, device=dev)
            sync()
            seconds["stage 1"] = time.perf_counter() - start
            start = time.perf_counter()
            upscaled = upsample_video(latent=video.latent[:1], video_encoder=encoder, upsampler=upscaler)
            sync()
            seconds["upsample"] = time.perf_counter() - start
            start = time.perf_counter()
            sigmas = torch.tensor(STAGE_2_DISTILLED_SIGMA_VALUES, device=dev)
            shape2 = VideoPixelShape(batch=1, frames=frames, width=width, height=height, fps=24.0)
            video, audio = denoise_audio_video(
                output_shape=shape2, conditionings=[], noiser=noiser, sigmas=sigmas, stepper=EulerDiffusionStep(),
                denoising_loop_fn=loop, components=components, dtype=dtype, device=dev, noise_scale=sigmas[0],
                initial_video_latent=upscaled, initial_audio_latent=audio.latent)
            sync()
            seconds["stage 2"] = time.perf_counter() - start
            start = time.perf_counter()
            for chunk in decode_video(video.latent, decoder, None, None):
                pass
            sync()
            seconds["video decode"] = time.perf_counter() - start
            start = time.perf_counter()
            decode_audio(audio.latent, audio_decoder, vocoder)
            sync()
            seconds["audio decode"] = time.perf_counter() - start
            seconds["peak GB"] = torch.cuda.max_memory_allocated() / 1e9 if dev.type == "cuda" else float("nan")
            print(f"ltx-pipelines run {run}: " + ", ".join(f"{k} {v:.3f}" for k, v in seconds.items()), flush=True)
            if run >= warmup:
                results.append(seconds)
    return results


# ------------------------------------------------------------------------------------------------ report


def step_flops(full: dict, frames: int, height: int, width: int) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_transformer import forward_flops

    t = full["transformer"]
    f = (frames - 1) // 8 + 1
    audio_tokens = round(frames / 24.0 * 25)
    return {"stage 1": forward_flops(t, f * (height // 64) * (width // 64), audio_tokens, 1024),
            "stage 2": forward_flops(t, f * (height // 32) * (width // 32), audio_tokens, 1024)}


def medians(rows: list[dict]) -> dict:
    return {k: float(np.median([r[k] for r in rows])) for k in rows[0]}


def markdown(meta: dict, mlx: dict, ref: dict, flops: dict) -> str:
    lines = [f"# Whole distilled two-stage generation, MLX vs ltx-pipelines ({meta['device']})", "",
             f"- **random weights** at the {meta['architecture']} architecture, bf16, {meta['frames']} frames at "
             f"{meta['height']}x{meta['width']} (stage 1 at half size), no images, precomputed random text "
             f"contexts; median of {meta['runs']} runs after {meta['warmup']} warm-up; untiled decode on both sides.",
             f"- Command: `{meta['command']}`", "",
             "| part | MLX | ltx-pipelines | MLX / ltx-pipelines |", "|---|---|---|---|"]
    for key in STAGES + ("total",):
        lines.append(f"| {key} | {mlx[key]:.3f} s | {ref[key]:.3f} s | {mlx[key] / ref[key]:.2f}x |")
    for stage, steps in (("stage 1", 8), ("stage 2", 3)):
        lines.append(f"| transformer s/step, {stage} | {mlx[stage] / steps:.3f} | {ref[stage] / steps:.3f} | "
                     f"{mlx[stage] / ref[stage]:.2f}x |")
    lines.append(f"| peak memory | {mlx['peak GB']:.1f} GB | {ref['peak GB']:.1f} GB | |")
    lines += ["", "## On-paper estimate for Apple chips (not a measurement)", "",
              f"Per step: {flops['stage 1'] / 1e12:.1f} TFLOP in stage 1, {flops['stage 2'] / 1e12:.1f} TFLOP in "
              "stage 2 (8 and 3 steps). At an effective rate R TFLOP/s the transformer takes "
              "(8 x stage-1 + 3 x stage-2 FLOPs) / R:", ""]
    total = 8 * flops["stage 1"] + 3 * flops["stage 2"]
    for chip, rate in APPLE_EFFECTIVE_TFLOPS.items():
        lines.append(f"- {chip}, {rate} TFLOP/s: ~{total / rate / 1e12:.0f} s of transformer per video")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny widths and a small video, on the CPU")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import torch

    full, upscaler = configs(args.small)
    frames, height, width = (9, 128, 128) if args.small else (121, 512, 768)
    device = "cuda" if torch.cuda.is_available() and not args.small else "cpu"
    rng = np.random.default_rng(0)
    t = full["transformer"]
    contexts = [rng.standard_normal((1, 1024, t["caption_channels"])).astype(np.float32) for _ in range(2)]
    mlx_rows = run_mlx(full, upscaler, contexts, frames, height, width, args.runs, args.warmup)
    ref_rows = run_reference(full, upscaler, contexts, frames, height, width, args.runs, args.warmup, device)
    mlx, ref = medians(mlx_rows), medians(ref_rows)
    for side in (mlx, ref):
        side["total"] = sum(side[k] for k in STAGES)
    from ltx_ane.bench.machine import machine_info

    meta = {"device": machine_info()["chip"], "architecture": "LTX-2 19B" + (" (tiny widths)" if args.small else ""),
            "frames": frames, "height": height, "width": width, "runs": args.runs, "warmup": args.warmup,
            "weights": "random weights", "command": "python benchmarks/bench_generate.py" + (" --small" if args.small else ""),
            "machine": machine_info()}
    flops = step_flops(full, frames, height, width)
    name = args.out or f"generate-{'small-cpu' if args.small else device}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "mlx": mlx_rows, "ltx_pipelines": ref_rows,
                                                      "median_mlx": mlx, "median_ltx_pipelines": ref,
                                                      "step_flops": flops}, indent=2, default=str))
    text = markdown(meta, mlx, ref, flops)
    (RESULTS / f"{name}.md").write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
