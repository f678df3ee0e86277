"""Guiders against ltx-core's, and the multi-modal guided denoise against ltx-pipelines'
``multi_modal_guider_factory_denoising_func`` driven by a fake transformer."""

import mlx.core as mx
import pytest
from sampling_util import assert_close, to_ref_state, to_torch, torch

from ltx_ane.errors import LtxAneError
from ltx_ane.sampling import (
    APGGuider,
    CFGGuider,
    CFGStarRescalingGuider,
    MultiModalGuider,
    MultiModalGuiderFactory,
    MultiModalGuiderParams,
    STGGuider,
    VideoLatentShape,
    VideoLatentTools,
    guided_denoise,
    ltx2_sigmas,
)


def _predictions(count, shape=(1, 12, 8), seed=0, dtype=mx.float32):
    """Batch 1: ltx-core's (B, 1) projection coefficients broadcast against (B, T, C) correctly only there."""
    keys = mx.random.split(mx.random.key(seed), count)
    return [mx.random.normal(shape, key=keys[i]).astype(dtype) for i in range(count)]


@pytest.mark.parametrize(
    ("ours", "ref_name", "kwargs"),
    [
        (CFGGuider(3.0), "CFGGuider", {"scale": 3.0}),
        (CFGStarRescalingGuider(4.0), "CFGStarRescalingGuider", {"scale": 4.0}),
        (STGGuider(1.5), "STGGuider", {"scale": 1.5}),
        (APGGuider(5.0, eta=0.6), "LtxAPGGuider", {"scale": 5.0, "eta": 0.6}),
        (APGGuider(5.0, 1.2, norm_threshold=3.0), "LtxAPGGuider", {"scale": 5.0, "eta": 1.2, "norm_threshold": 3.0}),
    ],
)
def test_guider_deltas_match_ltx_core(ours, ref_name, kwargs):
    from ltx_core.components import guiders

    ref = getattr(guiders, ref_name)(**kwargs)
    cond, uncond = _predictions(2)
    assert_close(ours.delta(cond, uncond), ref.delta(to_torch(cond), to_torch(uncond)))
    assert ours.enabled() == ref.enabled()


PARAMS = [
    MultiModalGuiderParams(cfg_scale=3.0, stg_scale=1.0, stg_blocks=(29,), rescale_scale=0.7, modality_scale=3.0),
    MultiModalGuiderParams(cfg_scale=7.0, stg_scale=0.0, rescale_scale=1.0, modality_scale=3.0),
    MultiModalGuiderParams(cfg_scale=2.5, stg_scale=0.5, rescale_scale=0.0, modality_scale=1.0),
    MultiModalGuiderParams(),
]


def _ref_params(params):
    from ltx_core.components.guiders import MultiModalGuiderParams as RefParams

    blocks = None if params.stg_blocks is None else list(params.stg_blocks)
    return RefParams(
        cfg_scale=params.cfg_scale,
        stg_scale=params.stg_scale,
        stg_blocks=blocks,
        rescale_scale=params.rescale_scale,
        modality_scale=params.modality_scale,
        skip_step=params.skip_step,
    )


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
@pytest.mark.parametrize("params", PARAMS)
def test_multimodal_guider_matches_ltx_core(params, dtype):
    """The rescale uses the std over the whole tensor (rounded to bf16 in bf16, as torch does)."""
    from ltx_core.components.guiders import MultiModalGuider as RefGuider

    ours, ref = MultiModalGuider(params), RefGuider(_ref_params(params))
    predictions = _predictions(4, dtype=dtype)
    rel = 1e-5 if dtype == mx.float32 else 1e-2
    out = ours.calculate(*predictions)
    assert out.dtype == dtype
    assert_close(out, ref.calculate(*(to_torch(p) for p in predictions)), rel)
    # passes that were not run are 0.0 on both sides
    cond, perturbed = predictions[0], predictions[2]
    expected = ref.calculate(to_torch(cond), 0.0, to_torch(perturbed), 0.0)
    assert_close(ours.calculate(cond, 0.0, perturbed, 0.0), expected, rel)
    for method in ("do_unconditional_generation", "do_perturbed_generation", "do_isolated_modality_generation"):
        assert getattr(ours, method)() == getattr(ref, method)()


@pytest.mark.parametrize("skip_step", [0, 1, 2])
def test_skip_step_matches_ltx_core(skip_step):
    from ltx_core.components.guiders import MultiModalGuider as RefGuider

    params = MultiModalGuiderParams(skip_step=skip_step)
    ours, ref = MultiModalGuider(params), RefGuider(_ref_params(params))
    assert [ours.should_skip_step(s) for s in range(9)] == [ref.should_skip_step(s) for s in range(9)]


def test_sigma_binned_factory_matches_ltx_core():
    from ltx_core.components.guiders import MultiModalGuiderFactory as RefFactory

    table = {1.0: PARAMS[0], 0.6: PARAMS[1], 0.2: PARAMS[2]}
    ours = MultiModalGuiderFactory.from_dict(table)
    ref = RefFactory.from_dict({sigma: _ref_params(p) for sigma, p in table.items()})
    for sigma in (1.5, 1.0, 0.99, 0.6, 0.59, 0.2, 0.1, 0.0):
        assert _ref_params(ours.params(sigma)) == ref.params(sigma)
    constant = MultiModalGuiderFactory.constant(PARAMS[1])
    assert constant.params(0.3) == constant.params(1.0) == PARAMS[1]
    with pytest.raises(LtxAneError, match="at least one sigma bin"):
        MultiModalGuiderFactory.from_dict({})


# A deterministic stand-in transformer: a fixed function of latent, sigma, text context, perturbations and the
# modality's enabled flag, so any difference in which passes run, and how, shows in the guided result.
CONTEXTS = {("video", False): 0.2, ("video", True): -0.4, ("audio", False): 0.1, ("audio", True): -0.3}
PERTURBATION_CODES = {
    "skip_video_self_attn": 1.0,
    "skip_audio_self_attn": 2.0,
    "skip_a2v_cross_attn": 3.0,
    "skip_v2a_cross_attn": 5.0,
}


def _perturbation_code(perturbations) -> float:
    return sum(
        PERTURBATION_CODES[kind] * (0.5 if blocks is None else 1 + sum(blocks))
        for kind, blocks in perturbations
    )


def _fake_x0(latent, sigma, context, code, enabled, lib):
    return 0.8 * latent * (1 - sigma) + 0.3 * lib.sin(3 * latent) + context + 0.01 * code + (0.0 if enabled else 0.05)


def _ref_transformer(video, audio, perturbations):
    pairs = []
    if perturbations is not None:
        (config,) = perturbations.perturbations
        pairs = [(p.type.value, None if p.blocks is None else tuple(p.blocks)) for p in config.perturbations]
    code = _perturbation_code(pairs)
    return tuple(
        _fake_x0(m.latent, float(m.sigma), float(m.context), code, m.enabled, torch) for m in (video, audio)
    )


def _forward(video_state, audio_state, sigma, guidance_pass):
    code, negative = _perturbation_code(guidance_pass.perturbations), guidance_pass.negative
    return (
        _fake_x0(video_state.latent, sigma, CONTEXTS["video", negative], code, guidance_pass.video_enabled, mx),
        _fake_x0(audio_state.latent, sigma, CONTEXTS["audio", negative], code, guidance_pass.audio_enabled, mx),
    )


def test_guided_denoise_matches_ltx_pipelines():
    """Sigma-binned video guidance with skip_step 1, constant audio guidance with skip_step 2, over 6 steps."""
    from dataclasses import replace

    from ltx_core.components.guiders import MultiModalGuiderFactory as RefFactory
    from ltx_pipelines.utils.helpers import multi_modal_guider_factory_denoising_func

    video_table = {1.0: replace(PARAMS[0], skip_step=1), 0.5: PARAMS[2]}
    audio_params = replace(PARAMS[1], stg_scale=1.0, stg_blocks=None, skip_step=2)
    ours = guided_denoise(
        MultiModalGuiderFactory.from_dict(video_table), MultiModalGuiderFactory.constant(audio_params), _forward
    )
    ref = multi_modal_guider_factory_denoising_func(
        RefFactory.from_dict({s: _ref_params(p) for s, p in video_table.items()}, negative_context=torch.tensor(-0.4)),
        RefFactory.constant(_ref_params(audio_params), negative_context=torch.tensor(-0.3)),
        torch.tensor(0.2),
        torch.tensor(0.1),
        _ref_transformer,
    )
    video_tools = VideoLatentTools(VideoLatentShape(1, 8, 2, 2, 3), 24.0)
    sigmas = ltx2_sigmas(6)
    torch_sigmas = to_torch(sigmas)
    for step in range(6):
        video = video_tools.initial_state(mx.float32, mx.random.normal((1, 8, 2, 2, 3), key=mx.random.key(step)))
        audio_latent = mx.random.normal((1, 5, 16), key=mx.random.key(100 + step))
        audio = type(video)(audio_latent, mx.ones((1, 5, 1)), mx.zeros((1, 1, 5, 2)), audio_latent)
        ref_video = to_ref_state(video)
        ref_audio = to_ref_state(audio)
        out_video, out_audio = ours(video, audio, float(sigmas[step]), step)
        ref_out_video, ref_out_audio = ref(ref_video, ref_audio, torch_sigmas, step)
        assert_close(out_video, ref_out_video)
        assert_close(out_audio, ref_out_audio)


def test_guided_denoise_cannot_skip_without_a_previous_prediction():
    params = MultiModalGuiderParams(skip_step=1)
    denoise = guided_denoise(MultiModalGuiderFactory.constant(params), None, _forward)
    state = VideoLatentTools(VideoLatentShape(1, 8, 1, 1, 1), 24.0).initial_state(mx.float32)
    with pytest.raises(LtxAneError, match="skip_step skips step 1"):
        denoise(state, state, 0.5, 1)
