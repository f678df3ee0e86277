"""The autouse fixture in conftest.py: no test reads or writes the user's caches or bench profile."""

from __future__ import annotations

import os
from pathlib import Path

from ltx_ane.runtime.profile import default_profile_path, load_profile


def test_caches_and_profile_live_in_the_tests_temporary_folder(tmp_path_factory):
    home = Path("~").expanduser()
    base = tmp_path_factory.getbasetemp()
    for path in (default_profile_path(), Path(os.environ["HF_HOME"]), Path(os.environ["HF_HUB_CACHE"]),
                 Path(os.environ["MLX_PTX_CACHE_DIR"])):
        assert base in path.parents and home not in path.parents
    assert load_profile() is None  # a profile the user's `ltx-ane bench` wrote is not seen
    import huggingface_hub.constants as hub

    assert base in Path(hub.HF_HUB_CACHE).parents and os.environ["HF_HUB_OFFLINE"] == "1"


def test_mlx_settings_default_to_the_cache_root_and_leave_the_users_alone(monkeypatch):
    """MLX's compiled-kernel cache goes under the project's cache root and its CUDA plan caches are enlarged,
    unless the environment already says otherwise."""
    from ltx_ane.cache import MLX_CUDA_CACHE_SIZES, cache_root, configure_mlx_caches

    monkeypatch.delenv("MLX_PTX_CACHE_DIR")
    for name in MLX_CUDA_CACHE_SIZES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLX_CUDA_CONV_CACHE_SIZE", "7")
    configure_mlx_caches()
    assert cache_root() in Path(os.environ["MLX_PTX_CACHE_DIR"]).parents
    assert os.environ["MLX_CUDA_CONV_CACHE_SIZE"] == "7"
    assert os.environ["MLX_CUDA_GRAPH_CACHE_SIZE"] == MLX_CUDA_CACHE_SIZES["MLX_CUDA_GRAPH_CACHE_SIZE"]
    monkeypatch.setenv("MLX_PTX_CACHE_DIR", "/somewhere/else")
    configure_mlx_caches()
    assert os.environ["MLX_PTX_CACHE_DIR"] == "/somewhere/else"
