"""The MLX transformer against ltx-core 1.0.0 (fp32, same random weights from a released-format bf16 file loaded
through ``load_transformer``), tiny configs of LTX-2 (19B) and LTX-2.3, every input feature the pipelines use."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ltx_core")

import mlx.core as mx  # noqa: E402

from transformer_util import (  # noqa: E402
    FP32_TOL,
    make_inputs,
    rel_err,
    run_mlx,
    run_reference,
    tiny_config,
    write_transformer,
)
from ltx_ane.models.loading import Source  # noqa: E402
from ltx_ane.models.transformer.loader import load_transformer  # noqa: E402
from ltx_ane.models.transformer.model import X0Model  # noqa: E402
from ltx_ane.models.transformer.perturbations import (  # noqa: E402
    BatchedPerturbationConfig,
    Perturbation,
    PerturbationConfig,
    PerturbationType,
)

VERSIONS = ("ltx2", "ltx23")


@pytest.fixture(scope="module", params=VERSIONS)
def pair(request, tmp_path_factory):
    """(config, reference model, MLX model) sharing one checkpoint's weights."""
    config = tiny_config(request.param)
    path = tmp_path_factory.mktemp(request.param) / "ltx.safetensors"
    reference = write_transformer(path, config)
    return config, reference, load_transformer(Source(str(path)), dtype="fp32")


def assert_close(ref, out):
    for r, o in zip(ref, out):
        assert (r is None) == (o is None)
        if r is not None:
            assert rel_err(r, o) <= FP32_TOL


def item(inputs, i: int):
    """Batch item ``i`` of an input as a batch of one."""
    fields = {k: (v[i : i + 1] if v is not None and not isinstance(v, bool) else v) for k, v in vars(inputs).items()}
    return type(inputs)(**fields)


def perturbations(items):
    return BatchedPerturbationConfig(tuple(
        PerturbationConfig(tuple(Perturbation(PerturbationType(kind), blocks and tuple(blocks)) for kind, blocks in item))
        for item in items
    ))


def test_plain_forward(pair):
    config, reference, model = pair
    video, audio = make_inputs(config)
    assert_close(run_reference(reference, video, audio), run_mlx(model, video, audio))


def test_clean_first_frame_has_per_token_timesteps(pair):
    config, reference, model = pair
    video, audio = make_inputs(config, grid=(3, 2, 3))
    video.timesteps[:, :6] = 0.0  # the first latent frame (2 x 3 tokens) is a clean conditioning image
    out = run_mlx(model, video, audio)
    assert_close(run_reference(reference, video, audio), out)
    uniform, _ = make_inputs(config, grid=(3, 2, 3))
    assert rel_err(run_mlx(model, uniform, audio)[0], out[0]) > 10 * FP32_TOL


@pytest.mark.parametrize("skips", [
    # Item 0 untouched, item 1 skips video self-attention in block 1 only (the per-item mask path).
    [[], [("skip_video_self_attn", [1])]],
    # The whole batch skips video and audio self-attention in block 0 (value pass-through without q/k).
    [[("skip_video_self_attn", [0]), ("skip_audio_self_attn", [0])]] * 2,
])
def test_stg_passes_values_through(pair, skips):
    config, reference, model = pair
    video, audio = make_inputs(config, batch=2)
    out = run_mlx(model, video, audio, perturbations(skips))
    assert_close(run_reference(reference, video, audio, skips), out)
    plain = run_mlx(model, video, audio)
    assert rel_err(plain[0][1], out[0][1]) > 10 * FP32_TOL


def test_modality_isolation_cuts_audio_video_attention(pair):
    config, reference, model = pair
    skips = [[("skip_a2v_cross_attn", None), ("skip_v2a_cross_attn", None)]]
    video, audio = make_inputs(config)
    out = run_mlx(model, video, audio, perturbations(skips))
    assert_close(run_reference(reference, video, audio, skips), out)
    # Isolated, neither stream sees the other: new audio leaves the video velocity as it was, and the reverse.
    other_video, other_audio = make_inputs(config, seed=5)
    swapped = run_mlx(model, video, other_audio, perturbations(skips))
    assert np.array_equal(out[0], swapped[0])
    swapped = run_mlx(model, other_video, audio, perturbations(skips))
    assert np.array_equal(out[1], swapped[1])


def test_one_direction_of_isolation(pair):
    config, reference, model = pair
    skips = [[("skip_a2v_cross_attn", [0])], []]
    video, audio = make_inputs(config, batch=2)
    assert_close(run_reference(reference, video, audio, skips), run_mlx(model, video, audio, perturbations(skips)))


@pytest.mark.parametrize("which", ["video", "audio"])
def test_single_modality(pair, which):
    config, reference, model = pair
    video, audio = make_inputs(config)
    video, audio = (video, None) if which == "video" else (None, audio)
    out = run_mlx(model, video, audio)
    assert_close(run_reference(reference, video, audio), out)


def test_disabled_audio_still_feeds_video(pair):
    config, reference, model = pair
    video, audio = make_inputs(config)
    audio.enabled = False
    assert_close(run_reference(reference, video, audio), run_mlx(model, video, audio))


def test_batch_of_two_with_own_sigmas_and_text_mask(pair):
    config, reference, model = pair
    video, audio = make_inputs(config, batch=2)
    for m, scale in ((video, 1.0), (audio, 0.9)):
        m.sigma[:] = np.array([0.9, 0.3], dtype=np.float32) * scale
        m.timesteps[:] = m.sigma[:, None, None]
        m.context_mask = np.array([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]], dtype=np.int64)  # left padding
    out = run_mlx(model, video, audio)
    assert_close(run_reference(reference, video, audio), out)
    first = [item(m, 0) for m in (video, audio)]
    assert rel_err(out[0][:1], run_mlx(model, *first)[0]) <= FP32_TOL  # batch items stay independent


def test_appended_tokens_with_self_attention_mask(pair):
    """Keyframe tokens appended after the noisy ones, attended to with reduced weight and not attending back."""
    config, reference, model = pair
    video, audio = make_inputs(config, grid=(3, 2, 3))
    key, _ = make_inputs(config, grid=(1, 2, 3), seed=3)
    t = video.latent.shape[1]
    video.latent = np.concatenate([video.latent, key.latent], axis=1)
    video.timesteps = np.concatenate([video.timesteps, np.zeros_like(key.timesteps)], axis=1)
    positions = key.positions.clone()
    positions[:, 0] += 1.0  # the keyframe sits one second in
    video.positions = torch.cat([video.positions, positions], dim=2)
    n = video.latent.shape[1]
    mask = np.ones((1, n, n), dtype=np.float32)
    mask[:, :t, t:] = 0.5
    mask[:, t:, :t] = 0.0
    video.attention_mask = mask
    assert_close(run_reference(reference, video, audio), run_mlx(model, video, audio))


def test_x0_model(pair):
    config, reference, model = pair
    from ltx_core.model.transformer.model import X0Model as ReferenceX0Model
    from ltx_core.guidance.perturbations import BatchedPerturbationConfig as ReferencePerturbations

    video, audio = make_inputs(config)
    video.timesteps[:, :6] = 0.0
    with torch.no_grad():
        ref = ReferenceX0Model(reference)(video.torch(), audio.torch(), ReferencePerturbations.empty(1))
    out = X0Model(model)(video.mlx(), audio.mlx())
    assert_close([r.numpy() for r in ref], [np.array(o) for o in out])
    assert np.array_equal(np.array(out[0])[:, :6], video.latent[:, :6])  # clean tokens come back unchanged


def test_interleaved_rope_and_float32_grid(tmp_path):
    config = tiny_config("ltx2", num_layers=1)
    config["transformer"].update(rope_type="interleaved")
    path = tmp_path / "ltx.safetensors"
    reference = write_transformer(path, config)
    model = load_transformer(Source(str(path)), dtype="fp32")
    video, audio = make_inputs(config)
    assert_close(run_reference(reference, video, audio), run_mlx(model, video, audio))


def test_bf16_positions_are_not_float32_positions(pair):
    """Trap: the pipelines round video positions to bf16 before RoPE; float32 positions give another result."""
    config, reference, model = pair
    video, audio = make_inputs(config, grid=(4, 2, 2))
    ref = run_reference(reference, video, audio)
    video.positions = video.positions.float()
    assert rel_err(ref[0], run_mlx(model, video, audio)[0]) > 10 * FP32_TOL


def test_av_timestep_multiplier_comes_from_the_file(pair, tmp_path):
    """Trap: the released files say av_ca_timestep_scale_multiplier 1000 where ltx-core's code default is 1."""
    config, reference, model = pair
    assert model.config.av_ca_timestep_scale_multiplier == 1000
    path = tmp_path / "config.json"
    defaulted = {"transformer": {k: v for k, v in config["transformer"].items() if k != "av_ca_timestep_scale_multiplier"}}
    path.write_text(json.dumps(defaulted))
    video, audio = make_inputs(config)
    ref = run_reference(reference, video, audio)
    wrong = load_transformer(Source(None, str(path), random_weights=True), dtype="fp32")
    wrong.update(model.parameters())
    assert rel_err(ref[0], run_mlx(wrong, video, audio)[0]) > 10 * FP32_TOL


@pytest.mark.skipif(not os.environ.get("LTX_ANE_SLOW_TESTS"), reason="full-width block (~0.4 B parameters): set LTX_ANE_SLOW_TESTS=1")
@pytest.mark.parametrize("version", VERSIONS)
def test_full_width_single_block(tmp_path, version):
    config = tiny_config(version, num_layers=1, full_width=True)
    path = tmp_path / "ltx.safetensors"
    reference = write_transformer(path, config)
    model = load_transformer(Source(str(path)), dtype="fp32")
    video, audio = make_inputs(config, grid=(2, 3, 4), audio_tokens=9, text_tokens=8)
    assert_close(run_reference(reference, video, audio), run_mlx(model, video, audio))
