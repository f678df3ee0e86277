"""LTX-2 video VAE and latent upscalers on Apple Silicon: MLX on the GPU, Core ML on the Neural Engine."""

from ltx_ane.cache import configure_mlx_caches

__version__ = "0.1.0"

# Before any MLX work, which reads these settings once (see cache.py).
configure_mlx_caches()
