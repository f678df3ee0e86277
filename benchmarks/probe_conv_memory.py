"""How much device memory one MLX conv3d call needs beyond its output, at the upscalers' shapes (bf16).

Each shape is run once and four times in one evaluation; "extra per conv" is the peak above the inputs minus the
outputs, per call. Random values (memory does not depend on them).

    python benchmarks/probe_conv_memory.py          # results/conv_memory_cuda.txt came from this on an H200
"""

import mlx.core as mx
import mlx.nn as nn

mx.set_default_device(mx.gpu)
for shape, cin, cout in [((1, 16, 22, 40, 1024), 1024, 1024), ((1, 16, 11, 20, 1024), 1024, 1024),
                         ((1, 31, 16, 24, 512), 512, 512), ((1, 16, 16, 24, 512), 512, 1024)]:
    conv = nn.Conv3d(cin, cout, 3, padding=1)
    conv.set_dtype(mx.bfloat16)
    x = mx.random.normal(shape).astype(mx.bfloat16)
    mx.eval(x, conv.parameters())
    for depth in (1, 4):
        mx.synchronize()
        mx.clear_cache()
        base = mx.get_active_memory()
        mx.reset_peak_memory()
        ys = [conv(x) for _ in range(depth)]
        mx.eval(ys)
        peak = mx.get_peak_memory() - base
        out = ys[0].nbytes
        print(f"conv3d {shape}->{cout} x{depth} in one eval: peak above inputs {peak/1e6:.0f} MB, outputs "
              f"{depth*out/1e6:.0f} MB, extra per conv {(peak-depth*out)/depth/1e6:.0f} MB", flush=True)
        del ys
