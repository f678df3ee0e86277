"""Audio tracks: fitting to a video's duration, WAV files, AAC next to H.264 in an MP4."""

from __future__ import annotations

import av
import numpy as np
import pytest

from ltx_ane.errors import LtxAneError
from ltx_ane.io.audio import AudioTrack, read_wav, write_wav
from ltx_ane.io.video import Mp4Writer


def tone(seconds: float, rate: int = 24000, channels: int = 2) -> AudioTrack:
    t = np.arange(round(seconds * rate)) / rate
    return AudioTrack(np.stack([0.5 * np.sin(2 * np.pi * 440 * t)] * channels).astype(np.float32), rate)


def test_fit_to_duration_trims_and_pads_with_silence():
    track = tone(1.0)
    short = track.fit_to_duration(0.5)
    long = track.fit_to_duration(1.25)
    assert short.samples.shape == (2, 12000) and np.array_equal(short.samples, track.samples[:, :12000])
    assert long.samples.shape == (2, 30000) and not long.samples[:, 24000:].any()
    assert long.duration == pytest.approx(1.25)


def test_wav_roundtrip(tmp_path):
    track = tone(0.2, rate=48000)
    write_wav(tmp_path / "a.wav", track)
    back = read_wav(tmp_path / "a.wav")
    assert back.sample_rate == 48000 and back.samples.shape == track.samples.shape
    assert np.abs(back.samples - track.samples).max() <= 1 / 32767


@pytest.mark.parametrize("shape", [(3, 100), (100,), (0, 10)])
def test_bad_track_shapes(shape):
    with pytest.raises(LtxAneError, match="channels, samples"):
        AudioTrack(np.zeros(shape, dtype=np.float32), 24000)


@pytest.mark.parametrize("channels", [1, 2])
def test_mp4_with_audio(tmp_path, channels):
    out = tmp_path / "clip.mp4"
    frames = np.zeros((6, 32, 32, 3), dtype=np.uint8)
    with Mp4Writer(out, 12, audio=tone(1.0, channels=channels)) as writer:
        for _ in range(2):  # two chunks: audio is interleaved as frames arrive
            writer.write(frames)
    with av.open(str(out)) as container:
        audio = container.streams.audio[0]
        assert (audio.channels, audio.rate) == (channels, 24000)
        assert float(audio.duration * audio.time_base) == pytest.approx(1.0, abs=1024 / 24000)
        decoded = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    # AAC is lossy but a pure tone survives: same level.
    assert np.sqrt(np.mean(decoded**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


def test_failed_mp4_with_audio_leaves_nothing(tmp_path):
    out = tmp_path / "clip.mp4"
    with pytest.raises(RuntimeError):
        with Mp4Writer(out, 12, audio=tone(1.0)) as writer:
            writer.write(np.zeros((3, 32, 32, 3), dtype=np.uint8))
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
