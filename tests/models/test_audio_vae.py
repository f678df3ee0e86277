"""MLX audio VAE decoder/encoder against ltx-core 1.0.0 at the real width, loaded from the same bf16 checkpoint."""

from __future__ import annotations

import copy

import mlx.core as mx
import numpy as np
import pytest
import torch

from ltx_ane.errors import LtxAneError
from ltx_ane.models.audio_vae.config import AudioVaeConfig
from ltx_ane.models.audio_vae.loader import load_audio_decoder, load_audio_encoder
from ltx_ane.models.config import load_preset
from ltx_ane.models.loading import Source
from tests.models.audio_util import TOL, assert_half_precision, rel_err, write_audio_checkpoint

# MLX in bf16 must be as close to the fp32 reference as ltx-core itself in bf16 (within 1 dB; both measured
# ~35.7 dB on the mel). fp16 keeps 3 more mantissa bits, ~18 dB more: measured 53.6 dB, bound 48 dB.
BF16_MARGIN_DB = 1.0
FP16_MIN_SNR_DB = 48.0


@pytest.fixture(scope="module")
def ltx2(tmp_path_factory):
    raw = load_preset("ltx2")
    path = tmp_path_factory.mktemp("audio") / "ltx2_audio.safetensors"
    modules = write_audio_checkpoint(path, raw, parts=("decoder", "encoder"))
    return path, modules["decoder"], modules["encoder"]


def test_ltx23_audio_vae_is_ltx2s():
    """LTX-2.3 ships the same audio VAE config (embed_dim aside), so the LTX-2 parity covers both."""
    assert AudioVaeConfig.from_dict(load_preset("ltx23")) == AudioVaeConfig.from_dict(load_preset("ltx2"))


@pytest.mark.parametrize("frames", [1, 2, 4])
def test_decoder_matches_reference(ltx2, frames):
    path, reference, _ = ltx2
    latent = torch.randn(1, 8, frames, 16, generator=torch.Generator().manual_seed(frames))
    with torch.no_grad():
        expected = reference(latent).numpy()
    out = np.array(load_audio_decoder(Source(str(path)), "fp32")(mx.array(latent.numpy())))
    assert out.shape == expected.shape == (1, 2, 4 * frames - 3, 64)
    assert rel_err(expected, out) <= TOL


@pytest.mark.parametrize("mel_frames", [4, 13])
def test_encoder_matches_reference(ltx2, mel_frames):
    path, _, reference = ltx2
    mel = torch.randn(2, 2, mel_frames, 64, generator=torch.Generator().manual_seed(mel_frames))
    with torch.no_grad():
        expected = reference(mel).numpy()
    out = np.array(load_audio_encoder(Source(str(path)), "fp32")(mx.array(mel.numpy())))
    assert out.shape == expected.shape == (2, 8, (mel_frames + 3) // 4, 16)
    assert rel_err(expected, out) <= TOL


def test_decoder_half_precision_snr(ltx2):
    path, reference, _ = ltx2
    latent = torch.randn(1, 8, 3, 16, generator=torch.Generator().manual_seed(7))
    assert_half_precision(load_audio_decoder, path, reference, latent, FP16_MIN_SNR_DB, BF16_MARGIN_DB)


@pytest.mark.parametrize("axis", [None, "width", "width-compatibility"])
def test_attention_and_other_causality_axes(tmp_path, axis):
    """Attention (in the mid block by ltx-core's default, and at resolution 128) and the other padding layouts."""
    raw = copy.deepcopy(load_preset("ltx2"))
    dd = raw["audio_vae"]["model"]["params"]["ddconfig"]
    dd.update(ch=32, z_channels=2, ch_mult=[1, 1, 2], num_res_blocks=1, attn_resolutions=[128], causality_axis=axis)
    del dd["mid_block_add_attention"]
    path = tmp_path / "small.safetensors"
    modules = write_audio_checkpoint(path, raw, parts=("decoder", "encoder"))
    latent = torch.randn(1, 2, 3, 16, generator=torch.Generator().manual_seed(3))
    mel = torch.randn(1, 2, 9, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected_mel, expected_latent = modules["decoder"](latent).numpy(), modules["encoder"](mel).numpy()
    decoder = load_audio_decoder(Source(str(path)), "fp32")
    assert "attn_1" in decoder.mid and decoder.up[1].attn
    out_mel = np.array(decoder(mx.array(latent.numpy())))
    out_latent = np.array(load_audio_encoder(Source(str(path)), "fp32")(mx.array(mel.numpy())))
    assert out_mel.shape == expected_mel.shape and out_latent.shape == expected_latent.shape
    assert rel_err(expected_mel, out_mel) <= TOL
    assert rel_err(expected_latent, out_latent) <= TOL


@pytest.mark.parametrize(
    ("shape", "needle"),
    [((1, 4, 3, 16), "4 channels x 16 mel bins"), ((1, 8, 3, 32), "8 channels x 32 mel bins"), ((8, 3, 16), "4-D")],
)
def test_bad_latent(ltx2, shape, needle):
    decoder = load_audio_decoder(Source(str(ltx2[0])), "fp32")
    with pytest.raises(LtxAneError, match=needle):
        decoder(mx.zeros(shape))


def test_bad_mel_for_encoder(ltx2):
    with pytest.raises(LtxAneError, match=r"\(B, 2, T, 64\)"):
        load_audio_encoder(Source(str(ltx2[0])), "fp32")(mx.zeros((1, 2, 9, 80)))


def test_checkpoint_without_audio(tmp_path):
    from ltx_ane.reference import write_checkpoint

    raw = {**load_preset("ltx2"), "vae": {}}
    path = write_checkpoint(tmp_path / "video_only.safetensors", {"vae.decoder.conv_in.conv.weight": torch.zeros(1)}, raw)
    with pytest.raises(LtxAneError, match="holds no audio VAE decoder"):
        load_audio_decoder(Source(str(path)))
    no_section = write_checkpoint(tmp_path / "no_section.safetensors", {"x": torch.zeros(1)}, {"vae": {}})
    with pytest.raises(LtxAneError, match="no 'audio_vae' section"):
        load_audio_decoder(Source(str(no_section)))


def test_random_weights_decode():
    decoder = load_audio_decoder(Source(random_weights=True), "bf16")
    mel = decoder(mx.zeros((1, 8, 2, 16)))
    assert mel.shape == (1, 2, 5, 64) and mel.dtype == mx.bfloat16
