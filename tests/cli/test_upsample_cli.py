"""``ltx-ane upsample`` end to end through ``ltx_ane.cli.main.main``: results, metadata, and bad input.

Upscaler and VAE files are written in the released format (bf16, config metadata) at reduced width; the
expected result is ltx-core's ``upsample_video`` with the same weights and statistics.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ltx_core")

from ltx_ane import reference as R  # noqa: E402
from ltx_ane.reference import upscaler as RU  # noqa: E402
from ltx_ane.cli.main import main  # noqa: E402
from ltx_ane.models.config import load_preset  # noqa: E402
from ltx_ane.io.latents import LatentFile, read_latent, write_latent  # noqa: E402

TOL = 1e-4  # fp32: max abs error <= TOL * max |reference|


def small_config(kind: str) -> dict:
    cfg = load_preset(f"{kind}-x2")
    cfg.update(mid_channels=64, num_blocks_per_stage=1)
    return cfg


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    g = torch.Generator().manual_seed(11)
    mean, std = torch.randn(128, generator=g) * 0.1, torch.rand(128, generator=g) + 0.5
    vae = d / "vae.safetensors"
    # The two statistics the step uses, the unused ones real files carry, and an unrelated tensor.
    R.write_checkpoint(
        vae,
        {
            "vae.per_channel_statistics.mean-of-means": mean,
            "vae.per_channel_statistics.std-of-means": std,
            "vae.per_channel_statistics.channel": torch.arange(128.0),
            "vae.per_channel_statistics.mean-of-stds": torch.ones(128),
            "vae.decoder.conv_in.conv.bias": torch.zeros(4),
        },
        {"vae": load_preset("ltx2")},
        dtype="fp32",
    )
    ups = {}
    for kind in ("spatial", "temporal"):
        cfg = small_config(kind)
        model = RU.build_upscaler(cfg)
        path = d / f"{kind}.safetensors"
        R.write_checkpoint(path, RU.upscaler_state_dict(model), cfg)
        R.load_checkpoint_into(model, path, {"": ""})
        ups[kind] = (path, model)
    x = np.random.default_rng(3).standard_normal((1, 128, 3, 2, 3)).astype(np.float32)
    lat = d / "latent.safetensors"
    write_latent(lat, LatentFile(latent=x, fps=24.0, height=64, width=96, frames=17, config={"vae": {"x": 1}}))
    return SimpleNamespace(dir=d, vae=vae, ups=ups, latent=lat, x=x, mean=mean, std=std)


def reference(env, kind: str) -> np.ndarray:
    from ltx_core.model.upsampler import upsample_video
    from ltx_core.model.video_vae.ops import PerChannelStatistics

    stats = PerChannelStatistics(128)
    stats.get_buffer("mean-of-means").copy_(env.mean)
    stats.get_buffer("std-of-means").copy_(env.std)
    with torch.no_grad():
        return upsample_video(torch.from_numpy(env.x), SimpleNamespace(per_channel_statistics=stats), env.ups[kind][1]).numpy()


def run(argv, capsys):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr()


def assert_fails(env, capsys, argv, output, message):
    code, captured = run(argv, capsys)
    assert code != 0
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "error" in lines[0] and message in lines[0], lines[0]
    assert not output.exists()
    assert not [p for p in output.parent.iterdir() if p.name.startswith(f".{output.name}")]  # no temp file left


def test_spatial(env, tmp_path, capsys):
    out = tmp_path / "up.safetensors"
    code, captured = run(["upsample", env.latent, "--spatial", env.ups["spatial"][0], "--vae", env.vae, "--dtype", "fp32", "-o", out], capsys)
    assert code == 0, captured.err
    f = read_latent(out)
    ref = reference(env, "spatial")
    assert f.latent.shape == ref.shape == (1, 128, 3, 4, 6)
    assert np.abs(f.latent - ref).max() <= TOL * np.abs(ref).max()
    assert (f.height, f.width, f.frames, f.fps) == (128, 192, 17, 24.0)
    assert f.config == {"vae": {"x": 1}}


def test_temporal_and_chunked(env, tmp_path, capsys):
    ref = reference(env, "temporal")
    assert ref.shape == (1, 128, 5, 2, 3)
    results = []
    for extra in ([], ["--chunk-frames", "2"]):
        out = tmp_path / f"up{len(extra)}.safetensors"
        argv = ["upsample", env.latent, "--temporal", env.ups["temporal"][0], "--vae", env.vae, "--dtype", "fp32", "-o", out]
        code, captured = run(argv + extra, capsys)
        assert code == 0, captured.err
        f = read_latent(out)
        assert np.abs(f.latent - ref).max() <= TOL * np.abs(ref).max()
        # 3 latent frames = 17 pixel frames -> 5 latent frames = 8*(2*3-2)+1 = 33 pixel frames, fps doubled.
        assert (f.height, f.width, f.frames, f.fps) == (64, 96, 33, 48.0)
        results.append(f.latent)
    assert np.abs(results[0] - results[1]).max() <= TOL * np.abs(ref).max()


def test_metadata_filled_in_when_absent(env, tmp_path, capsys):
    bare = tmp_path / "bare.safetensors"
    write_latent(bare, LatentFile(latent=env.x))
    out = tmp_path / "o.safetensors"
    code, captured = run(["upsample", bare, "--temporal", env.ups["temporal"][0], "--vae", env.vae, "-o", out], capsys)
    assert code == 0, captured.err
    f = read_latent(out)
    assert (f.height, f.width, f.frames, f.fps) == (64, 96, 33, None)


def test_random_weights(env, tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(small_config("spatial")))
    out = tmp_path / "r.safetensors"
    code, captured = run(["upsample", env.latent, "--spatial", "--random-weights", "--config", cfg, "-o", out], capsys)
    assert code == 0, captured.err
    assert "random" in captured.err
    f = read_latent(out)
    assert f.latent.shape == (1, 128, 3, 4, 6) and np.isfinite(f.latent).all()


# ------------------------------------------------------------------------------------------- bad input


def test_wrong_channels(env, tmp_path, capsys):
    lat = tmp_path / "c64.safetensors"
    write_latent(lat, LatentFile(latent=np.zeros((1, 64, 2, 2, 2), np.float32)))
    out = tmp_path / "o.safetensors"
    assert_fails(env, capsys, ["upsample", lat, "--spatial", env.ups["spatial"][0], "--vae", env.vae, "-o", out],
                 out, "64 channels")


@pytest.mark.parametrize("given,flag", [("spatial", "--temporal"), ("temporal", "--spatial")])
def test_upscaler_under_the_wrong_flag(env, tmp_path, capsys, given, flag):
    out = tmp_path / "o.safetensors"
    assert_fails(env, capsys, ["upsample", env.latent, flag, env.ups[given][0], "--vae", env.vae, "-o", out],
                 out, f"is a {given} upscaler")


def test_wrong_kind_without_metadata(env, tmp_path, capsys):
    from safetensors.torch import load_file

    bare = tmp_path / "spatial_nometa.safetensors"
    R.write_checkpoint(bare, load_file(str(env.ups["spatial"][0])), None)
    out = tmp_path / "o.safetensors"
    assert_fails(env, capsys, ["upsample", env.latent, "--temporal", bare, "--vae", env.vae, "-o", out],
                 out, "is a spatial upscaler")


@pytest.mark.parametrize("drop", ["mean-of-means", "std-of-means"])
def test_missing_statistics(env, tmp_path, capsys, drop):
    vae = tmp_path / "vae.safetensors"
    keep = "std-of-means" if drop == "mean-of-means" else "mean-of-means"
    R.write_checkpoint(vae, {f"vae.per_channel_statistics.{keep}": torch.ones(128), "vae.decoder.x": torch.zeros(2)}, None)
    out = tmp_path / "o.safetensors"
    assert_fails(env, capsys, ["upsample", env.latent, "--spatial", env.ups["spatial"][0], "--vae", vae, "-o", out],
                 out, f"missing vae.per_channel_statistics.{drop}")


def test_bad_statistics_values(env, tmp_path, capsys):
    vae = tmp_path / "vae.safetensors"
    R.write_checkpoint(vae, {"vae.per_channel_statistics.mean-of-means": torch.zeros(128),
                             "vae.per_channel_statistics.std-of-means": torch.zeros(128)}, None)
    out = tmp_path / "o.safetensors"
    assert_fails(env, capsys, ["upsample", env.latent, "--spatial", env.ups["spatial"][0], "--vae", vae, "-o", out],
                 out, "std-of-means holds values <= 0")


def _truncate(src, dst, keep: float = 0.5):
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("which", ["upscaler", "vae", "latent", "garbage"])
def test_corrupt_files(env, tmp_path, capsys, which):
    bad = tmp_path / "bad.safetensors"
    if which == "garbage":
        bad.write_bytes(b"not a safetensors file at all")
    else:
        _truncate({"upscaler": env.ups["spatial"][0], "vae": env.vae, "latent": env.latent}[which], bad)
    args = {"upscaler": env.ups["spatial"][0], "vae": env.vae, "latent": env.latent}
    args["upscaler" if which == "garbage" else which] = bad
    out = tmp_path / "o.safetensors"
    assert_fails(env, capsys, ["upsample", args["latent"], "--spatial", args["upscaler"], "--vae", args["vae"], "-o", out],
                 out, "bad.safetensors")


def test_vae_given_as_upscaler(env, tmp_path, capsys):
    out = tmp_path / "o.safetensors"
    assert_fails(env, capsys, ["upsample", env.latent, "--spatial", env.vae, "--vae", env.vae, "-o", out],
                 out, "holds a VAE")


def test_missing_arguments_and_files(env, tmp_path, capsys):
    out = tmp_path / "o.safetensors"
    up = env.ups["spatial"][0]
    assert_fails(env, capsys, ["upsample", env.latent, "--spatial", up, "-o", out], out, "--vae")
    assert_fails(env, capsys, ["upsample", env.latent, "--spatial", "--vae", env.vae, "-o", out], out, "needs an upscaler FILE")
    assert_fails(env, capsys, ["upsample", tmp_path / "nope.safetensors", "--spatial", up, "--vae", env.vae, "-o", out],
                 out, "not found")
    assert_fails(env, capsys, ["upsample", env.latent, "--spatial", tmp_path / "nope.safetensors", "--vae", env.vae, "-o", out],
                 out, "not found")
    missing_dir = tmp_path / "no" / "o.safetensors"
    code, captured = run(["upsample", env.latent, "--spatial", up, "--vae", env.vae, "-o", missing_dir], capsys)
    assert code != 0 and len(captured.err.strip().splitlines()) == 1 and "does not exist" in captured.err


def test_usage_errors_are_one_line(env, tmp_path, capsys):
    out = tmp_path / "o.safetensors"
    for argv in (
        ["upsample", env.latent, "--vae", env.vae, "-o", out],  # neither --spatial nor --temporal
        ["upsample", env.latent, "--spatial", "--temporal", "--random-weights", "-o", out],
        ["upsample", env.latent, "--spatial", "--random-weights", "--chunk-frames", "0", "-o", out],
    ):
        assert main([str(a) for a in argv]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
        assert not out.exists()


def test_hugging_face_repo_with_both_upscalers(env, tmp_path, capsys, monkeypatch):
    """A bare org/name resolves, in the local cache, to the file of the kind asked for, whichever is smaller."""
    import shutil

    repo = tmp_path / "hub" / "models--org--ltx"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for kind in ("spatial", "temporal"):
        shutil.copy(env.ups[kind][0], snapshot / f"ltx-{kind}-upscaler.safetensors")
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    # The hub reads the variable once, at import; its module constant is what a later lookup uses.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for kind in ("spatial", "temporal"):
        out = tmp_path / f"{kind}.safetensors"
        code, captured = run(["upsample", env.latent, f"--{kind}", "org/ltx", "--vae", env.vae, "--dtype", "fp32", "-o", out], capsys)
        assert code == 0, captured.err
        ref = reference(env, kind)
        assert np.abs(read_latent(out).latent - ref).max() <= TOL * np.abs(ref).max()
