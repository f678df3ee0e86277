"""Where the MLX upscalers' memory above the weights goes: each stage alone (compiled and op by op), the whole call
(compiled, and op by op as the first call of a shape runs), and one res-block conv alone. Random weights at the
released architectures, bf16; the GPU machine's results are in results/upscaler_memory_cuda.txt.

A stage's figure is its peak above the memory held before it, "/" its output; a negative figure means buffers of
the previous stage were returned (by the backend's completion thread) while this one ran.

    python benchmarks/probe_upscaler_memory.py
"""

import mlx.core as mx

from ltx_ane.models.loading import Source
from ltx_ane.models.upscaler.loader import load_upscaler

MB = 1e6
CASES = (("temporal", "temporal-x2", (1, 128, 16, 16, 24)), ("spatial", "spatial-x2", (1, 128, 16, 11, 20)))


def fresh_baseline() -> int:
    """Memory held now, with the allocator's cache emptied and the peak reset."""
    mx.synchronize()
    mx.clear_cache()
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    return base


for kind, preset, shape in CASES:
    model = load_upscaler(Source(None, preset, random_weights=True), "bf16")
    mx.eval(model.parameters())
    x = mx.random.normal(shape).astype(mx.bfloat16)
    mx.eval(x)
    channels_last = x.transpose(0, 2, 3, 4, 1)
    for compiled in (False, True):
        stages = [mx.compile(s) for s in model.stages()] if compiled else model.stages()
        for _ in range(2):  # the second pass is reported (the first traces and builds kernels)
            h, report = channels_last, []
            fresh_baseline()
            for i, stage in enumerate(stages):
                mx.reset_peak_memory()
                before = mx.get_active_memory()
                h = stage(h)
                mx.eval(h)
                report.append(f"{i}:{(mx.get_peak_memory() - before) / MB:.0f}/{h.nbytes / MB:.0f}")
        print(kind, "compiled" if compiled else "eager", "stage peak above before / output MB:", " ".join(report),
              flush=True)
    for compiled in (False, True):
        model.compile = compiled
        model._traced = None
        for _ in range(3):
            base = fresh_baseline()
            mx.eval(model(x))
        print(kind, "whole call compile", compiled, f"peak above resident {(mx.get_peak_memory() - base) / MB:.0f} MB",
              flush=True)
    weight = model.res_blocks[0].conv1.weight
    h = mx.random.normal(channels_last.shape[:-1] + (weight.shape[-1],)).astype(mx.bfloat16)
    mx.eval(h)
    for _ in range(2):
        before = fresh_baseline()
        y = mx.conv3d(h, weight, 1, 1)
        mx.eval(y)
    print(kind, "res conv alone", h.shape, f"peak above {(mx.get_peak_memory() - before) / MB:.0f} MB output "
          f"{y.nbytes / MB:.0f}", flush=True)
    del model
