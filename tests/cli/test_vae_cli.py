"""decode / encode / info through the command line a user runs, including bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from ltx_ane import reference as R
from ltx_ane.reference import video_vae as RV
from ltx_ane.io.latents import LatentFile, read_latent, read_video_tensor, write_latent
from tests.vae_util import small_config, write_vae
from tests.cli_util import expect_error, run_cli


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    return write_vae(tmp_path_factory.mktemp("ckpt") / "vae.safetensors", small_config("ltx2"))


@pytest.fixture
def latent_file(tmp_path):
    path = tmp_path / "latent.safetensors"
    latent = np.random.default_rng(0).standard_normal((1, 16, 2, 2, 3), dtype=np.float32)
    write_latent(path, LatentFile(latent=latent, fps=12.0))
    return path, latent


def test_decode_to_raw_frames_matches_reference(vae, latent_file, tmp_path, capsys):
    path, latent = latent_file
    out = tmp_path / "frames.safetensors"
    code, stdout, err = run_cli(capsys, "decode", path, "--vae", vae, "--dtype", "fp32", "--tiling", "off",
                                "-o", out, "--quiet")
    assert code == 0, err
    video, meta = read_video_tensor(out)
    with torch.no_grad():
        expected = RV.reference_decoder_from_checkpoint(vae, small_config("ltx2"))(torch.from_numpy(latent)).numpy()
    assert video.shape == expected.shape == (1, 3, 9, 64, 96)
    assert np.abs(video - expected).max() <= 1e-4 * np.abs(expected).max()
    assert float(meta["fps"]) == 12.0
    assert "peak" in stdout.strip().splitlines()[-1]


def test_decode_mp4_tiled_and_encode_roundtrip(vae, tmp_path, capsys):
    path = tmp_path / "wide.safetensors"
    write_latent(path, LatentFile(latent=np.random.default_rng(1).standard_normal((1, 16, 2, 2, 4), np.float32), fps=12.0))
    mp4 = tmp_path / "out.mp4"
    code, _, err = run_cli(capsys, "decode", path, "--vae", vae, "--tiling", "9x64x96", "-o", mp4, "--quiet")
    assert code == 0, err
    assert mp4.stat().st_size > 0
    lat = tmp_path / "enc.safetensors"
    code, _, err = run_cli(capsys, "encode", mp4, "--vae", vae, "-o", lat, "--quiet")
    assert code == 0, err
    result = read_latent(lat)
    assert result.latent.shape == (1, 16, 2, 2, 4)
    assert (result.fps, result.frames, result.height, result.width) == (12.0, 9, 64, 128)
    assert result.config["vae"]["latent_channels"] == 16


def test_random_weights_and_random_latent(tmp_path, capsys):
    out = tmp_path / "r.safetensors"
    code, stdout, err = run_cli(capsys, "decode", "--random-latent", "1x1x1", "--random-weights", "--config",
                                json_config(tmp_path), "-o", out, "--quiet")
    assert code == 0, err
    assert read_video_tensor(out)[0].shape == (1, 3, 1, 32, 32)
    assert "random weights" in stdout


def test_a_batch_decodes_to_one_numbered_mp4_per_item(vae, tmp_path, capsys):
    """Batch items are numbered from 1, as the videos of a prompt file are (``generate --prompts``)."""
    path = tmp_path / "two.safetensors"
    latent = np.random.default_rng(1).standard_normal((2, 16, 1, 2, 2), dtype=np.float32)
    write_latent(path, LatentFile(latent=latent, fps=12.0))
    code, _, err = run_cli(capsys, "decode", path, "--vae", vae, "-o", tmp_path / "v.mp4", "--quiet")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.glob("v*.mp4")) == ["v_1.mp4", "v_2.mp4"]
    # LTX-2's decoder pads by reflection, which a one-pixel-wide latent cannot give: one line, no file.
    write_latent(path, LatentFile(latent=latent[:, :, :, :1], fps=12.0))
    code, _, err = run_cli(capsys, "decode", path, "--vae", vae, "-o", tmp_path / "w.mp4", "--quiet")
    assert code == 2 and "too small" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("w*"))


def json_config(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(small_config("ltx23")))
    return path


def test_info(vae, capsys):
    code, out, _ = run_cli(capsys, "info", vae)
    assert code == 0
    assert "VAE decoder" in out and "VAE encoder" in out and "BF16" in out and "compress_all" in out


def test_bad_inputs(vae, latent_file, tmp_path, capsys):
    path, _ = latent_file
    out = tmp_path / "o.mp4"
    # wrong channel count
    bad = tmp_path / "bad.safetensors"
    write_latent(bad, LatentFile(latent=np.zeros((1, 8, 2, 2, 3), np.float32)))
    expect_error(capsys, ["decode", bad, "--vae", vae, "-o", out], "8 channels", [out])
    # not safetensors / truncated / missing
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"hello world, not a tensor file")
    expect_error(capsys, ["decode", junk, "--vae", vae, "-o", out], "not a valid safetensors", [out])
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(vae.read_bytes()[: vae.stat().st_size // 2])
    expect_error(capsys, ["decode", path, "--vae", trunc, "-o", out], "truncated", [out])
    expect_error(capsys, ["decode", path, "--vae", tmp_path / "missing.safetensors", "-o", out], "not found", [out])
    # a checkpoint without a VAE
    other = tmp_path / "other.safetensors"
    save_file({"model.diffusion_model.x": np.zeros(3, np.float32)}, str(other))
    expect_error(capsys, ["decode", path, "--vae", other, "--config", "ltx2", "-o", out], "no VAE decoder", [out])
    # missing keys
    tensors = RV.vae_state_dict(RV.build_decoder(small_config("ltx2")))
    del tensors["vae.decoder.conv_out.conv.weight"]
    partial = R.write_checkpoint(tmp_path / "partial.safetensors", tensors, small_config("ltx2"))
    expect_error(capsys, ["decode", path, "--vae", partial, "-o", out], "conv_out.conv.weight", [out])
    # wrong architecture for the weights
    expect_error(capsys, ["decode", path, "--vae", vae, "--config", "ltx23", "-o", out], "mis-shaped", [out])
    # unwritable output
    expect_error(capsys, ["decode", path, "--vae", vae, "-o", tmp_path / "nodir" / "x.mp4"], "does not exist")
    # unknown block type
    cfg = small_config("ltx2")
    cfg["vae"]["decoder_blocks"][0][0] = "attn_res_x"
    cfg_path = tmp_path / "c.json"
    cfg_path.write_text(json.dumps(cfg))
    expect_error(capsys, ["decode", path, "--random-weights", "--config", cfg_path, "-o", out],
                 "vae.decoder_blocks[0]", [out])
    # encode: frames not 8k+1, sizes not multiples of 32
    vid = tmp_path / "v.safetensors"
    save_file({"video": np.zeros((1, 3, 10, 64, 64), np.float32)}, str(vid))
    lat = tmp_path / "l.safetensors"
    expect_error(capsys, ["encode", vid, "--vae", vae, "-o", lat], "8k+1", [lat])
    save_file({"video": np.zeros((1, 3, 9, 60, 64), np.float32)}, str(vid))
    expect_error(capsys, ["encode", vid, "--vae", vae, "-o", lat], "multiple of 32", [lat])
    # usage errors are one line too
    expect_error(capsys, ["decode", path, "--vae", vae, "-o", out, "--dtype", "int8"], "invalid choice", [out])


def test_python_dash_m_runs_the_command_line():
    import subprocess
    import sys

    from ltx_ane import __version__

    out = subprocess.run([sys.executable, "-m", "ltx_ane", "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"ltx-ane {__version__}"
    bad = subprocess.run([sys.executable, "-m", "ltx_ane", "decode"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
