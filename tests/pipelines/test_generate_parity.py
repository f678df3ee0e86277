"""Each generation pipeline against ltx-pipelines 1.0.0 built from its helper-level functions (``denoise_audio_video``,
the Euler and res2s loops, the guiders, ``combined_image_conditionings``, ``upsample_video``): a tiny checkpoint in
the real format (transformer, VAE, upscaler, distilled LoRA), precomputed tiny text contexts and the same injected
noise on both sides; final video and audio latents of every stage in fp32 within 1e-4 of max|ref|."""

from __future__ import annotations

import copy
from dataclasses import replace

import mlx.core as mx
import numpy as np
import pytest
import torch
from PIL import Image

from ltx_ane import reference as R
from ltx_ane.reference import video_vae as RV
from ltx_ane.reference import upscaler as RU
from ltx_ane.models.config import load_preset
from ltx_ane.models.loading import Source
from ltx_ane.pipelines import generate as G
from ltx_ane.pipelines.denoise import PromptContexts
from ltx_ane.reference import transformer as RT
from tests.vae_util import small_config

R.require_reference()

TOL = 1e-4
FRAMES, HEIGHT, WIDTH, FPS = 9, 64, 64, 24.0
TEXT_TOKENS = 16


def _config() -> dict:
    t = copy.deepcopy(load_preset("ltx2")["transformer"])
    t.update(num_layers=2, num_attention_heads=4, attention_head_dim=16, cross_attention_dim=64,
             audio_num_attention_heads=4, audio_attention_head_dim=8, audio_cross_attention_dim=32, caption_channels=48)
    raw = small_config("ltx2", base=4, latent=128)
    raw["transformer"] = t
    return raw


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("generate")
    config = _config()
    transformer = RT.build_transformer(config, seed=0)
    tensors = RT.transformer_state_dict(transformer)
    tensors.update(RV.vae_state_dict(RV.build_decoder(config, 1), RV.build_encoder(config, 1)))
    checkpoint = R.write_checkpoint(d / "ltx.safetensors", tensors, config)
    upscaler_config = load_preset("spatial-x2")
    upscaler_config.update(mid_channels=32, num_blocks_per_stage=1)
    upscaler = R.write_checkpoint(d / "up.safetensors", RU.upscaler_state_dict(RU.build_upscaler(upscaler_config, 2)),
                                  upscaler_config)
    g = torch.Generator().manual_seed(3)
    lora = {}
    for target in ("transformer_blocks.0.attn1.to_q", "transformer_blocks.1.ff.net.2"):
        weight = transformer.state_dict()[target + ".weight"]
        lora[f"diffusion_model.{target}.lora_A.weight"] = torch.randn(4, weight.shape[1], generator=g) * 0.2
        lora[f"diffusion_model.{target}.lora_B.weight"] = torch.randn(weight.shape[0], 4, generator=g) * 0.2
    lora_path = R.write_checkpoint(d / "lora.safetensors", lora, None)
    image = d / "image.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 255, (96, 160, 3), dtype=np.uint8)).save(image)
    rng = np.random.default_rng(5)
    contexts = {k: rng.standard_normal((1, TEXT_TOKENS, 48)).astype(np.float32) for k in ("v", "a", "vn", "an")}
    return dict(config=config, checkpoint=checkpoint, upscaler=upscaler, upscaler_config=upscaler_config,
                lora=lora_path, image=image, contexts=contexts)


def _noise(spec, seed: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for index, stage in enumerate(spec.stages):
        h, w = (HEIGHT // 2, WIDTH // 2) if stage.half_resolution else (HEIGHT, WIDTH)
        suffix = "_stage2" if index else ""
        out["video_noise" + suffix] = rng.standard_normal((1, 128, (FRAMES - 1) // 8 + 1, h // 32, w // 32)).astype(np.float32)
        out["audio_noise" + suffix] = rng.standard_normal((1, 8, 9, 16)).astype(np.float32)
    return out


# ------------------------------------------------------------------------------------------------ reference


class GivenNoiser:
    """ltx-core's GaussianNoiser with the noise handed in (generated tokens first, appended tokens get zeros: with
    strength 1 their mask is 0, so their noise never counts)."""

    def __init__(self, arrays: list[np.ndarray]):
        self.queue = list(arrays)

    def __call__(self, state, noise_scale=1.0):
        from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier

        given = torch.from_numpy(self.queue.pop(0))
        tokens = (VideoLatentPatchifier(1) if given.ndim == 5 else AudioPatchifier(1)).patchify(given)
        noise = torch.zeros_like(state.latent)
        noise[:, : tokens.shape[1]] = tokens
        scaled = state.denoise_mask * noise_scale
        return replace(state, latent=(noise * scaled + state.latent * (1 - scaled)).to(state.latent.dtype))


@torch.inference_mode()
def reference_run(spec, files, noise: dict, images, steps: int | None, sde_noise=None):
    """The pipeline's __call__ rebuilt from ltx-pipelines' helpers, in float32 on the CPU."""
    from ltx_core.components.diffusion_steps import EulerDiffusionStep, Res2sDiffusionStep
    from ltx_core.components.guiders import MultiModalGuiderFactory, MultiModalGuiderParams
    from ltx_core.components.schedulers import LTX2Scheduler
    from ltx_core.loader.fuse_loras import apply_loras
    from ltx_core.model.transformer import X0Model
    from ltx_core.model.upsampler import upsample_video
    from ltx_core.types import VideoPixelShape
    from ltx_pipelines.utils.args import ImageConditioningInput
    from ltx_pipelines.utils.helpers import (
        combined_image_conditionings,
        denoise_audio_video,
        image_conditionings_by_adding_guiding_latent,
        multi_modal_guider_factory_denoising_func,
        simple_denoising_func,
    )
    from ltx_pipelines.utils.samplers import euler_denoising_loop, res2s_audio_video_denoising_loop
    from ltx_pipelines.utils.types import PipelineComponents

    config, dtype, device = files["config"], torch.float32, torch.device("cpu")
    components = PipelineComponents(dtype, device)
    base = RT.reference_transformer_from_checkpoint(files["checkpoint"], config)
    encoder = RV.reference_encoder_from_checkpoint(files["checkpoint"], config)
    c = {k: torch.from_numpy(v) for k, v in files["contexts"].items()}
    order = [noise[k] for index in range(len(spec.stages))
             for k in (("video_noise", "audio_noise") if index == 0 else ("video_noise_stage2", "audio_noise_stage2"))]
    noiser = GivenNoiser(order)
    inputs = [ImageConditioningInput(str(files["image"]), frame, strength, 33) for frame, strength in images]
    video_params, audio_params = (MultiModalGuiderParams(**vars(p)) for p in G.default_guidance(spec, False))
    outputs, video_latent, audio_latent = [], None, None
    for index, stage in enumerate(spec.stages):
        h, w = (HEIGHT // 2, WIDTH // 2) if stage.half_resolution else (HEIGHT, WIDTH)
        shape = VideoPixelShape(batch=1, frames=FRAMES, width=w, height=h, fps=FPS)
        conditioning = image_conditionings_by_adding_guiding_latent if spec.keyframes else combined_image_conditionings
        conditionings = conditioning(images=inputs, height=h, width=w, video_encoder=encoder, dtype=dtype, device=device)
        model = base
        if stage.distilled_lora:
            model = _with_lora(base, files, stage.distilled_lora, config, apply_loras)
        x0 = X0Model(model)
        if stage.schedule == "distilled":
            sigmas = torch.tensor(G.DISTILLED_SIGMAS)
        elif stage.schedule == "stage2":
            sigmas = torch.tensor(G.STAGE_2_SIGMAS)
        elif stage.schedule_from_latent:
            latent = torch.empty(1, 128, (FRAMES - 1) // 8 + 1, h // 32, w // 32)
            sigmas = LTX2Scheduler().execute(latent=latent, steps=steps).to(torch.float32)
        else:
            sigmas = LTX2Scheduler().execute(steps=steps).to(torch.float32)
        if stage.guided:
            fn = multi_modal_guider_factory_denoising_func(
                MultiModalGuiderFactory.constant(video_params, negative_context=c["vn"]),
                MultiModalGuiderFactory.constant(audio_params, negative_context=c["an"]), c["v"], c["a"], x0)
        else:
            fn = simple_denoising_func(c["v"], c["a"], x0)

        def loop(sigmas, video_state, audio_state, stepper, fn=fn, index=index):
            if stage.sampler == "res2s":
                # The SDE noise MLX drew for this stage, handed over by generator: step seed 1, substep seed 10001.
                queues = {1: list(sde_noise[index].steps), 10001: list(sde_noise[index].substeps)}
                return res2s_audio_video_denoising_loop(
                    sigmas=sigmas, video_state=video_state, audio_state=audio_state, stepper=Res2sDiffusionStep(),
                    denoise_fn=fn, noise_seed=1,
                    new_noise_fn=lambda latent, generator: torch.from_numpy(
                        np.array(queues[generator.initial_seed()].pop(0))).double(),
                    model_dtype=torch.float32)
            return euler_denoising_loop(sigmas=sigmas, video_state=video_state, audio_state=audio_state,
                                        stepper=stepper, denoise_fn=fn)

        if index > 0:
            upscaler = R.from_checkpoint("spatial", files["upscaler"], files["upscaler_config"])
            video_latent = upsample_video(latent=video_latent[:1], video_encoder=encoder, upsampler=upscaler)
        video_state, audio_state = denoise_audio_video(
            output_shape=shape, conditionings=conditionings, noiser=noiser, sigmas=sigmas,
            stepper=EulerDiffusionStep(), denoising_loop_fn=loop, components=components, dtype=dtype, device=device,
            noise_scale=float(sigmas[0]) if index else 1.0, initial_video_latent=video_latent,
            initial_audio_latent=audio_latent)
        video_latent, audio_latent = video_state.latent, audio_state.latent
        outputs.append((video_latent.numpy(), audio_latent.numpy()))
    return outputs


def _with_lora(base, files, strength, config, apply_loras):
    from ltx_core.loader.primitives import LoraStateDictWithStrength, StateDict
    from safetensors.torch import load_file

    model = RT.reference_transformer_from_checkpoint(files["checkpoint"], config)
    sd = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    lora = {k.replace("diffusion_model.", ""): v for k, v in load_file(str(files["lora"])).items()}
    fused = apply_loras(StateDict(sd, torch.device("cpu"), 0, {torch.bfloat16}),
                        [LoraStateDictWithStrength(StateDict(lora, torch.device("cpu"), 0, {torch.bfloat16}), strength)],
                        dtype=torch.float32).sd
    state = {k: v.float() for k, v in model.state_dict().items()}
    state.update({k: v.float() for k, v in fused.items() if k in state and "lora" not in k})
    model.load_state_dict(state)
    return model


# ------------------------------------------------------------------------------------------------ MLX


def mlx_run(spec, files, noise: dict, images, steps: int | None):
    request = G.GenerateRequest(frames=FRAMES, height=HEIGHT, width=WIDTH, fps=FPS, seed=0, steps=steps,
                                images=tuple(G.ImageInput(str(files["image"]), f, s) for f, s in images))
    c = {k: mx.array(v) for k, v in files["contexts"].items()}
    contexts = PromptContexts(c["v"], c["a"], c["vn"], c["an"])
    models = G.ModelSet(Source(str(files["checkpoint"])), Source(str(files["upscaler"])), str(files["lora"]),
                        dtype="fp32", log=lambda m: None)
    result = G.Generation()
    for _ in G.generate(spec, request, contexts, models, result, G.NoiseSupply(0, noise)):
        pass
    return [(np.array(v), np.array(a)) for v, a in zip(result.video_latents, result.audio_latents)]


def _close(out: np.ndarray, ref: np.ndarray) -> float:
    assert out.shape == ref.shape
    return float(np.abs(out - ref).max() / np.abs(ref).max())


class RecordedSdeNoise(G.Res2sNoise):
    """MLX's res2s noise, kept so the reference can be handed the same arrays."""

    made: list = []

    def __init__(self, seed: int):
        super().__init__(seed)
        self.steps, self.substeps = [], []
        RecordedSdeNoise.made.append(self)

    def step(self, shape):
        self.steps.append(super().step(shape))
        return self.steps[-1]

    def substep(self, shape):
        self.substeps.append(super().substep(shape))
        return self.substeps[-1]


def test_hq_pipeline_matches_ltx_pipelines(files, monkeypatch):
    """res2s in both stages with the same SDE noise, guided stage 1, the distilled LoRA at 0.25 then 0.5."""
    monkeypatch.setattr(G, "Res2sNoise", RecordedSdeNoise)
    RecordedSdeNoise.made = []
    spec = G.pipeline("hq")
    noise = _noise(spec)
    out = mlx_run(spec, files, noise, [(0, 1.0)], 2)
    ref = reference_run(spec, files, noise, [(0, 1.0)], 2, sde_noise=RecordedSdeNoise.made)
    for (video, audio), (ref_video, ref_audio) in zip(out, ref):
        assert _close(video, ref_video) <= TOL
        assert _close(audio, ref_audio) <= TOL


@pytest.mark.parametrize("name,images,steps", [
    ("distilled", [(0, 1.0)], None),
    ("one-stage", [], 3),
    ("two-stage", [(0, 0.6)], 3),
    ("keyframes", [(0, 1.0), (8, 1.0)], 3),
])
def test_pipeline_matches_ltx_pipelines(files, name, images, steps):
    spec = G.pipeline(name)
    noise = _noise(spec)
    ref = reference_run(spec, files, noise, images, steps)
    out = mlx_run(spec, files, noise, images, steps)
    assert len(out) == len(ref) == len(spec.stages)
    for (video, audio), (ref_video, ref_audio) in zip(out, ref):
        assert _close(video, ref_video) <= TOL
        assert _close(audio, ref_audio) <= TOL


def test_default_guidance_and_negative_prompt_are_ltx_pipelines_own():
    from ltx_pipelines.utils import constants as C

    def fields(params):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(params).items()}

    assert fields(G.LTX2_VIDEO_GUIDANCE) == fields(C.LTX_2_PARAMS.video_guider_params)
    assert fields(G.LTX2_AUDIO_GUIDANCE) == fields(C.LTX_2_PARAMS.audio_guider_params)
    assert fields(G.LTX23_VIDEO_GUIDANCE) == fields(C.LTX_2_3_PARAMS.video_guider_params)
    assert fields(G.HQ_VIDEO_GUIDANCE) == fields(C.LTX_2_3_HQ_PARAMS.video_guider_params)
    assert fields(G.HQ_AUDIO_GUIDANCE) == fields(C.LTX_2_3_HQ_PARAMS.audio_guider_params)
    assert G.DEFAULT_NEGATIVE_PROMPT == C.DEFAULT_NEGATIVE_PROMPT
    assert list(G.DISTILLED_SIGMAS) == C.DISTILLED_SIGMA_VALUES and list(G.STAGE_2_SIGMAS) == C.STAGE_2_DISTILLED_SIGMA_VALUES
