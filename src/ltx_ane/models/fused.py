"""Hand-written GPU kernels for the steps MLX's compiler cannot fuse.

``norm_silu_pad`` is the video VAE's ``pad(SiLU(PixelNorm(x + bias)))``: the input of every conv in a residual block
and of ``conv_out``. Written with MLX ops it is four or five passes over the activation (the conv's bias add, the RMS
norm, SiLU, then one copy per padded axis: ``mx.compile`` fuses neither a reduction nor a concatenation with its
neighbours). On an H200 those passes were a third of the decoders' kernel time against ltx-core
(benchmarks/results/kernels_vae_cuda.md). The kernel reads each input row once and writes the padded output once.

It exists for MLX's CUDA backend only: it was written and tested on the lent NVIDIA machine. On Metal (no Mac was
available to test a Metal twin) and on the CPU, ``layers.norm_silu_pad`` runs the same steps as MLX ops, the
computation every parity test checks.
"""

from __future__ import annotations

import mlx.core as mx

PIXEL_NORM_EPS = 1e-8  # ltx-core's PixelNorm default (the VAE's)

_HEADER = """
__device__ __forceinline__ int reflect_index(int i, int n) { return i < 0 ? -i : (i >= n ? 2 * n - 2 - i : i); }
"""

# One warp per output row (a position's C channels). Template constants: T the dtype, CHUNKS the 16-byte loads per
# lane (C <= 32 * CHUNKS * 16 / sizeof(T)), CAUSAL the time padding (2 copies of frame 0 in front, else one copy of
# the first frame in front and of the last behind), PAD_HW 1 for reflect padding of H and W, 0 for none.
_SOURCE = """
    constexpr int V = 16 / sizeof(T);
    const int F = x_shape[1], H = x_shape[2], W = x_shape[3], C = x_shape[4];
    const int Fo = F + 2, Ho = H + 2 * PAD_HW, Wo = W + 2 * PAD_HW;
    const long row = ((long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (row >= (long)x_shape[0] * Fo * Ho * Wo) return;  // a whole warp returns: the shuffles below stay full
    const int wo = row % Wo;
    long rest = row / Wo;
    const int ho = rest % Ho;
    rest /= Ho;
    const int fo = rest % Fo;
    const long b = rest / Fo;
    const int fi = CAUSAL ? max(fo - 2, 0) : min(max(fo - 1, 0), F - 1);
    const int hi = reflect_index(ho - PAD_HW, H), wi = reflect_index(wo - PAD_HW, W);
    const T* src = x + (((b * F + fi) * H + hi) * W + wi) * (long)C;
    T* dst = out + row * (long)C;
    float v[CHUNKS * V];
    float ss = 0.0f;
    #pragma unroll
    for (int k = 0; k < CHUNKS; ++k) {
        const int c = (lane + 32 * k) * V;
        if (c < C) {
            alignas(16) T xs[V];
            alignas(16) T bs[V];
            *reinterpret_cast<uint4*>(xs) = *reinterpret_cast<const uint4*>(src + c);
            *reinterpret_cast<uint4*>(bs) = *reinterpret_cast<const uint4*>(bias + c);
            #pragma unroll
            for (int j = 0; j < V; ++j) {
                const float y = static_cast<float>(xs[j]) + static_cast<float>(bs[j]);
                v[k * V + j] = y;
                ss += y * y;
            }
        }
    }
    #pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) ss += __shfl_xor_sync(0xffffffff, ss, offset);
    const float inv = rsqrtf(ss / C + EPS);
    #pragma unroll
    for (int k = 0; k < CHUNKS; ++k) {
        const int c = (lane + 32 * k) * V;
        if (c < C) {
            alignas(16) T os[V];
            #pragma unroll
            for (int j = 0; j < V; ++j) {
                const float y = v[k * V + j] * inv;
                os[j] = static_cast<T>(y / (1.0f + expf(-y)));
            }
            *reinterpret_cast<uint4*>(dst + c) = *reinterpret_cast<const uint4*>(os);
        }
    }
"""

_kernel = None
_zeros: dict = {}
MAX_CHUNKS = 8


def _cuda_kernel():
    global _kernel
    if _kernel is None:
        source = _SOURCE.replace("EPS", f"{PIXEL_NORM_EPS!r}f")
        _kernel = mx.fast.cuda_kernel("norm_silu_pad", ["x", "bias"], ["out"], source, header=_HEADER)
    return _kernel


def _chunks(x: mx.array) -> int | None:
    """16-byte loads per lane for x's channels (a power of two), or None where the kernel does not apply."""
    per_load = 16 // x.dtype.size
    c = x.shape[-1]
    if x.ndim != 5 or c % per_load:
        return None
    chunks = 1
    while 32 * per_load * chunks < c:
        chunks *= 2
    return chunks if chunks <= MAX_CHUNKS else None


def fused_available(x: mx.array) -> bool:
    """Whether :func:`norm_silu_pad` applies to channels-last (B, F, H, W, C) x here."""
    if not (mx.default_device() == mx.gpu and mx.cuda.is_available()):
        return False
    if x.dtype not in (mx.bfloat16, mx.float16, mx.float32) or _chunks(x) is None:
        return False
    b, f, h, w, _ = x.shape
    return b * (f + 2) * (h + 2) * (w + 2) * 32 < 2**31  # one warp per output row, a 32-bit launch grid


def norm_silu_pad(x: mx.array, bias: mx.array | None, causal: bool, reflect_hw: bool) -> mx.array:
    """``pad_frames(SiLU(PixelNorm(x + bias)), causal, reflect_hw)`` as one CUDA kernel, where
    :func:`fused_available`; ``bias`` (C,) or None. The result is computed in float32 and rounded once."""
    b, f, h, w, c = x.shape
    if bias is None:
        key = (c, x.dtype)
        if key not in _zeros:
            _zeros[key] = mx.zeros((c,), x.dtype)
        bias = _zeros[key]
    pad_hw = 1 if reflect_hw else 0
    shape = (b, f + 2, h + 2 * pad_hw, w + 2 * pad_hw, c)
    rows = shape[0] * shape[1] * shape[2] * shape[3]
    (out,) = _cuda_kernel()(
        inputs=[x, bias.astype(x.dtype)],
        template=[("T", x.dtype), ("CHUNKS", _chunks(x)), ("CAUSAL", bool(causal)), ("PAD_HW", pad_hw)],
        grid=(rows * 32, 1, 1),
        threadgroup=(128, 1, 1),
        output_shapes=[shape],
        output_dtypes=[x.dtype],
    )
    return out
