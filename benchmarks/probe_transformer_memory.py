"""Where the transformer forward's memory above the weights goes, MLX against ltx-core, a few 19B-width blocks.

Random weights at the real widths (``--blocks`` blocks instead of 48: what a forward adds above the weights is set by
the few pieces in flight at a time, not by the depth), inputs as ``bench_transformer.py``. Reported:

- per sync-point interval of one middle block (MLX, ``models.queue``): the peak above the memory held before the
  forward, with the layers queued as the default does and with none queued (each piece alone);
- the same block's sub-modules in ltx-core (forward hooks): the peak above resident while each runs;
- the whole forward's peak above resident on both sides, for each ``--variants`` setting of ``LTXModel``.

    python benchmarks/probe_transformer_memory.py --blocks 4      # GPU machine
    python benchmarks/probe_transformer_memory.py --small         # CPU check of the script
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_transformer as bt  # noqa: E402

MB = 1e6


def mlx_side(config_path: Path, t: dict, grid, args) -> list[str]:
    import mlx.core as mx

    from ltx_ane.models import queue
    from ltx_ane.models.loading import Source
    from ltx_ane.models.transformer.block import SYNC_POINTS
    from ltx_ane.models.transformer.loader import load_transformer
    from ltx_ane.models.transformer.model import LTXModel

    model = load_transformer(Source(None, str(config_path), random_weights=True), dtype="bf16")
    video, audio = bt.make_inputs(t, grid, args.audio_tokens, args.text_tokens)
    v, a = bt.mlx_modality(video), bt.mlx_modality(audio)
    lines = []
    defaults = {k: getattr(LTXModel, k) for k in ("queue_unit", "layers_in_flight", "layer_sync_points")}
    push = queue.DeviceQueue.push
    names = [*SYNC_POINTS, "block end"]

    def run(settings: dict, record: list | None):
        for k, value in {**defaults, **settings}.items():
            setattr(LTXModel, k, value)

        def tracked(self, arrays):
            push(self, arrays)
            if record is not None:
                record.append(mx.get_peak_memory())
                mx.reset_peak_memory()

        queue.DeviceQueue.push = tracked
        try:
            mx.eval(model(v, a))  # warm-up
            mx.synchronize()
            mx.clear_cache()
            if record is not None:
                record.clear()
            resident = mx.get_active_memory()
            mx.reset_peak_memory()
            mx.eval(model(v, a))
            mx.synchronize()
            return resident, mx.get_peak_memory()
        finally:
            queue.DeviceQueue.push = push

    for label, settings in (("default", {}), ("no layer queued", {"layers_in_flight": 0})):
        record: list = []
        resident, peak = run(settings, record)
        middle = len(names) * (args.blocks // 2)
        per = [(names[i % len(names)], p - resident) for i, p in enumerate(record)][middle:middle + len(names)]
        lines.append(f"MLX {label}: whole forward +{(max([peak] + record) - resident) / MB:.0f} MB; block "
                     f"{args.blocks // 2}, peak above resident while each piece was queued up to: "
                     + ", ".join(f"{n} {p / MB:.0f}" for n, p in per))
    lines += chains(model, v)
    for label in args.variants:
        settings = bt.BF16_VARIANTS[label]
        resident, peak = run({k: v for k, v in settings.items() if k in defaults}, None)
        lines.append(f"MLX variant {label!r}: +{(peak - resident) / MB:.0f} MB")
    for k, value in defaults.items():
        setattr(LTXModel, k, value)
    del model
    mx.clear_cache()
    return lines


def chains(model, v) -> list[str]:
    """Peak above inputs of a few operation chains of block 0, each evaluated alone: which steps write new buffers
    (an elementwise step that takes over its input's buffer adds nothing)."""
    import mlx.core as mx
    import mlx.nn as nn

    from ltx_ane.models.transformer.block import rms_norm, table_rows
    from ltx_ane.models.transformer.fused import modulate
    from ltx_ane.models.transformer.rope import apply_rotary_emb

    block = model.transformer_blocks[0]
    args = model.prepare("video", v, None)
    x = args.x
    mx.eval(x, args.positional_embeddings, args.timesteps)
    rows = table_rows(block.scale_shift_table, x.dtype)
    attn, ff = block.attn1, block.ff
    cases = {
        "ff.net.0.proj": lambda: ff.net[0].proj(x),
        "ff.net.0.proj, nn.gelu_approx": lambda: nn.gelu_approx(ff.net[0].proj(x)),
        "ff.net.0 (proj, gelu_tanh)": lambda: ff.net[0](x),
        "rms_norm": lambda: rms_norm(x, 1e-6),
        "rms_norm, modulate": lambda: modulate(rms_norm(x, 1e-6), rows[1], args.timesteps[1], rows[0], args.timesteps[0]),
        "to_q": lambda: attn.to_q(x),
        "to_q, q_norm": lambda: attn.q_norm(attn.to_q(x)),
        "to_q, q_norm, rope": lambda: apply_rotary_emb(attn.q_norm(attn.to_q(x)), args.positional_embeddings),
        "sdpa, heads back to (B, T, D)": lambda: attn._attend(q, k, val, None),
    }
    q, k, val = (mx.random.normal(x.shape).astype(x.dtype) for _ in range(3))
    mx.eval(q, k, val)
    out = []
    for name, build in cases.items():
        mx.synchronize()
        mx.clear_cache()
        base = mx.get_active_memory()
        mx.reset_peak_memory()
        y = build()
        mx.eval(y)
        out.append(f"{name} {(mx.get_peak_memory() - base) / MB:.0f} (output {y.nbytes / MB:.0f})")
        del y
    return [f"MLX chains at {x.shape[1]} tokens, peak above inputs in MB: " + ", ".join(out)]


def torch_side(config: dict, grid, args) -> list[str]:
    import torch
    from ltx_core.guidance.perturbations import BatchedPerturbationConfig

    from ltx_ane.reference import transformer as RT

    device = torch.device("cuda" if torch.cuda.is_available() and not args.small else "cpu")
    if device.type != "cuda":
        return ["ltx-core: no CUDA device, memory not measured"]
    model = RT.build_transformer(config, seed=0, device="cuda", dtype=torch.bfloat16)
    video, audio = bt.make_inputs(config["transformer"], grid, args.audio_tokens, args.text_tokens)
    v, a = bt.torch_modality(video, device), bt.torch_modality(audio, device)
    empty = BatchedPerturbationConfig.empty(1)
    block = model.transformer_blocks[args.blocks // 2]
    marks: list = []
    resident = [0]

    def pre(module, inputs):
        torch.cuda.reset_peak_memory_stats()

    def post(name):
        def hook(module, inputs, output):
            marks.append((name, torch.cuda.max_memory_allocated() - resident[0]))
        return hook

    handles = []
    for name, module in block.named_children():
        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post(name))]
    with torch.inference_mode():
        model(v, a, empty)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        marks.clear()
        resident[0] = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        peak_whole = [0]

        def block_post(module, inputs, output):
            peak_whole[0] = max(peak_whole[0], torch.cuda.max_memory_allocated())
        handles += [b.register_forward_hook(block_post) for b in model.transformer_blocks]
        model(v, a, empty)
        torch.cuda.synchronize()
        peak_whole[0] = max(peak_whole[0], torch.cuda.max_memory_allocated())
    for h in handles:
        h.remove()
    return [f"ltx-core: whole forward +{(peak_whole[0] - resident[0]) / MB:.0f} MB (peak over the hooks' resets); "
            f"block {args.blocks // 2}, peak above resident while each sub-module ran: "
            + ", ".join(f"{n} {p / MB:.0f}" for n, p in marks)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--sizes", nargs="+", default=list(bt.SIZES))
    parser.add_argument("--audio-tokens", type=int, default=126)
    parser.add_argument("--text-tokens", type=int, default=1024)
    parser.add_argument("--variants", nargs="*", default=[], choices=list(bt.BF16_VARIANTS))
    args = parser.parse_args()

    from ltx_ane.models.config import load_preset

    t = copy.deepcopy(load_preset("ltx2")["transformer"])
    t["num_layers"] = args.blocks
    sizes = {name: bt.SIZES[name] for name in args.sizes}
    if args.small:
        t.update(num_attention_heads=4, attention_head_dim=32, cross_attention_dim=128, audio_num_attention_heads=4,
                 audio_attention_head_dim=16, audio_cross_attention_dim=64, caption_channels=96)
        sizes, args.audio_tokens, args.text_tokens = bt.SMALL_SIZES, 16, 32
    config = {"transformer": t}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(config))
        for name, grid in sizes.items():
            print(f"## {name}, {args.blocks} blocks, random weights, bf16", flush=True)
            for line in mlx_side(path, t, grid, args) + torch_side(config, grid, args):
                print(line, flush=True)


if __name__ == "__main__":
    main()
