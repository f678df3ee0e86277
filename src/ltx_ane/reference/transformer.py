"""ltx-core's audio-video transformer as the reference: build it with random weights, write it in the released
checkpoint format, reload it from such a file, and convert the MLX-side inputs to its ``Modality``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ltx_ane.reference import randomize_parameters, require_reference

TRANSFORMER_PREFIX = "model.diffusion_model."


def build_transformer(config: dict, seed: int = 0, device: str = "cpu", dtype=None):
    """``LTXModelConfigurator.from_config`` built on the meta device, then materialised on ``device`` in ``dtype``
    (float32 by default) and given random weights there: a 19B model never exists in float32 on the host.
    """
    require_reference()
    import torch
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator

    dtype = dtype or torch.float32
    with torch.device("meta"):
        model = LTXModelConfigurator.from_config(config)
    model = model.to_empty(device=device).to(dtype).eval()
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
