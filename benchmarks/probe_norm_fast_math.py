"""The VAE norm kernel's SiLU with CUDA's fast-math intrinsics (``__expf``, ``__fdividef``) against the accurate
``expf`` and division it uses: whole-decode time and how far the decoded video moves. Random weights at the released
architectures, bf16, latent 16x16x24 (121 x 512 x 768); 10 timed decodes each after 4 warm-up, interleaved. The
GPU machine's result is in results/norm_silu_fast_math_cuda.txt.

    python benchmarks/probe_norm_fast_math.py ltx23 ltx2
"""

import sys
import time

import mlx.core as mx
import numpy as np

from ltx_ane.models import cuda_jit, fused
from ltx_ane.models.loading import Source
from ltx_ane.models.video_vae.loader import load_decoder

accurate = fused._NORM_SILU_PAD
fast_source = accurate.source.replace("os[j] = store(y / (1.0f + expf(-y)));",
                                      "os[j] = store(__fdividef(y, 1.0f + __expf(-y)));")
assert fast_source != accurate.source, "the kernel's SiLU line changed: update this probe"
fast = cuda_jit.Kernel("norm_silu_pad", fast_source, accurate.header)

for config in sys.argv[1:] or ["ltx23", "ltx2"]:
    decoder = load_decoder(Source(None, config, random_weights=True), "bf16")
    x = mx.random.normal((1, 128, 16, 16, 24)).astype(mx.bfloat16)
    outputs, times = {}, {"accurate": [], "fast": []}
    for i in range(14):
        for name, kernel in (("accurate", accurate), ("fast", fast)):
            fused._NORM_SILU_PAD = kernel
            mx.synchronize()
            start = time.perf_counter()
            outputs[name] = decoder(x)
            mx.eval(outputs[name])
            if i >= 4:
                times[name].append(time.perf_counter() - start)
    a, f = (np.array(outputs[n].astype(mx.float32)) for n in ("accurate", "fast"))
    print(config, {n: f"{np.median(v) * 1e3:.1f} ms [{min(v) * 1e3:.1f}-{max(v) * 1e3:.1f}]" for n, v in times.items()},
          "max |fast - accurate| / max|accurate|", float(np.abs(a - f).max() / np.abs(a).max()), flush=True)
fused._NORM_SILU_PAD = accurate
