"""Where the project keeps what it makes for itself: the bench profile, the prompt cache, compiled Core ML models."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$LTX_ANE_CACHE``, default ``~/.cache/ltx-ane``; read at each call, so a changed environment is honoured."""
    return Path(os.environ.get("LTX_ANE_CACHE", "~/.cache/ltx-ane")).expanduser()


# MLX's CUDA backend keeps the cuDNN convolution plans, cuDNN attention plans and CUDA graphs it builds in caches of
# fixed size (128, 256 and 400 entries), rebuilds an evicted entry at its next use, and raises "Cache thrashing" once
# a cache has missed twice its size in a process. One tiled decode or encode meets tens of convolution shapes per
# tile shape, and a generation adds the upscalers and the transformer: the defaults are too small for a pipeline.
MLX_CUDA_CACHE_SIZES = {"MLX_CUDA_CONV_CACHE_SIZE": "2048", "MLX_CUDA_SDPA_CACHE_SIZE": "1024",
                        "MLX_CUDA_GRAPH_CACHE_SIZE": "2048"}


def configure_mlx_caches() -> None:
    """Set MLX's cache settings that the environment leaves unset (MLX reads them once, at first use): the
    CUDA backend's plan and graph cache sizes above, and a kernel cache that survives a reboot. MLX's CUDA backend
    compiles fused kernels at first use and keeps them in ``$TMPDIR/mlx/<version>/ptx`` by default, which a reboot
    empties; rebuilding a pipeline's kernels takes a minute or more (benchmarks/results/cold_start_cuda.md), so
    they go under the cache root instead (``mlx-kernels/<mlx version>``). The Metal backend reads none of these."""
    for name, value in MLX_CUDA_CACHE_SIZES.items():
        os.environ.setdefault(name, value)
    if "MLX_PTX_CACHE_DIR" in os.environ:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        mlx_version = version("mlx")
    except PackageNotFoundError:
        return
    os.environ["MLX_PTX_CACHE_DIR"] = str(cache_root() / "mlx-kernels" / mlx_version)
