"""ltx-core's video VAE (decoder, encoder) with deterministic random weights, and its checkpoint keys.

For parity tests and benchmarks only. The keys are those of the full LTX checkpoints: ``vae.decoder.*``,
``vae.encoder.*`` and ``vae.per_channel_statistics.*`` (the unused statistics included).
"""

from __future__ import annotations

from pathlib import Path

from ltx_ane.reference import build_with_random_weights, from_checkpoint


def build_decoder(config: dict, seed: int = 0):
    def make():
        from ltx_core.model.video_vae import VideoDecoderConfigurator

        return VideoDecoderConfigurator.from_config(config)

    return build_with_random_weights(make, seed, statistics=True)


def build_encoder(config: dict, seed: int = 0):
    def make():
        from ltx_core.model.video_vae import VideoEncoderConfigurator

        return VideoEncoderConfigurator.from_config(config)

    return build_with_random_weights(make, seed + 1, statistics=True)


def vae_state_dict(decoder=None, encoder=None) -> dict:
    """Checkpoint keys as the full LTX-2 files name them, statistics once (plus the unused ones)."""
    import torch

    out = {}
    stats = None
    for part, module in (("decoder", decoder), ("encoder", encoder)):
        if module is None:
            continue
        for key, value in module.state_dict().items():
            if key.startswith("per_channel_statistics."):
                stats = module.per_channel_statistics
                continue
            out[f"vae.{part}.{key}"] = value
    if stats is not None:
        mean = stats.get_buffer("mean-of-means")
        std = stats.get_buffer("std-of-means")
        out["vae.per_channel_statistics.mean-of-means"] = mean
        out["vae.per_channel_statistics.std-of-means"] = std
        out["vae.per_channel_statistics.channel"] = torch.arange(mean.shape[0], dtype=torch.float32)
        out["vae.per_channel_statistics.mean-of-stds"] = torch.ones_like(mean)
    return out


def reference_decoder_from_checkpoint(path: str | Path, config: dict):
    return from_checkpoint("decoder", path, config)


def reference_encoder_from_checkpoint(path: str | Path, config: dict):
    return from_checkpoint("encoder", path, config)
