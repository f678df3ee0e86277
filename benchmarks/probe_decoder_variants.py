"""Decoder variants against the landed decoder, interleaved in one process: whole-decode time, peak memory, and the
how far each output moves from the landed decoder's (PSNR against it, share of values that differ; the accuracy
against float32 is bench_vae.py's). Random weights at the released
architectures, bf16, latent 16x16x24 (121 x 512 x 768 decoded); 10 timed decodes each after 3 warm-up rounds.

Variants: ``ops-shuffle``: the upsampling's and unpatchify's rearrangements as MLX ops (before the depth-to-space
kernel); ``landed``: the code as it is; ``rcp``: SiLU as ``y * __frcp_rn(1 + expf(-y))`` (a correctly rounded
reciprocal) instead of a division; ``steps``: each norm and conv of a residual block its own queued piece instead of
one piece a block, with every piece queued (``queue_fraction`` None) at depth 1 or 2.

    MLX_ENABLE_TF32=0 python benchmarks/probe_decoder_variants.py ltx23 ltx2
"""

import sys
import time

import mlx.core as mx
import numpy as np

from ltx_ane.bench.timing import psnr
from ltx_ane.models import cuda_jit, fused, layers
from ltx_ane.models.loading import Source
from ltx_ane.models.video_vae.loader import load_decoder

DIVISION = "os[j] = store(y / (1.0f + expf(-y)));"
accurate = fused._NORM_SILU_PAD
assert DIVISION in accurate.source, "the kernel's SiLU line changed: update this probe"
rcp = cuda_jit.Kernel("norm_silu_pad", accurate.source.replace(DIVISION, "os[j] = store(y * __frcp_rn(1.0f + expf(-y)));"),
                      accurate.header)
block_call = layers.ResnetBlock3D.__call__
shuffle_available = fused.depth_to_space_available


def by_steps(self, x, causal):
    """The residual block with a sync point after each norm and conv."""
    p = layers.eval_if_large(layers.norm_silu_pad(x, None, causal, self.conv1.reflect))
    h = layers.eval_if_large(self.conv1.convolve(p, bias=False))
    p = layers.eval_if_large(layers.norm_silu_pad(h, self.conv1.conv.bias, causal, self.conv2.reflect))
    h = layers.eval_if_large(self.conv2.convolve(p, bias=False))
    return layers.biased_residual(x, h, self.conv2.conv.bias)


VARIANTS = {  # name: (depth-to-space kernel, SiLU kernel, residual block, queue depth, queue fraction)
    "ops-shuffle": (False, accurate, block_call, 1, 0.6),
    "landed": (True, accurate, block_call, 1, 0.6),
    "rcp": (True, rcp, block_call, 1, 0.6),
    "steps depth 1": (True, accurate, by_steps, 1, None),
    "rcp + steps depth 1": (True, rcp, by_steps, 1, None),
    "rcp + steps depth 2": (True, rcp, by_steps, 2, None),
    "rcp + steps depth 1, fraction 0.6": (True, rcp, by_steps, 1, 0.6),
}


def configure(decoder, variant):
    kernel_shuffle, silu, block, depth, fraction = VARIANTS[variant]
    fused.depth_to_space_available = shuffle_available if kernel_shuffle else (lambda *a: False)
    fused._NORM_SILU_PAD = silu
    layers.ResnetBlock3D.__call__ = block
    decoder.sync_depth, decoder.queue_fraction = depth, fraction


for config in sys.argv[1:] or ["ltx23", "ltx2"]:
    decoder = load_decoder(Source(None, config, random_weights=True), "bf16")
    x = mx.random.normal((1, 128, 16, 16, 24), key=mx.random.key(0)).astype(mx.bfloat16)
    times, peaks, outputs = {v: [] for v in VARIANTS}, {v: [] for v in VARIANTS}, {}
    for i in range(13):
        for variant in VARIANTS:
            configure(decoder, variant)
            mx.synchronize()
            mx.clear_cache()
            mx.reset_peak_memory()
            start = time.perf_counter()
            out = decoder(x)
            mx.eval(out)
            if i >= 3:
                times[variant].append(time.perf_counter() - start)
                peaks[variant].append(mx.get_peak_memory())
            outputs[variant] = out
    landed = np.array(outputs["landed"].astype(mx.float32))
    for variant in VARIANTS:
        out = np.array(outputs[variant].astype(mx.float32))
        t = np.array(times[variant]) * 1e3
        print(f"{config} {variant:36s} {np.median(t):6.1f} ms [{t.min():.1f}-{t.max():.1f}]  peak "
              f"{max(peaks[variant]) / 1e9:.2f} GB (median {np.median(peaks[variant]) / 1e9:.2f})  PSNR vs landed "
              f"{psnr(landed, out):.1f} dB, differs in {np.mean(out != landed):.2e} of values", flush=True)
    configure(decoder, "landed")
    del decoder, outputs
    mx.clear_cache()
