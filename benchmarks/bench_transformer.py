"""The audio-video transformer, one forward, MLX against ltx-core 1.0.0 in the same process.

Random weights at the real architecture (LTX-2 19B by default), bf16 on both sides, built directly on the device:
ltx-core's model on the meta device, materialised on CUDA in bf16 and filled there; the MLX model from lazily drawn
random arrays cast block by block. The two sides hold *different* random weights (timing does not depend on them);
parity is the tests' job. Inputs as the pipelines build them: 121 frames, audio 126 tokens, text 1,024 tokens.
Median of --runs after --warmup; peak memory (mx.get_peak_memory, torch.cuda.max_memory_allocated); effective
TFLOP/s from the analytic FLOP count (48.4 TFLOP at 1,536 video tokens, 200 at 6,144 for 19B). Optional
quantised rows (--quantize 8 4) with their peak memory and velocity PSNR against the MLX bf16 model. Extra bf16
rows on the same model: bounds on the pieces queued on the device ahead of the host (whole blocks or the layers
between a block's sync points: ``LTXModel.queue_unit``, ``blocks_in_flight``, ``layers_in_flight``,
``layer_sync_points``), "one lazy graph" builds the
whole forward before running it (as before block-by-block evaluation), "text prepared once" is a denoising
step's forward with the caption projection and text keys and values from ``model.prepare_context`` (built outside the timing, its memory inside the peak).

    python benchmarks/bench_transformer.py                        # GPU machine, results/transformer-<device>.{json,md}
    python benchmarks/bench_transformer.py --quantize 8 4
    python benchmarks/bench_transformer.py --small                # CPU smoke test of the script (tiny model)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np

from ltx_ane.models.transformer.block import SYNC_POINTS

RESULTS = Path(__file__).parent / "results"
# name -> (latent frames, height, width): 121 frames at 256x384 and 512x768.
SIZES = {"121x256x384": (16, 8, 12), "121x512x768": (16, 16, 24)}
SMALL_SIZES = {"9x64x96": (2, 2, 3), "17x128x192": (3, 4, 6)}


def forward_flops(t: dict, video_tokens: int, audio_tokens: int, text_tokens: int) -> float:
    """FLOP (2 x multiply-accumulate) of one forward: projections, attention, feed-forwards, AdaLN per token,
    the in-transformer caption projection of 19B, patchify and output heads."""
    d, da = t["num_attention_heads"] * t["attention_head_dim"], t["audio_num_attention_heads"] * t["audio_attention_head_dim"]
    v, a, s = video_tokens, audio_tokens, text_tokens
    dc, dac = t["cross_attention_dim"], t["audio_cross_attention_dim"]
    block = (
        4 * v * d * d + 2 * v * v * d  # video self-attention
        + 2 * v * d * d + 2 * s * dc * d + 2 * v * s * d  # video text cross-attention
        + 8 * v * d * d  # video feed-forward (x4)
        + 4 * a * da * da + 2 * a * a * da
        + 2 * a * da * da + 2 * s * dac * da + 2 * a * s * da
        + 8 * a * da * da
        + 2 * v * d * da + 2 * a * da * da + 2 * v * a * da  # audio -> video
        + 2 * a * da * da + 2 * v * d * da + 2 * a * v * da  # video -> audio
    )
    coefficient = 9 if t.get("cross_attention_adaln") else 6
    mac = t["num_layers"] * block
    mac += v * (256 * d + d * d + coefficient * d * d) + a * (256 * da + da * da + coefficient * da * da)
    mac += 2 * v * d * t["in_channels"] + 2 * a * da * t.get("audio_in_channels", 128)
    if not t.get("caption_proj_before_connector"):
        c = t["caption_channels"]
        mac += s * (c * d + d * d) + s * (c * da + da * da)
    return 2.0 * mac


def make_inputs(t: dict, grid, audio_tokens: int, text_tokens: int, seed: int = 0):
    """(numpy arrays for both sides) one modality dict each, sigma 1 as in a first step."""
    from ltx_ane.reference import transformer as RT

    rng = np.random.default_rng(seed)
    n = int(np.prod(grid))
    ctx_video, ctx_audio = (
        (t["num_attention_heads"] * t["attention_head_dim"], t["audio_cross_attention_dim"])
        if t.get("caption_proj_before_connector") else (t["caption_channels"],) * 2
    )
    one = np.ones((1,), np.float32)
    video = dict(latent=rng.standard_normal((1, n, t["in_channels"]), dtype=np.float32), sigma=one,
                 timesteps=np.ones((1, n, 1), np.float32), positions=RT.video_positions(1, *grid),
                 context=rng.standard_normal((1, text_tokens, ctx_video), dtype=np.float32))
    audio = dict(latent=rng.standard_normal((1, audio_tokens, t.get("audio_in_channels", 128)), dtype=np.float32),
                 sigma=one, timesteps=np.ones((1, audio_tokens, 1), np.float32),
                 positions=RT.audio_positions(1, audio_tokens),
                 context=rng.standard_normal((1, text_tokens, ctx_audio), dtype=np.float32))
    return video, audio


def mlx_modality(m: dict):
    import mlx.core as mx

    from ltx_ane.models.transformer.modality import Modality

    bf = mx.bfloat16
    return Modality(latent=mx.array(m["latent"]).astype(bf), sigma=mx.array(m["sigma"]),
                    timesteps=mx.array(m["timesteps"]), positions=mx.array(m["positions"].float().numpy()).astype(bf)
                    if hasattr(m["positions"], "float") else mx.array(m["positions"]),
                    context=mx.array(m["context"]).astype(bf))


def torch_modality(m: dict, device):
    import torch

    from ltx_core.model.transformer.modality import Modality

    def t(a, dtype=None):
        a = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
        return a.to(device=device, dtype=dtype or a.dtype)

    return Modality(latent=t(m["latent"], torch.bfloat16), sigma=t(m["sigma"]), timesteps=t(m["timesteps"]),
                    positions=t(m["positions"]), context=t(m["context"], torch.bfloat16))


def bench_ltx_core(config: dict, sizes: dict, args, device) -> dict:
    import torch
    from ltx_core.guidance.perturbations import BatchedPerturbationConfig

    from ltx_ane.bench.timing import summary, timed
    from ltx_ane.reference import transformer as RT

    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    model = RT.build_transformer(config, seed=0, device=str(device), dtype=torch.bfloat16)
    out = {}
    for name, grid in sizes.items():
        video, audio = make_inputs(config["transformer"], grid, args.audio_tokens, args.text_tokens)
        v, a = torch_modality(video, device), torch_modality(audio, device)
        empty = BatchedPerturbationConfig.empty(1)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated() if cuda else None
        call_peaks = []

        def forward():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            result = model(v, a, empty)
            if cuda:
                sync()
                call_peaks.append(torch.cuda.max_memory_allocated())
            return result

        with torch.inference_mode():
            times, _ = timed(forward, sync, args.runs, args.warmup)
        out[name] = {**summary(times), "peak_bytes": max(call_peaks) if cuda else None, "resident_bytes": resident,
                     "call_peak_bytes": call_peaks}
    del model
    if cuda:
        torch.cuda.empty_cache()
    return out


# Variants of the bf16 MLX row, timed on the same loaded model: the default forward (layers queued, their number
# from the token count), whole blocks queued (0: the host waits for every block; 48: no bound), fixed bounds on
# the layers queued, with all of a block's sync points or without the one inside the feed-forward, the forward
# built as one lazy graph before anything runs, and a denoising step's forward with the text prepared once.
WITHOUT_FF_HIDDEN = tuple(p for p in SYNC_POINTS if p != "video_feed_forward_hidden")
BF16_VARIANTS = {
    "MLX": {},
    "MLX, 0 blocks queued": {"queue_unit": "block", "blocks_in_flight": 0},
    "MLX, 1 block queued": {"queue_unit": "block", "blocks_in_flight": 1},
    "MLX, 2 blocks queued": {"queue_unit": "block", "blocks_in_flight": 2},
    "MLX, no bound on blocks queued": {"queue_unit": "block", "blocks_in_flight": 48},
    "MLX, 1 layer queued": {"queue_unit": "layer", "layers_in_flight": 1},
    "MLX, 2 layers queued": {"queue_unit": "layer", "layers_in_flight": 2},
    "MLX, 3 layers queued": {"queue_unit": "layer", "layers_in_flight": 3},
    "MLX, 4 layers queued": {"queue_unit": "layer", "layers_in_flight": 4},
    "MLX, 2 layers queued, no sync inside the feed-forward": {
        "queue_unit": "layer", "layers_in_flight": 2, "layer_sync_points": WITHOUT_FF_HIDDEN},
    "MLX, 3 layers queued, no sync inside the feed-forward": {
        "queue_unit": "layer", "layers_in_flight": 3, "layer_sync_points": WITHOUT_FF_HIDDEN},
    "MLX, one lazy graph": {"queue_unit": "graph"},
    "MLX, text prepared once": {"prepared_text": True},
}


def bench_mlx(config_path: Path, config: dict, sizes: dict, args, quantize=None, reference=None, variants=None):
    """{variant label: {size: row}} and the first variant's velocities per size."""
    import mlx.core as mx

    from ltx_ane.bench.timing import summary, timed
    from ltx_ane.models.loading import Source
    from ltx_ane.models.transformer.loader import load_transformer
    from ltx_ane.models.transformer.model import LTXModel
    from ltx_ane.models.transformer.quantize import psnr

    model = load_transformer(Source(None, str(config_path), random_weights=True), dtype="bf16", quantize=quantize)
    variants = variants or {"MLX": {}}
    defaults = {k: getattr(LTXModel, k) for k in ("queue_unit", "blocks_in_flight", "layers_in_flight",
                                                    "layer_sync_points")}
    out, velocities = {label: {} for label in variants}, {}
    for name, grid in sizes.items():
        video, audio = make_inputs(config["transformer"], grid, args.audio_tokens, args.text_tokens)
        v, a = mlx_modality(video), mlx_modality(audio)
        for label, variant in variants.items():
            # Set on the class: an nn.Module instance would keep a tuple attribute among its parameters.
            for setting in ("queue_unit", "blocks_in_flight", "layers_in_flight", "layer_sync_points"):
                setattr(LTXModel, setting, variant.get(setting, defaults[setting]))
            mx.clear_cache()
            mx.reset_peak_memory()
            text = model.prepare_context(v.context, a.context) if variant.get("prepared_text") else None
            resident, prepare_peak = mx.get_active_memory(), mx.get_peak_memory()
            call_peaks = []

            def forward():
                mx.reset_peak_memory()
                result = model(v, a, text=text)
                mx.eval(result)
                call_peaks.append(mx.get_peak_memory())
                return result

            times, result = timed(forward, mx.synchronize, args.runs, args.warmup)
            row = {**summary(times), "peak_bytes": max(prepare_peak, *call_peaks), "resident_bytes": resident,
                   "call_peak_bytes": call_peaks}
            result = [np.array(r.astype(mx.float32)) for r in result]
            # The other bf16 variants are checked against the first (the same computation: PSNR inf or near).
            compare_to = reference[name] if reference is not None else velocities.get(name)
            if compare_to is not None:
                row["psnr_video_db"] = psnr(mx.array(compare_to[0]), mx.array(result[0]))
                row["psnr_audio_db"] = psnr(mx.array(compare_to[1]), mx.array(result[1]))
            velocities.setdefault(name, result)
            out[label][name] = row
            del text
    for setting, value in defaults.items():
        setattr(LTXModel, setting, value)
    del model
    mx.clear_cache()
    return out, velocities


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [
        f"# Transformer forward, MLX vs ltx-core ({meta['device']})",
        "",
        *([f"Command: `{meta['command']}`", ""] if "command" in meta else []),
        f"- **random weights**, {meta['architecture']}, bf16, audio {meta['audio_tokens']} tokens, text "
        f"{meta['text_tokens']} tokens; median of {meta['runs']} runs after {meta['warmup']} warm-up",
        f"- MLX environment: {' '.join(f'{k}={v}' for k, v in meta.get('mlx_environment', {}).items()) or 'defaults'}",
        "",
        "Peak memory: the process's peak during the timed calls; above resident: that peak less the memory held "
        "before the first call (weights, inputs, prepared text): what the forward itself adds; per call: the "
        "least and the most any single call (warm-up included) added, to show the spread.",
        "",
        "| size | video tokens | model | median | range | peak memory | above resident | per call | TFLOP/s "
        "| vs ltx-core | PSNR video / audio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gb = "-" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 1e9:.1f} GB"
        above = ("-" if r.get("resident_bytes") is None or r["peak_bytes"] is None
                 else f"{(r['peak_bytes'] - r['resident_bytes']) / 1e9:.2f} GB")
        calls = r.get("call_peak_bytes")
        per_call = ("-" if not calls or r.get("resident_bytes") is None
                    else f"{(min(calls) - r['resident_bytes']) / 1e9:.2f}-{(max(calls) - r['resident_bytes']) / 1e9:.2f} GB")
        ratio = "-" if r.get("time_vs_ltx_core") is None else f"{r['time_vs_ltx_core']:.2f}x"
        quality = f"{r['psnr_video_db']:.1f} / {r['psnr_audio_db']:.1f} dB" if "psnr_video_db" in r else "-"
        lines.append(
            f"| {r['size']} | {r['video_tokens']} | {r['model']} | {r['median_s'] * 1e3:.1f} ms | "
            f"{r['min_s'] * 1e3:.1f}-{r['max_s'] * 1e3:.1f} ms | {gb} | {above} | {per_call} | {r['tflops']:.1f} | {ratio} "
            f"| {quality} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--version", choices=("ltx2", "ltx23"), default="ltx2")
    parser.add_argument("--small", action="store_true", help="tiny model and sizes on the CPU (checks the script)")
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--audio-tokens", type=int, default=126)
    parser.add_argument("--text-tokens", type=int, default=1024)
    parser.add_argument("--quantize", nargs="*", default=[], help="extra MLX rows, e.g. 8 4 or 4:32")
    parser.add_argument("--skip-ltx-core", action="store_true")
    parser.add_argument("--variants", nargs="+", choices=list(BF16_VARIANTS), default=list(BF16_VARIANTS),
                        metavar="LABEL", help="bf16 MLX rows to time (default all; the first is the PSNR reference)")
    parser.add_argument("--out", default=None, help="results/<name>.{json,md} (default transformer-<device>)")
    args = parser.parse_args()

    import torch

    from ltx_ane.models.config import load_preset
    from ltx_ane.models.transformer.quantize import QuantizeMode
    from ltx_ane.reference import require_reference

    require_reference()
    t = copy.deepcopy(load_preset(args.version)["transformer"])
    sizes = {name: SIZES[name] for name in args.sizes}
    if args.small:
        t.update(num_layers=2, num_attention_heads=4, attention_head_dim=32, cross_attention_dim=128,
                 audio_num_attention_heads=4, audio_attention_head_dim=16, audio_cross_attention_dim=64,
                 caption_channels=96)
        sizes, args.audio_tokens, args.text_tokens = SMALL_SIZES, 16, 32
        args.runs, args.warmup = min(args.runs, 5), min(args.warmup, 1)
    config = {"transformer": t}
    device = torch.device("cuda" if torch.cuda.is_available() and not args.small else "cpu")
    modes = [QuantizeMode.parse(q) for q in args.quantize]

    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "config.json"
        config_path.write_text(json.dumps(config))
        mlx_rows, velocities = bench_mlx(config_path, config, sizes, args,
                                           variants={label: BF16_VARIANTS[label] for label in args.variants})
        quantised = {f"MLX {m.describe()}": bench_mlx(config_path, config, sizes, args, m, velocities)[0]["MLX"]
                     for m in modes}
    ref_rows = {} if args.skip_ltx_core else bench_ltx_core(config, sizes, args, device)

    rows = []
    for name, grid in sizes.items():
        tokens = int(np.prod(grid))
        flop = forward_flops(t, tokens, args.audio_tokens, args.text_tokens)
        base = ref_rows.get(name)
        entries = [("ltx-core", base)] + [(label, r[name]) for label, r in {**mlx_rows, **quantised}.items()]
        for model_name, r in entries:
            if r is None:
                continue
            rows.append({"size": name, "video_tokens": tokens, "model": model_name, "flop": flop,
                         "tflops": flop / r["median_s"] / 1e12,
                         "time_vs_ltx_core": r["median_s"] / base["median_s"] if base else None, **r})
    from ltx_ane.bench.machine import machine_info

    meta = {"device": machine_info()["chip"], "command": "python " + shlex.join(sys.argv),
            "architecture": f"{args.version} ({t['num_layers']} blocks{', tiny widths' if args.small else ''})",
            "weights": "random weights", "audio_tokens": args.audio_tokens, "text_tokens": args.text_tokens,
            "runs": args.runs, "warmup": args.warmup, "machine": machine_info(),
            # MLX_MAX_OPS_PER_BUFFER and the like change when the GPU backend frees buffers: part of the conditions.
            "mlx_environment": {k: v for k, v in sorted(os.environ.items()) if k.startswith("MLX_")}}
    name = args.out or f"transformer-{'small-cpu' if args.small else device.type}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))
    text = markdown(meta, rows)
    (RESULTS / f"{name}.md").write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
