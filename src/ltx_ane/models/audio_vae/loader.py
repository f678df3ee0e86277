"""Build the MLX audio VAE and vocoder from a full LTX checkpoint (``audio_vae.*``, ``vocoder.*``) or at random.

Config precedence: ``--config FILE`` (or the preset name ``ltx2`` / ``ltx23``), else the checkpoint's embedded
metadata (its ``audio_vae`` and ``vocoder`` sections), else the LTX-2 preset.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ltx_ane.errors import LtxAneError
from ltx_ane.io.checkpoint import apply_weights, load_tensors, read_header, resolve_checkpoint
from ltx_ane.models.audio_vae.config import PRESETS, AudioVaeConfig, VocoderConfig, load_audio_preset
from ltx_ane.models.config import load_config_file
from ltx_ane.models.loading import Source, mlx_dtype

AUDIO_VAE_PREFIX = "audio_vae."
STATS_PREFIX = "audio_vae.per_channel_statistics."
VOCODER_PREFIX = "vocoder."
# Statistics a checkpoint may carry next to the two the model reads; the STFT's inverse basis is never used.
UNUSED = re.compile(r"per_channel_statistics\.(channel|mean-of-stds|mean-of-stds_over_std-of-means)$|inverse_basis$")
TRANSPOSED_CONV = re.compile(r"(^|\.)ups\.\d+\.weight$")


def audio_config(source: Source, section: str) -> tuple[dict, Path | None]:
    """The raw config holding ``section`` ('audio_vae' or 'vocoder') and, unless random, the checkpoint path."""
    path = None
    if not source.random_weights:
        if not source.checkpoint:
            raise LtxAneError("no checkpoint given for the audio VAE and vocoder: pass --vae CKPT or --random-weights")
        path = resolve_checkpoint(source.checkpoint, wanted_prefix=AUDIO_VAE_PREFIX)
    if source.config_file:
        raw = load_audio_preset(source.config_file) if source.config_file in PRESETS else load_config_file(source.config_file)
        origin = source.config_file
    elif path is not None and (embedded := read_header(path).config()) is not None:
        raw, origin = embedded, path
    else:
        if path is not None:
            print(f"note: {path.name} embeds no config; using the LTX-2 audio preset (--config overrides)", file=sys.stderr)
        return load_audio_preset("ltx2"), path
    if section not in raw:
        raise LtxAneError(f"{origin}: the config has no '{section}' section (not a model with audio?)")
    return raw, path


def _to_mlx_layout(name: str, value):
    """Torch Conv1d weights are (O, I, K) and ConvTranspose1d (I, O, K); MLX wants (O, K, I) for both."""
    if value.ndim != 3 or not name.endswith(".weight"):
        return value
    return value.transpose(1, 2, 0) if TRANSPOSED_CONV.search(name) else value.transpose(0, 2, 1)


def _load(model, path: Path, prefix_map: dict[str, str], what: str, dtype) -> None:
    header = read_header(path)
    for file_prefix in prefix_map:
        if file_prefix != STATS_PREFIX and not header.keys_under(file_prefix):
            raise LtxAneError(f"{path} holds no {what} (no tensors under '{file_prefix}')")
    tensors = load_tensors(path, prefix_map, ignore=lambda name: bool(UNUSED.search(name)))
    tensors = {name: _to_mlx_layout(name, value) for name, value in tensors.items()}
    apply_weights(model, tensors, dtype, source=f"{path} ({what})")


def _randomize_statistics(model, seed: int) -> None:
    import mlx.core as mx

    mx.random.seed(seed)
    stats = model.per_channel_statistics
    size = stats["mean-of-means"].shape[0]
    stats["mean-of-means"] = mx.random.normal((size,)) * 0.1
    stats["std-of-means"] = mx.random.uniform(0.5, 1.5, (size,))


def _finish_random(model, dtype) -> None:
    import mlx.core as mx

    model.set_dtype(dtype)
    mx.eval(model.parameters())


def load_audio_decoder(source: Source, dtype: str = "bf16", seed: int = 0):
    """The audio VAE decoder: (B, 8, T, 16) latent -> (B, 2, 4T - 3, 64) log-mel."""
    from ltx_ane.models.audio_vae.decoder import AudioDecoder

    raw, path = audio_config(source, "audio_vae")
    model = AudioDecoder(AudioVaeConfig.from_dict(raw))
    if source.random_weights:
        _randomize_statistics(model, seed)
        _finish_random(model, mlx_dtype(dtype))
    else:
        prefixes = {f"{AUDIO_VAE_PREFIX}decoder.": "", STATS_PREFIX: "per_channel_statistics."}
        _load(model, path, prefixes, "audio VAE decoder", mlx_dtype(dtype))
    return model


def load_audio_encoder(source: Source, dtype: str = "bf16", seed: int = 0):
    """The audio VAE encoder: (B, 2, T, 64) log-mel -> (B, 8, T', 16) normalised latent."""
    from ltx_ane.models.audio_vae.encoder import AudioEncoder

    raw, path = audio_config(source, "audio_vae")
    model = AudioEncoder(AudioVaeConfig.from_dict(raw))
    if source.random_weights:
        _randomize_statistics(model, seed)
        _finish_random(model, mlx_dtype(dtype))
    else:
        prefixes = {f"{AUDIO_VAE_PREFIX}encoder.": "", STATS_PREFIX: "per_channel_statistics."}
        _load(model, path, prefixes, "audio VAE encoder", mlx_dtype(dtype))
    return model


def load_vocoder(source: Source, dtype: str = "bf16"):
    """The vocoder the config names: LTX-2's HiFi-GAN (24 kHz) or LTX-2.3's BigVGAN + BWE (48 kHz)."""
    import mlx.core as mx

    from ltx_ane.models.audio_vae.vocoder import build_vocoder, default_stft_bases

    raw, path = audio_config(source, "vocoder")
    config = VocoderConfig.from_dict(raw)
    model = build_vocoder(config)
    if source.random_weights:
        if config.bwe:
            basis, bank = default_stft_bases(config.bwe)
            model.mel_stft.stft_fn.forward_basis = mx.array(basis)
            model.mel_stft.mel_basis = mx.array(bank)
        _finish_random(model, mlx_dtype(dtype))
    else:
        _load(model, path, {VOCODER_PREFIX: ""}, "vocoder", mlx_dtype(dtype))
    return model
