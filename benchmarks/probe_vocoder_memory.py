"""Where the LTX-2.3 vocoder's memory goes, on MLX's CPU backend: one anti-aliased activation call and one conv1d
(k=11) at the first stage's shape of a 5 s clip, and the whole vocoder on a 1 s clip. Peaks are above the inputs
(weights included in none). Random weights at the real architecture, bf16.

    python benchmarks/probe_vocoder_memory.py > benchmarks/results/vocoder_memory_cpu.txt
"""

import mlx.core as mx
import mlx.nn as nn

from ltx_ane.models.audio_vae.bigvgan import KERNEL, RATIO, anti_aliased_snake, kaiser_sinc_filter, snake_factors
from ltx_ane.models.audio_vae.loader import load_vocoder
from ltx_ane.models.config import load_preset
from ltx_ane.models.loading import Source


def peak_above(fn, *inputs) -> float:
    mx.eval(fn(*inputs))  # first call: traces and caches out of the way
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    mx.eval(fn(*inputs))
    return (mx.get_peak_memory() - base) / 1e6


mx.set_default_device(mx.cpu)
print(f"# MLX {mx.__version__} on the CPU, bf16, random weights")
taps = tuple(kaiser_sinc_filter(0.5 / RATIO, 0.6 / RATIO, KERNEL).reshape(-1).tolist())
for length, channels in [(2485, 768), (79520, 24)]:
    x = mx.random.normal((1, length, channels)).astype(mx.bfloat16)
    factors = snake_factors(mx.zeros((channels,)), mx.zeros((channels,)))
    conv = nn.Conv1d(channels, channels, 11, padding=5)
    conv.set_dtype(mx.bfloat16)
    mx.eval(x, conv.parameters())
    print(f"input (1, {length}, {channels}) {x.nbytes / 1e6:.1f} MB: anti-aliased activation "
          f"{peak_above(anti_aliased_snake(taps, taps), x, *factors):.0f} MB, conv1d k=11 {peak_above(conv, x):.0f} MB")
vocoder = load_vocoder(Source(config=load_preset("ltx23"), random_weights=True), "bf16")
mx.eval(vocoder.parameters())
mel = mx.random.normal((1, 2, 100, 64))
print(f"whole vocoder, 1 s (100 mel frames): {peak_above(vocoder, mel):.0f} MB")
