"""CUDA kernels built once per machine: header-free CUDA C++ compiled to PTX with the NVRTC library that MLX itself
loaded, kept on disk beside MLX's kernel cache, and launched through ``mx.fast.precompiled_cuda_kernel``.

Why not ``mx.fast.cuda_kernel``: MLX compiles those with its device headers, about a second per kernel, and never
writes them to its disk cache, so every process paid again: with the VAE and upscaler kernels on it, a first
``render`` took 10 s more than before, cached or not (benchmarks/results/cold_start_render_fused_cuda.md). Without
headers a kernel builds in a fraction of that, and only on a machine's first use.

A kernel's source is one ``extern "C" __global__`` function over ``T`` (the activation dtype, stored as float or as
16-bit words) with ``load(T) -> float`` and ``store(float) -> T``, ``Pack`` (16 aligned bytes) and ``V`` (values of
T per Pack) defined by the prelude. Arguments: the inputs' pointers, the outputs' pointers, then int / float scalars.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
from pathlib import Path

import mlx.core as mx

from ltx_ane.cache import cache_root

_PRELUDE = r"""
typedef unsigned short u16;
struct alignas(16) Pack { unsigned int w[4]; };
__device__ __forceinline__ float bf16_to_f32(u16 h) {
    float f; asm("mov.b32 %0, {%1, %2};" : "=f"(f) : "h"((u16)0), "h"(h)); return f;
}
__device__ __forceinline__ u16 f32_to_bf16(float f) { u16 h; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ float f16_to_f32(u16 h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ u16 f32_to_f16(float f) { u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }
"""

_TYPES = {
    mx.bfloat16: "typedef u16 T;\n__device__ __forceinline__ float load(T v) { return bf16_to_f32(v); }\n"
                 "__device__ __forceinline__ T store(float f) { return f32_to_bf16(f); }\n",
    mx.float16: "typedef u16 T;\n__device__ __forceinline__ float load(T v) { return f16_to_f32(v); }\n"
                "__device__ __forceinline__ T store(float f) { return f32_to_f16(f); }\n",
    mx.float32: "typedef float T;\n__device__ __forceinline__ float load(T v) { return v; }\n"
                "__device__ __forceinline__ T store(float f) { return f; }\n",
}
DTYPES = tuple(_TYPES)
_LOADERS = {mx.bfloat16: ("u16", "bf16_to_f32"), mx.float16: ("u16", "f16_to_f32"), mx.float32: ("float", "")}


def element_type(type_name: str, loader_name: str, dtype) -> dict:
    """Constants naming a second element type for a kernel (a pointer type and its load-as-float function)."""
    pointer, loader = _LOADERS[dtype]
    return {type_name: pointer, loader_name: loader}
MIN_COMPUTE_CAPABILITY = 80  # cvt.rn.bf16.f32


def available() -> bool:
    """Whether kernels can be built and run here: MLX's CUDA backend as the default device, a GPU of compute
    capability 8.0 or newer, and NVRTC loaded."""
    return mx.default_device() == mx.gpu and mx.cuda.is_available() and _arch() >= MIN_COMPUTE_CAPABILITY and (
        _nvrtc() is not None)


class Kernel:
    """One kernel's source; ``__call__`` builds (or reads from disk) the PTX per dtype and constants, then runs it."""

    def __init__(self, name: str, source: str, header: str = ""):
        self.name, self.source, self.header = name, source, header
        self._ptx: dict = {}

    def __call__(self, dtype, inputs: list, output_shapes: list, output_dtypes: list, scalars: list, grid, threadgroup,
                 constants: dict | None = None) -> list[mx.array]:
        key = (dtype, tuple(sorted((constants or {}).items())))
        if key not in self._ptx:
            self._ptx[key] = _ptx(self._full_source(dtype, constants or {}))
        return mx.fast.precompiled_cuda_kernel(
            name=self.name, compiled_source=self._ptx[key], inputs=inputs, output_shapes=output_shapes,
            output_dtypes=output_dtypes, scalars=scalars, grid=grid, threadgroup=threadgroup,
            ensure_row_contiguous=True)

    def _full_source(self, dtype, constants: dict) -> str:
        defines = "".join(f"#define {name} {value}\n" for name, value in sorted(constants.items()))
        return (_PRELUDE + _TYPES[dtype] + "constexpr int V = 16 / sizeof(T);\n" + defines + self.header
                + 'extern "C" __global__ ' + self.source.strip() + "\n")


def _ptx(source: str) -> bytes:
    """The PTX of ``source`` for this GPU: from the disk cache, or compiled and written there (atomically)."""
    arch = _arch()
    options = [f"--gpu-architecture=compute_{arch}", "--std=c++17"]
    digest = hashlib.sha256("\n".join([source, *options, _nvrtc_version()]).encode()).hexdigest()[:24]
    path = _cache_dir() / f"{digest}.ptx"
    if path.is_file():
        return path.read_bytes()
    ptx = _compile(source, options)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(ptx)
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache only costs the build next time
    return ptx


def _cache_dir() -> Path:
    # Beside MLX's own compiled kernels (configure_mlx_caches puts those under the project's cache root).
    base = os.environ.get("MLX_PTX_CACHE_DIR")
    return (Path(base) if base else cache_root() / "mlx-kernels") / "ltx-ane-kernels"


@functools.cache
def _arch() -> int:
    info = mx.device_info()
    return 10 * int(info.get("compute_capability_major", 0)) + int(info.get("compute_capability_minor", 0))


@functools.cache
def _nvrtc():
    """The NVRTC library MLX's CUDA backend loaded (found in this process's mappings), or None."""
    candidates = []
    try:
        with open("/proc/self/maps") as maps:
            candidates = sorted({line.split()[-1] for line in maps if "libnvrtc.so" in line and "builtins" not in line})
    except OSError:
        pass
    for name in [*candidates, "libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"]:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


@functools.cache
def _nvrtc_version() -> str:
    major, minor = ctypes.c_int(), ctypes.c_int()
    _nvrtc().nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return f"nvrtc {major.value}.{minor.value}"


def _compile(source: str, options: list[str]) -> bytes:
    lib = _nvrtc()
    prog = ctypes.c_void_p()
    _check(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"ltx_ane_kernel.cu", 0, None, None), "create")
    try:
        args = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
        if lib.nvrtcCompileProgram(prog, len(options), args) != 0:
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, log)
            raise RuntimeError(f"NVRTC could not compile a kernel: {log.value.decode(errors='replace')}")
        size = ctypes.c_size_t()
        _check(lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "PTX size")
        ptx = ctypes.create_string_buffer(size.value)
        _check(lib.nvrtcGetPTX(prog, ptx), "PTX")
        return ptx.raw.rstrip(b"\0")
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def _check(result: int, step: str) -> None:
    if result != 0:
        raise RuntimeError(f"NVRTC failed ({step}): error {result}")
