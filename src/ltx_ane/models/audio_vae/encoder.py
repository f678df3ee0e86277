"""The audio VAE encoder: log-mel spectrogram (B, 2, T, 64) -> normalised latent means (B, 8, T', 16).

Mirrors ltx-core's ``AudioEncoder`` (for audio conditioning): ``conv_in``, one level per channel multiplier
with a stride-2 conv between levels, mid block, PixelNorm + SiLU, ``conv_out`` to mean and log-variance; the
means are normalised with the latent statistics. Waveform-to-mel (torchaudio in ltx-core) is not part of it.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ltx_ane.errors import LtxAneError
from ltx_ane.models.audio_vae.config import AudioVaeConfig
from ltx_ane.models.audio_vae.layers import CausalConv2d, Downsample, LatentStatistics, Level, MidBlock, ResnetBlock, norm


class AudioEncoder(nn.Module):
    def __init__(self, config: AudioVaeConfig):
        super().__init__()
        self.config = config
        axis, levels = config.causality_axis, len(config.ch_mult)
        self.per_channel_statistics = LatentStatistics(config.ch, config.z_channels)
        self.conv_in = CausalConv2d(config.in_channels, config.ch, 3, axis)
        resolution = config.resolution
        channels_in = (1, *config.ch_mult)
        self.down = []
        for level in range(levels):
            channels = config.ch * channels_in[level]
            blocks = []
            for _ in range(config.num_res_blocks):
                blocks.append(ResnetBlock(channels, config.ch * config.ch_mult[level], axis))
                channels = config.ch * config.ch_mult[level]
            stage = Level(blocks, resolution in config.attn_resolutions)
            if level != levels - 1:
                stage.downsample = Downsample(channels, axis)
                resolution //= 2
            self.down.append(stage)
        self.mid = MidBlock(channels, axis, config.mid_block_add_attention)
        out = 2 * config.z_channels if config.double_z else config.z_channels
        self.conv_out = CausalConv2d(channels, out, 3, axis)

    @property
    def dtype(self):
        return self.conv_in.conv.weight.dtype

    def check_mel(self, shape) -> None:
        cfg = self.config
        if len(shape) != 4 or shape[1] != cfg.in_channels or (cfg.mel_bins and shape[3] != cfg.mel_bins):
            raise LtxAneError(
                f"mel spectrogram must be (B, {cfg.in_channels}, T, {cfg.mel_bins}), got shape {list(shape)}"
            )

    def encode_channels_last(self, mel: mx.array) -> mx.array:
        """(B, T, 64, 2) log-mel -> (B, T', 16, 8) normalised latent means, channels-last."""
        x = self.conv_in(mel)
        for level, stage in enumerate(self.down):
            x = stage(x)
            if level != len(self.down) - 1:
                x = stage.downsample(x)
        x = self.conv_out(nn.silu(norm(self.mid(x))))
        return self.per_channel_statistics.normalize(x[..., : self.config.z_channels])

    def __call__(self, mel: mx.array) -> mx.array:
        """(B, 2, T, 64) log-mel -> (B, 8, T', 16) normalised latent means, as ltx-core."""
        self.check_mel(mel.shape)
        return self.encode_channels_last(mel.astype(self.dtype).transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
