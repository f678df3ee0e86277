"""``ltx-ane decode`` with an audio latent: MP4 with an AAC track, WAV alone, and the errors, at reduced width."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from ltx_ane import reference as R
from ltx_ane.reference import video_vae as RV
from ltx_ane.io.audio import read_wav
from tests.models.audio_util import small_audio_config, write_audio_checkpoint
from tests.vae_util import small_config
from tests.cli_util import expect_error, run_cli

FPS = 12.0
LATENT = (1, 16, 2, 2, 3)  # 9 frames of 64x96 with the small video VAE: 0.75 s at 12 fps


@pytest.fixture(scope="module", params=["ltx2", "ltx23"])
def checkpoint(request, tmp_path_factory):
    """A full checkpoint (video VAE decoder, audio VAE, vocoder) with the reference audio modules."""
    raw = {**small_config("ltx2"), **small_audio_config(request.param)}
    path = tmp_path_factory.mktemp("ckpt") / f"{request.param}.safetensors"
    video = RV.vae_state_dict(RV.build_decoder(raw))
    modules = write_audio_checkpoint(path, raw, parts=("decoder", "vocoder"), extra=video)
    return request.param, path, modules


def write_latents(path, audio_frames: int = 19, audio_channels: int = 2, audio_batch: int = 1):
    rng = np.random.default_rng(0)
    tensors = {"latent": rng.standard_normal(LATENT, dtype=np.float32)}
    if audio_frames:
        tensors["audio_latent"] = rng.standard_normal((audio_batch, audio_channels, audio_frames, 16), dtype=np.float32)
    save_file(tensors, str(path), metadata={"fps": str(FPS)})
    return tensors.get("audio_latent")


def test_mp4_has_video_and_audio_of_the_video_duration(checkpoint, tmp_path, capsys):
    preset, ckpt, _ = checkpoint
    latents, out = tmp_path / "latents.safetensors", tmp_path / "clip.mp4"
    write_latents(latents)
    code, stdout, err = run_cli(capsys, "decode", latents, "--vae", ckpt, "--dtype", "fp32", "--quiet", "-o", out)
    assert code == 0, err
    rate = {"ltx2": 24000, "ltx23": 48000}[preset]
    assert f"with 0.75 s of audio at {rate} Hz" in stdout
    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, audio.codec_context.name) == ("h264", "aac")
        assert (audio.rate, audio.channels) == (rate, 2)
        assert float(video.duration * video.time_base) == pytest.approx(9 / FPS)
        assert float(audio.duration * audio.time_base) == pytest.approx(9 / FPS, abs=1024 / rate)
        samples = sum(frame.samples for frame in container.decode(audio=0))
    # AAC codes whole 1024-sample frames: at most one partial frame of padding after the 0.75 s.
    assert 0.75 * rate <= samples < 0.75 * rate + 1024


def test_wav_matches_reference(checkpoint, tmp_path, capsys):
    preset, ckpt, modules = checkpoint
    latents, out = tmp_path / "latents.safetensors", tmp_path / "sound.wav"
    audio_latent = write_latents(latents, audio_frames=5, audio_batch=1)
    code, stdout, err = run_cli(capsys, "decode", latents, "--vae", ckpt, "--dtype", "fp32", "-o", out)
    assert code == 0, err
    assert not (tmp_path / "sound.mp4").exists()
    with torch.no_grad():
        expected = modules["vocoder"](modules["decoder"](torch.from_numpy(audio_latent)))[0].numpy()
    track = read_wav(out)
    assert track.sample_rate == {"ltx2": 24000, "ltx23": 48000}[preset]
    assert track.samples.shape == expected.shape == (2, (4 * 5 - 3) * track.sample_rate // 100)
    assert np.abs(track.samples - expected).max() <= 1.5 / 32767  # 16-bit rounding


def test_bad_audio_inputs(checkpoint, tmp_path, capsys):
    _, ckpt, _ = checkpoint
    mp4, wav = tmp_path / "clip.mp4", tmp_path / "sound.wav"
    wrong_channels, wrong_batch, silent = (tmp_path / f"{name}.safetensors" for name in ("channels", "batch", "silent"))
    write_latents(wrong_channels, audio_channels=8)
    write_latents(wrong_batch, audio_batch=2)
    write_latents(silent, audio_frames=0)
    expect_error(capsys, ["decode", wrong_channels, "--vae", ckpt, "-o", mp4], "8 channels x 16 mel bins", [mp4])
    expect_error(capsys, ["decode", wrong_batch, "--vae", ckpt, "-o", mp4], "audio_latent has batch 2", [mp4])
    expect_error(capsys, ["decode", silent, "--vae", ckpt, "-o", wav], "no tensor named 'audio_latent'", [wav])


def test_checkpoint_without_audio(tmp_path, capsys):
    raw = small_config("ltx2")
    ckpt = R.write_checkpoint(tmp_path / "vae.safetensors", RV.vae_state_dict(RV.build_decoder(raw)), raw)
    latents, mp4, wav = tmp_path / "latents.safetensors", tmp_path / "clip.mp4", tmp_path / "sound.wav"
    write_latents(latents)
    for out in (mp4, wav):
        expect_error(capsys, ["decode", latents, "--vae", ckpt, "-o", out], "no 'audio_vae' section", [out])
