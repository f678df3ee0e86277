"""ltx-core's audio-video transformer as the reference: build it with random weights, write it in the released
checkpoint format, reload it from such a file, and convert the MLX-side inputs to its ``Modality``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ltx_ane.reference import randomize_parameters, require_reference

TRANSFORMER_PREFIX = "model.diffusion_model."
VIDEO_SCALE = (8, 32, 32)  # latent -> pixel strides (frames, height, width)
FPS = 24.0
AUDIO_SECONDS_PER_TOKEN = 0.04  # 25 audio latents per second


def build_transformer(config: dict, seed: int = 0, device: str = "cpu", dtype=None):
    """``LTXModelConfigurator.from_config`` built on the meta device, then materialised on ``device`` in ``dtype``
    (float32 by default) and given random weights there: a 19B model never exists in float32 on the host.
    """
    require_reference()
    import torch
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator

    dtype = dtype or torch.float32
    with torch.device("meta"):
        model = LTXModelConfigurator.from_config(config).to(dtype)
    model = model.to_empty(device=device).eval()
    if device == "cpu":
        randomize_parameters(model, torch.Generator().manual_seed(seed))
    else:
        _randomize_on_device(model, seed, device)
    return model


def _randomize_on_device(model, seed: int, device: str) -> None:
    """The same distribution as ``randomize_parameters``, drawn on the accelerator (for benchmarks)."""
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                bound = (1.0 / p[0].numel()) ** 0.5
                p.uniform_(-bound, bound, generator=g)
            elif name.endswith("weight"):
                p.normal_(1.0, 0.1, generator=g)
            else:
                p.normal_(0.0, 0.05, generator=g)


def transformer_state_dict(model) -> dict:
    """Checkpoint keys as the released files name them."""
    return {TRANSFORMER_PREFIX + k: v for k, v in model.state_dict().items()}


def reference_transformer_from_checkpoint(path: str | Path, config: dict):
    """The reference model holding a file's (rounded) transformer weights, in float32; other keys are skipped."""
    require_reference()
    import torch
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator
    from safetensors.torch import load_file

    with torch.device("meta"):
        model = LTXModelConfigurator.from_config(config)
    model = model.to_empty(device="cpu").eval()
    state = {}
    for key, value in load_file(str(path)).items():
        name = key[len(TRANSFORMER_PREFIX):]
        if key.startswith(TRANSFORMER_PREFIX) and not name.startswith(("video_embeddings_connector.", "audio_embeddings_connector.")):
            state[name] = value.to(torch.float32)
    model.load_state_dict(state, strict=True)
    return model.to(torch.float32)


def torch_modality(latent, sigma, timesteps, positions, context, enabled=True, context_mask=None, attention_mask=None):
    """An ltx-core ``Modality`` from numpy arrays (or torch tensors, kept as they are, e.g. bf16 positions)."""
    require_reference()
    import torch
    from ltx_core.model.transformer.modality import Modality

    def t(a):
        return a if a is None or isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))

    return Modality(latent=t(latent), sigma=t(sigma), timesteps=t(timesteps), positions=t(positions), context=t(context),
                    enabled=enabled, context_mask=t(context_mask), attention_mask=t(attention_mask))


def torch_perturbations(skips: list[list[tuple[str, list[int] | None]]]):
    """ltx-core's ``BatchedPerturbationConfig`` from per-item lists of (perturbation type value, blocks)."""
    require_reference()
    from ltx_core.guidance.perturbations import (
        BatchedPerturbationConfig,
        Perturbation,
        PerturbationConfig,
        PerturbationType,
    )

    return BatchedPerturbationConfig(
        [PerturbationConfig([Perturbation(PerturbationType(kind), blocks) for kind, blocks in item]) for item in skips]
    )


def video_positions(batch: int, frames: int, height: int, width: int):
    """(B, 3, T, 2) bf16 torch tensor of [start, end) pixel bounds as ltx-core's ``VideoLatentTools`` builds them:
    time in seconds with the causal fix on frame 0, rounded to bf16 as the pipelines pass them."""
    import torch

    f, h, w = np.meshgrid(np.arange(frames), np.arange(height), np.arange(width), indexing="ij")
    bounds = []
    for axis, scale in zip((f, h, w), VIDEO_SCALE):
        start = axis.reshape(-1) * scale
        bounds.append(np.stack([start, start + scale], axis=-1).astype(np.float32))
    bounds[0] = np.clip(bounds[0] + 1 - VIDEO_SCALE[0], 0, None) / FPS
    grid = np.broadcast_to(np.stack(bounds)[None], (batch, 3, frames * height * width, 2))
    return torch.from_numpy(grid.copy()).to(torch.bfloat16)


def audio_positions(batch: int, tokens: int) -> np.ndarray:
    """(B, 1, T, 2) float32 [start, end) seconds of the audio latents."""
    start = np.arange(tokens, dtype=np.float32) * AUDIO_SECONDS_PER_TOKEN
    grid = np.stack([start, start + AUDIO_SECONDS_PER_TOKEN], axis=-1)[None, None]
    return np.broadcast_to(grid, (batch, 1, tokens, 2)).astype(np.float32)
