"""Guidance: combining the transformer's x0 predictions from several passes (ltx-core ``guiders.py``).

``MultiModalGuider`` is what the dev pipelines use; one per modality. ``guided_denoise`` turns a transformer call
into the denoise function of ``loops``: it asks ``forward`` for each pass a ``GuidancePass`` describes (the caller
maps a pass to contexts and to the transformer's perturbation config) and combines the results.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import mlx.core as mx

from ltx_ane.errors import LtxAneError
from ltx_ane.sampling.state import LatentState


def projection_coef(to_project: mx.array, project_onto: mx.array) -> mx.array:
    """Per batch item <a, b> / (|b|^2 + 1e-8), shaped (B, 1) for broadcasting against (B, T, C)."""
    batch = to_project.shape[0]
    a = to_project.reshape(batch, -1)
    b = project_onto.reshape(batch, -1)
    coef = mx.sum(a * b, axis=1, keepdims=True) / (mx.sum(b * b, axis=1, keepdims=True) + 1e-8)
    return coef.reshape(batch, *([1] * (to_project.ndim - 1)))


@dataclass(frozen=True)
class CFGGuider:
    scale: float

    def delta(self, cond: mx.array, uncond: mx.array) -> mx.array:
        return (self.scale - 1) * (cond - uncond)

    def enabled(self) -> bool:
        return self.scale != 1.0


@dataclass(frozen=True)
class CFGStarRescalingGuider:
    """CFG against the negative prediction rescaled onto the positive one's direction (CFG-zero*)."""

    scale: float

    def delta(self, cond: mx.array, uncond: mx.array) -> mx.array:
        return (self.scale - 1) * (cond - projection_coef(cond, uncond) * uncond)

    def enabled(self) -> bool:
        return self.scale != 1.0


@dataclass(frozen=True)
class STGGuider:
    scale: float

    def delta(self, cond: mx.array, perturbed: mx.array) -> mx.array:
        return self.scale * (cond - perturbed)

    def enabled(self) -> bool:
        return self.scale != 0.0


@dataclass(frozen=True)
class APGGuider:
    """Adaptive projected guidance (ltx-core ``LtxAPGGuider``): the CFG difference split into parts parallel
    (weighted by ``eta``) and orthogonal to ``cond``, optionally clipped to L2 norm ``norm_threshold`` over the
    last three axes."""

    scale: float
    eta: float = 1.0
    norm_threshold: float = 0.0

    def delta(self, cond: mx.array, uncond: mx.array) -> mx.array:
        guidance = cond - uncond
        if self.norm_threshold > 0:
            axes = tuple(range(max(guidance.ndim - 3, 0), guidance.ndim))
            norm = mx.sqrt(mx.sum(guidance * guidance, axis=axes, keepdims=True))
            guidance = guidance * mx.minimum(mx.ones_like(guidance), self.norm_threshold / norm)
        parallel = projection_coef(guidance, cond) * cond
        return (parallel * self.eta + (guidance - parallel)) * (self.scale - 1)

    def enabled(self) -> bool:
        return self.scale != 1.0


@dataclass(frozen=True)
class MultiModalGuiderParams:
    cfg_scale: float = 1.0
    stg_scale: float = 0.0
    stg_blocks: tuple[int, ...] | None = ()  # None: every block
    rescale_scale: float = 0.0
    modality_scale: float = 1.0  # isolated-modality (A2V / V2A off) guidance
    skip_step: int = 0  # >0: only every (skip_step + 1)-th step runs the model, the others reuse the last x0


# The ltx-pipelines defaults for LTX-2 (19B) dev checkpoints; LTX-2.3 perturbs block 28 instead of 29.
LTX2_VIDEO_GUIDANCE = MultiModalGuiderParams(
    cfg_scale=3.0, stg_scale=1.0, stg_blocks=(29,), rescale_scale=0.7, modality_scale=3.0
)
LTX2_AUDIO_GUIDANCE = MultiModalGuiderParams(
    cfg_scale=7.0, stg_scale=1.0, stg_blocks=(29,), rescale_scale=0.7, modality_scale=3.0
)


@dataclass(frozen=True)
class MultiModalGuider:
    params: MultiModalGuiderParams

    def calculate(
        self,
        cond: mx.array,
        uncond_text: mx.array | float,
        uncond_perturbed: mx.array | float,
        uncond_modality: mx.array | float,
    ) -> mx.array:
        """``cond + (cfg-1)(cond-uncond) + stg(cond-perturbed) + (mod-1)(cond-isolated)``, then rescaled towards
        ``cond``'s standard deviation over the whole tensor. Passes that were not run are given as 0.0."""
        p = self.params
        pred = (
            cond
            + (p.cfg_scale - 1) * (cond - uncond_text)
            + p.stg_scale * (cond - uncond_perturbed)
            + (p.modality_scale - 1) * (cond - uncond_modality)
        )
        if p.rescale_scale != 0:
            # torch returns the std in the tensor's dtype, so in bf16 the factor is rounded to bf16 too.
            factor = _std(cond).astype(cond.dtype) / _std(pred).astype(pred.dtype)
            pred = pred * (p.rescale_scale * factor + (1 - p.rescale_scale))
        return pred

    def do_unconditional_generation(self) -> bool:
        return not math.isclose(self.params.cfg_scale, 1.0)

    def do_perturbed_generation(self) -> bool:
        return not math.isclose(self.params.stg_scale, 0.0)

    def do_isolated_modality_generation(self) -> bool:
        return not math.isclose(self.params.modality_scale, 1.0)

    def should_skip_step(self, step: int) -> bool:
        return self.params.skip_step != 0 and step % (self.params.skip_step + 1) != 0


def _std(x: mx.array) -> mx.array:
    """Unbiased standard deviation over every element, as ``torch.Tensor.std()``."""
    return mx.sqrt(mx.var(x.astype(mx.float32), ddof=1))


@dataclass(frozen=True)
class MultiModalGuiderFactory:
    """Guider parameters by sigma bin: key k_i covers (k_{i+1}, k_i]; sigmas above every key use the largest."""

    params_by_sigma: tuple[tuple[float, MultiModalGuiderParams], ...]

    @staticmethod
    def constant(params: MultiModalGuiderParams) -> MultiModalGuiderFactory:
        return MultiModalGuiderFactory(((math.inf, params),))

    @staticmethod
    def from_dict(sigma_to_params: Mapping[float, MultiModalGuiderParams]) -> MultiModalGuiderFactory:
        if not sigma_to_params:
            raise LtxAneError("guidance by sigma needs at least one sigma bin")
        return MultiModalGuiderFactory(tuple(sorted(sigma_to_params.items(), key=lambda item: item[0], reverse=True)))

    def params(self, sigma: float) -> MultiModalGuiderParams:
        keys_at_or_above = [key for key, _ in self.params_by_sigma if key >= float(sigma)]
        key = keys_at_or_above[-1] if keys_at_or_above else self.params_by_sigma[0][0]
        return next(params for k, params in self.params_by_sigma if k == key)

    def build_from_sigma(self, sigma: float) -> MultiModalGuider:
        return MultiModalGuider(self.params(sigma))


@dataclass(frozen=True)
class GuidancePass:
    """One transformer evaluation the guiders need.

    ``negative``: use the negative prompt's contexts (CFG). ``perturbations``: (ltx-core ``PerturbationType``
    value, blocks or None for all) pairs, e.g. ``("skip_video_self_attn", (29,))`` for STG or
    ``("skip_a2v_cross_attn", None)`` for modality isolation. ``video_enabled``/``audio_enabled`` false means that
    modality's result is unused this step (skip_step) and the transformer may skip it.
    """

    name: str  # "conditional", "negative", "perturbed" or "isolated"
    negative: bool = False
    perturbations: tuple[tuple[str, tuple[int, ...] | None], ...] = ()
    video_enabled: bool = True
    audio_enabled: bool = True


# forward(video_state, audio_state, sigma, guidance_pass) -> (x0_video, x0_audio)
GuidedForward = Callable[[LatentState, LatentState, float, GuidancePass], tuple[mx.array, mx.array]]


def _blocks(blocks: tuple[int, ...] | list[int] | None) -> tuple[int, ...] | None:
    return None if blocks is None else tuple(blocks)


def guidance_passes(video: MultiModalGuider, audio: MultiModalGuider, step: int) -> list[GuidancePass]:
    """The passes ltx-pipelines' ``multi_modal_guider_denoising_func`` runs at ``step`` (none when both skip)."""
    video_skip, audio_skip = video.should_skip_step(step), audio.should_skip_step(step)
    if video_skip and audio_skip:
        return []
    passes = [GuidancePass("conditional", video_enabled=not video_skip, audio_enabled=not audio_skip)]
    if video.do_unconditional_generation() or audio.do_unconditional_generation():
        passes.append(GuidancePass("negative", negative=True))
    if video.do_perturbed_generation() or audio.do_perturbed_generation():
        perturbations = []
        if video.do_perturbed_generation():
            perturbations.append(("skip_video_self_attn", _blocks(video.params.stg_blocks)))
        if audio.do_perturbed_generation():
            perturbations.append(("skip_audio_self_attn", _blocks(audio.params.stg_blocks)))
        passes.append(
            GuidancePass(
                "perturbed",
                perturbations=tuple(perturbations),
                video_enabled=not video_skip,
                audio_enabled=not audio_skip,
            )
        )
    if video.do_isolated_modality_generation() or audio.do_isolated_modality_generation():
        passes.append(
            GuidancePass(
                "isolated",
                perturbations=(("skip_a2v_cross_attn", None), ("skip_v2a_cross_attn", None)),
                video_enabled=not video_skip,
                audio_enabled=not audio_skip,
            )
        )
    return passes


def guided_denoise(
    video_factory: MultiModalGuiderFactory,
    audio_factory: MultiModalGuiderFactory | None,
    forward: GuidedForward,
) -> Callable[[LatentState, LatentState, float, int], tuple[mx.array, mx.array]]:
    """A ``loops`` denoise function applying multi-modal guidance with per-sigma parameters (``audio_factory``
    None: the video one). A modality whose guider skips the step reuses its previous guided x0."""
    last: list[tuple[mx.array, mx.array] | None] = [None]

    def denoise(
        video_state: LatentState, audio_state: LatentState, sigma: float, step: int
    ) -> tuple[mx.array, mx.array]:
        video = video_factory.build_from_sigma(sigma)
        audio = (audio_factory or video_factory).build_from_sigma(sigma)
        passes = guidance_passes(video, audio, step)
        if last[0] is None and (video.should_skip_step(step) or audio.should_skip_step(step)):
            raise LtxAneError(f"guidance skip_step skips step {step} but there is no earlier prediction to reuse")
        if not passes:
            return last[0]
        results = {p.name: forward(video_state, audio_state, sigma, p) for p in passes}
        outputs = []
        for index, guider in ((0, video), (1, audio)):
            if guider.should_skip_step(step):
                outputs.append(last[0][index])
                continue
            outputs.append(
                guider.calculate(
                    results["conditional"][index],
                    results["negative"][index] if "negative" in results else 0.0,
                    results["perturbed"][index] if "perturbed" in results else 0.0,
                    results["isolated"][index] if "isolated" in results else 0.0,
                )
            )
        last[0] = (outputs[0], outputs[1])
        return last[0]

    return denoise
