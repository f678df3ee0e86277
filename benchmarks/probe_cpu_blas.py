"""Why MLX's Linux CPU rows are slow: one matmul and one conv, MLX's CPU build against torch on the same CPU.

MLX's CPU wheel links the reference BLAS; torch brings its own optimised kernels. Same shapes, float32 and bf16,
best of three calls each after one untimed call.

    python benchmarks/probe_cpu_blas.py > benchmarks/results/cpu_blas.txt
"""

import os
import platform
import time

import mlx.core as mx
import torch


def best_seconds(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    mx.set_default_device(mx.cpu)
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs; MLX {mx.__version__} (CPU), torch {torch.__version__}")
    m, k, n = 8192, 2304, 256
    flops = 2 * m * k * n
    for name, mdt, tdt in (("float32", mx.float32, torch.float32), ("bf16", mx.bfloat16, torch.bfloat16)):
        a, b = mx.random.normal((m, k)).astype(mdt), mx.random.normal((k, n)).astype(mdt)
        mx.eval(a, b)
        ta, tb = torch.randn(m, k, dtype=tdt), torch.randn(k, n, dtype=tdt)
        mlx_s = best_seconds(lambda: mx.eval(a @ b))
        torch_s = best_seconds(lambda: ta @ tb)
        print(f"matmul {m}x{k} @ {k}x{n} {name}: MLX {flops / mlx_s / 1e9:.1f} GFLOP/s, torch {flops / torch_s / 1e9:.1f} GFLOP/s")
    c, h, w = 256, 128, 64  # a 3x3 conv, C -> C, on an H x W image
    flops = 2 * h * w * c * c * 9
    x, wt = mx.random.normal((1, h, w, c)), mx.random.normal((c, 3, 3, c))
    mx.eval(x, wt)
    tx, twt = torch.randn(1, c, h, w), torch.randn(c, c, 3, 3)
    mlx_s = best_seconds(lambda: mx.eval(mx.conv2d(x, wt, padding=1)))
    torch_s = best_seconds(lambda: torch.nn.functional.conv2d(tx, twt, padding=1))
    print(f"conv2d 3x3 {c}->{c} on {h}x{w} float32: MLX {flops / mlx_s / 1e9:.1f} GFLOP/s, torch {flops / torch_s / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    with torch.no_grad():
        main()
