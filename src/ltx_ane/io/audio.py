"""Audio out: waveforms fitted to a video's duration, WAV files, and the audio latent of a latent file.

In memory a track is float32 (channels, samples) in [-1, 1] with its sample rate. The MP4 writer
(``io.video.Mp4Writer``) muxes a track as AAC next to the video.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ltx_ane.errors import LtxAneError
from ltx_ane.io.latents import atomic_output

AUDIO_LATENT = "audio_latent"


@dataclass(frozen=True)
class AudioTrack:
    samples: np.ndarray  # (channels, n) float32 in [-1, 1]
    sample_rate: int

    def __post_init__(self):
        if self.samples.ndim != 2 or self.samples.shape[0] not in (1, 2):
            raise LtxAneError(f"audio must be (channels, samples) with 1 or 2 channels, got shape {list(self.samples.shape)}")
        if self.sample_rate < 1:
            raise LtxAneError(f"sample rate must be positive, got {self.sample_rate}")

    @property
    def channels(self) -> int:
        return self.samples.shape[0]

    @property
    def duration(self) -> float:
        return self.samples.shape[1] / self.sample_rate

    def fit_to_duration(self, seconds: float) -> AudioTrack:
        """Trimmed, or padded with silence, to ``seconds``, so audio and video streams end together.

        A decoded audio latent covers 4T - 3 mel frames, a few tens of milliseconds short of the video.
        """
        n = round(seconds * self.sample_rate)
        samples = self.samples[:, :n]
        if samples.shape[1] < n:
            samples = np.pad(samples, ((0, 0), (0, n - samples.shape[1])))
        return AudioTrack(np.ascontiguousarray(samples, dtype=np.float32), self.sample_rate)


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """(channels, n) float in [-1, 1] -> (n, channels) interleaved int16 (clipped, rounded)."""
    return np.rint(np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16).T.copy()


def write_wav(path: str | Path, track: AudioTrack) -> None:
    """16-bit PCM WAV; nothing appears under ``path`` unless the whole file was written."""
    path = Path(path)
    with atomic_output(path, suffix=".wav") as tmp:
        with wave.open(str(tmp), "wb") as out:
            out.setnchannels(track.channels)
            out.setsampwidth(2)
            out.setframerate(track.sample_rate)
            out.writeframes(to_pcm16(track.samples).tobytes())


def read_wav(path: str | Path) -> AudioTrack:
    """A 16-bit PCM WAV as written by :func:`write_wav`."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as src:
            if src.getsampwidth() != 2:
                raise LtxAneError(f"{path}: only 16-bit PCM WAV is supported")
            pcm = np.frombuffer(src.readframes(src.getnframes()), dtype=np.int16)
            channels, rate = src.getnchannels(), src.getframerate()
    except (OSError, EOFError, wave.Error) as e:
        raise LtxAneError(f"cannot read {path}: {e}") from None
    return AudioTrack((pcm.reshape(-1, channels).T / 32767.0).astype(np.float32), rate)


def read_audio_latent(path: str | Path, required: bool = False) -> np.ndarray | None:
    """The ``audio_latent`` tensor (B, 8, T, 16) of a latent file as float32; None if absent and not required."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise LtxAneError(f"input not found: {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            if AUDIO_LATENT not in f.keys():
                if required:
                    raise LtxAneError(f"{path} has no tensor named {AUDIO_LATENT!r} (no audio to decode)")
                return None
            if f.get_slice(AUDIO_LATENT).get_dtype() == "BF16":
                raise LtxAneError(f"{path}: tensor {AUDIO_LATENT!r} is bf16; store it as float32 or float16")
            latent = np.asarray(f.get_tensor(AUDIO_LATENT), dtype=np.float32)
    except SafetensorError as e:
        raise LtxAneError(f"{path} is not a valid safetensors file ({e})") from None
    if latent.ndim != 4:
        raise LtxAneError(f"{path}: {AUDIO_LATENT} must be 4-D (B, C, T, mel), got shape {list(latent.shape)}")
    return latent
