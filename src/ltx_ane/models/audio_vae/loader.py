"""Build the MLX audio VAE and vocoder from a full LTX checkpoint (``audio_vae.*``, ``vocoder.*``) or at random.

Config precedence: ``--config FILE`` (or a preset name: ``ltx2``, ``ltx23``, ``tiny``), else the checkpoint's
embedded metadata (its ``audio_vae`` and ``vocoder`` sections), else the LTX-2 preset.
"""

from __future__ import annotations

import re
from pathlib import Path

from ltx_ane.models.audio_vae.config import AudioVaeConfig, VocoderConfig
from ltx_ane.models.config import load_preset
from ltx_ane.models.loading import KeyOps, Source, fill_weights, mlx_dtype, resolve_config

AUDIO_VAE_PREFIX = "audio_vae."
STATS_PREFIX = "audio_vae.per_channel_statistics."
VOCODER_PREFIX = "vocoder."
# Statistics a checkpoint may carry next to the two the model reads; the STFT's inverse basis is never used.
UNUSED = re.compile(r"per_channel_statistics\.(channel|mean-of-stds|mean-of-stds_over_std-of-means)$|inverse_basis$")
TRANSPOSED_CONV = re.compile(r"(^|\.)ups\.\d+\.weight$")


def audio_config(source: Source, section: str) -> tuple[dict, Path | None]:
    """The raw config holding ``section`` ('audio_vae' or 'vocoder') and, unless random, the checkpoint path."""
    return resolve_config(source, AUDIO_VAE_PREFIX, lambda path: load_preset("ltx2"), section=section)


def _to_mlx_layout(name: str, value):
    """Torch Conv1d weights are (O, I, K) and ConvTranspose1d (I, O, K); MLX wants (O, K, I) for both."""
    if value.ndim != 3 or not name.endswith(".weight"):
        return value
    return value.transpose(1, 2, 0) if TRANSPOSED_CONV.search(name) else value.transpose(0, 2, 1)


def _ignore_unused(name: str) -> bool:
    return bool(UNUSED.search(name))


def audio_vae_keys(part: str) -> KeyOps:
    """``audio_vae.<part>.*`` and the shared latent statistics -> the part's own names."""
    return KeyOps(renames=((f"{AUDIO_VAE_PREFIX}{part}.", ""), (STATS_PREFIX, "per_channel_statistics.")),
                  ignore=_ignore_unused, required=f"{AUDIO_VAE_PREFIX}{part}.", layout=_to_mlx_layout)


def vocoder_keys() -> KeyOps:
    return KeyOps(renames=((VOCODER_PREFIX, ""),), ignore=_ignore_unused, required=VOCODER_PREFIX,
                  layout=_to_mlx_layout)


def _load_audio_vae(model_class, part: str, source: Source, dtype: str, seed: int):
    raw, path = audio_config(source, "audio_vae")
    return fill_weights(model_class(AudioVaeConfig.from_dict(raw)), source, path, audio_vae_keys(part), dtype, seed,
                        f"audio VAE {part}")


def load_audio_decoder(source: Source, dtype: str = "bf16", seed: int = 0):
    """The audio VAE decoder: (B, 8, T, 16) latent -> (B, 2, 4T - 3, 64) log-mel."""
    from ltx_ane.models.audio_vae.decoder import AudioDecoder

    return _load_audio_vae(AudioDecoder, "decoder", source, dtype, seed)


def load_audio_encoder(source: Source, dtype: str = "bf16", seed: int = 0):
    """The audio VAE encoder: (B, 2, T, 64) log-mel -> (B, 8, T', 16) normalised latent."""
    from ltx_ane.models.audio_vae.encoder import AudioEncoder

    return _load_audio_vae(AudioEncoder, "encoder", source, dtype, seed)


def load_vocoder(source: Source, dtype: str = "bf16", seed: int = 0):
    """The vocoder the config names: LTX-2's HiFi-GAN (24 kHz) or LTX-2.3's BigVGAN + BWE (48 kHz)."""
    from ltx_ane.models.audio_vae.vocoder import build_vocoder

    raw, path = audio_config(source, "vocoder")
    config = VocoderConfig.from_dict(raw)
    model = fill_weights(build_vocoder(config), source, path, vocoder_keys(), dtype, seed, "vocoder")
    if source.random_weights:
        _reset_fixed_buffers(model, config, mlx_dtype(dtype))
    return model


def _reset_fixed_buffers(model, config: VocoderConfig, dtype) -> None:
    """Random weights leave the computed buffers random too; put back the anti-aliasing filters and (with
    bandwidth extension) a plausible STFT front end, as real checkpoints carry them."""
    import mlx.core as mx

    from ltx_ane.models.audio_vae.bigvgan import FilterBuffer
    from ltx_ane.models.audio_vae.vocoder import default_stft_bases

    for _, module in model.named_modules():
        if isinstance(module, FilterBuffer):
            module.reset(dtype)
    if config.bwe:
        basis, bank = default_stft_bases(config.bwe)
        model.mel_stft.stft_fn.forward_basis = mx.array(basis).astype(dtype)
        model.mel_stft.mel_basis = mx.array(bank).astype(dtype)
