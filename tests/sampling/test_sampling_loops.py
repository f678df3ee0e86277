"""Steppers and whole denoising loops against ltx-core / ltx-pipelines, driven by a fake denoiser (a fixed function
of latent and sigma) with the same injected res2s noise on both sides."""

import mlx.core as mx
import numpy as np
import pytest
from sampling_util import assert_close, assert_equal, to_mx, to_ref_state, to_torch, torch

from ltx_ane.sampling import (
    DISTILLED_SIGMAS,
    STAGE_2_SIGMAS,
    AppendKeyframe,
    AudioLatentShape,
    AudioLatentTools,
    ReplaceLatentFrame,
    Res2sNoise,
    VideoLatentShape,
    VideoLatentTools,
    add_noise,
    euler_loop,
    ltx2_sigmas,
    noised_state,
    res2s_loop,
    run_to_end,
)
from ltx_ane.sampling.loops import normalize_sde_noise
from ltx_ane.sampling.steppers import euler_step, phi, res2s_coefficients, res2s_sde_step

VIDEO_SHAPE = VideoLatentShape(1, 8, 3, 2, 3)
AUDIO_SHAPE = AudioLatentShape(1, 4, 6, 4)


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_euler_step_matches_ltx_core(dtype):
    """In bf16 the velocity is rounded before the update, as ltx-core does; the result is bit-equal."""
    from ltx_core.components.diffusion_steps import EulerDiffusionStep

    sample, denoised = (mx.random.normal((1, 10, 6), key=mx.random.key(i)).astype(dtype) for i in range(2))
    sigmas = ltx2_sigmas(5)
    for index in range(5):
        ref = EulerDiffusionStep().step(to_torch(sample), to_torch(denoised), to_torch(sigmas), index)
        assert_equal(euler_step(sample, denoised, float(sigmas[index]), float(sigmas[index + 1])), ref)


def test_res2s_pieces_match_ltx_pipelines():
    from ltx_core.components.diffusion_steps import Res2sDiffusionStep
    from ltx_pipelines.utils import res2s
    from ltx_pipelines.utils.samplers import _get_new_noise

    for h in (1e-12, 0.05, 0.3, 1.2, 5.9):
        assert res2s_coefficients(h) == res2s.get_res2s_coefficients(h, {})
        assert phi(2, -h) == res2s.phi(2, -h)

    sample, denoised = (mx.random.normal((1, 10, 6), key=mx.random.key(i)) for i in range(2))
    noise = mx.random.normal((1, 10, 6), key=mx.random.key(2))
    for sigma, sigma_next in ((0.9, 0.7), (0.42, 0.0011), (0.5, 0.0)):
        sigmas = torch.tensor([sigma, sigma_next], dtype=torch.float64)
        ref = Res2sDiffusionStep().step(
            to_torch(sample).double(), to_torch(denoised).double(), sigmas, 0, to_torch(noise).double()
        )
        assert_close(res2s_sde_step(sample, denoised, sigma, sigma_next, noise), ref)

    raw = torch.randn((2, 10, 6), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ref = _get_new_noise(torch.empty(2, 10, 6), torch.Generator().manual_seed(3))
    assert_close(normalize_sde_noise(to_mx(raw)), ref)


def _fake_x0(latent, sigma, lib):
    """A fixed, non-linear stand-in for the transformer's x0 prediction."""
    return 0.7 * lib.tanh(latent) * (1 - sigma) + 0.2 * lib.sin(2 * latent + sigma)


def _fake_denoise(video, audio, sigma, step):
    return _fake_x0(video.latent, sigma, mx), _fake_x0(audio.latent, sigma, mx)


def _ref_fake_denoise(video_state, audio_state, sigmas, step_index):
    sigma = float(sigmas[step_index])
    return _fake_x0(video_state.latent, sigma, torch), _fake_x0(audio_state.latent, sigma, torch)


def _states():
    """A video state with a replaced first frame and a partially free keyframe, and an audio state, noised."""
    video_tools = VideoLatentTools(VideoLatentShape(*VIDEO_SHAPE), 24.0)
    keys = mx.random.split(mx.random.key(7), 4)
    image = mx.random.normal((1, 8, 1, 2, 3), key=keys[0])
    conditionings = [ReplaceLatentFrame(image, 1.0), AppendKeyframe(image * 0.5, frame_index=16, strength=0.6)]
    video_noise = mx.random.normal((1, VIDEO_SHAPE.token_count() + 6, 8), key=keys[1])
    video = noised_state(video_tools, mx.float32, lambda s, scale: add_noise(s, video_noise, scale), conditionings)
    audio_tools = AudioLatentTools(AUDIO_SHAPE)
    initial_audio = mx.random.normal(tuple(AUDIO_SHAPE), key=keys[2])
    audio_noise = mx.random.normal((1, AUDIO_SHAPE.frames, 16), key=keys[3])
    # a stage-2-like audio state: the carried latent re-noised at the first stage-2 sigma
    audio = noised_state(
        audio_tools,
        mx.float32,
        lambda s, scale: add_noise(s, audio_noise, scale),
        noise_scale=0.909375,
        initial_latent=initial_audio,
    )
    return video, audio


@pytest.mark.parametrize(
    "sigmas", [DISTILLED_SIGMAS, STAGE_2_SIGMAS, ltx2_sigmas(12)], ids=["distilled", "stage2", "ltx2-12"]
)
def test_euler_loop_matches_ltx_pipelines(sigmas):
    from ltx_core.components.diffusion_steps import EulerDiffusionStep
    from ltx_pipelines.utils.samplers import euler_denoising_loop

    video, audio = _states()
    steps = list(euler_loop(sigmas, video, audio, _fake_denoise))
    assert [s.index for s in steps] == list(range(len(sigmas) - 1))
    assert {s.total for s in steps} == {len(sigmas) - 1}
    ref_video, ref_audio = euler_denoising_loop(
        torch.tensor(np.asarray(sigmas, dtype=np.float32)),
        to_ref_state(video),
        to_ref_state(audio),
        EulerDiffusionStep(),
        _ref_fake_denoise,
    )
    assert_close(steps[-1].video.latent, ref_video.latent)
    assert_close(steps[-1].audio.latent, ref_audio.latent)
    # conditioned tokens (mask 0) end where they started
    assert mx.array_equal(steps[-1].video.latent[:, :6], video.clean_latent[:, :6])


@pytest.mark.parametrize(
    "sigmas",
    [ltx2_sigmas(4, tokens=VIDEO_SHAPE.token_count()), STAGE_2_SIGMAS, (0.8, 0.5, 0.2)],
    ids=["hq-4", "stage2", "no-zero"],
)
def test_res2s_loop_matches_ltx_pipelines(sigmas):
    """The same pre-drawn SDE noise on both sides: ltx-pipelines' ``new_noise_fn`` tells its step generator (seed 1)
    from the substep one (seed 10001)."""
    from ltx_core.components.diffusion_steps import Res2sDiffusionStep
    from ltx_pipelines.utils.samplers import res2s_audio_video_denoising_loop

    video, audio = _states()
    full_steps = len(sigmas) - 1
    noise = Res2sNoise(seed=5)
    shapes = [tuple(video.latent.shape), tuple(audio.latent.shape)] * full_steps
    step_noise, substep_noise = [noise.step(s) for s in shapes], [noise.substep(s) for s in shapes]
    queues = {1: [to_torch(n).double() for n in step_noise], 10001: [to_torch(n).double() for n in substep_noise]}

    def ref_new_noise(latent, generator):
        drawn = queues[generator.initial_seed()].pop(0)
        assert drawn.shape == latent.shape
        return drawn

    ref_video, ref_audio = res2s_audio_video_denoising_loop(
        torch.tensor(np.asarray(sigmas, dtype=np.float32)),
        to_ref_state(video),
        to_ref_state(audio),
        Res2sDiffusionStep(),
        _ref_fake_denoise,
        noise_seed=1,
        new_noise_fn=ref_new_noise,
        model_dtype=torch.float32,
    )
    assert queues == {1: [], 10001: []}

    def from_list(arrays):
        def draw(shape):
            assert tuple(arrays[0].shape) == shape
            return arrays.pop(0)

        return draw

    steps = list(res2s_loop(sigmas, video, audio, _fake_denoise, from_list(step_noise), from_list(substep_noise)))
    ends_at_zero = sigmas[-1] == 0
    assert len(steps) == full_steps + ends_at_zero
    assert_close(steps[-1].video.latent, ref_video.latent)
    assert_close(steps[-1].audio.latent, ref_audio.latent)


def test_res2s_noise_is_seeded_and_standardized():
    first, second = Res2sNoise(3), Res2sNoise(3)
    a = first.step((2, 50, 8))
    assert mx.array_equal(a, second.step((2, 50, 8)))
    assert not mx.array_equal(a, first.substep((2, 50, 8)))
    np.testing.assert_allclose(np.array(a.mean(axis=(1, 2))), 0, atol=1e-6)
    np.testing.assert_allclose(np.array(mx.var(a, axis=(1, 2), ddof=1)), 1, rtol=1e-5)


def test_run_to_end_returns_the_last_states():
    video, audio = _states()
    final_video, final_audio = run_to_end(euler_loop(DISTILLED_SIGMAS, video, audio, _fake_denoise))
    last = list(euler_loop(DISTILLED_SIGMAS, video, audio, _fake_denoise))[-1]
    assert mx.array_equal(final_video.latent, last.video.latent)
    assert mx.array_equal(final_audio.latent, last.audio.latent)
