"""The VAE's large convolutions alone, MLX against torch (cuDNN) in one process: does MLX run the same cuDNN kernel
as fast outside the decoder? In the LTX-2.3 decode the 121-frame stages' convolutions take 5-11 % longer under MLX
than in ltx-core with the same kernels (results/kernels_vae_launches_cuda.md).

For each shape, 10 convs back to back on each side (a 3x3x3 kernel, zero padding of H and W inside the conv, the
input padded in time as the decoder pads it), three rounds interleaved; the device time of each conv kernel from
CUPTI, and the kernel names. bf16, random values; torch's input is channels-last, so cuDNN reads it as it is.
Each MLX conv is evaluated on its own (as a decoder piece), torch's ten are queued back to back.

    python benchmarks/probe_conv_alone.py
"""

import statistics

import mlx.core as mx
import numpy as np
import torch

from ltx_ane.bench.timing import cuda_kernel_launches

SHAPES = {  # name: (frames after time padding, H, W, channels in, channels out)
    "LTX-2.3 61-frame stage, 512 ch": (63, 64, 96, 512, 512),
    "LTX-2.3 121-frame stage, 256 ch": (123, 64, 96, 256, 256),
    "LTX-2.3 last stage, 128 ch": (123, 128, 192, 128, 128),
    "conv_out, 128 -> 48 ch": (123, 128, 192, 128, 48),
}


def conv_times(fn, sync) -> tuple[list[float], set[str]]:
    launches = cuda_kernel_launches(fn, sync)
    convs = [k for k in launches if ("fprop" in k["name"] or "conv" in k["name"].lower())
             and "init_device_workspace" not in k["name"]]
    return [k["us"] for k in convs], {k["name"][:120] for k in convs}


for name, (f, h, w, cin, cout) in SHAPES.items():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, f, h, w, cin), dtype=np.float32)
    wt = (rng.standard_normal((cout, 3, 3, 3, cin), dtype=np.float32) / np.sqrt(27 * cin))
    mx_x, mx_w = mx.array(x).astype(mx.bfloat16), mx.array(wt).astype(mx.bfloat16)
    t_x = torch.from_numpy(x).cuda().bfloat16().permute(0, 4, 1, 2, 3).contiguous(memory_format=torch.channels_last_3d)
    t_w = torch.from_numpy(wt).cuda().bfloat16().permute(0, 4, 1, 2, 3).contiguous(memory_format=torch.channels_last_3d)
    mx.eval(mx_x, mx_w)

    def mlx_calls():
        outs = []
        for _ in range(10):
            y = mx.conv3d(mx_x, mx_w, padding=(0, 1, 1))
            mx.eval(y)  # each its own graph, as a decoder piece
            outs.append(y)
        return outs

    def torch_calls():
        return [torch.nn.functional.conv3d(t_x, t_w, padding=(0, 1, 1)) for _ in range(10)]

    mlx_calls(), torch_calls()
    mx.synchronize(), torch.cuda.synchronize()
    results = {"mlx": [], "torch": []}
    names = {"mlx": set(), "torch": set()}
    for _ in range(3):
        for side, fn in (("mlx", mlx_calls), ("torch", torch_calls)):
            times, kernels = conv_times(fn, lambda: (mx.synchronize(), torch.cuda.synchronize()))
            results[side] += times
            names[side] |= kernels
    m, t = statistics.median(results["mlx"]), statistics.median(results["torch"])
    print(f"{name}: MLX {m:.0f} us [{min(results['mlx']):.0f}-{max(results['mlx']):.0f}], torch {t:.0f} us "
          f"[{min(results['torch']):.0f}-{max(results['torch']):.0f}], MLX / torch {m / t:.3f}; kernels: MLX "
          f"{sorted(names['mlx'])}, torch {sorted(names['torch'])}", flush=True)
    del mx_x, mx_w, t_x, t_w
    mx.clear_cache()
    torch.cuda.empty_cache()
