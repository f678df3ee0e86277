"""Weight compression (ct.optimize.coreml): smaller packages, weights still stored once across functions, and
the PSNR of the decompressed weights measured through the torch model."""

from __future__ import annotations

import pytest

pytest.importorskip("coremltools")
pytest.importorskip("ltx_core")

from coreml_util import small_upscaler, write_json  # noqa: E402

from ltx_ane.coreml.convert import ConvertOptions, TileShape, convert, read_metadata  # noqa: E402
from ltx_ane.coreml.graph import inspect_package  # noqa: E402
from ltx_ane.errors import LtxAneError  # noqa: E402
from ltx_ane.models.loading import Source  # noqa: E402


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    d = tmp_path_factory.mktemp("compress")
    return Source(config_file=write_json(d / "temporal.json", small_upscaler("temporal-x2", blocks=1)), random_weights=True)


def options(mode):
    return ConvertOptions(compress=mode, fp16_check=False, log=lambda m: None)


def test_int8_two_functions_half_size_weights_once(source, tmp_path):
    tiles = [TileShape.parse("9x64x64"), TileShape.parse("17x64x64")]
    plain = convert("temporal", source, tiles[:1], tmp_path, options=options(None))
    int8 = convert("temporal", source, tiles, tmp_path, options=options("int8"))
    report = inspect_package(int8.path)
    assert len(report.functions) == 2
    assert "constexpr_blockwise_shift_scale" in report.functions[0].op_counts
    # int8 halves fp16 weights (plus per-channel scales); two functions still share one copy.
    assert 0.45 < report.weight_bytes / inspect_package(plain.path).weight_bytes < 0.6
    assert int8.compressed_psnr_db > 45
    meta = read_metadata(int8.path)
    assert meta["ltx_ane.compression"] == "int8" and float(meta["ltx_ane.compressed_psnr_db"]) == pytest.approx(int8.compressed_psnr_db, abs=0.01)
    assert int8.path != plain.path


def test_palette4_is_smaller_and_less_exact(source, tmp_path):
    int8 = convert("temporal", source, [TileShape.parse("9x64x64")], tmp_path, options=options("int8"))
    pal4 = convert("temporal", source, [TileShape.parse("9x64x64")], tmp_path, options=options("palette4"))
    assert "constexpr_lut_to_dense" in inspect_package(pal4.path).functions[0].op_counts
    assert pal4.size_bytes < int8.size_bytes
    assert pal4.compressed_psnr_db < int8.compressed_psnr_db


def test_unknown_mode():
    with pytest.raises(LtxAneError, match="unknown compression"):
        ConvertOptions(compress="int3")
