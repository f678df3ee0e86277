"""The LTX-2 / LTX-2.3 audio-video diffusion transformer in MLX, named one-to-one after ltx-core's ``LTXModel``."""
