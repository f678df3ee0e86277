"""The audio VAE decoder: normalised latent (B, 8, T, 16) -> log-mel spectrogram (B, 2, 4T - 3, 64).

Mirrors ltx-core's ``AudioDecoder``: un-normalise, ``conv_in``, mid block, one level per channel multiplier
(widest first) with a x2 upsampling between levels, PixelNorm + SiLU, ``conv_out``; then the output is cropped
(or zero-padded) to the frame count ltx-core targets.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ltx_ane.errors import LtxAneError
from ltx_ane.models.audio_vae.config import AudioVaeConfig
from ltx_ane.models.audio_vae.layers import CausalConv2d, LatentStatistics, Level, MidBlock, ResnetBlock, Upsample, norm


class AudioDecoder(nn.Module):
    def __init__(self, config: AudioVaeConfig):
        super().__init__()
        self.config = config
        axis, levels = config.causality_axis, len(config.ch_mult)
        channels = config.ch * config.ch_mult[-1]
        self.per_channel_statistics = LatentStatistics(config.ch, config.z_channels)
        self.conv_in = CausalConv2d(config.z_channels, channels, 3, axis)
        self.mid = MidBlock(channels, axis, config.mid_block_add_attention)
        resolution = config.resolution // 2 ** (levels - 1)
        up: list[Level | None] = [None] * levels
        for level in reversed(range(levels)):
            blocks = []
            for _ in range(config.num_res_blocks + 1):
                blocks.append(ResnetBlock(channels, config.ch * config.ch_mult[level], axis))
                channels = config.ch * config.ch_mult[level]
            stage = Level(blocks, resolution in config.attn_resolutions)
            if level != 0:
                stage.upsample = Upsample(channels, axis)
                resolution *= 2
            up[level] = stage
        self.up = up
        self.conv_out = CausalConv2d(channels, config.out_ch, 3, axis)

    @property
    def dtype(self):
        return self.conv_in.conv.weight.dtype

    def check_latent(self, shape) -> None:
        cfg = self.config
        if len(shape) != 4:
            raise LtxAneError(f"audio latent must be 4-D (B, C, T, mel), got shape {list(shape)}")
        if shape[1] != cfg.z_channels or shape[3] != cfg.latent_mel_bins:
            raise LtxAneError(
                f"audio latent has {shape[1]} channels x {shape[3]} mel bins but the audio VAE expects "
                f"{cfg.z_channels} x {cfg.latent_mel_bins} (shape {list(shape)})"
            )
        if shape[2] < 1:
            raise LtxAneError("the audio latent has no frames")

    def decode_channels_last(self, latent: mx.array) -> mx.array:
        """(B, T, 16, 8) latent -> (B, T', mel_bins, 2) log-mel, channels-last."""
        cfg = self.config
        frames = cfg.mel_frames(latent.shape[1])
        mel_bins = cfg.mel_bins or latent.shape[2]
        x = self.conv_in(self.per_channel_statistics.un_normalize(latent))
        x = self.mid(x)
        for level in reversed(range(len(self.up))):
            x = self.up[level](x)
            if level != 0:
                x = self.up[level].upsample(x)
        x = self.conv_out(nn.silu(norm(x)))
        x = x[:, :frames, :mel_bins]
        short_t, short_f = frames - x.shape[1], mel_bins - x.shape[2]
        if short_t > 0 or short_f > 0:
            x = mx.pad(x, [(0, 0), (0, max(short_t, 0)), (0, max(short_f, 0)), (0, 0)])
        return x

    def __call__(self, latent: mx.array) -> mx.array:
        """(B, 8, T, 16) normalised latent -> (B, 2, T', mel_bins) log-mel spectrogram, as ltx-core."""
        self.check_latent(latent.shape)
        mel = self.decode_channels_last(latent.astype(self.dtype).transpose(0, 2, 3, 1))
        return mel.transpose(0, 3, 1, 2)
