"""I2V image preparation against ltx-pipelines' ``load_image_conditioning``: same pixels out."""

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image
from sampling_util import torch

from ltx_ane.errors import LtxAneError
from ltx_ane.io.image import h264_round_trip, prepare_conditioning_image, read_image, resize_and_center_crop


def _write_image(path, height, width, mode="RGB", seed=0):
    """A smooth gradient with some texture, so the H.264 round trip actually changes pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 / width, y * 255 / height, (x + y) % 64 * 4], axis=-1)
    pixels = pixels + rng.normal(0, 12, (height, width, 3))
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    if mode == "RGBA":
        pixels = np.concatenate([pixels, np.full((height, width, 1), 128, np.uint8)], axis=-1)
    Image.fromarray(pixels, mode).save(path)
    return path


def test_h264_round_trip_is_the_pipelines(tmp_path):
    from ltx_pipelines.utils.media_io import preprocess

    pixels = read_image(_write_image(tmp_path / "odd.png", 45, 67))
    ours = h264_round_trip(pixels)
    assert ours.shape == (44, 66, 3)  # odd sizes lose the last row and column, as in ltx-pipelines
    np.testing.assert_array_equal(ours, preprocess(pixels, crf=33))
    assert not np.array_equal(ours, pixels[:44, :66])
    assert h264_round_trip(pixels, crf=0) is pixels


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ((45, 67), (64, 96)),
        ((120, 90), (128, 64)),
        ((64, 96), (64, 96)),
        ((300, 200), (96, 160)),
        ((720, 1280), (512, 768)),
    ],
    ids=["upscale-odd", "tall-crop", "same", "wide-crop", "720p-to-512x768"],
)
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_prepared_image_matches_load_image_conditioning(tmp_path, source, target, mode):
    from ltx_pipelines.utils.media_io import load_image_conditioning

    path = str(_write_image(tmp_path / "image.png", *source, mode=mode))
    ours = prepare_conditioning_image(path, *target)
    ref = load_image_conditioning(path, *target, dtype=torch.float32, device="cpu")
    assert ours.shape == (1, 3, 1, *target) and ours.dtype == mx.float32
    np.testing.assert_array_equal(np.array(ours), ref.numpy())


def test_resize_matches_torch_bilinear():
    """The resize on its own, on arbitrary (non-integer-ratio) sizes, bit for bit (resized h + w > 128, where
    torch runs its generic kernel)."""
    from ltx_pipelines.utils.media_io import resize_and_center_crop as ref_resize

    pixels = np.random.default_rng(2).integers(0, 256, (37, 53, 3)).astype(np.uint8)
    for height, width in ((64, 64), (90, 40), (100, 45), (30, 160)):
        ours = resize_and_center_crop(pixels, height, width)
        ref = ref_resize(torch.tensor(pixels, dtype=torch.float32), height, width)[0, :, 0].permute(1, 2, 0)
        np.testing.assert_array_equal(ours, ref.numpy())


def test_bf16_output_for_a_bf16_encoder(tmp_path):
    path = _write_image(tmp_path / "image.png", 64, 64)
    assert prepare_conditioning_image(path, 64, 64, dtype=mx.bfloat16).dtype == mx.bfloat16


def test_unreadable_images_are_one_line_errors(tmp_path):
    with pytest.raises(LtxAneError, match="image not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(LtxAneError, match="cannot read image") as error:
        read_image(tmp_path / "text.png")
    assert "\n" not in str(error.value)



def test_grey_and_palette_images_become_rgb(tmp_path):
    """ltx-pipelines would slice a (H, W) array here; converting is the only sensible reading."""
    Image.fromarray(np.full((8, 6), 77, np.uint8), "L").save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_image(tmp_path / "grey.png"), np.full((8, 6, 3), 77, np.uint8))
    Image.fromarray(np.full((8, 6), 3, np.uint8), "L").convert("P").save(tmp_path / "palette.png")
    assert read_image(tmp_path / "palette.png").shape == (8, 6, 3)
