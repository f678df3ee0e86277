"""LTX-2 video VAE and latent upscalers on Apple Silicon: MLX on the GPU, Core ML on the Neural Engine."""

__version__ = "0.1.0"
