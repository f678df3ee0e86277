"""The backend-neutral tiler: equal tiles, exact coverage, partition of unity, streaming."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from ltx_ane.errors import LtxAneError
from ltx_ane.models.loading import Source
from ltx_ane.models.video_vae.loader import load_decoder, load_encoder
from ltx_ane.pipelines.video import decode_frames, encode_video
from ltx_ane.runtime.tiling import auto_tile, make_plan, parse_tile_spec, run_tiled, sequential, split_axis
from tests.vae_util import small_config, write_vae


@pytest.mark.parametrize("length,tile,overlap", [(24, 16, 2), (22, 16, 2), (7, 5, 3), (40, 15, 2), (9, 9, 2), (5, 8, 2)])
def test_split_axis_covers_exactly_with_equal_tiles(length, tile, overlap):
    starts = split_axis(length, tile, overlap)
    size = min(tile, length)
    assert starts[0] == 0 and starts[-1] + size == length
    for a, b in zip(starts, starts[1:]):
        assert a + size - b >= overlap  # neighbours share at least the minimum overlap
        assert b > a


@pytest.mark.parametrize("grid,tile", [((16, 16, 24), (9, 16, 16)), ((7, 6, 9), (5, 4, 5)), ((31, 22, 40), (8, 12, 15))])
@pytest.mark.parametrize("side", ["pixel", "latent"])
def test_weights_are_a_partition_of_unity(grid, tile, side):
    plan = make_plan(grid, tile)
    for axis in plan.axes:
        ranges, weights = axis.ranges(side), axis.weights(side)
        total = np.zeros(ranges[-1][1])
        for (start, stop), w in zip(ranges, weights):
            assert len(w) == stop - start and (w >= 0).all()
            total[start:stop] += w
        np.testing.assert_allclose(total, 1.0, atol=1e-6)
    # All tiles share one shape, on both sides.
    shapes = {tuple(s.stop - s.start for s in job.pixel_slices) for job in plan.jobs()}
    assert shapes == {plan.pixel_tile_shape}


def fake_decode(latent):
    """A local stand-in decoder: frame j shows latent ceil(j/8); each latent covers 4x4 pixels."""
    t = latent.shape[1]
    idx = mx.array([-(-j // 8) for j in range(8 * (t - 1) + 1)])
    return mx.repeat(mx.repeat(latent[:, idx], 4, axis=2), 4, axis=3)


@pytest.mark.parametrize("tile", [(5, 4, 5), (4, 3, 3), (6, 5, 4), (7, 6, 9)])
def test_tiled_local_operator_is_exact(tile):
    """With an operator that has no context, blending must reproduce the untiled result exactly; this checks
    the coordinate mapping, the anchor-frame handling and the streaming carry-over."""
    latent = mx.random.normal((2, 7, 6, 9, 3), key=mx.random.key(0))
    plan = make_plan((7, 6, 9), tile, 8, 4, overlap=(2, 1))
    chunks = list(run_tiled(plan, latent, sequential(fake_decode), "decode"))
    np.testing.assert_allclose(np.array(mx.concatenate(chunks, axis=1)), np.array(fake_decode(latent)), atol=1e-5)
    if len(plan.axes[0].starts) > 1:
        assert len(chunks) == len(plan.axes[0].starts)


@pytest.fixture(scope="module")
def small_vae(tmp_path_factory):
    path = write_vae(tmp_path_factory.mktemp("vae") / "vae.safetensors", small_config("ltx2"))
    return load_decoder(Source(str(path)), "fp32"), load_encoder(Source(str(path)), "fp32")


def test_one_tile_equals_untiled_decode(small_vae):
    decoder, _ = small_vae
    latent = mx.random.normal((1, 16, 3, 2, 3), key=mx.random.key(1))
    whole = np.array(decoder(latent)).transpose(0, 2, 3, 4, 1)
    (one,) = list(decode_frames(decoder, latent, (3, 2, 3)))
    np.testing.assert_array_equal(np.array(one), whole)


def test_streamed_chunks_equal_whole_tiled_output(small_vae):
    """The streamed chunks, concatenated, equal a plain (non-streaming) weighted sum of all tiles."""
    decoder, _ = small_vae
    latent = mx.random.normal((1, 16, 7, 3, 4), key=mx.random.key(2))
    tile = (4, 3, 3)
    chunks = list(decode_frames(decoder, latent, tile))
    streamed = np.array(mx.concatenate(chunks, axis=1))
    whole = blend_by_hand(make_plan((7, 3, 4), tile, balance=True), decoder.decode_channels_last,
                          latent.transpose(0, 2, 3, 4, 1), "decode", streamed.shape)
    assert len(chunks) > 1
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_tiles_are_balanced(small_vae, monkeypatch):
    """Every tile is shrunk to the smallest that needs no more tiles (equal tiles, no oversized edge tiles)."""
    decoder, encoder = small_vae
    seen = []
    for model, method in ((decoder, "decode_channels_last"), (encoder, "encode_channels_last")):
        run = getattr(model, method)
        monkeypatch.setattr(model, method, lambda x, run=run: seen.append(tuple(x.shape[1:4])) or run(x))
    latent = mx.random.normal((1, 16, 7, 3, 6), key=mx.random.key(4))
    list(decode_frames(decoder, latent, (6, 3, 5)))
    assert set(seen) == {(5, 3, 4)}  # asked 6x3x5: the smallest tile with as many tiles
    seen.clear()
    encode_video(encoder, mx.random.uniform(-1, 1, (1, 3, 49, 64, 64), key=mx.random.key(5)), (6, 2, 2))
    assert set(seen) == {(33, 64, 64)}  # asked 41x64x64


def test_tiled_encode_is_the_blend_of_its_tiles_and_close_to_the_untiled_encode(small_vae):
    _, encoder = small_vae
    video = mx.random.uniform(-1, 1, (1, 3, 33, 64, 128), key=mx.random.key(3))
    whole = np.array(encoder(video))
    np.testing.assert_array_equal(np.array(encode_video(encoder, video, (5, 2, 4))), whole)
    tile = (4, 2, 3)
    tiled = np.array(encode_video(encoder, video, tile))
    # Values: exactly the weighted sum of each tile's own encode, placed where its latents belong ...
    plan = make_plan((5, 2, 4), tile, balance=True)
    channels_last = (tiled.shape[0], *tiled.shape[2:], tiled.shape[1])
    blended = blend_by_hand(plan, encoder.encode_channels_last, video.transpose(0, 2, 3, 4, 1), "encode",
                            channels_last).transpose(0, 4, 1, 2, 3)
    assert plan.num_tiles > 1
    np.testing.assert_allclose(tiled, blended, atol=1e-5)
    # ... and close to the untiled encode: tiles see less context (random weights mix it strongly), so not equal,
    # but a tile blended into the wrong place would not correlate.
    assert np.corrcoef(tiled.ravel(), whole.ravel())[0, 1] > 0.9


def blend_by_hand(plan, run, x, direction: str, out_shape) -> np.ndarray:
    """The plain (non-streaming) weighted sum of every tile's own result, each placed where it belongs; channels-last
    in and out. ``direction``: 'decode' (latent tiles in, pixels out) or 'encode'."""
    in_side, out_side = ("latent", "pixel") if direction == "decode" else ("pixel", "latent")
    wt, wh, ww = plan.weights(out_side)
    out = np.zeros(out_shape, dtype=np.float32)
    for job in plan.jobs():
        ti, hi, wi = job.grid
        src = job.latent_slices if in_side == "latent" else job.pixel_slices
        dst = job.pixel_slices if out_side == "pixel" else job.latent_slices
        weight = wt[ti][:, None, None, None] * wh[hi][None, :, None, None] * ww[wi][None, None, :, None]
        out[:, dst[0], dst[1], dst[2]] += np.array(run(x[:, src[0], src[1], src[2]])) * weight
    return out


def test_tile_spec_and_auto_tile():
    assert parse_tile_spec("65x512x512") == (9, 16, 16)
    for bad in ("64x512x512", "65x500x512", "65x512", "ax1x1"):
        with pytest.raises(LtxAneError):
            parse_tile_spec(bad)
    assert auto_tile((16, 16, 24), budget_bytes=10**12, base_channels=128, dtype_bytes=2) is None
    small = auto_tile((61, 22, 40), budget_bytes=3 * 10**9, base_channels=128, dtype_bytes=2)
    assert small is not None and small[1] <= 22 and small[2] < 40
    with pytest.raises(LtxAneError):
        make_plan((10, 4, 4), (3, 4, 4))  # a 3-latent tile cannot keep a 3-latent temporal overlap
