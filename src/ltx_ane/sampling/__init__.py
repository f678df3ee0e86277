"""The sampling core: latent states, schedules, noise, guidance, conditioning and denoising loops (ltx-core /
ltx-pipelines 1.0.0, tested against them). Nothing here loads weights; the model enters as a denoise function.

Building a state (``patchify``, ``state``, ``conditioning``, ``noisers``):
- ``check_video_size(frames, height, width, two_stage)``; ``VideoLatentShape.from_pixels(frames, h, w)``;
  ``AudioLatentShape.from_video(frames, fps)``.
- ``VideoLatentTools(shape, fps)`` / ``AudioLatentTools(shape)``: ``initial_state(dtype, initial_latent=None)``,
  ``clear_conditioning(state)``, ``unpatchify(state)``.
- ``EncodedImage(latent, frame_index, strength)`` -> ``combined_image_conditionings`` (frame 0 replaced, others
  appended) or ``keyframe_conditionings`` (all appended); ``AppendKeyframe(..., attention_strength=)`` adds an
  attention mask.
- ``loops.noised_state(tools, dtype, noiser, conditionings, noise_scale, initial_latent)`` with a
  ``GaussianNoiser(seed)`` or ``add_noise(state, noise, scale)`` for given noise.

Sampling (``schedulers``, ``guiders``, ``loops``):
- ``DISTILLED_SIGMAS``, ``STAGE_2_SIGMAS``, ``ltx2_sigmas(steps, tokens=4096)``, ``linear_quadratic_sigmas(steps)``.
- ``euler_loop(sigmas, video, audio, denoise)`` and ``res2s_loop(..., step_noise, substep_noise)`` (noise from
  ``Res2sNoise(seed)``) yield a ``LoopStep`` per step; ``run_to_end(loop)`` returns the final states.
  ``denoise(video_state, audio_state, sigma, step) -> (x0_video, x0_audio)``.
- ``guided_denoise(video_factory, audio_factory, forward)`` wraps a transformer call in ``MultiModalGuider``
  guidance; ``forward(video_state, audio_state, sigma, GuidancePass)`` runs one pass.
"""

from ltx_ane.sampling.conditioning import (
    AppendKeyframe,
    EncodedImage,
    ReplaceLatentFrame,
    apply_conditionings,
    build_attention_mask,
    combined_image_conditionings,
    keyframe_conditionings,
)
from ltx_ane.sampling.guiders import (
    LTX2_AUDIO_GUIDANCE,
    LTX2_VIDEO_GUIDANCE,
    APGGuider,
    CFGGuider,
    CFGStarRescalingGuider,
    GuidancePass,
    MultiModalGuider,
    MultiModalGuiderFactory,
    MultiModalGuiderParams,
    STGGuider,
    guidance_passes,
    guided_denoise,
)
from ltx_ane.sampling.loops import LoopStep, Res2sNoise, euler_loop, noised_state, res2s_loop, run_to_end
from ltx_ane.sampling.noisers import GaussianNoiser, add_noise, blend_clean
from ltx_ane.sampling.patchify import AudioLatentShape, VideoLatentShape, check_video_size
from ltx_ane.sampling.schedulers import DISTILLED_SIGMAS, STAGE_2_SIGMAS, linear_quadratic_sigmas, ltx2_sigmas
from ltx_ane.sampling.state import AudioLatentTools, LatentState, VideoLatentTools

__all__ = [
    "APGGuider",
    "AppendKeyframe",
    "AudioLatentShape",
    "AudioLatentTools",
    "CFGGuider",
    "CFGStarRescalingGuider",
    "DISTILLED_SIGMAS",
    "EncodedImage",
    "GaussianNoiser",
    "GuidancePass",
    "LTX2_AUDIO_GUIDANCE",
    "LTX2_VIDEO_GUIDANCE",
    "LatentState",
    "LoopStep",
    "MultiModalGuider",
    "MultiModalGuiderFactory",
    "MultiModalGuiderParams",
    "ReplaceLatentFrame",
    "Res2sNoise",
    "STAGE_2_SIGMAS",
    "STGGuider",
    "VideoLatentShape",
    "VideoLatentTools",
    "add_noise",
    "apply_conditionings",
    "blend_clean",
    "build_attention_mask",
    "check_video_size",
    "combined_image_conditionings",
    "euler_loop",
    "guidance_passes",
    "guided_denoise",
    "keyframe_conditionings",
    "linear_quadratic_sigmas",
    "ltx2_sigmas",
    "noised_state",
    "res2s_loop",
    "run_to_end",
]
