"""Image/keyframe conditioning and noising against ltx-core's conditioning items, GaussianNoiser and
ltx-pipelines' ``combined_image_conditionings`` / keyframe helpers, state after state."""

import mlx.core as mx
import pytest
from sampling_util import assert_close, assert_state_matches, to_mx, to_torch, torch

from ltx_ane.errors import LtxAneError
from ltx_ane.sampling import (
    AppendKeyframe,
    EncodedImage,
    GaussianNoiser,
    ReplaceLatentFrame,
    VideoLatentShape,
    VideoLatentTools,
    add_noise,
    build_attention_mask,
    combined_image_conditionings,
    keyframe_conditionings,
    noised_state,
)

SHAPE = VideoLatentShape(1, 4, 5, 2, 3)  # 33 pixel frames
FPS = 24.0


def _ref_tools():
    from ltx_core.components.patchifiers import VideoLatentPatchifier
    from ltx_core.tools import VideoLatentTools as RefVideoLatentTools
    from ltx_core.types import VideoLatentShape as RefShape

    return RefVideoLatentTools(VideoLatentPatchifier(patch_size=1), RefShape(*SHAPE), FPS)


def _image(seed: int, dtype) -> mx.array:
    return mx.random.normal((1, SHAPE.channels, 1, SHAPE.height, SHAPE.width), key=mx.random.key(seed)).astype(dtype)


def _ours_and_ltx_core(dtype):
    """The same sequence of conditioning items, ours and ltx-core's."""
    from ltx_core.conditioning import (
        ConditioningItemAttentionStrengthWrapper,
        VideoConditionByKeyframeIndex,
        VideoConditionByLatentIndex,
    )

    images = [_image(seed, dtype) for seed in range(5)]
    ours = [
        ReplaceLatentFrame(images[0], strength=0.9),
        AppendKeyframe(images[1], frame_index=16, strength=0.7),
        AppendKeyframe(images[2], frame_index=0, strength=1.0, attention_strength=0.35),
        AppendKeyframe(images[3], frame_index=32, strength=0.55),
        ReplaceLatentFrame(images[4], strength=0.3, latent_index=2),
    ]
    ref = [
        VideoConditionByLatentIndex(to_torch(images[0]), 0.9, 0),
        VideoConditionByKeyframeIndex(to_torch(images[1]), 16, 0.7),
        ConditioningItemAttentionStrengthWrapper(VideoConditionByKeyframeIndex(to_torch(images[2]), 0, 1.0), 0.35),
        VideoConditionByKeyframeIndex(to_torch(images[3]), 32, 0.55),
        VideoConditionByLatentIndex(to_torch(images[4]), 0.3, 2),
    ]
    return ours, ref


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_state_after_each_conditioning_item_matches_ltx_core(dtype):
    """bf16 shows the pipelines' roundings: keyframe masks 1 - strength in bf16, keyframe positions float32 next to
    bf16 grid positions, attention masks in bf16."""
    tools, ref_tools = VideoLatentTools(SHAPE, FPS), _ref_tools()
    initial = mx.random.normal(tuple(SHAPE), key=mx.random.key(9)).astype(dtype)
    state = tools.initial_state(dtype, initial)
    ref_state = ref_tools.create_initial_state("cpu", to_torch(initial).dtype, to_torch(initial))
    ours, ref = _ours_and_ltx_core(dtype)
    for item, ref_item in zip(ours, ref):
        state = item.apply(state, tools)
        ref_state = ref_item.apply_to(ref_state, ref_tools)
        assert_state_matches(state, ref_state)
    assert state.latent.shape[1] == SHAPE.token_count() + 3 * SHAPE.height * SHAPE.width
    cleared, ref_cleared = tools.clear_conditioning(state), ref_tools.clear_conditioning(ref_state)
    assert_state_matches(cleared, ref_cleared)


def test_attention_mask_blocks():
    """Noisy <-> new tokens weighted by the strength, new tokens see themselves, older reference groups not."""
    existing = mx.full((1, 5, 5), 0.5)
    mask = build_attention_mask(existing, num_noisy=3, num_new=2, num_existing=5, cross=mx.array([[0.2, 0.8]]))
    expected = mx.array(
        [
            [0.5, 0.5, 0.5, 0.5, 0.5, 0.2, 0.8],
            [0.5, 0.5, 0.5, 0.5, 0.5, 0.2, 0.8],
            [0.5, 0.5, 0.5, 0.5, 0.5, 0.2, 0.8],
            [0.5, 0.5, 0.5, 0.5, 0.5, 0.0, 0.0],
            [0.5, 0.5, 0.5, 0.5, 0.5, 0.0, 0.0],
            [0.2, 0.2, 0.2, 0.0, 0.0, 1.0, 1.0],
            [0.8, 0.8, 0.8, 0.0, 0.0, 1.0, 1.0],
        ]
    )
    assert mx.array_equal(mask[0], expected)


@pytest.mark.parametrize("keyframes_only", [False, True])
def test_pipeline_image_conditionings_match_ltx_pipelines(monkeypatch, keyframes_only):
    """Encoded images at frames 0, 8 and 24 through ltx-pipelines' helpers (loading and encoding faked) and ours."""
    import ltx_pipelines.utils.helpers as helpers
    from ltx_pipelines.utils.args import ImageConditioningInput

    latents = {f"image{i}.png": _image(20 + i, mx.bfloat16) for i in range(3)}
    monkeypatch.setattr(helpers, "load_image_conditioning", lambda image_path, **_: image_path)
    frames_and_strengths = [(0, 1.0), (8, 0.8), (24, 0.6)]
    inputs = [ImageConditioningInput(f"image{i}.png", f, s) for i, (f, s) in enumerate(frames_and_strengths)]
    if keyframes_only:
        reference_helper = helpers.image_conditionings_by_adding_guiding_latent
    else:
        reference_helper = helpers.combined_image_conditionings
    ref_items = reference_helper(inputs, 64, 96, lambda path: to_torch(latents[path]), torch.bfloat16, "cpu")
    encoded = [EncodedImage(latents[i.path], i.frame_idx, i.strength) for i in inputs]
    items = keyframe_conditionings(encoded) if keyframes_only else combined_image_conditionings(encoded)
    assert [type(item).__name__ for item in items] == (
        ["AppendKeyframe"] * 3 if keyframes_only else ["ReplaceLatentFrame", "AppendKeyframe", "AppendKeyframe"]
    )

    from ltx_core.components.noisers import GaussianNoiser as RefGaussianNoiser
    from ltx_pipelines.utils.helpers import create_noised_state

    ref_state = create_noised_state(
        _ref_tools(), ref_items, RefGaussianNoiser(torch.Generator().manual_seed(5)), torch.bfloat16, "cpu"
    )
    # the same draw ltx-core's noiser made
    noise = torch.randn(*ref_state.latent.shape, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(5))
    given_noise = to_mx(noise)
    tools = VideoLatentTools(SHAPE, FPS)
    state = noised_state(tools, mx.bfloat16, lambda s, scale: add_noise(s, given_noise, scale), items)
    assert_state_matches(state, ref_state)


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_noising_matches_gaussian_noiser(dtype):
    """Conditioned tokens keep their value (mask 0), partial ones mix; stage 2 noises at a float32 0.909375."""
    from ltx_core.components.noisers import GaussianNoiser as RefGaussianNoiser

    tools, ref_tools = VideoLatentTools(SHAPE, FPS), _ref_tools()
    ours, ref = _ours_and_ltx_core(dtype)
    initial = mx.random.normal(tuple(SHAPE), key=mx.random.key(11)).astype(dtype)
    state = tools.initial_state(dtype, initial)
    ref_state = ref_tools.create_initial_state("cpu", to_torch(initial).dtype, to_torch(initial))
    for item, ref_item in zip(ours[:2], ref[:2]):
        state, ref_state = item.apply(state, tools), ref_item.apply_to(ref_state, ref_tools)
    for scale in (1.0, torch.tensor([0.909375, 0.0])[0]):
        ref_noised = RefGaussianNoiser(torch.Generator().manual_seed(4))(ref_state, scale)
        generator = torch.Generator().manual_seed(4)
        noise = torch.randn(*ref_state.latent.shape, dtype=ref_state.latent.dtype, generator=generator)
        noised = add_noise(state, to_mx(noise), float(scale))
        assert_state_matches(noised, ref_noised)


def test_seeded_noiser_is_reproducible_and_draws_fresh_noise_per_call():
    state = VideoLatentTools(SHAPE, FPS).initial_state(mx.float32)
    first, second = GaussianNoiser(7), GaussianNoiser(7)
    a, b = first(state), second(state)
    assert mx.array_equal(a.latent, b.latent)
    assert not mx.array_equal(first(state).latent, a.latent)
    assert_close(mx.std(a.latent), torch.tensor(1.0), rel=0.1)


def test_noise_of_the_wrong_shape_is_an_error():
    state = VideoLatentTools(SHAPE, FPS).initial_state(mx.float32)
    with pytest.raises(LtxAneError, match="noise has shape"):
        add_noise(state, mx.zeros((1, 3, 4)))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ReplaceLatentFrame(_image(0, mx.float32), 1.5), r"image strength must be in \[0, 1\], got 1.5"),
        (lambda: AppendKeyframe(_image(0, mx.float32), 8, strength=-0.1), r"keyframe strength must be in \[0, 1\]"),
        (lambda: AppendKeyframe(_image(0, mx.float32), 8, 1.0, attention_strength=2.0), "attention strength"),
    ],
)
def test_strength_outside_0_1_is_an_error(make, message):
    with pytest.raises(LtxAneError, match=message):
        make()


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (AppendKeyframe(_image(0, mx.float32), frame_index=33, strength=1.0), "keyframe index 33 is outside .* 0-32"),
        (AppendKeyframe(_image(0, mx.float32), frame_index=-1, strength=1.0), "keyframe index -1 is outside"),
        (ReplaceLatentFrame(_image(0, mx.float32), 1.0, latent_index=5), "latent frame 5 is outside .* 5 latent"),
        (ReplaceLatentFrame(mx.zeros((1, 4, 1, 3, 3)), strength=1.0), "does not match the video latent"),
    ],
)
def test_conditioning_outside_the_video_is_an_error(item, message):
    state = VideoLatentTools(SHAPE, FPS).initial_state(mx.float32)
    with pytest.raises(LtxAneError, match=message) as error:
        item.apply(state, VideoLatentTools(SHAPE, FPS))
    assert "\n" not in str(error.value)
