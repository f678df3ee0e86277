"""The transformer as the sampling loops' denoise function (ltx-pipelines ``helpers``: ``modality_from_latent_state``,
``simple_denoising_func`` and the guided passes).

A loop state becomes a ``Modality`` with per-token timesteps ``denoise_mask * sigma``; the x0 model returns the
denoised tokens. ``plain_denoise`` runs one pass per step (distilled and stage-2 steps); ``guided_forward`` runs one
``sampling.GuidancePass`` (positive or negative prompt, STG or modality isolation), and ``sampling.guided_denoise``
combines the passes. The text side of every pass (caption projection and the blocks' text keys and values) depends
only on the prompt, so it is prepared once per prompt (``LTXModel.prepare_context``) and reused by every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from ltx_ane.models.transformer.modality import Modality
from ltx_ane.models.transformer.perturbations import (
    BatchedPerturbationConfig,
    Perturbation,
    PerturbationConfig,
    PerturbationType,
)
from ltx_ane.sampling import GuidancePass, LatentState


@dataclass(frozen=True)
class PromptContexts:
    """Text features for the transformer, (B, 1024, D) per modality; the negative ones only for guided pipelines."""

    video: mx.array
    audio: mx.array
    video_negative: mx.array | None = None
    audio_negative: mx.array | None = None

    @property
    def has_negative(self) -> bool:
        return self.video_negative is not None and self.audio_negative is not None


def modality_from_state(state: LatentState, context: mx.array, sigma: float, enabled: bool = True) -> Modality:
    batch = state.latent.shape[0]
    return Modality(
        latent=state.latent,
        sigma=mx.full((batch,), sigma, dtype=mx.float32),
        timesteps=state.denoise_mask * mx.array(sigma, dtype=mx.float32),
        positions=state.positions,
        context=context,
        enabled=enabled,
        attention_mask=state.attention_mask,
    )


def plain_denoise(x0_model, contexts: PromptContexts):
    """One conditional pass per step: ``denoise(video_state, audio_state, sigma, step) -> (x0_video, x0_audio)``."""
    text = x0_model.velocity_model.prepare_context(contexts.video, contexts.audio)

    def denoise(video: LatentState, audio: LatentState, sigma: float, step: int):
        return x0_model(modality_from_state(video, contexts.video, sigma),
                        modality_from_state(audio, contexts.audio, sigma), text=text)

    return denoise


def perturbation_config(guidance_pass: GuidancePass, batch: int) -> BatchedPerturbationConfig | None:
    """A pass's (type, blocks) pairs as the transformer's per-item perturbation config (the same for every item)."""
    if not guidance_pass.perturbations:
        return None
    item = PerturbationConfig(tuple(
        Perturbation(PerturbationType(kind), None if blocks is None else tuple(blocks))
        for kind, blocks in guidance_pass.perturbations
    ))
    return BatchedPerturbationConfig(tuple(item for _ in range(batch)))


def guided_forward(x0_model, contexts: PromptContexts):
    """``forward(video_state, audio_state, sigma, guidance_pass)`` for ``sampling.guided_denoise``."""

    prepare = x0_model.velocity_model.prepare_context
    positive = prepare(contexts.video, contexts.audio)
    negative = prepare(contexts.video_negative, contexts.audio_negative)

    def forward(video: LatentState, audio: LatentState, sigma: float, guidance_pass: GuidancePass):
        video_context = contexts.video_negative if guidance_pass.negative else contexts.video
        audio_context = contexts.audio_negative if guidance_pass.negative else contexts.audio
        return x0_model(
            modality_from_state(video, video_context, sigma, guidance_pass.video_enabled),
            modality_from_state(audio, audio_context, sigma, guidance_pass.audio_enabled),
            perturbation_config(guidance_pass, video.latent.shape[0]),
            text=negative if guidance_pass.negative else positive,
        )

    return forward
