"""Latent shapes, token layout and RoPE positions for video and audio (patch size 1, as every LTX-2 pipeline uses).

Video latent (B, C, F, h, w) <-> tokens (B, F*h*w, C) in (f, h, w) order. Audio latent (B, C, T, mel) <-> tokens
(B, T, C*mel). Positions are [start, end) bounds: video (B, 3, T, 2) in (seconds, pixel rows, pixel columns), audio
(B, 1, T, 2) in seconds.
"""

from __future__ import annotations

from typing import NamedTuple

import mlx.core as mx
import numpy as np

from ltx_ane.errors import LtxAneError

VIDEO_TIME_SCALE = 8
VIDEO_SPACE_SCALE = 32
VIDEO_LATENT_CHANNELS = 128
AUDIO_LATENT_CHANNELS = 8
AUDIO_MEL_BINS = 16
# 16 kHz audio, hop 160, 4 mel frames per latent: 25 latents per second.
AUDIO_SAMPLE_RATE = 16000
AUDIO_HOP_LENGTH = 160
AUDIO_LATENT_DOWNSAMPLE = 4


class VideoLatentShape(NamedTuple):
    batch: int
    channels: int
    frames: int
    height: int
    width: int

    @staticmethod
    def from_pixels(
        frames: int, height: int, width: int, batch: int = 1, channels: int = VIDEO_LATENT_CHANNELS
    ) -> VideoLatentShape:
        latent_frames = (frames - 1) // VIDEO_TIME_SCALE + 1
        return VideoLatentShape(batch, channels, latent_frames, height // VIDEO_SPACE_SCALE, width // VIDEO_SPACE_SCALE)

    @property
    def pixel_frames(self) -> int:
        return (self.frames - 1) * VIDEO_TIME_SCALE + 1

    def token_count(self) -> int:
        return self.frames * self.height * self.width


class AudioLatentShape(NamedTuple):
    batch: int
    channels: int
    frames: int
    mel_bins: int

    @staticmethod
    def from_video(frames: int, fps: float, batch: int = 1) -> AudioLatentShape:
        """The audio latent that lasts as long as ``frames`` video frames at ``fps``."""
        latents_per_second = float(AUDIO_SAMPLE_RATE) / float(AUDIO_HOP_LENGTH) / float(AUDIO_LATENT_DOWNSAMPLE)
        duration = float(frames) / float(fps)
        return AudioLatentShape(batch, AUDIO_LATENT_CHANNELS, round(duration * latents_per_second), AUDIO_MEL_BINS)

    def token_count(self) -> int:
        return self.frames


def check_video_size(frames: int, height: int, width: int, two_stage: bool = False) -> None:
    """Reject a pixel size the VAE and the two-stage upscaler cannot represent exactly."""
    if frames < 1 or (frames - 1) % VIDEO_TIME_SCALE != 0:
        raise LtxAneError(f"frame count must be 8k+1 (1, 9, 17, ..., 121), got {frames}")
    divisor = 2 * VIDEO_SPACE_SCALE if two_stage else VIDEO_SPACE_SCALE
    if height <= 0 or width <= 0 or height % divisor or width % divisor:
        kind = "two-stage pipelines" if two_stage else "one-stage pipelines"
        raise LtxAneError(f"height and width must be multiples of {divisor} for {kind}, got {height}x{width}")


def patchify_video(latent: mx.array) -> mx.array:
    """(B, C, F, h, w) -> (B, F*h*w, C)."""
    b, c = latent.shape[:2]
    return latent.reshape(b, c, -1).transpose(0, 2, 1)


def unpatchify_video(tokens: mx.array, shape: VideoLatentShape) -> mx.array:
    """(B, F*h*w, C) -> (B, C, F, h, w); ``shape.channels`` is ignored so masks (C = 1) work too."""
    b, _, c = tokens.shape
    return tokens.transpose(0, 2, 1).reshape(b, c, shape.frames, shape.height, shape.width)


def patchify_audio(latent: mx.array) -> mx.array:
    """(B, C, T, mel) -> (B, T, C*mel)."""
    b, c, t, f = latent.shape
    return latent.transpose(0, 2, 1, 3).reshape(b, t, c * f)


def unpatchify_audio(tokens: mx.array, channels: int, mel_bins: int) -> mx.array:
    """(B, T, C*mel) -> (B, C, T, mel)."""
    b, t, _ = tokens.shape
    return tokens.reshape(b, t, channels, mel_bins).transpose(0, 2, 1, 3)


def video_positions(shape: VideoLatentShape, fps: float, frame_offset: int = 0, causal_fix: bool = True) -> mx.array:
    """Float32 (B, 3, F*h*w, 2) [start, end) bounds of every token: time in seconds, rows and columns in pixels.

    Latent frame 0 covers a single pixel frame (the causal VAE), so with ``causal_fix`` time bounds are shifted by
    1 - 8 and clamped at 0: frame 0 -> [0, 1), frame 1 -> [1, 9). ``frame_offset`` (pixel frames) places a
    keyframe latent later in the video; it is added before the division by ``fps``.
    """
    f, h, w = np.meshgrid(np.arange(shape.frames), np.arange(shape.height), np.arange(shape.width), indexing="ij")
    starts = np.stack([f.ravel(), h.ravel(), w.ravel()])  # (3, T)
    bounds = np.stack([starts, starts + 1], axis=-1)  # (3, T, 2)
    scale = np.array([VIDEO_TIME_SCALE, VIDEO_SPACE_SCALE, VIDEO_SPACE_SCALE]).reshape(3, 1, 1)
    pixels = bounds * scale
    if causal_fix:
        pixels[0] = np.maximum(pixels[0] + 1 - VIDEO_TIME_SCALE, 0)
    pixels[0] += frame_offset
    positions = mx.array(pixels.astype(np.float32))
    positions = mx.concatenate([positions[:1] / fps, positions[1:]], axis=0)
    return mx.broadcast_to(positions[None], (shape.batch, *positions.shape))


def audio_positions(shape: AudioLatentShape) -> mx.array:
    """Float32 (B, 1, T, 2) [start, end) times in seconds of every audio latent, causally shifted as the VAE is."""

    def seconds(first: int) -> mx.array:
        mel_frame = mx.arange(first, first + shape.frames, dtype=mx.float32) * AUDIO_LATENT_DOWNSAMPLE
        mel_frame = mx.maximum(mel_frame + 1 - AUDIO_LATENT_DOWNSAMPLE, 0)
        return mel_frame * AUDIO_HOP_LENGTH / AUDIO_SAMPLE_RATE

    bounds = mx.stack([seconds(0), seconds(1)], axis=-1)  # (T, 2)
    return mx.broadcast_to(bounds[None, None], (shape.batch, 1, shape.frames, 2))
