"""Conversion to Core ML packages: program checks, metadata, caching, atomicity, fp16 safety (Linux: no running).

Models are reduced in width and depth (one layer per res_x stage, one ResBlock per upscaler stage): conversion
time grows with the op count, and every block type is still present.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("coremltools")
torch = pytest.importorskip("torch")
pytest.importorskip("ltx_core")

from coreml_util import small_upscaler, small_vae, write_json  # noqa: E402

from ltx_ane.coreml.convert import (  # noqa: E402
    ConvertOptions,
    TileShape,
    build_component,
    cache_key,
    convert,
    plan_component,
    read_metadata,
)
from ltx_ane.coreml.graph import ANE_OPS, CONSTEXPR_OPS, inspect_package  # noqa: E402
from ltx_ane.coreml.rewrites import Variant  # noqa: E402
from ltx_ane.errors import LtxAneError  # noqa: E402
from ltx_ane.models.loading import Source  # noqa: E402
from ltx_ane.reference import write_checkpoint  # noqa: E402
from ltx_ane.reference.video_vae import build_decoder, vae_state_dict  # noqa: E402

QUIET = ConvertOptions(log=lambda msg: None)
ALTERNATE = Variant(conv="split", d2s="reshape", norm="plain")
REQUIRED_METADATA = ("component", "config_hash", "weights_hash", "weights_digest", "tiles", "variant", "coremltools_version", "ltx_ane_version", "cache_key", "functions")


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    d = tmp_path_factory.mktemp("configs")
    return {
        "ltx2": write_json(d / "ltx2.json", small_vae("ltx2", depth=1)),
        "ltx23": write_json(d / "ltx23.json", small_vae("ltx23", depth=1)),
        "spatial": write_json(d / "spatial.json", small_upscaler("spatial-x2", blocks=1)),
        "temporal": write_json(d / "temporal.json", small_upscaler("temporal-x2", blocks=1)),
    }


@pytest.fixture(scope="module")
def packages(configs, tmp_path_factory):
    """One conversion per component (the decoder with two tiles: a multifunction package)."""
    out = tmp_path_factory.mktemp("packages")
    tile = [TileShape.parse("9x64x64")]
    return {
        "decoder": convert("decoder", Source(config_file=configs["ltx23"], random_weights=True), tile + [TileShape.parse("17x64x96")], out, options=QUIET),
        "encoder": convert("encoder", Source(config_file=configs["ltx2"], random_weights=True), tile, out, options=QUIET),
        "spatial": convert("spatial", Source(config_file=configs["spatial"], random_weights=True), tile, out, options=QUIET),
        "temporal": convert("temporal", Source(config_file=configs["temporal"], random_weights=True), tile, out, options=QUIET),
        # The other form of every rewrite: three summed convs, reshape/transpose depth-to-space, the plain norms.
        "decoder-split": convert("decoder", Source(config_file=configs["ltx2"], random_weights=True), tile, out, ALTERNATE, QUIET),
        "encoder-split": convert("encoder", Source(config_file=configs["ltx23"], random_weights=True), tile, out, ALTERNATE, QUIET),
    }


@pytest.mark.parametrize("name", ["decoder", "encoder", "spatial", "temporal", "decoder-split", "encoder-split"])
def test_programs_are_rank4_fp16_and_allowlisted(packages, name):
    result = packages[name]
    component, _, alternate = name.partition("-")
    report = inspect_package(result.path)
    for function in report.functions:
        assert function.max_rank == 4, function.ranks
        assert set(function.dtypes) == {"FLOAT16"}
        assert set(function.op_counts) <= ANE_OPS | CONSTEXPR_OPS, set(function.op_counts) - ANE_OPS
        assert not [f for f in function.flags if f.severity == "blocker"], function.flags
        assert "conv" in function.op_counts
    meta = {k.removeprefix("ltx_ane."): v for k, v in report.metadata.items()}
    for key in REQUIRED_METADATA:
        assert meta.get(key), key
    assert meta["component"] == component
    assert meta["variant"] == (ALTERNATE if alternate else Variant()).name
    assert result.fp16_psnr_db >= 40


def test_function_shapes(packages):
    functions = {f.name: f for f in inspect_package(packages["decoder"].path).functions}
    assert set(functions) == {"tile_9x64x64", "tile_17x64x96"}
    f = functions["tile_17x64x96"]
    assert f.inputs["latent"][1] == [3, 16, 2, 3]
    assert f.outputs["frames"][1] == [17, 48, 16, 24]  # patchified: the host unpatchifies
    enc = inspect_package(packages["encoder"].path).functions[0]
    assert enc.name == "main" and enc.inputs["frames"][1] == [9, 48, 16, 16] and enc.outputs["latent"][1] == [2, 16, 2, 2]
    temporal = inspect_package(packages["temporal"].path).functions[0]
    assert temporal.inputs["latent"][1] == [2, 128, 2, 2] and temporal.outputs["latent_x2"][1] == [3, 128, 2, 2]
    spatial = inspect_package(packages["spatial"].path).functions[0]
    assert spatial.outputs["latent_x2"][1] == [2, 128, 4, 4]
    meta = read_metadata(packages["decoder"].path)
    assert json.loads(meta["ltx_ane.functions"])["17x64x96"] == {"function": "tile_17x64x96", "input": [3, 16, 2, 3]}


def test_repeat_reuses_and_changes_do_not(packages, configs):
    first = packages["encoder"]
    source = Source(config_file=configs["ltx2"], random_weights=True)
    again = convert("encoder", source, [TileShape.parse("9x64x64")], first.path.parent, options=QUIET)
    assert again.reused and again.path == first.path
    # Everything that determines a package changes its key (hence its name).
    loaded = build_component(plan_component("encoder", source))
    tiles = [TileShape.parse("9x64x64")]
    base = cache_key(loaded, tiles, Variant(), "fp16", "9.0")
    assert base == first.path.name.split("-")[1].removesuffix(".mlpackage")
    changed = {
        cache_key(loaded, [TileShape.parse("17x64x64")], Variant(), "fp16", "9.0"),
        cache_key(loaded, tiles, Variant(conv="split"), "fp16", "9.0"),
        cache_key(loaded, tiles, Variant(), "fp32", "9.0"),
        cache_key(loaded, tiles, Variant(), "fp16", "9.1"),
    }
    loaded.weights_hash = "different"
    changed.add(cache_key(loaded, tiles, Variant(), "fp16", "9.0"))
    loaded.config = {**loaded.config, "vae": {**loaded.config["vae"], "latent_channels": 32}}
    changed.add(cache_key(loaded, tiles, Variant(), "fp16", "9.0"))
    assert base not in changed and len(changed) == 6


def test_stale_package_with_other_key_is_not_reused(packages, configs, tmp_path):
    """A package at the expected name whose metadata says otherwise is converted again, not trusted."""
    source = Source(config_file=configs["temporal"], random_weights=True)
    target = tmp_path / packages["temporal"].path.name
    import shutil

    shutil.copytree(packages["spatial"].path, target)  # wrong contents under the right name
    result = convert("temporal", source, [TileShape.parse("9x64x64")], tmp_path, options=QUIET)
    assert not result.reused
    assert read_metadata(target)["ltx_ane.component"] == "temporal"


def test_checkpoint_through_cli_and_shared_weights(packages, configs, tmp_path, capsys):
    """A checkpoint in the real format (bf16, config in metadata) converts through the command line; a
    two-function package stores its weights once (about the size of a one-function one)."""
    from ltx_ane.cli.main import main

    config = json.loads(Path(configs["ltx23"]).read_text())
    ckpt = write_checkpoint(tmp_path / "vae.safetensors", vae_state_dict(decoder=build_decoder(config, seed=3)), config)
    rc = main(["convert", "--component", "decoder", "--vae", str(ckpt), "--tile", "9x64x64", "-o", str(tmp_path / "out"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    path = Path(out.splitlines()[0])
    meta = read_metadata(path)
    assert meta["ltx_ane.source"] == str(ckpt)
    # The runtime's check: the model a user runs from this checkpoint is the one the package was converted from.
    from ltx_ane.models.loading import Source
    from ltx_ane.models.video_vae.loader import load_decoder
    from ltx_ane.runtime.backends import model_identity

    identity = model_identity(load_decoder(Source(checkpoint=str(ckpt)), "bf16"))
    assert (meta["ltx_ane.config_hash"], meta["ltx_ane.weights_digest"]) == (identity["config_hash"], identity["weights_digest"])
    single = inspect_package(path).weight_bytes
    double = inspect_package(packages["decoder"].path).weight_bytes
    assert 0.9 < double / single < 1.1


def test_killed_conversion_leaves_no_package(configs, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ltx_ane.cli.main", "convert", "--component", "temporal", "--random-weights",
           "--config", configs["temporal"], "--tile", "9x64x64", "17x64x64", "-o", str(out), "--quiet", "--no-fp16-check"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        # Wait until the first function is saved inside the partial folder: a complete-looking package exists.
        while time.time() < deadline and not list(out.glob(".partial-*/*.mlpackage/Manifest.json")):
            assert proc.poll() is None, "conversion finished before it could be killed"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not list(out.glob("*.mlpackage"))
    assert list(out.glob(".partial-*"))  # SIGKILL cannot be cleaned up after...
    convert("temporal", Source(config_file=configs["temporal"], random_weights=True), [TileShape.parse("9x64x64")], out,
                     options=ConvertOptions(log=lambda m: None, fp16_check=False))
    assert not list(out.glob(".partial-*"))  # ...but the next conversion in the folder removes it
    assert len(list(out.glob("*.mlpackage"))) == 1


def test_terminated_conversion_cleans_up(configs, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ltx_ane.cli.main", "convert", "--component", "spatial", "--random-weights",
           "--config", configs["spatial"], "--tile", "9x64x64", "-o", str(out), "--quiet", "--no-fp16-check"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob(".partial-*")):
        assert proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not list(out.iterdir())


def test_conv3d_variant(configs, tmp_path):
    """The unmodified 5-D graph: the decoder converts (rank 5, flagged); the encoder hits Core ML's rank limit."""
    result = convert("decoder", Source(config_file=configs["ltx2"], random_weights=True), [TileShape.parse("9x64x64")], tmp_path,
                             Variant(conv="conv3d"), QUIET)
    function = inspect_package(result.path).functions[0]
    assert function.max_rank == 5
    assert "rank5" in {f.code for f in function.flags if f.severity == "blocker"}
    with pytest.raises(LtxAneError, match="coremltools could not convert the encoder") as err:
        convert("encoder", Source(config_file=configs["ltx2"], random_weights=True), [TileShape.parse("9x64x64")], tmp_path / "enc",
                        Variant(conv="conv3d"), QUIET)
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "enc").iterdir())


def test_fp16_refusal_and_fp32_option(tmp_path):
    """Latent statistics that push the plain PixelNorm's x^2 past fp16's range: refused in fp16 unless prescaled,
    kept in fp32 on request."""
    config = small_vae("ltx2", depth=1)
    decoder = build_decoder(config)
    decoder.per_channel_statistics.get_buffer("std-of-means").fill_(2000.0)
    ckpt = write_checkpoint(tmp_path / "vae.safetensors", vae_state_dict(decoder=decoder), config, dtype="fp32")
    source = Source(checkpoint=str(ckpt))
    tile = [TileShape.parse("9x64x64")]
    with pytest.raises(LtxAneError, match=r"fp16 reaches only .* dB PSNR.*--precision fp32.*never the ANE"):
        convert("decoder", source, tile, tmp_path / "plain", Variant(norm="plain"), QUIET)
    assert not (tmp_path / "plain").exists() or not list((tmp_path / "plain").iterdir())
    fp32 = convert("decoder", source, tile, tmp_path / "fp32", Variant(norm="plain"), ConvertOptions(precision="fp32", log=lambda m: None))
    function = inspect_package(fp32.path).functions[0]
    assert "FLOAT32" in function.dtypes
    assert "fp32" in {f.code for f in function.flags if f.severity == "blocker"}


def test_prescaled_norm_passes_where_plain_fails():
    from ltx_ane.coreml.convert import example_input, fp16_psnr
    from ltx_ane.coreml.rewrites import rewrite

    decoder = build_decoder(small_vae("ltx2", depth=1))
    decoder.per_channel_statistics.get_buffer("std-of-means").fill_(2000.0)
    x = example_input("decoder", (2, 16, 2, 2), 0)
    assert fp16_psnr(rewrite(decoder, "decoder", Variant(norm="prescaled")), x) >= 40
    assert fp16_psnr(rewrite(decoder, "decoder", Variant(norm="plain")), x) < 20


@pytest.mark.parametrize("tile,message", [
    ("10x64x64", r"needs 8k\+1 frames"),
    ("9x64x48", "width 48 is not a multiple of 32"),
    ("9x100x64", "height 100 is not a multiple of 32"),
    ("9x64", "expected FRAMESxHEIGHTxWIDTH"),
])
def test_bad_tiles_fail_before_building(configs, tmp_path, tile, message):
    with pytest.raises(LtxAneError, match=message):
        convert("decoder", Source(config_file=configs["ltx2"], random_weights=True), [TileShape.parse(tile)], tmp_path / "o", options=QUIET)
    assert not (tmp_path / "o").exists()


def test_tile_shape_helpers():
    assert TileShape.from_latent(5, 8, 12) == TileShape(33, 256, 384)
    assert TileShape.parse("33x256x384").latent(8, 32) == (5, 8, 12)
    assert TileShape.parse("1x32x32").function_name == "tile_1x32x32"


def test_pid_check_does_not_touch_live_partials(tmp_path):
    from ltx_ane.coreml.package import clean_stale_partials

    live = tmp_path / f".partial-abc-{os.getppid()}"
    dead = tmp_path / ".partial-abc-999999999"
    live.mkdir()
    dead.mkdir()
    clean_stale_partials(tmp_path)
    assert live.exists() and not dead.exists()


def test_tiler_tiles_match_the_tiler():
    """Packages for the tiled decode carry exactly the shapes ltx_ane.runtime.tiling asks for."""
    from ltx_ane.coreml.convert import tiler_tiles
    from ltx_ane.runtime.tiling import make_plan

    videos = [TileShape.parse("121x512x768"), TileShape.parse("33x256x256")]
    tiles = tiler_tiles(videos, [TileShape.parse("65x512x512")])
    assert tiles == [TileShape(33, 256, 256), TileShape(65, 512, 512)]
    for video in videos:
        plan = make_plan(video.latent(8, 32), (9, 16, 16))
        for job in plan.jobs():
            shape = tuple(s.stop - s.start for s in job.latent_slices)
            assert TileShape.from_latent(*shape) in tiles


def test_video_option_is_for_vae_only(configs, tmp_path):
    options = ConvertOptions(log=lambda m: None, videos=(TileShape.parse("33x256x256"),))
    with pytest.raises(LtxAneError, match="--video is for the tiled decoder/encoder"):
        convert("spatial", Source(config_file=configs["spatial"], random_weights=True), [TileShape.parse("9x64x64")], tmp_path, options=options)
