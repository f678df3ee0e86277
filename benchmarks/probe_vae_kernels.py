"""The VAE's own CUDA kernels (``fused.norm_silu_pad``, ``fused.depth_to_space``, ``fused.residual_add``) alone, at
the LTX-2.3 decoder's shapes for 121 x 512 x 768, against variants of themselves and a copy of the same bytes: how
close to the memory's speed do they run, and what holds them back?

Variants: ``committed`` (the kernels in ``models/fused.py``), ``64-bit index`` (the upsampling's index arithmetic in
64-bit integers, as before 32-bit indices were adopted: a 64-bit division is a subroutine of dozens of instructions
on a GPU), ``accurate SiLU`` (``expf`` and an IEEE division instead of ``__expf`` / ``__fdividef``), ``written over
h`` (the residual add's in-place form), ``mlx ops`` (MLX's own fused kernel for the residual add), ``add + norm``
(``fused.add_norm_silu_pad``, the residual add and the next block's norm in one pass, against the two kernels) and
``copy`` (a kernel that reads the largest input and writes the output's bytes, 16 per thread: about the floor).
Each kernel's device time from CUPTI, median of 10 calls after 2 warm-up, bf16, random values. Every variant's output is checked against
the committed kernel's (the index variants must equal it bit for bit).

    python benchmarks/probe_vae_kernels.py [CASE-PART ...]   # only the cases whose names contain one of them
"""

import statistics
import sys

import mlx.core as mx
import numpy as np

from ltx_ane.bench.timing import cuda_kernel_launches
from ltx_ane.models import cuda_jit, fused, layers


def variant(kernel: cuda_jit.Kernel, replacements: list[tuple[str, str]]) -> cuda_jit.Kernel:
    source = kernel.source
    for new, old in replacements:
        assert new in source, f"{kernel.name}: {new!r} is gone: update this probe"
        source = source.replace(new, old)
    return cuda_jit.Kernel(kernel.name, source, kernel.header)


NORM = fused._NORM_SILU_PAD
NORM_VARIANTS = {  # (the norm's 64-bit-index variant measured the kernel before it read rows once: gone with it)
    "committed": NORM,
    "accurate SiLU": variant(NORM, [("store(silu(v[r][k * V + j] * inv))",
                                     "store(v[r][k * V + j] * inv / (1.0f + expf(-v[r][k * V + j] * inv)))")]),
}
D2S = fused._DEPTH_TO_SPACE
D2S_VARIANTS = {
    "committed": D2S,
    "64-bit index": variant(D2S, [
        ("const unsigned i = (blockIdx.x * blockDim.x + threadIdx.x) * V;",
         "const long i = ((long)blockIdx.x * blockDim.x + threadIdx.x) * V;"),
        ("if (i >= (unsigned)B * F * H * W * C) return;", "if (i >= (long)B * F * H * W * C) return;"),
        ("unsigned pos = i / C;", "long pos = i / C;"),
        ("const unsigned b = pos / F;", "const long b = pos / F;"),
        ("const unsigned row = ((b * Fo + fo) * H * PH + h * PH + oh) * (W * PW) + w * PW + ow;",
         "const long row = ((b * Fo + fo) * H * PH + h * PH + oh) * (long)(W * PW) + w * PW + ow;"),
    ]),
}
COPY = cuda_jit.Kernel("copy_bytes", """
void copy_bytes(const T* x, T* out, int n_in, int n_out) {
    const unsigned i = (blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (i >= (unsigned)n_out) return;
    *reinterpret_cast<Pack*>(out + i) = *reinterpret_cast<const Pack*>(x + i % (unsigned)n_in);
}
""")


def copy_floor(inputs: list[mx.array], out_shape: tuple) -> mx.array:
    """The largest input read (wrapping around where the output is larger) and the output written."""
    x = max(inputs, key=lambda a: a.size)
    n_out = int(np.prod(out_shape))
    (out,) = COPY(x.dtype, inputs=[x], output_shapes=[out_shape], output_dtypes=[x.dtype],
                  scalars=[x.size, n_out], grid=(n_out // 8, 1, 1), threadgroup=(256, 1, 1))
    return out


def device_us(fn) -> float:
    for _ in range(2):
        mx.eval(fn())
    times = []
    for _ in range(10):
        launches = cuda_kernel_launches(lambda: mx.eval(fn()), mx.synchronize)
        times.append(sum(k["us"] for k in launches))
    return statistics.median(times)


def wanted(name: str) -> bool:
    return not sys.argv[1:] or any(part in name for part in sys.argv[1:])


def report(name: str, nbytes: int, results: dict) -> None:
    cells = ", ".join(f"{k} {us:.0f} us ({nbytes / us / 1e6:.2f} TB/s)" for k, us in results.items())
    print(f"{name} [{nbytes / 1e6:.0f} MB moved]: {cells}", flush=True)


NORM_CASES = {  # name: (input shape, causal)
    "last stage 121x128x192x128": ((1, 121, 128, 192, 128), False),
    "121-frame stage 121x64x96x256": ((1, 121, 64, 96, 256), False),
    "61-frame stage 61x64x96x512": ((1, 61, 64, 96, 512), False),
    "encoder first stage (causal) 121x128x192x128": ((1, 121, 128, 192, 128), True),
}
D2S_CASES = {  # name: (conv output shape, stride, residual channels or None, drop, width_first)
    "compress_space 121x64x96x512 -> 256 ch residual": ((1, 121, 64, 96, 512), (1, 2, 2), 256, False, False),
    "compress_time 61x64x96x512, drop": ((1, 61, 64, 96, 512), (2, 1, 1), 512, True, False),
    "unpatchify 121x128x192x48": ((1, 121, 128, 192, 48), (1, 4, 4), None, False, True),
}

rng = np.random.default_rng(0)
for name, (shape, causal) in NORM_CASES.items():
    if not wanted(f"norm_silu_pad {name}"):
        continue
    x = mx.array(rng.standard_normal(shape, dtype=np.float32)).astype(mx.bfloat16)
    bias = mx.array(rng.standard_normal(shape[-1:], dtype=np.float32)).astype(mx.bfloat16)
    mx.eval(x, bias)
    outputs, results = {}, {}
    for key, kernel in NORM_VARIANTS.items():
        fused._NORM_SILU_PAD = kernel
        outputs[key] = fused.norm_silu_pad(x, bias, causal, False)
        mx.eval(outputs[key])
        results[key] = device_us(lambda: fused.norm_silu_pad(x, bias, causal, False))
    fused._NORM_SILU_PAD = NORM
    out_shape = outputs["committed"].shape
    results["copy"] = device_us(lambda: copy_floor([x], out_shape))
    report(f"norm_silu_pad {name}", x.nbytes + outputs["committed"].nbytes, results)
    ref = np.array(outputs["committed"].astype(mx.float32))
    for key, out in outputs.items():
        diff = np.array(out.astype(mx.float32)) - ref
        print(f"  {key}: values differing from committed {np.count_nonzero(diff) / diff.size:.2e}, "
              f"max |diff| {np.abs(diff).max():.3g}", flush=True)
    del x, outputs

for name, (shape, stride, residual_channels, drop, width_first) in D2S_CASES.items():
    if not wanted(f"depth_to_space {name}"):
        continue
    x = mx.array(rng.standard_normal(shape, dtype=np.float32)).astype(mx.bfloat16)
    bias = mx.array(rng.standard_normal(shape[-1:], dtype=np.float32)).astype(mx.bfloat16)
    residual = None if residual_channels is None else mx.array(
        rng.standard_normal((*shape[:-1], residual_channels), dtype=np.float32)).astype(mx.bfloat16)
    mx.eval(x, bias, *([] if residual is None else [residual]))

    def call():
        return fused.depth_to_space(x, stride, bias, residual, drop, width_first)

    outputs, results = {}, {}
    for key, kernel in D2S_VARIANTS.items():
        fused._DEPTH_TO_SPACE = kernel
        outputs[key] = call()
        mx.eval(outputs[key])
        results[key] = device_us(call)
    fused._DEPTH_TO_SPACE = D2S
    out_shape = outputs["committed"].shape
    results["copy"] = device_us(lambda: copy_floor([x], out_shape))
    moved = x.nbytes + (0 if residual is None else residual.nbytes) + outputs["committed"].nbytes
    report(f"depth_to_space {name}", moved, results)
    ref = np.array(outputs["committed"].astype(mx.float32))
    for key, out in outputs.items():
        diff = np.array(out.astype(mx.float32)) - ref
        print(f"  {key}: values differing from committed {np.count_nonzero(diff) / diff.size:.2e}", flush=True)
    del x, residual, outputs

if wanted("residual_add last stage"):
    shape = (1, 121, 128, 192, 128)  # the last stage's residual add
    x = mx.array(rng.standard_normal(shape, dtype=np.float32)).astype(mx.bfloat16)
    bias = mx.array(rng.standard_normal(shape[-1:], dtype=np.float32)).astype(mx.bfloat16)
    h = mx.array(rng.standard_normal(shape, dtype=np.float32)).astype(mx.bfloat16)
    mx.eval(x, bias, h)
    results = {
        "committed": device_us(lambda: fused.residual_add(x, h, bias)),
        # a fresh h for each call (its copy's time taken off): the kernel writes over it
        "written over h": (device_us(lambda: fused.residual_add(x, h + 0, bias, overwrite=True))
                           - device_us(lambda: h + 0)),
        "mlx ops": device_us(lambda: layers.biased_residual(x, h, bias)),
        "copy": device_us(lambda: copy_floor([x], shape)),
    }
    report("residual_add last stage 121x128x192x128", 3 * x.nbytes, results)
    same = mx.array_equal(fused.residual_add(x, h, bias), layers.biased_residual(x, h, bias)).item()
    print(f"  committed equals the mlx ops bit for bit: {same}", flush=True)

if wanted("add + norm last stage"):
    shape = (1, 121, 128, 192, 128)
    x, h = (mx.array(rng.standard_normal(shape, dtype=np.float32)).astype(mx.bfloat16) for _ in range(2))
    bias = mx.array(rng.standard_normal(shape[-1:], dtype=np.float32)).astype(mx.bfloat16)
    padded = fused.norm_silu_pad(x, None, False, False)
    mx.eval(x, h, bias, padded)
    fresh_h = device_us(lambda: h + 0)  # each fused call writes over a fresh h; that copy's time taken off
    results = {
        "add, then norm": (device_us(lambda: fused.residual_add(x, h, bias))
                           + device_us(lambda: fused.norm_silu_pad(x, None, False, False))),
        "add + norm": device_us(lambda: fused.add_norm_silu_pad(x, h + 0, bias, False, False, into=padded)) - fresh_h,
        "norm alone, written into a buffer": device_us(lambda: fused.norm_silu_pad(x, None, False, False,
                                                                                   into=padded)),
        "copy": device_us(lambda: copy_floor([x], padded.shape)),
    }
    report("add + norm last stage 121x128x192x128", 3 * x.nbytes + padded.nbytes, results)
    want_sum = fused.residual_add(x, h, bias)
    want = fused.norm_silu_pad(want_sum, None, False, False)
    got_sum, got = fused.add_norm_silu_pad(x, h + 0, bias, False, False, into=padded)
    same = mx.array_equal(got_sum, want_sum).item() and mx.array_equal(got, want).item()
    print(f"  add + norm equals the two kernels bit for bit: {same}", flush=True)
