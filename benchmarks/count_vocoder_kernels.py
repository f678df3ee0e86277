"""Kernels one vocoder call launches, counted from MLX's lazy graph (``ltx_ane.bench.graph.kernel_ops``): both
generators at the real architecture with random weights, bf16, one lazy graph (no queue), after a first call has
built what is cached per loaded weights. Runs on any machine (nothing is evaluated on a GPU).

    python benchmarks/count_vocoder_kernels.py > benchmarks/results/vocoder_kernels.txt
"""

import argparse
from collections import Counter

import mlx.core as mx

from ltx_ane.bench.graph import kernel_ops
from ltx_ane.models.audio_vae.loader import load_vocoder
from ltx_ane.models.audio_vae.vocoder import Generator
from ltx_ane.models.config import load_preset
from ltx_ane.models.loading import Source


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=20, help="mel frames of the input")
    args = p.parse_args()
    Generator.steps_in_flight = None  # one lazy graph: the residual steps' sync points evaluate nothing
    print(f"# MLX {mx.__version__}, random weights, bf16, {args.frames} mel frames")
    for preset in ("ltx2", "ltx23"):
        vocoder = load_vocoder(Source(config=load_preset(preset), random_weights=True), "bf16")
        mel = mx.random.normal((1, 2, args.frames, 64))
        mx.eval(vocoder.parameters(), mel, vocoder(mel))
        ops = kernel_ops(vocoder(mel))
        top = ", ".join(f"{name[:40]} {n}" for name, n in Counter(ops).most_common(6))
        print(f"{preset}: {len(ops)} kernels per call; most frequent: {top}")


if __name__ == "__main__":
    main()
