"""Video VAE decoder and encoder from a checkpoint (the ``vae.*`` tensors of a full LTX-2 file, or a VAE-only file
with the same names), or at random; the config from ``--config``, the file's metadata, or the LTX-2 preset."""

from __future__ import annotations

from pathlib import Path

from ltx_ane.models.config import load_preset
from ltx_ane.models.loading import KeyOps, Source, fill_weights, resolve_config

VAE_PREFIX = "vae."
STATS_PREFIX = "vae.per_channel_statistics."
# Statistics the checkpoints carry but the model never reads.
UNUSED_STATISTICS = ("channel", "mean-of-stds", "mean-of-stds_over_std-of-means")


def _is_unused_statistic(name: str) -> bool:
    return name.startswith("per_channel_statistics.") and name.split(".", 1)[1] in UNUSED_STATISTICS


def vae_keys(part: str) -> KeyOps:
    """``vae.<part>.*`` -> the model's names; the shared latent statistics into the part's own module."""
    return KeyOps(
        renames=((f"{VAE_PREFIX}{part}.", ""), (STATS_PREFIX, "per_channel_statistics.")),
        ignore=_is_unused_statistic,
        required=f"{VAE_PREFIX}{part}.",
    )


def vae_config(source: Source) -> tuple[dict, Path | None]:
    """The raw VAE config for a source and, unless random, the resolved checkpoint path."""
    return resolve_config(source, VAE_PREFIX, lambda path: load_preset("ltx2"), section="vae")


def _load(model_class, config_class, part: str, source: Source, dtype: str, seed: int):
    raw, path = vae_config(source)
    return fill_weights(model_class(config_class.from_dict(raw)), source, path, vae_keys(part), dtype, seed,
                        f"VAE {part}")


def load_decoder(source: Source, dtype: str = "bf16", seed: int = 0):
    from ltx_ane.models.video_vae.config import DecoderConfig
    from ltx_ane.models.video_vae.model import VideoDecoder

    return _load(VideoDecoder, DecoderConfig, "decoder", source, dtype, seed)


def load_encoder(source: Source, dtype: str = "bf16", seed: int = 0):
    from ltx_ane.models.video_vae.config import EncoderConfig
    from ltx_ane.models.video_vae.model import VideoEncoder

    return _load(VideoEncoder, EncoderConfig, "encoder", source, dtype, seed)
