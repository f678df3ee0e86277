"""Shared test set-up. Every test is hermetic: the project's cache (bench profile, prompt cache, compiled Core ML
packages) and the Hugging Face cache point into the test's own temporary folder, for the test process and for the
command lines it starts, so a user's ``~/.cache`` is never read or written."""

import pytest


@pytest.fixture(autouse=True)
def hermetic_caches(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.mktemp("caches")
    monkeypatch.setenv("LTX_ANE_CACHE", str(root / "ltx-ane"))
    monkeypatch.setenv("HF_HOME", str(root / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(root / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MLX_PTX_CACHE_DIR", str(root / "mlx-kernels"))
    try:
        import huggingface_hub.constants as hub
    except ImportError:
        return
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(root / "hf" / "hub"))
