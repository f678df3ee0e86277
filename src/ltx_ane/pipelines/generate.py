"""Text/image-to-video with audio: every LTX-2 pipeline of ltx-pipelines 1.0.0 as stages over the sampling core.

A pipeline is a list of stages (:data:`PIPELINES`); each stage builds noised video and audio states at its
resolution (image conditioning re-encoded there), runs a denoising loop with the transformer, and hands its latents to
the next stage (spatial x2 upscaler, re-noised at the stage's first sigma). :func:`generate` yields progress events
per step and fills in a :class:`Generation`; decoding the result is the caller's (``pipelines.render``, audio decode).

Models are loaded when first needed and dropped when no longer needed (:class:`ModelSet`): the VAE encoder before
the transformer, the upscaler between the stages; the text encoder never meets the transformer (contexts come in
as arrays, see ``models.text``).
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import mlx.core as mx
import numpy as np

from ltx_ane.errors import LtxAneError
from ltx_ane.models.loading import Source, mlx_dtype
from ltx_ane.pipelines.denoise import PromptContexts, guided_forward, plain_denoise
from ltx_ane.sampling import (
    DISTILLED_SIGMAS,
    LTX2_AUDIO_GUIDANCE,
    LTX2_VIDEO_GUIDANCE,
    STAGE_2_SIGMAS,
    AudioLatentShape,
    AudioLatentTools,
    EncodedImage,
    GaussianNoiser,
    MultiModalGuiderFactory,
    MultiModalGuiderParams,
    Res2sNoise,
    VideoLatentShape,
    VideoLatentTools,
    add_noise,
    check_video_size,
    combined_image_conditionings,
    euler_loop,
    guided_denoise,
    keyframe_conditionings,
    ltx2_sigmas,
    noised_state,
    res2s_loop,
)
from ltx_ane.sampling.patchify import patchify_audio, patchify_video

# ------------------------------------------------------------------------------------------------ pipelines


@dataclass(frozen=True)
class Stage:
    half_resolution: bool  # stage 1 of a two-stage pipeline runs at half the width and height
    sampler: str  # "euler" or "res2s"
    schedule: str  # "distilled", "stage2" or "ltx2" (LTX2Scheduler over the requested steps)
    guided: bool  # multi-modal CFG/STG guidance (4 passes per step) or one plain pass
    distilled_lora: float = 0.0  # strength of the distilled LoRA fused into the transformer for this stage
    schedule_from_latent: bool = False  # LTX2Scheduler shifted by this stage's token count (HQ) instead of 4,096


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    summary: str
    stages: tuple[Stage, ...]
    default_steps: int | None  # for an "ltx2" schedule; None when the schedule is fixed
    keyframes: bool = False  # every image as appended keyframe tokens (interpolation), else frame 0 replaced

    @property
    def two_stage(self) -> bool:
        return len(self.stages) > 1

    @property
    def needs_distilled_lora(self) -> bool:
        return any(s.distilled_lora for s in self.stages)


_STAGE_2 = Stage(half_resolution=False, sampler="euler", schedule="stage2", guided=False, distilled_lora=1.0)
PIPELINES: dict[str, PipelineSpec] = {
    p.name: p
    for p in (
        PipelineSpec("distilled", "distilled model: 8 steps at half size, x2 upscaler, 3 refining steps",
                     (Stage(True, "euler", "distilled", False), replace(_STAGE_2, distilled_lora=0.0)), None),
        PipelineSpec("one-stage", "dev model, guided, full size (40 steps)",
                     (Stage(False, "euler", "ltx2", True),), 40),
        PipelineSpec("two-stage", "dev model, guided at half size, x2 upscaler, 3 steps with the distilled LoRA",
                     (Stage(True, "euler", "ltx2", True), _STAGE_2), 40),
        PipelineSpec("hq", "dev model, res2s sampler, guided at half size, x2 upscaler, res2s refinement",
                     (Stage(True, "res2s", "ltx2", True, 0.25, schedule_from_latent=True),
                      Stage(False, "res2s", "stage2", False, 0.5)), 15),
        PipelineSpec("keyframes", "keyframe interpolation: every image appended as a keyframe, two-stage dev",
                     (Stage(True, "euler", "ltx2", True), _STAGE_2), 40, keyframes=True),
    )
}

# ltx-pipelines' default negative prompt for the guided pipelines.
DEFAULT_NEGATIVE_PROMPT = (
    "blurry, out of focus, overexposed, underexposed, low contrast, washed out colors, excessive noise, "
    "grainy texture, poor lighting, flickering, motion blur, distorted proportions, unnatural skin tones, "
    "deformed facial features, asymmetrical face, missing facial features, extra limbs, disfigured hands, "
    "wrong hand count, artifacts around text, inconsistent perspective, camera shake, incorrect depth of "
    "field, background too sharp, background clutter, distracting reflections, harsh shadows, inconsistent "
    "lighting direction, color banding, cartoonish rendering, 3D CGI look, unrealistic materials, uncanny "
    "valley effect, incorrect ethnicity, wrong gender, exaggerated expressions, wrong gaze direction, "
    "mismatched lip sync, silent or muted audio, distorted voice, robotic voice, echo, background noise, "
    "off-sync audio, incorrect dialogue, added dialogue, repetitive speech, jittery movement, awkward "
    "pauses, incorrect timing, unnatural transitions, inconsistent framing, tilted camera, flat lighting, "
    "inconsistent tone, cinematic oversaturation, stylized filters, or AI artifacts."
)

# ltx-pipelines' guidance for LTX-2.3 dev checkpoints (STG at block 28, 30 steps) and for its HQ pipeline.
LTX23_VIDEO_GUIDANCE = replace(LTX2_VIDEO_GUIDANCE, stg_blocks=[28])
LTX23_AUDIO_GUIDANCE = replace(LTX2_AUDIO_GUIDANCE, stg_blocks=[28])
HQ_VIDEO_GUIDANCE = MultiModalGuiderParams(cfg_scale=3.0, stg_scale=0.0, rescale_scale=0.45, modality_scale=3.0,
                                           skip_step=0, stg_blocks=[])
HQ_AUDIO_GUIDANCE = MultiModalGuiderParams(cfg_scale=7.0, stg_scale=0.0, rescale_scale=1.0, modality_scale=3.0,
                                           skip_step=0, stg_blocks=[])


def pipeline(name: str) -> PipelineSpec:
    try:
        return PIPELINES[name]
    except KeyError:
        raise LtxAneError(f"unknown pipeline {name!r} (choose from {', '.join(PIPELINES)})") from None


def default_guidance(spec: PipelineSpec, ltx23: bool) -> tuple[MultiModalGuiderParams, MultiModalGuiderParams]:
    if spec.name == "hq":
        return HQ_VIDEO_GUIDANCE, HQ_AUDIO_GUIDANCE
    return (LTX23_VIDEO_GUIDANCE, LTX23_AUDIO_GUIDANCE) if ltx23 else (LTX2_VIDEO_GUIDANCE, LTX2_AUDIO_GUIDANCE)


# ------------------------------------------------------------------------------------------------ request


@dataclass(frozen=True)
class ImageInput:
    """A conditioning image for pixel frame ``frame`` (0: the first frame, by replacement) with ``strength``."""

    path: str
    frame: int = 0
    strength: float = 1.0
    crf: int = 33


@dataclass
class GenerateRequest:
    frames: int = 121
    height: int = 512
    width: int = 768
    fps: float = 24.0
    seed: int = 10
    steps: int | None = None  # None: the pipeline's default (LTX-2.3 dev: 30)
    images: tuple[ImageInput, ...] = ()
    video_guidance: MultiModalGuiderParams | None = None  # None: the pipeline's and model version's default
    audio_guidance: MultiModalGuiderParams | None = None

    def check(self, spec: PipelineSpec) -> None:
        check_video_size(self.frames, self.height, self.width, two_stage=spec.two_stage)
        if self.fps <= 0:
            raise LtxAneError(f"fps must be positive, got {self.fps}")
        if self.steps is not None and spec.default_steps is None:
            raise LtxAneError(f"the {spec.name} pipeline has a fixed schedule; --steps does not apply")
        if self.steps is not None and self.steps < 2:
            raise LtxAneError(f"steps must be at least 2, got {self.steps}")
        for image in self.images:
            if not 0 <= image.frame < self.frames:
                raise LtxAneError(f"image {image.path}: frame {image.frame} is outside the video's {self.frames} frames")
            if not 0.0 <= image.strength <= 1.0:
                raise LtxAneError(f"image {image.path}: strength {image.strength} is outside [0, 1]")


# ------------------------------------------------------------------------------------------------ models


@dataclass
class ModelSet:
    """Where each model comes from, and the ones loaded now. ``checkpoint`` holds the transformer and the VAE."""

    checkpoint: Source
    spatial_upscaler: Source | None = None
    distilled_lora: str | None = None
    loras: tuple[tuple[str, float], ...] = ()
    dtype: str = "bf16"
    quantize: object = None  # models.transformer.quantize.QuantizeMode
    stream_blocks: bool = False  # the memory plan's last resort: one block's weights resident at a time
    seed: int = 0
    log: Callable[[str], None] = print
    _loaded: dict = field(default_factory=dict)
    _fused_lora: float = 0.0

    def transformer(self, distilled_lora: float = 0.0):
        """The x0 model, with the distilled LoRA at ``distilled_lora`` strength (fused in place when possible)."""
        from ltx_ane.models.transformer.lora import fuse_loras_into
        from ltx_ane.models.transformer.loader import load_transformer
        from ltx_ane.models.transformer.model import X0Model

        if self.checkpoint.random_weights and distilled_lora:
            self.log("note: random weights: the distilled LoRA is not applied")
            distilled_lora = 0.0
        model = self._loaded.get("transformer")
        if model is not None and distilled_lora != self._fused_lora and (self.quantize is not None or self.stream_blocks):
            self.drop("transformer")  # a quantised or streamed model cannot take a LoRA: read it again with one
            model = None
        if model is None:
            loras = self.loras + (((self._lora_path(), distilled_lora),) if distilled_lora else ())
            start = time.perf_counter()
            model = load_transformer(self.checkpoint, self.dtype, self.quantize, loras, self.seed,
                                     stream_blocks=self.stream_blocks)
            self._loaded["transformer"], self._fused_lora = model, distilled_lora
            self.log(f"loaded transformer in {time.perf_counter() - start:.1f} s")
        elif distilled_lora != self._fused_lora:
            fuse_loras_into(model, [(self._lora_path(), distilled_lora - self._fused_lora)])
            self._fused_lora = distilled_lora
        return X0Model(model)

    def _lora_path(self) -> str:
        if not self.distilled_lora:
            raise LtxAneError("this pipeline needs the distilled LoRA: pass --distilled-lora FILE")
        return self.distilled_lora

    def statistics(self):
        """The VAE's latent statistics, which wrap the upscaler: two tensors read from the checkpoint (random ones
        with random weights), so the encoder need not load for a text-to-video run."""
        from ltx_ane.models.upscaler.upsample import load_statistics, random_statistics

        if self.checkpoint.random_weights:
            return random_statistics(seed=self.seed)
        return self._get("statistics", lambda: load_statistics(self.checkpoint.checkpoint))

    def encoder(self):
        from ltx_ane.models.video_vae.loader import load_encoder

        return self._get("encoder", lambda: load_encoder(self.checkpoint, self.dtype, self.seed))

    def upscaler(self):
        from ltx_ane.models.upscaler.loader import load_upscaler

        if self.spatial_upscaler is None:
            raise LtxAneError("two-stage pipelines need the spatial x2 upscaler: pass --spatial-upscaler FILE")
        return self._get("upscaler", lambda: load_upscaler(self.spatial_upscaler, self.dtype, "spatial", self.seed))

    def _get(self, name: str, load: Callable):
        if name not in self._loaded:
            self._loaded[name] = load()
        return self._loaded[name]

    def drop(self, *names: str) -> None:
        for name in names:
            self._loaded.pop(name, None)
        gc.collect()
        mx.clear_cache()


# ------------------------------------------------------------------------------------------------ noise


class NoiseSupply:
    """Initial noise per stage and modality: drawn from one seeded generator (video then audio, stage after stage,
    as ltx-pipelines draws from one torch generator) or given (``--noise FILE``: ``video_noise``, ``audio_noise``,
    ``video_noise_stage2``, ``audio_noise_stage2`` in latent shapes). Appended keyframe tokens always take drawn noise."""

    def __init__(self, seed: int, given: dict[str, np.ndarray] | None = None):
        self.generator = GaussianNoiser(seed)
        self.given = given or {}

    def noiser(self, modality: str, stage: int):
        name = f"{modality}_noise" + ("_stage2" if stage else "")

        def noise(state, scale: float):
            drawn = self.generator.draw(tuple(state.latent.shape), state.latent.dtype)
            if name not in self.given:
                return add_noise(state, drawn, scale)
            value = mx.array(self.given[name])
            tokens = patchify_video(value) if modality == "video" else patchify_audio(value)
            if tokens.shape[0] != drawn.shape[0] or tokens.shape[2] != drawn.shape[2] or tokens.shape[1] > drawn.shape[1]:
                raise LtxAneError(f"noise {name} has shape {list(value.shape)}, which does not fit the "
                                  f"{modality} latent of stage {stage + 1}")
            return add_noise(state, mx.concatenate([tokens.astype(drawn.dtype), drawn[:, tokens.shape[1]:]], axis=1), scale)

        return noise


# ------------------------------------------------------------------------------------------------ generation


@dataclass(frozen=True)
class StepEvent:
    stage: int  # 0-based
    stages: int
    step: int  # 1-based count of steps done in this stage
    total: int
    sigma: float


@dataclass(frozen=True)
class StageEvent:
    stage: int
    stages: int
    name: str  # "stage 1 started", "upsampled", ...
    seconds: float = 0.0


@dataclass
class Generation:
    """What :func:`generate` produced: normalized latents after each stage, and the time each part took."""

    video_latents: list = field(default_factory=list)  # (B, 128, f, h, w) per stage
    audio_latents: list = field(default_factory=list)  # (B, 8, t, 16) per stage
    seconds: dict[str, float] = field(default_factory=dict)
    steps: dict[int, int] = field(default_factory=dict)  # transformer steps per stage

    @property
    def video_latent(self):
        return self.video_latents[-1]

    @property
    def audio_latent(self):
        return self.audio_latents[-1]


def _sigmas(stage: Stage, steps: int | None, spec: PipelineSpec, tokens: int) -> list[float]:
    if stage.schedule == "distilled":
        return list(DISTILLED_SIGMAS)
    if stage.schedule == "stage2":
        return list(STAGE_2_SIGMAS)
    return [float(s) for s in ltx2_sigmas(steps or spec.default_steps, tokens if stage.schedule_from_latent else 4096)]


def _encode_images(request: GenerateRequest, models: ModelSet, sizes) -> dict[tuple[int, int], list[EncodedImage]]:
    """Every conditioning image encoded at every stage's size (the encoder is dropped before the transformer)."""
    from ltx_ane.io.image import prepare_conditioning_image

    out = {}
    dtype = mlx_dtype(models.dtype)
    for size in sizes:
        encoded = []
        for image in request.images:
            pixels = prepare_conditioning_image(image.path, size[0], size[1], crf=image.crf, dtype=dtype)
            latent = models.encoder()(pixels)
            mx.eval(latent)
            encoded.append(EncodedImage(latent, image.frame, image.strength))
        out[size] = encoded
    models.drop("encoder")
    return out


def _stage_sizes(spec: PipelineSpec, request: GenerateRequest) -> list[tuple[int, int]]:
    return [(request.height // 2, request.width // 2) if s.half_resolution else (request.height, request.width)
            for s in spec.stages]


def generate(spec: PipelineSpec, request: GenerateRequest, contexts: PromptContexts, models: ModelSet,
             result: Generation, noise: NoiseSupply | None = None) -> Iterator[StepEvent | StageEvent]:
    """Run every stage of ``spec``; yield an event per step and per stage; leave the latents in ``result``."""
    request.check(spec)
    if any(s.guided for s in spec.stages) and not contexts.has_negative:
        raise LtxAneError(f"the {spec.name} pipeline is guided and needs the negative prompt's contexts")
    noise = noise or NoiseSupply(request.seed)
    dtype = mlx_dtype(models.dtype)
    sizes = _stage_sizes(spec, request)
    start = time.perf_counter()
    images = _encode_images(request, models, sorted(set(sizes))) if request.images else {size: [] for size in sizes}
    if request.images:
        result.seconds["image encoding"] = time.perf_counter() - start

    video_latent = audio_latent = None
    for index, (stage, (height, width)) in enumerate(zip(spec.stages, sizes)):
        stage_start = time.perf_counter()
        yield StageEvent(index, len(spec.stages), "started")
        if index > 0:
            video_latent = _upsample(video_latent, models)
            result.seconds[f"upsample {index}"] = time.perf_counter() - stage_start
            yield StageEvent(index, len(spec.stages), "upsampled", result.seconds[f"upsample {index}"])
            stage_start = time.perf_counter()
        video_shape = VideoLatentShape.from_pixels(request.frames, height, width)
        video_tools = VideoLatentTools(video_shape, request.fps)
        audio_tools = AudioLatentTools(AudioLatentShape.from_video(request.frames, request.fps))
        sigmas = _sigmas(stage, request.steps, spec, video_shape.token_count())
        scale = sigmas[0] if index > 0 else 1.0
        encoded = images[(height, width)]
        conditionings = keyframe_conditionings(encoded) if spec.keyframes else combined_image_conditionings(encoded)
        video = noised_state(video_tools, dtype, noise.noiser("video", index), conditionings, scale, video_latent)
        audio = noised_state(audio_tools, dtype, noise.noiser("audio", index), (), scale, audio_latent)

        model = models.transformer(stage.distilled_lora)
        denoise = _denoise_fn(spec, stage, request, contexts, model)
        if stage.sampler == "res2s":
            supply = Res2sNoise(request.seed + index)
            loop = res2s_loop(sigmas, video, audio, denoise, supply.step, supply.substep)
        else:
            loop = euler_loop(sigmas, video, audio, denoise)
        last = None
        for last in loop:
            yield StepEvent(index, len(spec.stages), last.index + 1, last.total, last.sigma)
        result.steps[index] = last.total
        video_latent = video_tools.unpatchify(video_tools.clear_conditioning(last.video)).latent
        audio_latent = audio_tools.unpatchify(audio_tools.clear_conditioning(last.audio)).latent
        mx.eval(video_latent, audio_latent)
        result.video_latents.append(video_latent)
        result.audio_latents.append(audio_latent)
        result.seconds[f"stage {index + 1}"] = time.perf_counter() - stage_start
        yield StageEvent(index, len(spec.stages), "done", result.seconds[f"stage {index + 1}"])
    models.drop("transformer", "upscaler")


def _denoise_fn(spec: PipelineSpec, stage: Stage, request: GenerateRequest, contexts: PromptContexts, model):
    if not stage.guided:
        return plain_denoise(model, contexts)
    ltx23 = model.velocity_model.config.cross_attention_adaln
    video_default, audio_default = default_guidance(spec, ltx23)
    video = MultiModalGuiderFactory.constant(request.video_guidance or video_default)
    audio = MultiModalGuiderFactory.constant(request.audio_guidance or audio_default)
    return guided_denoise(video, audio, guided_forward(model, contexts))


def _upsample(video_latent, models: ModelSet):
    """ltx-core's ``upsample_video``: the x2 spatial upscaler wrapped in the VAE's latent statistics."""
    from ltx_ane.models.upscaler.upsample import upsample

    out = upsample(video_latent, models.upscaler(), models.statistics()).astype(video_latent.dtype)
    mx.eval(out)
    models.drop("upscaler")
    return out
