"""Hand-written GPU kernels for the steps MLX's compiler cannot fuse.

``norm_silu_pad`` is the video VAE's ``pad(SiLU(PixelNorm(x + bias)))``: the input of every conv in a residual block
and of ``conv_out``. Written with MLX ops it is four or five passes over the activation (the conv's bias add, the RMS
norm, SiLU, then one copy per padded axis: ``mx.compile`` fuses neither a reduction nor a concatenation with its
neighbours). On an H200 those passes were a third of the decoders' kernel time against ltx-core
(benchmarks/results/kernels_vae_cuda.md). The kernel reads each input row once and writes the padded output once.

``depth_to_space`` is the decoder's upsampling: the rearrangement of a conv's output with its bias and residual added.
``residual_add`` ends the VAE's residual blocks, written over the conv output it reads where that is safe.

``group_norm_silu`` is the latent upscalers' ``SiLU(GroupNorm(x + bias) [+ residual])``, whose MLX-ops form writes
float32 copies of the activation that MLX's CUDA backend holds until a queued stage has run (see its section).

They exist for MLX's CUDA backend only (built and cached through ``cuda_jit``): they were written and tested on the
lent NVIDIA machine. On Metal (no Mac was available to test a Metal twin) and on the CPU, ``layers`` runs the same
steps as MLX ops, the computation every parity test checks; ``upscaler.model.GroupNorm`` likewise.
"""

from __future__ import annotations

import mlx.core as mx

from ltx_ane.models import cuda_jit

PIXEL_NORM_EPS = 1e-8  # ltx-core's PixelNorm default (the VAE's)

# SiLU in float32 through the GPU's hardware exp2 and reciprocal (``__expf``, ``__fdividef``) rather than the
# accurate ``expf`` and IEEE division: the norm kernels are bound by their arithmetic as much as by memory, and this
# takes the VAE's norm at the last stage from 705 to 552 us of an H200 (a copy of the same bytes: 361 us). The error
# is a few float32 units (where ``__fdividef`` gives 0, y < -87, SiLU is below 1e-36 in magnitude): rounded to bf16,
# 5 values in a million differ from the accurate form, by one unit (benchmarks/results/vae_kernels_cuda.txt).
# (An earlier probe compared whole decodes with random weights, whose 50-odd layers amplify any rounding difference
# to ~1.8 % of the output's range, and read that as an error: norm_silu_fast_math_cuda.txt.)
_SILU = """
__device__ __forceinline__ float silu(float y) { return __fdividef(y, 1.0f + __expf(-y)); }
"""

# LANES threads per input row (a position's C channels), each CHUNKS 16-byte loads of it (C <= LANES * CHUNKS * V);
# a warp takes 32 / LANES rows at once, R times over, and issues all R loads before reducing: one row of a narrow
# activation (C = 128 in bf16 is 256 bytes) is too little in flight per warp to keep the memory busy: with a warp per
# row the LTX-2.3 decoder's norms took 23.2 ms of an H200's time, this way 17.1 ms (kernels_vae_fused_cuda.md,
# kernels_vae_rows_cuda.md in benchmarks/results). Each row's sum of squares still reduces over the same lanes in the
# same order as with a warp per row. Row indices are 32-bit: a 64-bit division is a subroutine of dozens of
# instructions, and the kernel is bound by its arithmetic as much as by memory (vae_kernels_cuda.txt: 32-bit indices
# 796 -> 705 us at the last stage, a copy of the same bytes 361 us). SiLU is :data:`_SILU`.
# causal: the time padding (2 copies of frame 0 in front, else one copy of the first frame in front and of the last
# behind); pad_hw 1 for reflect padding of H and W, 0 for none. Each input row is read by one thread group, which
# writes its result to every padded position that copies it, so that with ``with_residual`` it may also write the
# sum ``residual + (x + bias)`` back over its own row of x: the residual blocks' add and the next block's norm in one
# pass. ``into_target`` writes the padded result into ``target``'s buffer instead of ``out``.
_NORM_SILU_PAD = cuda_jit.Kernel("norm_silu_pad", """
void norm_silu_pad(const T* x, const T* bias, const T* residual, const T* target, T* out, int B, int F, int H, int W,
                   int C, int causal, int pad_hw, int with_residual, int into_target) {
    constexpr int SUB = 32 / LANES;
    const int Fo = F + 2, Ho = H + 2 * pad_hw, Wo = W + 2 * pad_hw;
    const unsigned rows = (unsigned)B * F * H * W;
    const unsigned warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31, sub = lane / LANES, l = lane % LANES;
    T* dst_base = into_target ? const_cast<T*>(target) : out;
    float bv[CHUNKS * V];
    #pragma unroll
    for (int k = 0; k < CHUNKS; ++k) {
        const int c = (l + LANES * k) * V;
        Pack bp = {};
        if (c < C) bp = *reinterpret_cast<const Pack*>(bias + c);
        const T* bs = reinterpret_cast<const T*>(&bp);
        #pragma unroll
        for (int j = 0; j < V; ++j) bv[k * V + j] = c < C ? load(bs[j]) : 0.0f;
    }
    float v[R][CHUNKS * V];
    float ss[R];
    #pragma unroll
    for (int r = 0; r < R; ++r) {
        const unsigned row = (warp * R + r) * SUB + sub;
        ss[r] = 0.0f;
        if (row >= rows) continue;  // the lanes stay for the shuffles below
        T* src = const_cast<T*>(x) + (size_t)row * C;
        const T* res = residual + (size_t)row * C;
        #pragma unroll
        for (int k = 0; k < CHUNKS; ++k) {
            const int c = (l + LANES * k) * V;
            if (c < C) {
                const Pack xp = *reinterpret_cast<const Pack*>(src + c);
                const T* xs = reinterpret_cast<const T*>(&xp);
                if (with_residual) {
                    // rounded as the residual add rounds it (residual_add); this thread alone reads the row
                    const Pack rp = *reinterpret_cast<const Pack*>(res + c);
                    const T* rs = reinterpret_cast<const T*>(&rp);
                    Pack sp;
                    T* sums = reinterpret_cast<T*>(&sp);
                    #pragma unroll
                    for (int j = 0; j < V; ++j) {
                        sums[j] = store(load(rs[j]) + load(store(load(xs[j]) + bv[k * V + j])));
                        const float y = load(sums[j]);
                        v[r][k * V + j] = y;
                        ss[r] += y * y;
                    }
                    *reinterpret_cast<Pack*>(src + c) = sp;
                } else {
                    #pragma unroll
                    for (int j = 0; j < V; ++j) {
                        const float y = load(xs[j]) + bv[k * V + j];
                        v[r][k * V + j] = y;
                        ss[r] += y * y;
                    }
                }
            }
        }
    }
    #pragma unroll
    for (int r = 0; r < R; ++r) {
        #pragma unroll
        for (int offset = LANES / 2; offset > 0; offset >>= 1) ss[r] += __shfl_xor_sync(0xffffffff, ss[r], offset);
    }
    #pragma unroll
    for (int r = 0; r < R; ++r) {
        const unsigned row = (warp * R + r) * SUB + sub;
        if (row >= rows) continue;
        const float inv = rsqrtf(ss[r] / C + PIXEL_NORM_EPS);
        Pack op[CHUNKS];
        #pragma unroll
        for (int k = 0; k < CHUNKS; ++k) {
            T* os = reinterpret_cast<T*>(&op[k]);
            #pragma unroll
            for (int j = 0; j < V; ++j) os[j] = store(silu(v[r][k * V + j] * inv));
        }
        // The padded positions that copy this row: in time, its own and the edge copies; in H and W, for reflect
        // padding, its own and the mirror images of rows 1 and n - 2. (Writing its own position first and the
        // copies in a branch of their own took the kernel from 577 to 700 us at the last stage: the loops stay.)
        const int wi = row % W;
        unsigned rest = row / W;
        const int hi = rest % H;
        rest /= H;
        const int fi = rest % F;
        const unsigned b = rest / F;
        int fos[3], hos[3], wos[3];
        int nf = 0, nh = 0, nw = 0;
        fos[nf++] = fi + (causal ? 2 : 1);
        if (fi == 0) fos[nf++] = 0;
        if (fi == 0 && causal) fos[nf++] = 1;
        if (fi == F - 1 && !causal) fos[nf++] = F + 1;
        hos[nh++] = hi + pad_hw;
        wos[nw++] = wi + pad_hw;
        if (pad_hw) {
            if (hi == 1) hos[nh++] = 0;
            if (hi == H - 2) hos[nh++] = H + 1;
            if (wi == 1) wos[nw++] = 0;
            if (wi == W - 2) wos[nw++] = W + 1;
        }
        for (int a = 0; a < nf; ++a)
            for (int e = 0; e < nh; ++e)
                for (int g = 0; g < nw; ++g) {
                    T* dst = dst_base + (size_t)(((b * Fo + fos[a]) * Ho + hos[e]) * Wo + wos[g]) * C;
                    #pragma unroll
                    for (int k = 0; k < CHUNKS; ++k) {
                        const int c = (l + LANES * k) * V;
                        if (c < C) *reinterpret_cast<Pack*>(dst + c) = op[k];
                    }
                }
    }
}
""", header=_SILU + f"""
#define PIXEL_NORM_EPS {PIXEL_NORM_EPS!r}f
""")
MAX_CHUNKS = 8
ROW_LOADS = 4  # 16-byte loads each thread issues before its first reduction (R rows of CHUNKS loads)


def _row_layout(x: mx.array) -> tuple[int, int, int] | None:
    """(LANES, CHUNKS, R) for x's channels (powers of two), or None where the kernel does not apply."""
    per_load = 16 // x.dtype.size
    c = x.shape[-1]
    if x.ndim != 5 or c % per_load:
        return None
    lanes = 1
    while lanes < min(32, c // per_load):
        lanes *= 2
    chunks = 1
    while lanes * per_load * chunks < c:
        chunks *= 2
    return (lanes, chunks, max(1, ROW_LOADS // chunks)) if chunks <= MAX_CHUNKS else None


def fused_available(x: mx.array) -> bool:
    """Whether :func:`norm_silu_pad` applies to channels-last (B, F, H, W, C) x here."""
    if x.dtype not in cuda_jit.DTYPES or _row_layout(x) is None or not cuda_jit.available():
        return False
    b, f, h, w, _ = x.shape
    return b * (f + 2) * (h + 2) * (w + 2) * 32 < 2**31  # at most a warp per output row: a 32-bit launch grid


def norm_silu_pad(x: mx.array, bias: mx.array | None, causal: bool, reflect_hw: bool,
                  into: mx.array | None = None) -> mx.array:
    """``pad_frames(SiLU(PixelNorm(x + bias)), causal, reflect_hw)`` as one CUDA kernel, where
    :func:`fused_available`; ``bias`` (C,) or None. The result is computed in float32 and rounded once.

    ``into``: an earlier result of this shape whose buffer the result is written over (no allocation), with
    :func:`group_norm_silu`'s conditions for ``overwrite``: whatever reads ``into``'s old values is ordered before
    this kernel (in an earlier CUDA graph, or producing x), and the result is evaluated before anything reads it."""
    return _norm_silu_pad(x, bias, None, causal, reflect_hw, into)


def add_norm_silu_pad(residual: mx.array, h: mx.array, bias: mx.array, causal: bool, reflect_hw: bool,
                      into: mx.array) -> tuple[mx.array, mx.array]:
    """A residual block's end and the next block's first norm in one pass: ``s = residual + (h + bias)`` (as
    :func:`residual_add` rounds it), written over h, and ``norm_silu_pad(s, None, ...)`` written over ``into``.
    Returns (s, padded). h must be a fresh conv output that nothing else reads, ``into`` as for :func:`norm_silu_pad`;
    both results must be evaluated before anything reads them."""
    return _norm_silu_pad(h, bias, residual.astype(h.dtype), causal, reflect_hw, into)


def _norm_silu_pad(x, bias, residual, causal, reflect_hw, into):
    b, f, h, w, c = x.shape
    bias = _channel_bias(bias, c, x.dtype)
    pad_hw = 1 if reflect_hw else 0
    shape = (b, f + 2, h + 2 * pad_hw, w + 2 * pad_hw, c)
    if into is not None and (into.shape != shape or into.dtype != x.dtype):
        raise ValueError(f"norm_silu_pad: cannot write a {shape} result over a {into.shape} array")
    rows = b * f * h * w
    lanes, chunks, per_thread = _row_layout(x)
    rows_per_warp = 32 // lanes * per_thread
    (out,) = _NORM_SILU_PAD(
        x.dtype,
        inputs=[x, bias, x if residual is None else residual, x if into is None else into],
        output_shapes=[shape if into is None else (1,)],  # writing into ``into``: a placeholder, never written
        output_dtypes=[x.dtype],
        scalars=[b, f, h, w, c, int(bool(causal)), pad_hw, int(residual is not None), int(into is not None)],
        grid=(-(-rows // rows_per_warp) * 32, 1, 1),
        threadgroup=(256, 1, 1),
        constants={"LANES": lanes, "CHUNKS": chunks, "R": per_thread},
    )
    targets = ([x] if residual is not None else []) + ([into] if into is not None else [])
    if not targets:
        return out
    written = _written_over(targets, out)
    return tuple(written) if residual is not None else written[0]


# --- Decoder upsampling: depth-to-space with the conv's bias and the residual ------------------------------------
# Written with MLX ops the rearrangement's adds read the conv output through an 8-D transposed view, each thread
# one value 8-16 bytes from its neighbour's, and MLX runs them as its general strided kernels: the LTX-2.3 decoder's
# four bias adds took 3.6 ms of an H200 (about 1 TB/s; benchmarks/results/kernels_vae_rows_cuda.md). Here each thread
# loads 16 contiguous bytes of a conv output row and of the residual (the upsampling's input, whose channels repeat
# over the conv's: no tiled copy), and writes each value to its place in the rearranged output, leaving out frame 0
# when time doubles (the decoder drops it: no strided slice left for the next kernel). ``(x + bias) + residual``
# rounded as the MLX ops round it. The decoder's last step, unpatchify, is the same rearrangement with its offsets
# ordered (pw, ph): MLX's general copy took 2.3 ms of an H200 for it (kernels_vae_launches_cuda.md). It adds
# conv_out's bias (MLX's broadcast add before it: 426 us, kernels_vae_chained_profile_cuda.md) and reads the first
# 48 channels of a conv_out run 64 wide (:func:`conv_out_width`).
_DEPTH_TO_SPACE = cuda_jit.Kernel("depth_to_space", """
void depth_to_space(const T* x, const T* bias, const T* residual, T* out, int B, int F, int H, int W, int C, int CX,
                    int CR, int drop, int with_residual) {
    constexpr int P = PT * PH * PW;
    const unsigned i = (blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (i >= (unsigned)B * F * H * W * C) return;
    const int k0 = i % C;
    unsigned pos = i / C;
    const Pack xp = *reinterpret_cast<const Pack*>(x + pos * CX + k0);  // the first C of each row's CX channels
    const Pack bp = *reinterpret_cast<const Pack*>(bias + k0);
    Pack rp = xp;
    if (with_residual) rp = *reinterpret_cast<const Pack*>(residual + pos * CR + k0 % CR);
    const T* xs = reinterpret_cast<const T*>(&xp);
    const T* bs = reinterpret_cast<const T*>(&bp);
    const T* rs = reinterpret_cast<const T*>(&rp);
    const int w = pos % W;
    pos /= W;
    const int h = pos % H;
    pos /= H;
    const int f = pos % F;
    const unsigned b = pos / F;
    const int Fo = F * PT - drop, co = C / P;
    // This thread's V channels are PER consecutive output channels at each of V / PER offsets: each offset's values
    // go out as one store (2 bf16 values at the 2x2 spatial shuffle, 4 at the time shuffle) instead of one each.
    constexpr int PER = (P < V && V % P == 0) ? V / P : 1;
    constexpr int OFFSETS = V / PER;
    struct alignas(sizeof(T) * PER) Run { T v[PER]; };
    #pragma unroll
    for (int q = 0; q < OFFSETS; ++q) {
        const int k = k0 + q, c = k / P, o = k % P;  // with PER > 1, k0 is a multiple of P: q is the offset
        // channel offsets ordered (pt, ph, pw) as ltx-core's shuffles, or (pw, ph) as its patchify (WIDTH_FIRST)
        const int ot = WIDTH_FIRST ? 0 : o / (PH * PW), oh = WIDTH_FIRST ? o % PH : (o / PW) % PH;
        const int ow = WIDTH_FIRST ? o / PH : o % PW;
        const int fo = f * PT + ot - drop;
        if (fo < 0) continue;
        Run run;
        #pragma unroll
        for (int m = 0; m < PER; ++m) {
            const int j = q + m * P;  // channel k0 + j: output channel c + m, offset o
            float y = load(store(load(xs[j]) + load(bs[j])));
            if (with_residual) y += load(rs[j]);
            run.v[m] = store(y);
        }
        const unsigned row = ((b * Fo + fo) * H * PH + h * PH + oh) * (W * PW) + w * PW + ow;
        *reinterpret_cast<Run*>(out + row * co + c) = run;
    }
}
""")


def _whole_loads(a: mx.array) -> bool:
    """Whether a kernel that loads 16 bytes of a's rows per thread, with 32-bit indices, takes a: a kernel dtype,
    rows of whole loads, fewer than 2**31 values."""
    return a.dtype in cuda_jit.DTYPES and a.shape[-1] % (16 // a.dtype.size) == 0 and a.size < 2**31


def depth_to_space_available(x: mx.array, residual: mx.array | None = None) -> bool:
    """Whether :func:`depth_to_space` applies to the channels-last conv output x (and residual) here."""
    return (x.ndim == 5 and _whole_loads(x) and (residual is None or residual.shape[-1] % (16 // x.dtype.size) == 0)
            and cuda_jit.available())


def depth_to_space(x: mx.array, stride: tuple[int, int, int], bias: mx.array | None = None,
                   residual: mx.array | None = None, drop_first_frame: bool = False,
                   width_first: bool = False, channels: int | None = None) -> mx.array:
    """``layers.depth_to_space(x, stride, bias, residual, drop_first_frame)`` as one CUDA kernel, where
    :func:`depth_to_space_available`: (B, F, H, W, C*pt*ph*pw) -> (B, F*pt [- 1], H*ph, W*pw, C); ``residual``
    (B, F, H, W, R) with R dividing the conv's channels, added repeated over them. ``width_first``: channels
    ordered (c, pw, ph) with pt = 1, ``layers.unpatchify``'s rearrangement. ``channels``: only the first
    ``channels`` of each of x's rows are the conv's (:func:`conv_out_width`; a multiple of 16 bytes' values)."""
    b, f, h, w, cx = x.shape
    c = cx if channels is None else channels
    if c > cx or c % (16 // x.dtype.size):
        raise ValueError(f"depth_to_space: cannot read {c} of {cx} channels in whole 16-byte loads")
    pt, ph, pw = stride
    drop = int(drop_first_frame)
    (out,) = _DEPTH_TO_SPACE(
        x.dtype,
        inputs=[x, _channel_bias(bias, c, x.dtype), x if residual is None else residual.astype(x.dtype)],
        output_shapes=[(b, f * pt - drop, h * ph, w * pw, c // (pt * ph * pw))],
        output_dtypes=[x.dtype],
        scalars=[b, f, h, w, c, cx, c if residual is None else residual.shape[-1], drop, int(residual is not None)],
        grid=(b * f * h * w * c // (16 // x.dtype.size), 1, 1),
        threadgroup=(256, 1, 1),
        constants={"PT": pt, "PH": ph, "PW": pw, "WIDTH_FIRST": int(width_first)},
    )
    return out


def conv_out_width(channels: int) -> int:
    """The output channels to run a conv with where the kernels here read its output (zero weights beyond
    ``channels``): cuDNN 9 on an H200 ran the decoders' conv_out, 128 -> 48 channels at 121x512x768, with a tile 128
    output channels wide, longer than 128 channels take (3148 against 2927 us); run 64 wide it takes a 64-wide tile,
    2277 us (benchmarks/results/conv_out_cuda.txt). Rounded up to a multiple of 64."""
    return -(-channels // 64) * 64


# --- Residual add -------------------------------------------------------------------------------------------------
# The VAE's residual blocks end in ``x + (h + bias)``, h the second conv's output without its bias. Here each thread
# adds 16 bytes of each operand, rounded as the MLX ops round them: at the LTX-2.3 decoder's last stage 518 us of an
# H200 against 620 for MLX's own fused kernel (vae_kernels_silu_cuda.txt). ``overwrite`` writes the sum over h, a
# conv output nothing else reads, so a block allocates one activation fewer: the tiled LTX-2.3 decode's peak 2.16 ->
# 1.99 GB (vae_queue_ltx23.md, vae_residual_ltx23.md; the untiled peaks are set elsewhere and did not move).
_RESIDUAL_ADD = cuda_jit.Kernel("residual_add", """
void residual_add(const T* x, const T* h, const T* bias, T* out, int N, int C, int overwrite) {
    const unsigned i = (blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (i >= (unsigned)N) return;
    const Pack xp = *reinterpret_cast<const Pack*>(x + i);
    const Pack hp = *reinterpret_cast<const Pack*>(h + i);
    const Pack bp = *reinterpret_cast<const Pack*>(bias + i % C);
    const T* xs = reinterpret_cast<const T*>(&xp);
    const T* hs = reinterpret_cast<const T*>(&hp);
    const T* bs = reinterpret_cast<const T*>(&bp);
    Pack op;
    T* os = reinterpret_cast<T*>(&op);
    #pragma unroll
    for (int j = 0; j < V; ++j) os[j] = store(load(xs[j]) + load(store(load(hs[j]) + load(bs[j]))));
    // Each thread writes only the 16 bytes it has read: overwriting h is safe inside the kernel.
    *reinterpret_cast<Pack*>((overwrite ? const_cast<T*>(h) : out) + i) = op;
}
""")


def residual_add_available(h: mx.array) -> bool:
    """Whether :func:`residual_add` runs for channels-last h here."""
    return _whole_loads(h) and cuda_jit.available()


def residual_add(x: mx.array, h: mx.array, bias: mx.array, overwrite: bool = False) -> mx.array:
    """``x + (h + bias)`` for channels-last x and h of one shape, ``bias`` (C,), where :func:`residual_add_available`.
    ``overwrite`` writes the result into h's buffer, with :func:`group_norm_silu`'s conditions: h a fresh conv output
    that nothing else reads, and the result evaluated (its CUDA graph ended) before anything reads it."""
    (out,) = _RESIDUAL_ADD(
        h.dtype,
        inputs=[x.astype(h.dtype), h, _channel_bias(bias, h.shape[-1], h.dtype)],
        output_shapes=[(1,) if overwrite else h.shape],  # overwriting: a placeholder output, never written
        output_dtypes=[h.dtype],
        scalars=[h.size, h.shape[-1], int(overwrite)],
        grid=(h.size // (16 // h.dtype.size), 1, 1),
        threadgroup=(256, 1, 1),
    )
    return _written_over(h, out) if overwrite else out


# --- Upscaler GroupNorm + SiLU ------------------------------------------------------------------------------------
# ``SiLU(GroupNorm(x + bias) [+ residual])``, the upscalers' every norm, as three kernels: per-block statistics, their
# merge, and one elementwise pass. Written with MLX ops it writes float32 copies of the activation (the group-major
# transpose, the squared deviations, and op by op every step of the elementwise expression), and MLX's CUDA backend
# keeps each buffer of a queued stage until the stage has run: a res block held 0.35-0.74 GB for a 29 MB activation,
# the upscalers' peak above ltx-core's. The kernels write only the output and a few floats per group, op by op or
# compiled alike: the same res block holds ~0.15 GB, the inputs and outputs of its two convs and two norms
# (benchmarks/results/upscaler_memory_cuda.txt), which kept that above ltx-core's. MLX donates buffers only to its own
# ops (a compiled elementwise step instead measured worse), so the elementwise kernel can write over the conv output
# it reads (``overwrite``). That races with the buffer's later readers inside one CUDA graph, which MLX orders by the
# buffers kernels declare as outputs (upsampler_overwrite_cuda.md: wrong outputs), so the upscalers run each conv and
# its overwriting norm as a queued piece of their own: its own CUDA graph, which the stream finishes before the next
# piece's graph starts (upscaler/model.py ``LatentUpsampler.stages``; upscaler_pieces_cuda.txt).
#
# Statistics: each thread block takes GN_POSITIONS positions of one batch element; each thread V channels of them
# (V within one group), summing (x + bias - shift) and its square with shift = its first value (shifted sums keep
# float32 from cancelling when a mean is large against the spread). Adjacent lanes of a group merge by Chan's
# pairwise update, and each block writes per group (mean, M2, count); one warp per group then merges the blocks.
GN_POSITIONS = 32

# Chan et al.'s pairwise update: (n, mean, m2) absorbs (nb, mb, m2b); an empty side leaves the other unchanged.
_CHAN_MERGE = """
__device__ __forceinline__ void chan_merge(float& n, float& mean, float& m2, float nb, float mb, float m2b) {
    if (nb == 0.0f) return;
    const float total = n + nb, delta = mb - mean, w = nb / total;
    mean += delta * w;
    m2 += m2b + delta * delta * n * w;
    n = total;
}
"""

_GROUP_STATS = cuda_jit.Kernel("group_stats", """
void group_stats(const T* x, const T* bias, float* out, int N, int C, int G) {
    const int blocks = (N + P - 1) / P;
    const int nb = blockIdx.x, b = blockIdx.y, t = threadIdx.x;
    const int lanes = C / G / V;  // threads per group, adjacent
    const int p0 = nb * P, p1 = imin(p0 + P, N);
    const T* src = x + ((long)b * N + p0) * C + t * V;
    const Pack bp = *reinterpret_cast<const Pack*>(bias + t * V);
    const T* bs = reinterpret_cast<const T*>(&bp);
    const float shift = load(src[0]) + load(bs[0]);
    float s1 = 0.0f, s2 = 0.0f;
    for (int p = p0; p < p1; ++p, src += C) {
        const Pack xp = *reinterpret_cast<const Pack*>(src);
        const T* xs = reinterpret_cast<const T*>(&xp);
        #pragma unroll
        for (int j = 0; j < V; ++j) {
            const float y = load(xs[j]) + load(bs[j]) - shift;
            s1 += y;
            s2 += y * y;
        }
    }
    const float n = (float)((p1 - p0) * V);
    float mean = shift + s1 / n;
    float m2 = fmaxf(s2 - s1 * s1 / n, 0.0f);
    for (int width = 1; width < lanes; width <<= 1) {
        const float other_mean = __shfl_xor_sync(0xffffffff, mean, width);
        const float other_m2 = __shfl_xor_sync(0xffffffff, m2, width);
        const float delta = other_mean - mean;
        m2 += other_m2 + delta * delta * (n * width) * 0.5f;  // two halves of n * width values each
        mean = 0.5f * (mean + other_mean);
    }
    if (t % lanes == 0) {
        float* dst = out + (((long)b * blocks + nb) * G + t / lanes) * 3;
        dst[0] = mean;
        dst[1] = m2;
        dst[2] = n * lanes;
    }
}
""")

# One warp per (batch, group): lanes merge strided blocks, then each other by shuffles. Out: (B, G, 2) mean, M2.
_GROUP_MERGE = cuda_jit.Kernel("group_merge", """
void group_merge(const float* partials, float* out, int B, int blocks, int G) {
    const long warp = ((long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (warp >= (long)B * G) return;  // a whole warp returns
    const int b = warp / G, g = warp % G;
    float n = 0.0f, mean = 0.0f, m2 = 0.0f;
    for (int k = lane; k < blocks; k += 32) {
        const float* p = partials + (((long)b * blocks + k) * G + g) * 3;
        chan_merge(n, mean, m2, p[2], p[0], p[1]);
    }
    #pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        const float on = __shfl_xor_sync(0xffffffff, n, offset);
        const float om = __shfl_xor_sync(0xffffffff, mean, offset);
        const float o2 = __shfl_xor_sync(0xffffffff, m2, offset);
        chan_merge(n, mean, m2, on, om, o2);
    }
    if (lane == 0) {
        out[warp * 2] = mean;
        out[warp * 2 + 1] = m2;
    }
}
""", header=_CHAN_MERGE)

# A thread per 16-byte load of x (V channels of one group): SiLU((x + bias - mean) * rsqrt(var + eps) * weight + beta
# [+ residual]) in float32, rounded once, torch's GroupNorm order of operations.
_GROUP_NORM_SILU = cuda_jit.Kernel("group_norm_silu", """
void group_norm_silu(const T* x, const T* bias, const T* residual, const float* moments, const WT* weight,
                     const WT* beta, T* out, int B, int N, int C, int G, int with_residual, int overwrite) {
    const unsigned i = (blockIdx.x * blockDim.x + threadIdx.x) * V;  // 32-bit: see _NORM_SILU_PAD
    if (i >= (unsigned)B * N * C) return;
    const int c = i % C, per = C / G;
    const unsigned b = i / ((unsigned)N * C);
    const float* mom = moments + (b * G + c / per) * 2;
    const float mean = mom[0], inv_std = rsqrtf(mom[1] / ((float)N * per) + EPS);
    const Pack xp = *reinterpret_cast<const Pack*>(x + i);
    const Pack bp = *reinterpret_cast<const Pack*>(bias + c);
    Pack rp = xp;
    if (with_residual) rp = *reinterpret_cast<const Pack*>(residual + i);
    const T* xs = reinterpret_cast<const T*>(&xp);
    const T* bs = reinterpret_cast<const T*>(&bp);
    const T* rs = reinterpret_cast<const T*>(&rp);
    Pack op;
    T* os = reinterpret_cast<T*>(&op);
    #pragma unroll
    for (int j = 0; j < V; ++j) {
        float y = (load(xs[j]) + load(bs[j]) - mean) * inv_std * LOADW(weight[c + j]) + LOADW(beta[c + j]);
        if (with_residual) y += load(rs[j]);
        os[j] = store(silu(y));
    }
    // Each thread writes only the 16 bytes it has read: overwriting x is safe inside the kernel.
    *reinterpret_cast<Pack*>((overwrite ? const_cast<T*>(x) : out) + i) = op;
}
""", header=_SILU)


def group_layout_fits(channels: int, dtype, groups: int) -> bool:
    """Whether activations of this width and dtype suit the kernels: each group a power-of-two number of 16-byte
    loads, a thread per load of a position, whole warps, at most 1024 threads."""
    if dtype not in cuda_jit.DTYPES or channels % groups:
        return False
    per_load = 16 // dtype.size
    c = channels
    lanes = c // groups // per_load  # threads per group, merged by XOR shuffles: a power of two
    return (c // groups) % per_load == 0 and 0 < lanes <= 32 and lanes & (lanes - 1) == 0 and (
        c // per_load) % 32 == 0 and c // per_load <= 1024


def group_norm_available(x: mx.array, groups: int) -> bool:
    """Whether :func:`group_moments` and :func:`group_norm_silu` run for channels-last x (B, ..., C) here."""
    return group_layout_fits(x.shape[-1], x.dtype, groups) and x.size < 2**31 and cuda_jit.available()


def group_moments(x: mx.array, groups: int, bias: mx.array | None = None) -> tuple[mx.array, int]:
    """Per (batch, group) mean and sum of squared deviations (M2) of x [+ bias] as one float32 (B, G, 2) array,
    and the count of values per group."""
    b, c = x.shape[0], x.shape[-1]
    x = x.reshape(b, -1, c)
    n = x.shape[1]
    blocks = -(-n // GN_POSITIONS)
    threads = c // (16 // x.dtype.size)
    bias = _channel_bias(bias, c, x.dtype)
    (partials,) = _GROUP_STATS(
        x.dtype,
        inputs=[x, bias],
        output_shapes=[(b, blocks, groups, 3)],
        output_dtypes=[mx.float32],
        scalars=[n, c, groups],
        grid=(blocks * threads, b, 1),
        threadgroup=(threads, 1, 1),
        constants={"P": GN_POSITIONS},
    )
    (moments,) = _GROUP_MERGE(
        mx.float32,
        inputs=[partials],
        output_shapes=[(b, groups, 2)],
        output_dtypes=[mx.float32],
        scalars=[b, blocks, groups],
        grid=(b * groups * 32, 1, 1),
        threadgroup=(min(b * groups * 32, 256), 1, 1),
    )
    return moments, n * (c // groups)


def group_norm_silu(x: mx.array, groups: int, eps: float, weight: mx.array, beta: mx.array,
                    bias: mx.array | None = None, residual: mx.array | None = None,
                    overwrite: bool = False) -> mx.array:
    """``SiLU(GroupNorm(x + bias) [+ residual])`` for channels-last x, where :func:`group_norm_available`: statistics
    over every non-batch axis, computed in float32 and rounded once. ``bias`` (C,) is the preceding conv's.

    ``overwrite`` writes the result into x's buffer and returns it through ``mx.depends``, so the call allocates no
    activation-sized buffer. x must be a fresh row-contiguous array that nothing else reads, as a conv's output is
    (a strided x would be copied for the kernel, and the copy overwritten instead). The caller must evaluate the
    result (end the CUDA graph) before anything reads it: MLX's CUDA graphs order a kernel after the kernels that
    wrote the buffers it reads, by the outputs they declared, and this kernel's write to x is not a declared output
    (benchmarks/results/upsampler_overwrite_cuda.md: wrong outputs without the boundary)."""
    b, c = x.shape[0], x.shape[-1]
    bias = _channel_bias(bias, c, x.dtype)
    moments, _ = group_moments(x, groups, bias)
    flat = x.reshape(b, -1, c)
    (out,) = _GROUP_NORM_SILU(
        x.dtype,
        inputs=[flat, bias, flat if residual is None else residual.astype(x.dtype).reshape(flat.shape), moments,
                weight, beta.astype(weight.dtype)],
        output_shapes=[(1,) if overwrite else flat.shape],  # overwriting: a placeholder output, never written
        output_dtypes=[x.dtype],
        scalars=[b, flat.shape[1], c, groups, int(residual is not None), int(overwrite)],
        grid=(flat.size // (16 // x.dtype.size), 1, 1),
        threadgroup=(256, 1, 1),
        # MLX 0.32's precompiled kernels take no float scalars; the parameters are read in their own dtype
        constants={"EPS": f"{float(eps)!r}f", **cuda_jit.element_type("WT", "LOADW", weight.dtype)},
    )
    if overwrite:
        out = _written_over(flat, out)
    return out.reshape(x.shape)


def _written_over(targets, placeholder: mx.array):
    """``targets`` (an array, or a list of them), after the kernel whose output is ``placeholder`` has written its
    results into their buffers."""
    if isinstance(targets, list):
        return mx.depends(targets, [placeholder])
    (out,) = mx.depends([targets], [placeholder])
    return out


_zeros: dict = {}


def _channel_bias(bias: mx.array | None, c: int, dtype) -> mx.array:
    """A kernel's per-channel bias input in the activation's dtype: ``bias``, or zeros (one array per width)."""
    if bias is not None:
        return bias.astype(dtype)
    key = (c, dtype)
    if key not in _zeros:
        _zeros[key] = mx.zeros((c,), dtype)
    return _zeros[key]
