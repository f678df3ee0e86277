"""Where the vocoders' time goes, stage by stage, MLX against ltx-core in the same process.

Each stage of each generator (conv_pre, every upsampling ConvTranspose1d, every residual block, the final
activation and conv_post) is timed on its own: the inputs are evaluated first, then the stage runs and is
synchronised. Waiting at every stage removes the overlap of host and device that a whole call has, so the stage
sum is above a call's time on both sides; the point is which stages MLX loses. Random weights at the real
architecture (the same file on both sides), bf16, median of --runs after one warm-up.

    python benchmarks/probe_vocoder_stages.py --device cuda --seconds 20 > benchmarks/results/vocoder_stages_cuda.md
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

LATENTS_PER_SECOND = 25


def generators(vocoder):
    """(label, generator) pairs: one for HiFi-GAN, the 16 kHz one and the bandwidth extension's for BigVGAN."""
    if hasattr(vocoder, "bwe_generator"):
        return [("vocoder", vocoder.vocoder), ("bwe", vocoder.bwe_generator)]
    return [("vocoder", vocoder)]


def stage_names(generator) -> list[str]:
    names = ["conv_pre"] + [f"ups.{i}" for i in range(len(generator.ups))]
    names += [f"resblocks.{i}" for i in range(len(generator.resblocks))]
    return names + (["act_post"] if hasattr(generator, "act_post") else []) + ["conv_post"]


def wrap_mlx(vocoder, record):
    import mlx.core as mx

    class Timed:
        def __init__(self, name, fn):
            self.name, self.fn = name, fn

        def __getattr__(self, attribute):  # the generator reads conv_pre.weight for its dtype
            return getattr(self.fn, attribute)

        def __call__(self, *inputs):
            mx.eval(*inputs)
            start = time.perf_counter()
            out = self.fn(*inputs)
            mx.eval(out)
            record[self.name].append(time.perf_counter() - start)
            return out

    for label, gen in generators(vocoder):
        for name in stage_names(gen):
            if "." in name:
                group, index = name.split(".")
                getattr(gen, group)[int(index)] = Timed(f"{label}.{name}", getattr(gen, group)[int(index)])
            else:
                object.__setattr__(gen, name, Timed(f"{label}.{name}", getattr(gen, name)))


def wrap_torch(vocoder, record, sync):
    starts = {}
    for label, gen in generators(vocoder):
        for name in stage_names(gen):
            module, key = gen.get_submodule(name), f"{label}.{name}"

            def before(_module, _inputs, key=key):
                sync()
                starts[key] = time.perf_counter()

            def after(_module, _inputs, _output, key=key):
                sync()
                record[key].append(time.perf_counter() - starts[key])

            module.register_forward_pre_hook(before)
            module.register_forward_hook(after)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--presets", nargs="+", default=["ltx2", "ltx23"], choices=["ltx2", "ltx23"])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()

    import mlx.core as mx
    import torch

    from ltx_ane.models.audio_vae.loader import load_vocoder
    from ltx_ane.models.config import load_preset
    from ltx_ane.models.loading import Source
    from ltx_ane.reference import audio as RA
    from ltx_ane.reference import write_checkpoint

    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    print(f"# Vocoder stages, MLX {mx.__version__} ({mx.default_device()}) against ltx-core, torch {torch.__version__} "
          f"({torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'})\n")
    print(f"Command: `python benchmarks/probe_vocoder_stages.py --device {args.device} --seconds {args.seconds:g} "
          f"--presets {' '.join(args.presets)} --runs {args.runs}`. Random weights, real architecture, bf16; each "
          "stage synchronised on its own (the sum is above a whole call's time); median of the runs after one warm-up.\n")
    tmp = Path(tempfile.mkdtemp())
    for preset in args.presets:
        raw = load_preset(preset)
        reference = RA.build_vocoder(raw)
        path = write_checkpoint(tmp / f"{preset}.safetensors", RA.audio_state_dict(vocoder=reference), raw)
        RA.load_checkpoint_into(reference, path, RA.VOCODER_PREFIXES)
        reference = reference.to(args.device, torch.bfloat16).eval()
        mine = load_vocoder(Source(str(path)), "bf16")
        frames = round(args.seconds * LATENTS_PER_SECOND) * 4
        mel = torch.randn(1, 2, frames, mine.config.mel_bins, generator=torch.Generator().manual_seed(0))
        records = {"mlx": defaultdict(list), "torch": defaultdict(list)}
        wrap_mlx(mine, records["mlx"])
        wrap_torch(reference, records["torch"], sync)
        x_m, x_t = mx.array(mel.numpy()).astype(mx.bfloat16), mel.to(args.device, torch.bfloat16)
        totals = {"mlx": [], "torch": []}
        for run in range(args.runs + 1):
            for side in ("mlx", "torch"):
                start = time.perf_counter()
                if side == "mlx":
                    mx.eval(mine(x_m))
                else:
                    with torch.no_grad():
                        reference(x_t)
                    sync()
                if run:
                    totals[side].append(time.perf_counter() - start)
            if not run:  # the warm-up's stage times are dropped
                for record in records.values():
                    record.clear()
        med = {side: {k: statistics.median(v) * 1e3 for k, v in rec.items()} for side, rec in records.items()}
        print(f"## {preset}, {args.seconds:g} s ({frames} mel frames)\n")
        print("| stage | MLX ms | ltx-core ms | MLX / ltx-core |")
        print("|---|---|---|---|")
        for key in med["torch"]:
            m, t = med["mlx"].get(key, float("nan")), med["torch"][key]
            print(f"| {key} | {m:.2f} | {t:.2f} | {m / t:.2f}x |")
        sums = {side: sum(v.values()) for side, v in med.items()}
        print(f"| sum of stages | {sums['mlx']:.2f} | {sums['torch']:.2f} | {sums['mlx'] / sums['torch']:.2f}x |")
        whole = {side: statistics.median(v) * 1e3 for side, v in totals.items()}
        print(f"| whole call, stages synchronised | {whole['mlx']:.2f} | {whole['torch']:.2f} | "
              f"{whole['mlx'] / whole['torch']:.2f}x |\n", flush=True)


if __name__ == "__main__":
    main()
