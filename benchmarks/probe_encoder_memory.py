"""Where the video encoder's memory goes, stage by stage, MLX against ltx-core in the same process.

Stages are the encoder's top-level modules (``conv_in``, each ``down_blocks.N``, ``conv_out`` with the norm and
activation before it). For each, the peak above the memory held when it starts, and its output's size. MLX runs
the stages one at a time as ``encode_channels_last`` does (its sync points, ``sync_depth``); ltx-core runs its
whole forward with a hook around each stage. Then each side's whole call. Random weights at the real
architecture (the same file on both sides), bf16, one video of --size pixels.

    python benchmarks/probe_encoder_memory.py --config ltx2 --size 121x512x768
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

MB = 2**20


def video_size(text: str) -> tuple[int, int, int]:
    try:
        frames, height, width = (int(v) for v in text.split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FxHxW, e.g. 121x512x768, got {text!r}") from None
    return frames, height, width


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="ltx2", help="a video VAE config name (ltx2, ltx23)")
    p.add_argument("--size", default="121x512x768", type=video_size, help="video FxHxW in pixels")
    args = p.parse_args()
    frames, height, width = args.size

    import mlx.core as mx
    import mlx.nn as nn
    import torch

    from ltx_ane import reference as R
    from ltx_ane.bench.runner import FAMILIES
    from ltx_ane.models import registry
    from ltx_ane.models.config import load_config_file
    from ltx_ane.models.layers import pixel_norm
    from ltx_ane.models.loading import Source
    from ltx_ane.models.queue import queued
    from ltx_ane.models.video_vae.model import patchify, to_channels_last

    spec = registry.spec("encoder")
    raw = load_config_file(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        module = spec.reference(raw, 0)
        path = R.write_checkpoint(Path(tmp) / "encoder.safetensors", FAMILIES["video_vae"][2](module, "encoder"), raw)
        del module
        mine = spec.load(Source(checkpoint=str(path)), "bf16", 0)
        cuda = torch.cuda.is_available()  # without it (a smoke run of the script) only MLX's side is measured
        ref = R.from_checkpoint("encoder", path, raw).to("cuda" if cuda else "cpu", torch.bfloat16).eval()
    video = torch.rand(1, 3, frames, height, width, generator=torch.Generator().manual_seed(0)) * 2 - 1
    print(f"# encoder {args.config}, video {frames}x{height}x{width}, bf16, random weights; MLX {mx.__version__}, torch {torch.__version__}")

    # MLX, stage by stage.
    x = to_channels_last(mx.array(video.numpy()).astype(mx.bfloat16))
    mx.eval(x, mine.parameters())
    stages = [("conv_in", lambda v: mine.conv_in(patchify(v, mine.config.patch_size), True))]
    stages += [(f"down_blocks.{i}", lambda v, b=b: b(v, True)) for i, b in enumerate(mine.down_blocks)]
    stages += [("conv_out", lambda v: mine.conv_out(nn.silu(pixel_norm(v)), True))]
    rows = {}
    for name, stage in stages:
        mx.synchronize()
        mx.clear_cache()
        before = mx.get_active_memory()
        mx.reset_peak_memory()
        with queued(mine.sync_depth):
            y = stage(x)
            mx.eval(y)
        rows[name] = {"mlx": (mx.get_peak_memory() - before) / MB, "out": y.nbytes / MB}
        x = y
    del x, y

    if not cuda:
        for name, row in rows.items():
            print(f"{name} | MLX peak above start {row['mlx']:.0f} MB | output {row['out']:.0f} MB")
        return
    # ltx-core, hooks around the same stages.
    modules = {"conv_in": ref.conv_in, **{f"down_blocks.{i}": b for i, b in enumerate(ref.down_blocks)},
               "conv_out": ref.conv_out}
    starts = {}

    def pre(name):
        def hook(_module, _inputs):
            torch.cuda.synchronize()
            starts[name] = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        return hook

    def post(name):
        def hook(_module, _inputs, _output):
            torch.cuda.synchronize()
            rows[name]["ltx_core"] = (torch.cuda.max_memory_allocated() - starts[name]) / MB
        return hook

    hooks = []
    for name, module in modules.items():
        hooks += [module.register_forward_pre_hook(pre(name)), module.register_forward_hook(post(name))]
    xt = video.to("cuda", torch.bfloat16)
    with torch.no_grad():
        ref(xt)
    print("stage | MLX peak above start MB | ltx-core peak above start MB | output MB")
    for name, row in rows.items():
        print(f"{name} | {row['mlx']:.0f} | {row.get('ltx_core', float('nan')):.0f} | {row['out']:.0f}")

    # Whole calls, peaks above what each side held before the call (weights and input).
    for hook in hooks:
        hook.remove()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        ref(xt)
    torch.cuda.synchronize()
    t_peak = (torch.cuda.max_memory_allocated() - base) / MB
    xm = mx.array(video.numpy()).astype(mx.bfloat16)
    mx.eval(xm)
    mx.synchronize()
    mx.clear_cache()
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    mx.eval(mine(xm))
    print(f"whole call, peak above weights and input: MLX {(mx.get_peak_memory() - base) / MB:.0f} MB, "
          f"ltx-core {t_peak:.0f} MB")


if __name__ == "__main__":
    main()
