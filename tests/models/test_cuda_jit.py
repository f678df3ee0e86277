"""Kernels built with NVRTC and cached on disk (models/cuda_jit.py): the source each build compiles, where the PTX goes,
and, on MLX's CUDA backend only (the GPU machine), that a built kernel runs, is written once and read back by a
fresh process's kernel without compiling."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from ltx_ane.models import cuda_jit

CUDA = pytest.mark.skipif(not cuda_jit.available(), reason="MLX's CUDA backend with NVRTC only (the GPU machine)")

ADD_ONE = cuda_jit.Kernel("add_one", """
void add_one(const T* x, T* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = store(load(x[i]) + ONE);
}
""", header="#define ONE 1.0f\n")


def test_source_is_prelude_dtype_constants_header_and_the_extern_c_function():
    src = ADD_ONE._full_source(mx.bfloat16, {"P": 32})
    assert "typedef u16 T;" in src and "bf16_to_f32(v)" in src and "#define P 32" in src
    assert src.index("#define P 32") < src.index("#define ONE") < src.index('extern "C" __global__ void add_one(')
    assert "typedef float T;" in ADD_ONE._full_source(mx.float32, {})
    assert "#include" not in src  # header-free: what makes a build fast


def test_cache_dir_is_beside_mlx_kernels_and_hermetic(monkeypatch, tmp_path):
    monkeypatch.setenv("MLX_PTX_CACHE_DIR", str(tmp_path / "mlx"))
    assert cuda_jit._cache_dir() == tmp_path / "mlx" / "ltx-ane-kernels"
    monkeypatch.delenv("MLX_PTX_CACHE_DIR")
    monkeypatch.setenv("LTX_ANE_CACHE", str(tmp_path / "root"))
    assert cuda_jit._cache_dir() == tmp_path / "root" / "mlx-kernels" / "ltx-ane-kernels"


@pytest.mark.skipif(cuda_jit.available(), reason="checks the fallback where there is no CUDA backend")
def test_not_available_without_mlx_cuda():
    assert not cuda_jit.available()


@CUDA
@pytest.mark.parametrize("dtype", cuda_jit.DTYPES)
def test_kernel_runs_and_rounds_like_mlx(dtype):
    x = (mx.random.normal((1000,), key=mx.random.key(0)) * 3).astype(dtype)
    (out,) = ADD_ONE(dtype, inputs=[x], output_shapes=[x.shape], output_dtypes=[dtype], scalars=[x.size],
                     grid=(x.size, 1, 1), threadgroup=(256, 1, 1))
    expected = (x.astype(mx.float32) + 1.0).astype(dtype)  # float32 sum, one rounding to nearest even
    assert np.array_equal(np.array(out.astype(mx.float32)), np.array(expected.astype(mx.float32)))


@CUDA
def test_ptx_is_written_once_and_read_back_without_compiling(monkeypatch):
    x = mx.arange(64, dtype=mx.float32)
    args = dict(inputs=[x], output_shapes=[x.shape], output_dtypes=[mx.float32], scalars=[64], grid=(64, 1, 1),
                threadgroup=(64, 1, 1))
    kernel = cuda_jit.Kernel("add_one", ADD_ONE.source, ADD_ONE.header + "// a source no other test builds\n")
    mx.eval(kernel(mx.float32, **args))
    files = list(cuda_jit._cache_dir().glob("*.ptx"))
    assert files and all(f.stat().st_size > 0 for f in files)

    def no_compile(*_):
        raise AssertionError("compiled although the PTX is on disk")

    monkeypatch.setattr(cuda_jit, "_compile", no_compile)
    fresh = cuda_jit.Kernel("add_one", kernel.source, kernel.header)  # as a new process would build it
    (out,) = fresh(mx.float32, **args)
    assert np.array_equal(np.array(out), np.arange(64) + 1.0)


@CUDA
def test_a_compile_error_names_nvrtc_and_its_log():
    broken = cuda_jit.Kernel("broken", "void broken(const T* x, T* out) { this is not C++; }")
    with pytest.raises(RuntimeError, match="NVRTC could not compile"):
        broken(mx.float32, inputs=[mx.zeros((4,))], output_shapes=[(4,)], output_dtypes=[mx.float32], scalars=[],
               grid=(4, 1, 1), threadgroup=(4, 1, 1))
