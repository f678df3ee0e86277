"""The decoder's ``conv_out`` (128 -> 48 channels at the last stage's size) under MLX's cuDNN, against the same
conv with more output channels: cuDNN's kernel for it uses a tile 128 channels wide, so 48 output channels may
cost as much as 128. For each output width, the conv's kernel and its time with the device idle before each call
(CUPTI), and the first 48 channels' agreement with the 48-channel conv when the extra weights are zero.
bf16, random values, the input padded in time as the decoder's norm writes it, and in space by the conv (zeros, the
LTX-2 and LTX-2.3 decoders) or before it (reflect).

    python benchmarks/probe_conv_out.py
"""

import statistics
import time

import mlx.core as mx
import numpy as np

from ltx_ane.bench.timing import cuda_kernel_launches

FRAMES, H, W, CIN = 123, 128, 192, 128  # the LTX-2 / LTX-2.3 decoders' last stage at 121x512x768, time-padded


def main() -> None:
    mx.set_default_device(mx.gpu)
    for padding in ("zeros", "reflect"):
        measure(padding)


def measure(padding: str) -> None:
    rng = np.random.default_rng(0)
    pad = 1 if padding == "reflect" else 0
    x = mx.array(rng.standard_normal((1, FRAMES, H + 2 * pad, W + 2 * pad, CIN), dtype=np.float32)).astype(
        mx.bfloat16)
    w48 = rng.standard_normal((48, 3, 3, 3, CIN), dtype=np.float32) / np.sqrt(27 * CIN)
    mx.eval(x)
    reference = None
    for cout in (48, 64, 96, 128):
        w = np.zeros((cout, 3, 3, 3, CIN), dtype=np.float32)
        w[:48] = w48
        wt = mx.array(w).astype(mx.bfloat16)
        mx.eval(wt)

        def call():
            return mx.conv3d(x, wt, padding=(0, 1 - pad, 1 - pad))

        y = call()
        mx.eval(y)
        if reference is None:
            reference = y
        same = bool(mx.array_equal(y[..., :48], reference).item())
        times, names = [], set()
        for _ in range(8):
            time.sleep(0.05)
            ks = [k for k in cuda_kernel_launches(lambda: mx.eval(call()), mx.synchronize)
                  if "fprop" in k["name"] and "init_device_workspace" not in k["name"]]
            times += [k["us"] for k in ks]
            names |= {k["name"].split("tilesize")[-1].split("_g1")[0] for k in ks}
        print(f"{padding}: conv_out {CIN} -> {cout} ch: median {statistics.median(times):.0f} us [{min(times):.0f}-"
              f"{max(times):.0f}], kernel tile {sorted(names)}; first 48 channels equal to the 48-ch conv: {same}",
              flush=True)


if __name__ == "__main__":
    main()
