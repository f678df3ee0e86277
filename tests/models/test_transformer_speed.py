"""The transformer's speed-ups give the results of the plain computation: fused kernels bit for bit against the
eager formulas (bf16 and fp32); text prepared once per prompt against the per-forward projection; AdaLN per
distinct timestep value against AdaLN per token."""

from __future__ import annotations

import json
from dataclasses import replace

import mlx.core as mx
import numpy as np
import pytest

from transformer_util import make_inputs, tiny_config
from ltx_ane.errors import LtxAneError
from ltx_ane.models.loading import Source
from ltx_ane.models.transformer import fused
from ltx_ane.models.transformer.loader import load_transformer
from ltx_ane.models.transformer.rope import apply_rotary_emb, precompute_freqs_cis

DTYPES = (mx.float32, mx.bfloat16)


@pytest.fixture(scope="module", params=["ltx2", "ltx23"])
def model(request, tmp_path_factory):
    """A tiny model with seeded random weights (these tests compare the model with itself, not with ltx-core)."""
    config = tiny_config(request.param)
    path = tmp_path_factory.mktemp(request.param) / "config.json"
    path.write_text(json.dumps(config))
    return config, load_transformer(Source(None, str(path), random_weights=True), dtype="fp32")


def batch_of_two(config):
    """Two batch items with their own noise levels and left-padded text, as MLX modalities."""
    video, audio = make_inputs(config, batch=2)
    for m in (video, audio):
        m.context_mask = np.array([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]], dtype=np.int64)
    return video.mlx(), audio.mlx()


def assert_equal(expected, actual):
    for e, a in zip(expected, actual):
        assert np.array_equal(np.array(e), np.array(a))


def random(shape, dtype, seed):
    return mx.random.normal(shape, key=mx.random.key(seed)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("steps", [5, 1])  # per-token AdaLN, or one value per batch item
def test_fused_modulation_and_gate_equal_eager(dtype, steps):
    x, y = random((2, 5, 32), dtype, 0), random((2, 5, 32), dtype, 1)
    table, timestep = random((3, 32), dtype, 2), random((2, steps, 3 * 32), dtype, 3)
    # ltx-core: the (B, T, n, D) sum of table and AdaLN output, then the eager expressions.
    values = table[None, None] + timestep.reshape(2, steps, 3, 32)
    shift, scale, gate = (values[:, :, i] for i in range(3))
    terms = [(table[i], timestep[..., 32 * i : 32 * (i + 1)]) for i in range(3)]
    assert mx.array_equal(fused.modulate(x, *terms[1], *terms[0]), x * (1 + scale) + shift)
    assert mx.array_equal(fused.gated_residual(x, y, *terms[2]), x + y * gate)


def textbook_rope(x, cos, sin, rope_type):
    """ltx-core's formulas on its own table layouts: split halves per head, or adjacent pairs with repeated tables."""
    if rope_type == "split":
        b, t, h, half = cos.shape
        halves = x.reshape(b, t, h, 2, half)
        first, second = halves[..., 0, :], halves[..., 1, :]
        return mx.stack([first * cos - second * sin, second * cos + first * sin], axis=-2).reshape(b, t, -1)
    cos, sin = mx.repeat(cos, 2, axis=-1), mx.repeat(sin, 2, axis=-1)
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    swapped = mx.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
    return x * cos + swapped * sin


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rope_type", ["split", "interleaved"])
def test_fused_rope_equals_textbook_rope(dtype, rope_type):
    heads, dim, tokens = 4, 64, 6
    positions = mx.array(np.random.default_rng(0).uniform(0, 8, (1, 3, tokens, 2)).astype(np.float32))
    cos, sin = precompute_freqs_cis(positions, dim, dtype, 10000.0, (20, 2048, 2048), heads, rope_type, True)
    assert (cos.shape, sin.shape) == (((1, tokens, heads, 1, dim // heads // 2),) * 2 if rope_type == "split"
                                      else ((1, tokens, dim // 2, 1, 1),) * 2)
    # The 64-wide grid has 3 x 10 frequencies: the tables start with (cos 1, sin 0) padding.
    assert mx.all(cos.reshape(tokens, -1)[:, 0] == 1).item() and mx.all(sin.reshape(tokens, -1)[:, 0] == 0).item()
    x = random((1, tokens, dim), dtype, 4)
    layout = (lambda t: t.squeeze(-2)) if rope_type == "split" else (lambda t: t.reshape(1, tokens, -1))
    assert mx.array_equal(apply_rotary_emb(x, (cos, sin)), textbook_rope(x, layout(cos), layout(sin), rope_type))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_head_gates_equal_eager(dtype):
    out, logits = random((2, 5, 4, 8), dtype, 5), random((2, 5, 4), dtype, 6)
    assert mx.array_equal(fused.gate_heads(out, logits[..., None]), out * (2.0 * mx.sigmoid(logits))[..., None])


def test_prepared_text_gives_the_same_velocities_at_every_step(model):
    config, model = model
    video, audio = batch_of_two(config)
    text = model.prepare_context(video.context, audio.context, video.context_mask, audio.context_mask)
    # 19B caches each block's text keys and values; LTX-2.3's depend on the noise level and are not cached.
    assert (text.video.keys_values is None) == model.config.cross_attention_adaln
    for step, sigma in enumerate((0.9, 0.4)):
        v, a = (replace(m, latent=m.latent * (step + 1), sigma=m.sigma * 0 + sigma,
                        timesteps=m.timesteps * 0 + sigma) for m in (video, audio))
        assert_equal(model(v, a), model(v, a, text=text))


def test_prepared_text_must_match_the_inputs(model):
    config, model = model
    video, audio = batch_of_two(config)
    with pytest.raises(LtxAneError, match="holds no audio context"):
        model(video, audio, text=model.prepare_context(video.context))
    with pytest.raises(LtxAneError, match="prepared video text has batch 1, the latent 2"):
        model(video, audio, text=model.prepare_context(video.context[:1], audio.context[:1]))


def per_token(model):
    """The same model running AdaLN once per token, as ltx-core does."""
    plain = type(model)(model.config)
    plain.update(model.parameters())
    plain.max_distinct_timesteps = 0
    return plain


@pytest.mark.parametrize("clean_first_frame", [False, True])
def test_adaln_per_distinct_timestep_equals_adaln_per_token(model, clean_first_frame):
    config, model = model
    video, audio = batch_of_two(config)  # one sigma per batch item (0.7 and 0.63 for audio)
    video = replace(video, sigma=mx.array([0.7, 0.3]),
                    timesteps=video.timesteps * mx.array([1.0, 0.3 / 0.7])[:, None, None])
    if clean_first_frame:  # the first latent frame (2 x 3 tokens) is a conditioning image: timesteps 0 and sigma
        video = replace(video, timesteps=mx.concatenate([video.timesteps[:, :6] * 0, video.timesteps[:, 6:]], axis=1))
    modulation, embedded = model.embed_timesteps("video", video.timesteps, 2, mx.float32)
    tokens = video.latent.shape[1] if clean_first_frame else 1
    assert modulation.shape[:2] == embedded.shape[:2] == (2, tokens)
    plain = per_token(model)
    assert plain.embed_timesteps("video", video.timesteps, 2, mx.float32)[0].shape[1] == video.latent.shape[1]
    for e, a in zip(plain(video, audio), model(video, audio)):
        # Equal up to rounding: the AdaLN matmuls run over fewer rows.
        assert np.abs(np.array(e) - np.array(a)).max() <= 1e-6 * np.abs(np.array(e)).max()


def test_piecewise_evaluation_equals_one_lazy_graph(model, monkeypatch):
    """Bounding the pieces queued ahead (0: wait for each, 1, 2, 3), whole blocks or the layers between a block's
    sync points (all of them, or some), or building one lazy graph changes when kernels run, never what they
    compute."""
    from ltx_ane.models.transformer.block import SYNC_POINTS
    from ltx_ane.models.transformer.model import LTXModel

    config, model = model
    video, audio = batch_of_two(config)
    assert (LTXModel.queue_unit, LTXModel.blocks_in_flight, LTXModel.layers_in_flight) == ("layer", 1, None)
    assert LTXModel.layer_sync_points == SYNC_POINTS
    overlapped = model(video, audio)
    for unit, depth, points in (("graph", 1, SYNC_POINTS), ("block", 0, SYNC_POINTS), ("block", 2, SYNC_POINTS),
                                ("layer", 0, SYNC_POINTS), ("layer", 1, SYNC_POINTS), ("layer", 3, SYNC_POINTS),
                                ("layer", 1, SYNC_POINTS[1::2])):
        # On the class: an nn.Module instance would keep a tuple attribute among its parameters.
        for name, value in (("queue_unit", unit), ("blocks_in_flight", depth), ("layers_in_flight", depth),
                            ("layer_sync_points", points)):
            monkeypatch.setattr(LTXModel, name, value)
        assert_equal(model(video, audio), overlapped)
    monkeypatch.setattr(LTXModel, "queue_unit", "stage")
    with pytest.raises(ValueError, match="queue_unit"):
        model(video, audio)
    monkeypatch.setattr(LTXModel, "queue_unit", "layer")
    monkeypatch.setattr(LTXModel, "layer_sync_points", ("video_self_attention", "after_everything"))
    with pytest.raises(ValueError, match="after_everything"):
        model(video, audio)


def test_layers_queued_follow_the_video_token_count(model, monkeypatch):
    """3 layers queued below LONG_FORWARD_TOKENS video tokens (times batch), 2 from there; a set bound wins."""
    from ltx_ane.models.transformer import model as transformer_model

    config, model = model
    video, _ = batch_of_two(config)
    tokens = video.latent.shape[0] * video.latent.shape[1]
    monkeypatch.setattr(transformer_model, "LONG_FORWARD_TOKENS", tokens)
    assert model.resolved_layers_in_flight(video) == 2
    monkeypatch.setattr(transformer_model, "LONG_FORWARD_TOKENS", tokens + 1)
    assert model.resolved_layers_in_flight(video) == 3
    assert model.resolved_layers_in_flight(None) == 3
    monkeypatch.setattr(transformer_model.LTXModel, "layers_in_flight", 1)
    assert model.resolved_layers_in_flight(video) == 1


def test_gelu_rounds_once_as_torch_and_writes_over_its_input():
    """The feed-forward's GELU (tanh) is torch's in bf16 (float32 inside, one rounding) and, after a linear layer,
    needs no second buffer of the hidden layer's size."""
    torch = pytest.importorskip("torch")
    from ltx_ane.models.layers import gelu_tanh

    values = (np.random.default_rng(0).standard_normal(1 << 16) * 3).astype(np.float32)
    for dtype, torch_dtype, most in ((mx.float32, torch.float32, 0.0), (mx.bfloat16, torch.bfloat16, 0.01)):
        ours = np.array(gelu_tanh(mx.array(values).astype(dtype)).astype(mx.float32))
        theirs = torch.nn.functional.gelu(torch.from_numpy(values).to(torch_dtype), approximate="tanh").float().numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6 if dtype == mx.float32 else 0.04)
        assert np.mean(ours != theirs) <= most if dtype == mx.bfloat16 else True

    x, w, b = (mx.random.normal(shape).astype(mx.bfloat16) for shape in ((1, 256, 128), (1024, 128), (1024,)))
    mx.eval(x, w, b)
    hidden_bytes = 256 * 1024 * 2
    mx.synchronize()
    mx.clear_cache()
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    mx.eval(gelu_tanh(mx.addmm(b, x, w.T)))
    assert mx.get_peak_memory() - base <= hidden_bytes * 1.1
