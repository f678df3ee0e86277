"""``ltx-ane render`` through main(): the pipeline equals its steps run by hand; backends; bad flags."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from ltx_ane import reference as R
from ltx_ane.reference import upscaler as RU
from ltx_ane.models.config import load_preset
from ltx_ane.io.latents import LatentFile, read_video_tensor, write_latent
from ltx_ane.models.loading import Source
from ltx_ane.models.video_vae.loader import load_decoder
from ltx_ane.models.upscaler.loader import load_upscaler
from ltx_ane.pipelines.video import decode_frames
from ltx_ane.models.upscaler.upsample import LatentStatistics, upsample_latent
from tests.vae_util import small_config, write_vae
from tests.cli_util import run_cli


def upscaler_config(kind):
    cfg = load_preset(f"{kind}-x2")
    cfg.update(in_channels=16, mid_channels=32, num_blocks_per_stage=1)
    return cfg


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("render")
    out = {"vae": write_vae(d / "vae.safetensors", small_config("ltx2"))}
    for kind in ("spatial", "temporal"):
        cfg = upscaler_config(kind)
        out[kind] = R.write_checkpoint(d / f"{kind}.safetensors", RU.upscaler_state_dict(RU.build_upscaler(cfg)), cfg)
        (d / f"{kind}.json").write_text(json.dumps(cfg))
        out[f"{kind}_config"] = d / f"{kind}.json"
    out["vae_config"] = d / "vae.json"
    out["vae_config"].write_text(json.dumps(small_config("ltx2")))
    latent = np.random.default_rng(0).standard_normal((1, 16, 2, 2, 2), dtype=np.float32)
    out["latent"] = d / "latent.safetensors"
    write_latent(out["latent"], LatentFile(latent=latent, fps=12.0))
    out["latent_array"] = latent
    return out


def by_hand(files, latent):
    decoder = load_decoder(Source(checkpoint=str(files["vae"])), "fp32")
    stats = LatentStatistics(np.array(decoder.per_channel_statistics["mean-of-means"]),
                             np.array(decoder.per_channel_statistics["std-of-means"]))
    for kind in ("spatial", "temporal"):
        model = load_upscaler(Source(checkpoint=str(files[kind])), "fp32", expected_kind=kind)
        latent = upsample_latent(latent, model, stats)
    frames = np.concatenate([np.array(c) for c in decode_frames(decoder, mx.array(latent), None)], 1)
    return frames.transpose(0, 4, 1, 2, 3)


def test_render_equals_the_steps_by_hand_on_each_backend(files, tmp_path, capsys):
    expected = by_hand(files, files["latent_array"])
    assert expected.shape == (1, 3, 17, 128, 128)
    common = ["render", files["latent"], "--spatial-upscaler", files["spatial"], "--temporal-upscaler", files["temporal"],
              "--vae", files["vae"], "--dtype", "fp32", "--quiet", "--profile", tmp_path / "none.json"]
    # no profile given and none at the path: --profile must exist
    code, _, err = run_cli(capsys, *common, "-o", tmp_path / "x.safetensors")
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    common = common[:-2]

    out = tmp_path / "mlx.safetensors"
    code, stdout, err = run_cli(capsys, *common, "--tiling", "off", "-o", out)
    assert code == 0, err
    assert "backend decoder: mlx (auto: no profile" in stdout and "temporal x2 on mlx" in stdout
    video, meta = read_video_tensor(out)
    assert np.abs(video - expected).max() <= 1e-4 * np.abs(expected).max()
    assert float(meta["fps"]) == 24.0  # temporal x2 doubles the latent file's 12 fps

    out = tmp_path / "mixed.safetensors"
    code, stdout, err = run_cli(capsys, *common, "--spatial-backend", "torch", "--decoder-backend", "mlx,torch",
                                "--tiling", "17x96x96", "--max-in-flight", "3", "-o", out)
    assert code == 0, err
    assert "spatial x2 on torch" in stdout and "decoder: mlx + torch (as asked)" in stdout
    assert "decoder throughput:" in stdout and "together" in stdout
    video, _ = read_video_tensor(out)
    # Tiled: blend seams differ from the untiled decode, so compare with the same tiling on MLX alone.
    code, _, err = run_cli(capsys, *common, "--tiling", "17x96x96", "-o", tmp_path / "tiled.safetensors")
    assert code == 0, err
    tiled, _ = read_video_tensor(tmp_path / "tiled.safetensors")
    assert np.abs(video - tiled).max() <= 1e-4 * np.abs(tiled).max()


def test_render_random_weights_to_mp4(files, tmp_path, capsys):
    out = tmp_path / "r.mp4"
    code, stdout, err = run_cli(capsys, "render", "--random-latent", "2x1x1", "--random-weights", "--config",
                                files["vae_config"], "--spatial-upscaler", "--spatial-config", files["spatial_config"],
                                "--backend", "mlx", "-o", out, "--quiet")
    assert code == 0, err
    assert out.stat().st_size > 0
    assert "9 frames of 64x64" in stdout and "random weights" in stdout


def test_auto_skips_a_failed_parity_gate_and_entries_measured_with_other_weights(files, tmp_path, capsys):
    from ltx_ane.runtime.backends import run_identity

    this_run = run_identity(load_decoder(Source(checkpoint=str(files["vae"])), "bf16"))  # decode's default dtype
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"entries": [
        {"component": "decoder", "tile": [2, 2, 2], "backend": "coreml:CPU_AND_NE", "passed_parity": False,
         "median_s": 0.1, "measured_with": this_run},
        {"component": "decoder", "tile": [2, 2, 2], "backend": "torch", "passed_parity": True, "median_s": 0.1,
         "measured_with": {**this_run, "weights_digest": "0" * 16}}]}))
    code, stdout, err = run_cli(capsys, "decode", files["latent"], "--vae", files["vae"], "--profile", profile,
                                "-o", tmp_path / "d.safetensors", "--quiet")
    assert code == 0, err
    assert ("backend decoder: mlx (auto: profile has no passing backend for 2x2x2 (failed parity: coreml:CPU_AND_NE; "
            "ignored torch: measured with other weights;") in stdout


@pytest.mark.parametrize("argv, message", [
    (["--backend", "cuda"], "unknown backend 'cuda'"),
    (["--decoder-backend", "coreml"], "Core ML runs only on macOS"),
    (["--spatial-upscaler", "x", "--spatial-backend", "mlx,torch"], "takes one backend"),
    (["--spatial-upscaler"], "--spatial-upscaler needs a FILE"),
    (["--max-in-flight", "0"], "must be at least 1"),
    (["--random-latent", "1x1x1"], "not both or neither"),
    (["--package", "nowhere.mlpackage"], "does not exist"),
])
def test_bad_render_flags_are_one_line_errors(files, tmp_path, capsys, argv, message):
    code, stdout, err = run_cli(capsys, "render", files["latent"], "--vae", files["vae"], *argv, "-o", tmp_path / "o.mp4")
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("command", ["decode", "encode"])
def test_bad_backend_on_decode_and_encode(files, tmp_path, capsys, command):
    out = tmp_path / "o.safetensors"
    code, _, err = run_cli(capsys, command, files["latent"], "--vae", files["vae"], "--backend", "coreml:NPU", "-o", out)
    assert code == 2 and "compute unit" in err and len(err.strip().splitlines()) == 1
