"""Audio decode stage: an audio latent -> one waveform track per batch item, at the vocoder's sample rate."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from ltx_ane.errors import LtxAneError
from ltx_ane.io.audio import AudioTrack
from ltx_ane.models.audio_vae.decoder import AudioDecoder
from ltx_ane.models.audio_vae.loader import load_audio_decoder, load_vocoder
from ltx_ane.models.loading import Source


@dataclass
class AudioModels:
    decoder: AudioDecoder
    vocoder: object  # vocoder.Generator (LTX-2) or vocoder.VocoderWithBWE (LTX-2.3)

    @property
    def sample_rate(self) -> int:
        return self.vocoder.config.output_sampling_rate


def load_audio_models(source: Source, dtype: str = "bf16") -> AudioModels:
    """The audio VAE decoder and the vocoder of one checkpoint (or random), checked to fit together."""
    decoder, vocoder = load_audio_decoder(source, dtype), load_vocoder(source, dtype)
    if (decoder.config.out_ch, decoder.config.mel_bins) != (2, vocoder.config.mel_bins):
        raise LtxAneError(
            f"the audio VAE makes {decoder.config.out_ch} x {decoder.config.mel_bins}-bin spectrograms but the "
            f"vocoder takes 2 x {vocoder.config.mel_bins}"
        )
    return AudioModels(decoder, vocoder)


def decode_audio(models: AudioModels, latent) -> list[AudioTrack]:
    """(B, 8, T, 16) normalised audio latent -> B stereo tracks of (4T - 3) mel frames each."""
    models.decoder.check_latent(latent.shape)
    waveform = models.vocoder(models.decoder(mx.array(latent)))
    waveform = np.array(waveform.astype(mx.float32))
    return [AudioTrack(np.ascontiguousarray(w), models.sample_rate) for w in waveform]
