"""Latent shapes, patchify round trips, positions and initial states against ltx-core's patchifiers and tools."""

import mlx.core as mx
import numpy as np
import pytest
from sampling_util import assert_equal, assert_state_matches, to_mx, to_torch, torch

from ltx_ane.errors import LtxAneError
from ltx_ane.sampling import AudioLatentShape, AudioLatentTools, VideoLatentShape, VideoLatentTools, check_video_size
from ltx_ane.sampling.patchify import patchify_audio, patchify_video, unpatchify_audio, unpatchify_video


def _ref_video_tools(shape, fps):
    from ltx_core.components.patchifiers import VideoLatentPatchifier
    from ltx_core.tools import VideoLatentTools as RefVideoLatentTools
    from ltx_core.types import VideoLatentShape as RefShape

    return RefVideoLatentTools(VideoLatentPatchifier(patch_size=1), RefShape(*shape), fps)


def _ref_audio_tools(shape):
    from ltx_core.components.patchifiers import AudioPatchifier
    from ltx_core.tools import AudioLatentTools as RefAudioLatentTools
    from ltx_core.types import AudioLatentShape as RefShape

    return RefAudioLatentTools(AudioPatchifier(patch_size=1), RefShape(*shape))


@pytest.mark.parametrize(
    ("frames", "height", "width", "fps"), [(121, 512, 768, 24.0), (9, 96, 64, 25.0), (1, 32, 32, 30.0)]
)
def test_shapes_match_ltx_core(frames, height, width, fps):
    from ltx_core.types import AudioLatentShape as RefAudioShape
    from ltx_core.types import VideoLatentShape as RefVideoShape
    from ltx_core.types import VideoPixelShape

    pixels = VideoPixelShape(batch=1, frames=frames, height=height, width=width, fps=fps)
    assert tuple(VideoLatentShape.from_pixels(frames, height, width)) == tuple(RefVideoShape.from_pixel_shape(pixels))
    assert tuple(AudioLatentShape.from_video(frames, fps)) == tuple(RefAudioShape.from_video_pixel_shape(pixels))
    assert VideoLatentShape.from_pixels(frames, height, width).pixel_frames == frames


def test_patchify_round_trips_match_ltx_core():
    from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier
    from ltx_core.types import AudioLatentShape as RefAudioShape
    from ltx_core.types import VideoLatentShape as RefVideoShape

    video = mx.random.normal((2, 6, 3, 4, 5), key=mx.random.key(0))
    ref_tokens = VideoLatentPatchifier(1).patchify(to_torch(video))
    assert_equal(patchify_video(video), ref_tokens)
    shape = VideoLatentShape(2, 6, 3, 4, 5)
    ref_video = VideoLatentPatchifier(1).unpatchify(ref_tokens, RefVideoShape(*shape))
    assert_equal(unpatchify_video(patchify_video(video), shape), ref_video)
    assert_equal(unpatchify_video(patchify_video(video), shape), to_torch(video))

    audio = mx.random.normal((2, 8, 7, 16), key=mx.random.key(1))
    ref_tokens = AudioPatchifier(1).patchify(to_torch(audio))
    assert_equal(patchify_audio(audio), ref_tokens)
    ref_audio = AudioPatchifier(1).unpatchify(ref_tokens, RefAudioShape(2, 8, 7, 16))
    assert_equal(unpatchify_audio(patchify_audio(audio), 8, 16), ref_audio)


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
@pytest.mark.parametrize(
    ("shape", "fps"), [((1, 4, 16, 3, 5), 24.0), ((2, 4, 3, 2, 2), 25.0), ((1, 4, 5, 2, 3), 23.976)]
)
def test_video_initial_state_and_positions_match_ltx_core(shape, fps, dtype):
    """Positions: [start, end) pixel bounds, the causal fix for frame 0, / fps, then rounded to the state dtype
    (113/24 s becomes 4.71875 in bf16)."""
    ref_tools = _ref_video_tools(shape, fps)
    tools = VideoLatentTools(VideoLatentShape(*shape), fps)
    initial = mx.random.normal(shape, key=mx.random.key(2)).astype(dtype)
    ref = ref_tools.create_initial_state("cpu", to_torch(initial).dtype, to_torch(initial))
    assert_state_matches(tools.initial_state(dtype, initial), ref)
    ref_zero = ref_tools.create_initial_state("cpu", to_torch(initial).dtype)
    assert_state_matches(tools.initial_state(dtype), ref_zero)
    # first token: frame 0 covers pixel frame [0, 1); the next latent frame covers [1, 9)
    positions = np.array(tools.initial_state(mx.float32).positions)
    np.testing.assert_allclose(positions[0, 0, 0], [0, 1 / fps], rtol=1e-6)
    np.testing.assert_allclose(positions[0, 0, shape[3] * shape[4]], [1 / fps, 9 / fps], rtol=1e-6)


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_audio_initial_state_matches_ltx_core(dtype):
    shape = (1, 8, 126, 16)
    initial = mx.random.normal(shape, key=mx.random.key(3)).astype(dtype)
    ref = _ref_audio_tools(shape).create_initial_state("cpu", to_torch(initial).dtype, to_torch(initial))
    state = AudioLatentTools(AudioLatentShape(*shape)).initial_state(dtype, initial)
    assert_state_matches(state, ref)
    assert state.positions.dtype == mx.float32  # audio positions are not rounded to the model dtype


def test_clear_conditioning_and_unpatchify_match_ltx_core():
    from dataclasses import replace

    shape = (1, 4, 3, 2, 3)
    tools, ref_tools = VideoLatentTools(VideoLatentShape(*shape), 24.0), _ref_video_tools(shape, 24.0)
    ref_state = ref_tools.create_initial_state("cpu", torch.float32)
    extra = torch.randn(1, 5, 4, generator=torch.Generator().manual_seed(0))
    ref_state = replace(
        ref_state,
        latent=torch.cat([torch.randn(1, 18, 4, generator=torch.Generator().manual_seed(1)), extra], 1),
        clean_latent=torch.cat([ref_state.clean_latent, extra], 1),
        denoise_mask=torch.cat([ref_state.denoise_mask * 0.25, torch.zeros(1, 5, 1)], 1),
        positions=torch.cat([ref_state.positions, ref_state.positions[:, :, :5]], 2),
        attention_mask=torch.rand(1, 23, 23, generator=torch.Generator().manual_seed(2)),
    )
    state = tools.initial_state(mx.float32)
    fields = ("latent", "denoise_mask", "positions", "clean_latent", "attention_mask")
    state = type(state)(*(to_mx(getattr(ref_state, name)) for name in fields))
    cleared = tools.clear_conditioning(state)
    ref_cleared = ref_tools.clear_conditioning(ref_state)
    assert_state_matches(cleared, ref_cleared)
    assert_state_matches(tools.unpatchify(cleared), ref_tools.unpatchify(ref_cleared))

    audio_shape = (1, 8, 5, 16)
    audio_tools, ref_audio_tools = AudioLatentTools(AudioLatentShape(*audio_shape)), _ref_audio_tools(audio_shape)
    initial_audio = torch.randn(audio_shape, generator=torch.Generator().manual_seed(3))
    ref_audio = ref_audio_tools.create_initial_state("cpu", torch.float32, initial_audio)
    audio = audio_tools.initial_state(mx.float32, to_mx(ref_audio_tools.unpatchify(ref_audio).latent))
    ref_audio = ref_audio_tools.unpatchify(ref_audio_tools.clear_conditioning(ref_audio))
    assert_state_matches(audio_tools.unpatchify(audio_tools.clear_conditioning(audio)), ref_audio)


def test_initial_latent_of_the_wrong_shape_is_an_error():
    tools = VideoLatentTools(VideoLatentShape(1, 4, 3, 2, 3), 24.0)
    with pytest.raises(LtxAneError, match=r"initial latent has shape \(1, 4, 2, 2, 3\), expected \(1, 4, 3, 2, 3\)"):
        tools.initial_state(mx.float32, mx.zeros((1, 4, 2, 2, 3)))


@pytest.mark.parametrize(
    ("frames", "height", "width", "two_stage", "message"),
    [
        (120, 512, 768, False, "frame count must be 8k\\+1"),
        (0, 512, 768, False, "frame count must be 8k\\+1"),
        (121, 500, 768, False, "multiples of 32 for one-stage"),
        (121, 512, 736, True, "multiples of 64 for two-stage"),
        (121, 0, 768, False, "multiples of 32"),
    ],
)
def test_bad_video_sizes_are_one_line_errors(frames, height, width, two_stage, message):
    with pytest.raises(LtxAneError, match=message) as error:
        check_video_size(frames, height, width, two_stage)
    assert "\n" not in str(error.value)


def test_good_video_sizes_pass():
    check_video_size(121, 512, 768, two_stage=True)
    check_video_size(1, 32, 96)
