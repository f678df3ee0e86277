"""MLX VideoDecoder/VideoEncoder against ltx-core 1.0.0, loaded from the same bf16 checkpoint."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import torch

from ltx_ane.models import layers
from ltx_ane.reference import video_vae as RV
from ltx_ane.models.loading import Source
from ltx_ane.models.video_vae.loader import load_decoder, load_encoder
from tests.vae_util import TOL, assert_both_match_reference, psnr, rel_err, small_config, write_vae


@pytest.fixture(scope="module", params=["ltx2", "ltx23"])
def checkpoint(request, tmp_path_factory):
    raw = small_config(request.param)
    path = write_vae(tmp_path_factory.mktemp("vae") / f"{request.param}.safetensors", raw)
    return request.param, raw, path


@pytest.mark.parametrize("shape", [(1, 16, 1, 2, 3), (2, 16, 3, 3, 5), (1, 16, 4, 3, 2)])
def test_decoder_matches_reference(checkpoint, shape):
    _, raw, path = checkpoint
    ref = RV.reference_decoder_from_checkpoint(path, raw)
    model = load_decoder(Source(str(path)), "fp32")
    latent = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(latent).numpy()
    out = np.array(model(mx.array(latent.numpy())))
    assert out.shape == expected.shape == (shape[0], 3, 8 * (shape[2] - 1) + 1, 32 * shape[3], 32 * shape[4])
    assert rel_err(expected, out) <= TOL


@pytest.mark.parametrize("shape", [(1, 3, 1, 32, 64), (2, 3, 9, 64, 96), (1, 3, 17, 96, 32)])
def test_encoder_matches_reference(checkpoint, shape):
    _, raw, path = checkpoint
    ref = RV.reference_encoder_from_checkpoint(path, raw)
    model = load_encoder(Source(str(path)), "fp32")
    video = torch.rand(*shape, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        expected = ref(video).numpy()
    out = np.array(model(mx.array(video.numpy())))
    assert out.shape == expected.shape
    assert rel_err(expected, out) <= TOL


def test_causal_decoder_and_reflect_encoder(tmp_path):
    """The other padding branches: causal time padding in the decoder, reflect padding in the encoder."""
    raw = small_config("ltx2")
    raw["vae"]["causal_decoder"] = True
    raw["vae"]["spatial_padding_mode"] = "reflect"
    path = write_vae(tmp_path / "causal.safetensors", raw)
    latent = torch.randn(1, 16, 3, 2, 3, generator=torch.Generator().manual_seed(3))
    video = torch.rand(1, 3, 9, 64, 64, generator=torch.Generator().manual_seed(4)) * 2 - 1
    assert_both_match_reference(path, raw, latent, video)


def test_encoder_plain_strided_blocks_and_multiplier_one(tmp_path):
    """Encoder compress_* without _res (strided convs) and a _res block with multiplier 1."""
    raw = small_config("ltx2")
    raw["vae"]["encoder_blocks"] = [["res_x", {"num_layers": 1}], ["compress_space", {}], ["compress_time", {}],
                                    ["compress_all_res", {"multiplier": 1}], ["compress_all", {}], ["res_x", 1]]
    path = write_vae(tmp_path / "strided.safetensors", raw)
    video = torch.rand(1, 3, 17, 64, 64, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        expected = RV.reference_encoder_from_checkpoint(path, raw)(video).numpy()
    out = np.array(load_encoder(Source(str(path)), "fp32")(mx.array(video.numpy())))
    assert out.shape == expected.shape
    assert rel_err(expected, out) <= TOL


def test_full_width_decoder_and_encoder_on_tiny_input(tmp_path):
    """LTX-2 at its real widths (128 latent channels, 1024-channel decoder) on the smallest input."""
    raw = small_config("ltx2", base=128, latent=128)
    path = write_vae(tmp_path / "full.safetensors", raw)
    latent = torch.randn(1, 128, 1, 2, 2, generator=torch.Generator().manual_seed(6))
    video = torch.rand(1, 3, 1, 32, 32, generator=torch.Generator().manual_seed(7)) * 2 - 1
    assert_both_match_reference(path, raw, latent, video)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_error(checkpoint, dtype):
    """bf16 keeps 8 mantissa bits (relative step 2^-8 = 0.4 %), fp16 11; over ~45 layers with pixel norms
    re-normalising each block, the errors stay near one rounding step: bf16 must stay above 35 dB PSNR
    (about 1.8 % of the peak as RMS error) and fp16 above 45 dB; measured values are printed."""
    name, _, path = checkpoint
    latent = mx.array(np.random.default_rng(8).standard_normal((1, 16, 3, 2, 3), dtype=np.float32))
    ref = np.array(load_decoder(Source(str(path)), "fp32")(latent))
    out = np.array(load_decoder(Source(str(path)), dtype)(latent).astype(mx.float32))
    value = psnr(ref, out)
    print(f"{name} decoder {dtype}: PSNR {value:.1f} dB vs fp32")
    assert value > (35 if dtype == "bf16" else 45)


@pytest.mark.parametrize("stride", [(1, 2, 2), (2, 1, 1), (2, 2, 2)])
def test_bias_and_residual_added_in_the_shuffle_equal_adding_before_it(stride):
    """The decoder's upsampling adds its conv's bias and the residual on the rearranged views (one pass), the
    encoder's downsampling its bias and skip: the same bf16 values as adding them around the rearrangement, bit for
    bit; and the residual block's conv2 bias and residual (one kernel) equal the two adds."""
    from ltx_ane.models.layers import biased_residual, depth_to_space, space_to_depth

    keys = mx.random.split(mx.random.key(3), 3)
    x = (mx.random.normal((1, 3, 4, 5, 64), key=keys[0]) * 4).astype(mx.bfloat16)
    bias = mx.random.normal((64,), key=keys[1]).astype(mx.bfloat16)
    residual = mx.random.normal(x.shape, key=keys[2]).astype(mx.bfloat16)
    assert mx.array_equal(depth_to_space(x, stride, bias), depth_to_space(x + bias, stride)).item()
    assert mx.array_equal(depth_to_space(x, stride, bias, residual), depth_to_space(x + bias + residual, stride)).item()
    assert mx.array_equal(biased_residual(residual, x, bias), residual + (x + bias)).item()
    # the encoder's downsampling: space-to-depth with the conv's bias and the skip added in its pass
    y = (mx.random.normal((1, 4, 4, 6, 16), key=keys[0]) * 4).astype(mx.bfloat16)
    skip = space_to_depth(mx.random.normal(y.shape, key=keys[2]).astype(mx.bfloat16), stride)
    assert mx.array_equal(space_to_depth(y, stride, bias[:16], skip), space_to_depth(y + bias[:16], stride) + skip).item()


def test_unpatchify_adds_the_bias_and_reads_the_first_channels_of_a_wider_conv_output():
    """The decoder's last step: conv_out's bias added by unpatchify, of a conv run wider (zero weights beyond its
    48 channels, ``fused.conv_out_width``): the same values as the conv, its bias, then unpatchify."""
    from ltx_ane.models.layers import CausalConv3d, unpatchify

    conv = CausalConv3d(16, 48)
    keys = mx.random.split(mx.random.key(4), 2)
    conv.update({"conv": {"bias": mx.random.normal((48,), key=keys[0])}})
    padded = mx.random.normal((1, 5, 4, 6, 16), key=keys[1])
    want = unpatchify(conv.convolve(padded), 4)
    wide = conv.convolve(padded, bias=False, width=64)
    assert wide.shape[-1] == 64 and not mx.any(wide[..., 48:]).item()
    np.testing.assert_allclose(np.array(unpatchify(wide, 4, conv.conv.bias, 48)), np.array(want), rtol=1e-6, atol=1e-6)
    assert mx.array_equal(conv.convolve(padded, bias=False, width=48), conv.convolve(padded, bias=False)).item()
    for width, bias in ((32, False), (64, True)):
        with pytest.raises(ValueError):
            conv.convolve(padded, bias=bias, width=width)


def test_decoder_runs_conv_out_wide_where_unpatchify_reads_its_rows(checkpoint, monkeypatch):
    """Where the unpatchify kernel applies, the decoder runs conv_out 64 wide and unpatchify reads its first
    channels; here the kernel is stood in for by MLX ops that read only those channels."""
    from ltx_ane.models import fused

    _, raw, path = checkpoint
    model = load_decoder(Source(str(path)), "fp32")
    latent = mx.random.normal((1, 16, 2, 2, 3), key=mx.random.key(6))
    want = model(latent)
    widths, reads, convolve = [], [], layers.CausalConv3d.convolve

    def kernel_as_ops(x, stride, bias=None, residual=None, drop_first_frame=False, width_first=False, channels=None):
        with monkeypatch.context() as m:
            m.setattr(fused, "depth_to_space_available", lambda *a: False)
            if not width_first:
                return layers.depth_to_space(x, stride, bias, residual, drop_first_frame)
            reads.append((x.shape[-1], channels))
            return layers.unpatchify(x[..., :channels], stride[-1], bias)

    monkeypatch.setattr(layers.CausalConv3d, "convolve", lambda self, *a, width=None, **kw: widths.append(width) or
                        convolve(self, *a, width=width, **kw))
    monkeypatch.setattr(fused, "depth_to_space_available", lambda *a: True)
    monkeypatch.setattr(fused, "depth_to_space", kernel_as_ops)
    got = model(latent)
    assert widths[-1] == 64 and reads == [(64, 48)]
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride, multiplier", [((2, 2, 2), 2), ((2, 2, 2), 1), ((1, 2, 2), 2), ((2, 1, 1), 2)])
def test_upsampling_repeats_its_input_over_the_channels_as_ltx_core_does(stride, multiplier):
    """The decoder's upsampling residual, defined by ltx-core as the input rearranged, its channels repeated, frame 0
    dropped when time doubles: passed as the input itself (its channels repeat over the conv's), with the drop."""
    pt, ph, pw = stride
    p = pt * ph * pw
    keys = mx.random.split(mx.random.key(4), 3)
    c_in = 8 * p  # the upsampling's input; the conv makes p * c_in / multiplier channels
    x = mx.random.normal((1, 3, 2, 3, c_in), key=keys[0])
    y = mx.random.normal((1, 3, 2, 3, p * c_in // multiplier), key=keys[1])
    bias = mx.random.normal((y.shape[-1],), key=keys[2])

    def rearranged(a: np.ndarray) -> np.ndarray:  # ltx-core: b (c p1 p2 p3) d h w -> b c (d p1) (h p2) (w p3)
        b, f, h, w, c = a.shape
        a = a.reshape(b, f, h, w, c // p, pt, ph, pw).transpose(0, 1, 5, 2, 6, 3, 7, 4)
        return a.reshape(b, f * pt, h * ph, w * pw, c // p)

    residual = np.tile(rearranged(np.array(x)), (1, 1, 1, 1, p // multiplier))
    expected = rearranged(np.array(y) + np.array(bias)) + residual
    expected = expected[:, 1:] if pt == 2 else expected
    got = layers.depth_to_space(y, stride, bias, x, drop_first_frame=pt == 2)
    np.testing.assert_allclose(np.array(got), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("stride", [(1, 2, 2), (2, 1, 1), (2, 2, 2), (1, 1, 2)])
@pytest.mark.parametrize("group_size", [1, 2, 4, 8])
def test_grouped_mean_before_the_rearrangement_equals_averaging_after_it(stride, group_size):
    """The encoder's downsampling skip averages runs of output channels before space-to-depth (on the smaller
    tensor); runs that do not line up with the stride offsets take the direct route. Both equal the definition."""
    from ltx_ane.models.layers import space_to_depth
    from ltx_ane.models.video_vae.model import grouped_mean_space_to_depth

    x = mx.random.normal((2, 4, 4, 6, 16), key=mx.random.key(0))
    rearranged = space_to_depth(x, stride)
    expected = rearranged.reshape(*rearranged.shape[:-1], -1, group_size).mean(axis=-1)
    got = grouped_mean_space_to_depth(x, stride, group_size)
    assert got.shape == expected.shape
    np.testing.assert_allclose(np.array(got), np.array(expected), rtol=0, atol=1e-6)


def test_queued_sync_points_compute_the_same(checkpoint, monkeypatch):
    """Letting large intermediates wait on the device (sync_depth 1, 2) changes when kernels run, not what they
    compute; every intermediate counts as large here, so each sync point is exercised."""
    from ltx_ane.models import layers

    monkeypatch.setattr(layers, "EVAL_BYTES", 0)
    _, _, path = checkpoint
    decoder, encoder = load_decoder(Source(str(path)), "fp32"), load_encoder(Source(str(path)), "fp32")
    latent = mx.random.normal((1, 16, 2, 2, 3), key=mx.random.key(3))
    video = mx.random.uniform(-1, 1, (1, 3, 9, 64, 64), key=mx.random.key(4))
    expected = np.array(decoder(latent)), np.array(encoder(video))
    for depth, fraction in ((1, None), (2, None), (1, 0.5), (2, 0.1)):
        monkeypatch.setattr(decoder, "sync_depth", depth)
        monkeypatch.setattr(decoder, "queue_fraction", fraction)
        monkeypatch.setattr(encoder, "sync_depth", depth)
        np.testing.assert_array_equal(np.array(decoder(latent)), expected[0])
        np.testing.assert_array_equal(np.array(encoder(video)), expected[1])


def test_queue_runs_pieces_above_its_byte_bound_and_at_depth_0_alone(monkeypatch):
    """Small pieces are queued up to the depth; a piece above ``max_bytes`` (or any piece at depth 0) runs alone: it,
    everything before it and its buffers are waited for (a synchronize) just before the next piece starts, or when
    the queued block ends, so the host builds the next piece while the device runs it (the decoder's last stage,
    which sets its peak, never overlaps)."""
    from ltx_ane.models import queue

    events = []
    monkeypatch.setattr(queue.mx, "async_eval", lambda arrays: events.append(f"start {arrays.size}"))
    monkeypatch.setattr(queue.mx, "eval", lambda arrays: events.append(f"wait {arrays.size}"))
    monkeypatch.setattr(queue.mx, "synchronize", lambda: events.append("synchronize"))
    q = queue.DeviceQueue(depth=1, max_bytes=100)
    for size in (10, 20, 100, 30):  # 40, 80, 400 and 120 bytes
        q.push(mx.zeros(size))
    assert events == ["start 10", "start 20", "wait 10", "start 100", "synchronize", "start 30"]
    assert len(q._queued) == 1
    events.clear()
    with queue.queued(0):
        queue.settle(mx.zeros(1))
        queue.settle(mx.zeros(2))
    assert events == ["start 1", "synchronize", "start 2", "synchronize"]


def test_queue_lets_an_overlapping_piece_wait_behind_one_at_any_depth_and_size(monkeypatch):
    """A piece that allocates at most one activation (``overlap``) is queued behind one unfinished piece even at
    depth 0 and above ``max_bytes``; a piece that may not overlap starts only after those (and their buffers), and
    one that runs alone is still waited for before the next one starts."""
    from ltx_ane.models import queue

    events = []
    monkeypatch.setattr(queue.mx, "async_eval", lambda arrays: events.append(f"start {arrays.size}"))
    monkeypatch.setattr(queue.mx, "eval", lambda arrays: events.append(f"wait {arrays.size}"))
    monkeypatch.setattr(queue.mx, "synchronize", lambda: events.append("synchronize"))
    q = queue.DeviceQueue(depth=0, max_bytes=10)
    for size, overlap in ((100, True), (200, True), (300, True), (400, False), (500, True)):
        q.push(mx.zeros(size), overlap)
    assert events == ["start 100", "start 200", "wait 100", "start 300", "wait 200", "synchronize", "start 400",
                      "synchronize", "start 500"]


def test_the_newest_piece_is_known_to_the_queue(monkeypatch):
    """``is_newest_piece``: whether a stage's input is what the queue just started (its first norm may then overlap)."""
    from ltx_ane.models import queue

    x, y = mx.ones(2), mx.ones(3)
    assert not queue.is_newest_piece(x)
    with queue.queued(1):
        queue.settle(x)
        assert queue.is_newest_piece(x) and not queue.is_newest_piece(y)
        queue.settle(y, overlap=True)
        assert queue.is_newest_piece(y) and not queue.is_newest_piece(x)


def test_chained_res_blocks_compute_what_the_blocks_one_by_one_do(monkeypatch):
    """``UNetMidBlock3D.chained``'s order of kernels (norm; then per block conv, norm with conv1's bias, conv, and
    the residual add fused with the next block's norm, the last block's add alone), with the CUDA kernels replaced
    by the MLX ops they fuse: the same values as the blocks one by one, each piece settled as one that may
    overlap. The kernels themselves are checked against these ops on the GPU (test_vae_fused.py)."""
    from mlx.utils import tree_map

    from ltx_ane.models import fused

    def norm(x, bias, causal, reflect, into=None):
        assert into is None or into.shape[-1] == x.shape[-1]
        return layers.norm_silu_pad(x, bias, causal, reflect)  # its MLX ops: fused_available is off below

    def add_norm(x, h, bias, causal, reflect, into):
        s = layers.biased_residual(x, h, bias)
        return s, norm(s, None, causal, reflect, into)

    settled = []
    monkeypatch.setattr(fused, "fused_available", lambda x: False)
    monkeypatch.setattr(fused, "norm_silu_pad", norm)
    monkeypatch.setattr(fused, "add_norm_silu_pad", add_norm)
    monkeypatch.setattr(fused, "residual_add", lambda x, h, bias, overwrite: layers.biased_residual(x, h, bias))
    monkeypatch.setattr(layers, "settle", lambda x, overlap=False: settled.append(overlap) or x)
    for padding, causal in (("zeros", True), ("reflect", False)):
        block = layers.UNetMidBlock3D(8, 3, padding)
        block.update(tree_map(lambda p: mx.random.normal(p.shape, key=mx.random.key(p.size)) * 0.2, block.parameters()))
        x = mx.random.normal((1, 3, 4, 5, 8), key=mx.random.key(5))
        want = block(x, causal)  # the blocks one by one (chain_available is False), x too small to settle
        settled.clear()
        np.testing.assert_array_equal(np.array(block.chained(x, causal)), np.array(want))
        assert settled == [False] + [True] * 2 * 3  # x is not a piece the queue started: the first norm waits
        # followed by a conv's norm (the decoders' conv_out): the last add fused with it, its padded input returned
        conv = layers.CausalConv3d(8, 4, spatial_padding_mode=padding)
        padded = block.chained(x, causal, norm_for=conv)
        np.testing.assert_array_equal(np.array(padded), np.array(layers.norm_silu_pad(want, None, causal, conv.reflect)))
        np.testing.assert_array_equal(np.array(block.then_norm(x, causal, conv)), np.array(padded))


def test_draining_queue_synchronizes_after_every_depth_plus_one_pieces(monkeypatch):
    """With ``drain`` the queue synchronizes (which also waits for MLX to return the pieces' buffers) after every
    depth + 1 pieces it has started, at once, so that what the caller starts next (say, a last stage it evaluates
    itself) finds them returned; without it, it only waits for the oldest beyond the depth."""
    from ltx_ane.models import queue

    events = []
    monkeypatch.setattr(queue.mx, "async_eval", lambda arrays: events.append(f"start {arrays}"))
    monkeypatch.setattr(queue.mx, "eval", lambda arrays: events.append(f"wait {arrays}"))
    monkeypatch.setattr(queue.mx, "synchronize", lambda: events.append("synchronize"))
    q = queue.DeviceQueue(depth=1)
    q.push(0)
    q.drain = True
    for piece in range(1, 5):
        q.push(piece)
    assert events == ["start 0", "start 1", "wait 0", "start 2", "wait 1", "synchronize", "start 3", "start 4",
                      "wait 3", "synchronize"]
    assert not q._queued


def test_decoder_last_stage_bytes_follow_the_output_size(checkpoint):
    _, _, path = checkpoint
    decoder = load_decoder(Source(str(path)), "fp32")
    c = decoder.config
    latent = mx.zeros((1, 2, 2, 3, c.latent_channels))
    pixels = decoder.decode_channels_last(latent)  # (B, F', H, W, 3)
    per_pixel = decoder.conv_out.conv.weight.shape[-1] * 4 / c.patch_size**2
    assert decoder.last_stage_bytes(latent) == int(pixels.shape[1] * pixels.shape[2] * pixels.shape[3] * per_pixel)


def test_settle_evaluates_at_once_outside_a_queued_block_and_per_thread_inside():
    import threading

    from ltx_ane.models import queue

    assert queue.settle(mx.ones(3)).tolist() == [1, 1, 1]
    seen = {}
    with queue.queued(1):
        inner = queue._local.queue
        thread = threading.Thread(target=lambda: seen.setdefault("other", getattr(queue._local, "queue", None)))
        thread.start()
        thread.join()
        with queue.queued(0):
            assert queue._local.queue is not inner and queue._local.queue.depth == 0
        assert queue._local.queue is inner
    assert getattr(queue._local, "queue", None) is None and seen["other"] is None


def test_settle_ends_a_graph_everywhere_but_in_a_queued_none_block():
    """Where a kernel may write its result over a buffer it reads (fused.residual_add's overwrite)."""
    from ltx_ane.models import queue

    assert queue.ends_graph()
    for depth, ends in ((0, True), (1, True), (None, False)):
        with queue.queued(depth):
            assert queue.ends_graph() == ends
            with queue.queued(2):
                assert queue.ends_graph()
    assert queue.ends_graph()


def test_residual_blocks_settle_their_result_once(monkeypatch):
    """A block evaluates its own result (its residual may be written in place only where that ends a graph); the
    res_x block around it adds no second sync point per block."""
    settled = []
    monkeypatch.setattr(layers, "EVAL_BYTES", 0)
    monkeypatch.setattr(layers, "chain_available", lambda x: False)  # on CUDA: UNetMidBlock3D.chained's own test
    monkeypatch.setattr(layers, "settle", lambda x: settled.append(x.shape) or x)
    block = layers.UNetMidBlock3D(8, 3, "zeros")
    x = mx.random.normal((1, 2, 3, 4, 8))
    out = block(x, causal=True)
    assert settled == [x.shape] * 3 and out.shape == x.shape
